"""The artist head: trains on cached embeddings, saves a versioned artifact, reloads, votes to a Verdict."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from classifier import errors, pipeline
from classifier.model import heads
from classifier.serve.api import Query
from classifier.serve.engine import Engine
from classifier.settings import Settings
from classifier.store import registry
from classifier.store.index import Index
from classifier.training import calibrate, train


def test_trained_head_identifies_held_out_tracks(trained: Settings, demo_lib, backbone) -> None:  # noqa: ANN001
    head = registry.current_head(trained.database)
    assert head is not None and head.labels == ("Deep Pulse", "Iron Riff", "Slow Tide")
    heldout = next(iter(demo_lib.values()))[0].parent.parent / "heldout"
    for artist in head.labels:
        a = pipeline.analyse(heldout / f"{artist.lower().replace(' ', '-')}.wav", [backbone], keep_pooled=True)
        v = pipeline.verdict(head, a, "held-out")
        assert v.artists[0].label == artist
        assert sum(c.votes for c in v.artists) == v.slices
        assert 0 < v.confidence <= 1 and len(v.timeline) == v.slices


def test_artifact_roundtrip_and_registry(trained: Settings, tmp_path: Path) -> None:
    head = registry.current_head(trained.database)
    assert head is not None
    folder = head.save(tmp_path / head.id)
    again = heads.Head.load(folder)
    x = np.random.default_rng(0).standard_normal((5, head.mean.shape[0])).astype(np.float32)
    np.testing.assert_allclose(again.predict(x), head.predict(x), atol=1e-6)
    assert again.threshold == head.threshold and again.backbone == "msd_musicnn"
    meta = (folder / "head.json").read_text()
    assert '"labels"' in meta and '"summary"' in meta and '"config"' in meta
    with Index(trained.database) as index:
        assert index.active_model()["id"] == head.id


def test_new_model_is_picked_up_without_restart(trained: Settings, tmp_path: Path) -> None:
    s = trained.replace(data_dir=tmp_path / "data")
    import shutil

    shutil.copytree(trained.data_dir, s.data_dir)       # the whole data folder: the registry's paths are relative to it
    first = registry.current_head(s.database)
    with Index(s.database) as index:
        newer = train.train(index, s.heads_dir, heads.HeadConfig(epochs=5), calibrate_threshold=False)
    assert first is not None and registry.current_head(s.database).id == newer.id != first.id


def test_training_needs_two_artists(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    with Index(s.database) as index:
        with pytest.raises(errors.EnrolError, match="at least two"):
            train.train(index, s.heads_dir)


def test_identify_without_model_tells_operator(tmp_path: Path, audio_dir: Path) -> None:
    async def run() -> None:
        clf = Engine(Settings(data_dir=tmp_path))
        try:
            with pytest.raises(errors.NoModel) as info:
                await clf.identify(Query(path=audio_dir / "loop.wav"))
            assert "spy enrol" in info.value.user_message
        finally:
            await clf.aclose()

    asyncio.run(run())


def test_local_classifier_identify_json_shape(trained: Settings, audio_dir: Path) -> None:
    async def run() -> dict:
        async with Engine(trained) as clf:
            return (await clf.identify(Query(path=audio_dir / "loop.mp3", label="loop"))).to_dict()

    d = asyncio.run(run())
    assert set(d) >= {"source", "seconds", "slices", "artists", "confidence", "verdict", "genres", "model", "timings"}
    assert d["verdict"] in {"identified", "unknown"} and d["model"]["artists"] == 3
    assert [set(a) for a in d["artists"]] == [{"name", "score", "votes"}] * 3
    assert d["artists"][0]["name"] == "Deep Pulse"  # the loop is rendered in Deep Pulse's style


def test_lbfgs_linear_head_reaches_the_optimum() -> None:
    from classifier.model.heads import Dataset

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 20)) * 3
    y = np.repeat(np.arange(3), 40)
    x = (centres[y] + rng.standard_normal((120, 20))).astype(np.float32)
    ds = Dataset(np.zeros((120, 200), np.float32), x, np.zeros(120, np.float32), y, np.repeat(np.arange(6), 20),
                 ("a", "b", "c"))
    cfg = heads.HeadConfig(feature="pooled", solver="lbfgs", l2=1e-3)
    model, mean, scale = heads.fit(ds, cfg)
    p = np.asarray(model(((x - mean) / scale).astype(np.float32)))
    assert (p.argmax(1) == y).mean() > 0.95
    # convex and seed-free: two solves give the same weights
    z = (x - mean) / scale
    w = np.ones(120)
    k1, b1 = heads._fit_linear_lbfgs(z, y, w, 3, 1e-3)
    k2, b2 = heads._fit_linear_lbfgs(z, y, w, 3, 1e-3)
    np.testing.assert_allclose(k1, k2, atol=1e-6)


def _slices_dataset(n_artists: int, tracks_per_artist: int, seconds: float, *, noise: float, seed: int = 0):  # noqa: ANN202
    """Slice features as enrolment stores them: one every 1.5 s per track, clustered by artist."""
    from classifier.model.heads import Dataset

    rng = np.random.default_rng(seed)
    starts_one = np.arange(0.0, seconds - 2.976 + 1e-6, 1.5, dtype=np.float32)
    centres = rng.standard_normal((n_artists, 16)) * 2
    y = np.repeat(np.arange(n_artists), tracks_per_artist * len(starts_one))
    track = np.repeat(np.arange(n_artists * tracks_per_artist), len(starts_one))
    x = (centres[y] + noise * rng.standard_normal((len(y), 16))).astype(np.float32)
    starts = np.tile(starts_one, n_artists * tracks_per_artist)
    return Dataset(np.zeros((len(y), 200), np.float32), x, starts, y, track,
                   tuple(f"artist {i}" for i in range(n_artists)))


def test_calibration_chunks_are_sliced_like_queries() -> None:
    ds = _slices_dataset(1, 1, 100.0, noise=1.0)
    chunks = calibrate._query_chunks(ds, 30.0, 3.0)
    # a 30-s query at hop 3 s has windows at 0, 3, ..., 27 s: ten slices (27 + 2.976 <= 30)
    assert [len(sel) for _, sel in chunks] == [10, 10, 10]
    for k, (_, sel) in enumerate(chunks):
        st = ds.starts[sel]
        assert st[0] == 30.0 * k and np.all(np.diff(st) >= 3.0 - 1e-3) and st[-1] + 2.976 <= 30.0 * (k + 1) + 1e-6
    # the 9-s tail (90-99 s) is not a 30-s query and is left out; the stored 1.5-s grid would have given
    # 19 slices per chunk, twice as many votes as a real query has
    assert [len(sel) for _, sel in calibrate._query_chunks(ds, 30.0, 1.5)] == [19, 19, 19]
    # a track shorter than the chunk is one chunk, as a query of it would be
    short = _slices_dataset(1, 1, 20.0, noise=1.0)
    assert [len(sel) for _, sel in calibrate._query_chunks(short, 30.0, 3.0)] == [6]
    # a 10-s voice note: windows at 0, 3 and 6 s
    assert {len(sel) for _, sel in calibrate._query_chunks(ds, 10.0, 3.0)} == {3}


def test_threshold_minimises_false_accepts_plus_false_rejects_over_lengths() -> None:
    right = {10.0: np.array([0.5, 0.6, 0.7, 0.9]), 30.0: np.array([0.55, 0.8, 0.95])}
    wrong = {10.0: np.array([0.2, 0.3, 0.65]), 30.0: np.array([0.4, 0.5]), 60.0: np.array([0.1])}
    threshold, rates = calibrate.choose_threshold(right, wrong)
    # at 0.55: 10 s refuses 0.5 (FR 1/4) and accepts 0.65 (FA 1/3); 30 s is clean. Mean cost (7/12)/2.
    # every other cut costs more: e.g. 0.5 accepts 0.5 at 30 s too, 0.6 refuses 0.55 and 0.5.
    assert threshold == pytest.approx(0.55)
    assert set(rates["by_length"]) == {"10", "30"}      # 60 s has no right answers: not used
    assert rates["by_length"]["10"]["false_accept"] == pytest.approx(1 / 3)
    assert rates["by_length"]["10"]["false_reject"] == pytest.approx(1 / 4)
    assert rates["by_length"]["30"]["false_accept"] == 0.0 and rates["by_length"]["30"]["false_reject"] == 0.0
    # nothing on one side: no threshold can be chosen, and nobody is refused
    assert calibrate.choose_threshold({30.0: np.array([0.9])}, {30.0: np.array([])})[0] == 0.0


def test_calibration_scores_every_length_on_held_out_folds() -> None:
    ds = _slices_dataset(6, 3, 130.0, noise=2.5)
    threshold, rates = calibrate.calibrate(ds, heads.HeadConfig(epochs=5))
    assert 0.0 < threshold <= 1.0 and rates["threshold"] == threshold and rates["hop_s"] == 3.0
    assert set(rates["by_length"]) == {"10", "30", "60", "120"}
    # 18 tracks of 130 s: each is scored once (in its held-out fold) per whole chunk of each length
    n = {k: v["n_right"] + v["n_wrong"] for k, v in rates["by_length"].items()}
    assert n == {"10": 18 * 13, "30": 18 * 4, "60": 18 * 2, "120": 18 * 1}
