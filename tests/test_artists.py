"""The artist head: trains on cached embeddings, saves a versioned artifact, reloads, votes to a Verdict."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from classifier import artists, errors, pipeline
from classifier.client import LocalClassifier, Query
from classifier.index import Index
from classifier.settings import Settings


def test_trained_head_identifies_held_out_tracks(trained: Settings, demo_lib, backbone) -> None:  # noqa: ANN001
    head = artists.current_head(trained)
    assert head is not None and head.labels == ("Deep Pulse", "Iron Riff", "Slow Tide")
    heldout = next(iter(demo_lib.values()))[0].parent.parent / "heldout"
    for artist in head.labels:
        a = pipeline.analyse(heldout / f"{artist.lower().replace(' ', '-')}.wav", [backbone], keep_pooled=True)
        v = artists.verdict(head, a, "held-out")
        assert v.artists[0].label == artist
        assert sum(c.votes for c in v.artists) == v.slices
        assert 0 < v.confidence <= 1 and len(v.timeline) == v.slices


def test_artifact_roundtrip_and_registry(trained: Settings, tmp_path: Path) -> None:
    head = artists.current_head(trained)
    assert head is not None
    folder = head.save(tmp_path / head.id)
    again = artists.Head.load(folder)
    x = np.random.default_rng(0).standard_normal((5, head.mean.shape[0])).astype(np.float32)
    np.testing.assert_allclose(again.predict(x), head.predict(x), atol=1e-6)
    assert again.threshold == head.threshold and again.backbone == "msd_musicnn"
    meta = (folder / "head.json").read_text()
    assert '"labels"' in meta and '"summary"' in meta and '"config"' in meta
    with Index(trained.database) as index:
        assert index.active_model()["id"] == head.id


def test_new_model_is_picked_up_without_restart(trained: Settings, tmp_path: Path) -> None:
    s = trained.replace(data_dir=tmp_path, db_path=tmp_path / "copy.sqlite3")
    import shutil

    shutil.copy(trained.database, s.database)
    first = artists.current_head(s)
    with Index(s.database) as index:
        newer = artists.train(index, s, artists.HeadConfig(epochs=5), calibrate_threshold=False)
    assert first is not None and artists.current_head(s).id == newer.id != first.id


def test_training_needs_two_artists(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    with Index(s.database) as index:
        with pytest.raises(errors.EnrolError, match="at least two"):
            artists.train(index, s)


def test_identify_without_model_tells_operator(tmp_path: Path, audio_dir: Path) -> None:
    async def run() -> None:
        clf = LocalClassifier(Settings(data_dir=tmp_path))
        try:
            with pytest.raises(errors.NoModel) as info:
                await clf.identify(Query(path=audio_dir / "loop.wav"))
            assert "spy enrol" in info.value.user_message
        finally:
            await clf.aclose()

    asyncio.run(run())


def test_local_classifier_identify_json_shape(trained: Settings, audio_dir: Path) -> None:
    async def run() -> dict:
        async with LocalClassifier(trained) as clf:
            return (await clf.identify(Query(path=audio_dir / "loop.mp3", label="loop"))).to_dict()

    d = asyncio.run(run())
    assert set(d) >= {"source", "seconds", "slices", "artists", "confidence", "verdict", "genres", "model", "timings"}
    assert d["verdict"] in {"identified", "unknown"} and d["model"]["artists"] == 3
    assert [set(a) for a in d["artists"]] == [{"name", "score", "votes"}] * 3
    assert d["artists"][0]["name"] == "Deep Pulse"  # the loop is rendered in Deep Pulse's style


def test_lbfgs_linear_head_reaches_the_optimum() -> None:
    from classifier.index import Dataset

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 20)) * 3
    y = np.repeat(np.arange(3), 40)
    x = (centres[y] + rng.standard_normal((120, 20))).astype(np.float32)
    ds = Dataset(np.zeros((120, 200), np.float32), x, np.zeros(120, np.float32), y, np.repeat(np.arange(6), 20),
                 ("a", "b", "c"))
    cfg = artists.HeadConfig(feature="pooled", solver="lbfgs", l2=1e-3)
    model, mean, scale = artists.fit(ds, cfg)
    p = np.asarray(model(((x - mean) / scale).astype(np.float32)))
    assert (p.argmax(1) == y).mean() > 0.95
    # convex and seed-free: two solves give the same weights
    z = (x - mean) / scale
    w = np.ones(120)
    k1, b1 = artists._fit_linear_lbfgs(z, y, w, 3, 1e-3)
    k2, b2 = artists._fit_linear_lbfgs(z, y, w, 3, 1e-3)
    np.testing.assert_allclose(k1, k2, atol=1e-6)
