"""The whole path file -> slices -> features -> network, on real decoded audio, and its refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier import errors, pipeline
from classifier.pipeline import genre_report


def test_analyse_loop(audio_dir: Path, backbone) -> None:  # noqa: ANN001
    a = pipeline.analyse(audio_dir / "loop.mp3", [backbone], hop_s=3.0, keep_pooled=True)
    # 20 s at 16 kHz with 47,616-sample windows every 48,000 samples: 6 regular + 1 tail window
    assert a.n_slices == 7
    assert a.tags["msd_musicnn"].shape == (7, 50) and a.embedding.shape == (7, 200)
    assert a.pooled is not None and a.pooled.shape == (7, 1506)
    assert np.all(np.isfinite(a.embedding)) and np.all((a.tags["msd_musicnn"] >= 0) & (a.tags["msd_musicnn"] <= 1))
    assert a.starts_s[0] == 0.0 and np.all(np.diff(a.starts_s) > 0)
    assert set(a.timings) >= {"decode", "features", "network", "total"}


def test_offset_and_window(audio_dir: Path, backbone) -> None:  # noqa: ANN001
    a = pipeline.analyse(audio_dir / "loop.wav", [backbone], start_s=6.0, duration_s=9.0, offset_s=3600.0)
    assert abs(a.seconds - 9.0) < 0.01
    assert a.starts_s[0] == pytest.approx(3600.0)


def test_genre_report_shape(audio_dir: Path, backbone) -> None:  # noqa: ANN001
    a = pipeline.analyse(audio_dir / "loop.wav", [backbone])
    d = genre_report(a, "loop.wav").to_dict()
    assert set(d) >= {"source", "seconds", "slices", "genres", "descriptors", "timings"}
    assert 1 <= len(d["genres"]) <= 5 and all(set(g) == {"label", "score", "votes"} for g in d["genres"])
    assert sum(g["votes"] for g in d["genres"]) <= d["slices"]
    genre_labels = {g["label"] for g in d["genres"]}
    assert not genre_labels & {"female vocalists", "80s", "sad", "instrumental"}  # descriptors stay apart
    # a four-on-the-floor synth loop sounds electronic to the MSD tagger
    assert d["genres"][0]["label"] in {"electronic", "electro", "House", "dance", "electronica", "techno"}


def test_progress_reports_every_slice(audio_dir: Path, backbone) -> None:  # noqa: ANN001
    seen: list[tuple[int, int]] = []
    a = pipeline.analyse(audio_dir / "loop.wav", [backbone], hop_s=1.5, batch_size=4,
                         progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == a.n_slices and seen[-1][1] == a.n_slices
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


@pytest.mark.parametrize(
    ("name", "error"),
    [("short.wav", errors.TooShort), ("silence.wav", errors.Silent), ("song.mp3", errors.Undecodable),
     ("empty.mp3", errors.Undecodable), ("nope.ogg", errors.MissingFile)],
)
def test_refusals(audio_dir: Path, backbone, name: str, error: type) -> None:  # noqa: ANN001
    with pytest.raises(error) as info:
        pipeline.analyse(audio_dir / name, [backbone])
    assert info.value.user_message and info.value.code == error.code
