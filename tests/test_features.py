"""Features: the training recipe, checked against the original code's output on real-music-like audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifier.audio import features
from classifier.model.backbone import load_params

GOLDEN = Path(__file__).parent / "golden" / "musicnn_msd_musicnn.npz"
P = load_params("msd_musicnn")


def test_whole_file_logmel_matches_original_recipe() -> None:
    g = np.load(GOLDEN)
    ours = features.log_mel(g["wave16k"], P)
    assert ours.shape == g["logmel_whole"].shape
    # float16 storage rounds to ~1e-3 relative; after log compression the values agree far closer than that
    np.testing.assert_allclose(ours, g["logmel_whole"], atol=2e-3)


def test_patch_shape_and_frames() -> None:
    window = (P.patch_frames - 1) * P.hop_length
    x = np.random.default_rng(0).standard_normal((3, window)).astype(np.float32) * 0.1
    out = features.patches(x, P)
    assert out.shape == (3, 187, 96) and out.dtype == np.float32
    # batch computation equals one-by-one
    np.testing.assert_allclose(out[1], features.patches(x[1:2], P)[0], rtol=1e-6, atol=1e-6)
    assert features.patches(np.zeros((0, window), np.float32), P).shape == (0, 187, 96)


def test_loud_music_stays_finite() -> None:
    # A full-scale square wave overflows float16 arithmetic in the original expression (inf under NumPy 2).
    t = np.arange((P.patch_frames - 1) * P.hop_length) / P.sample_rate
    loud = np.sign(np.sin(2 * np.pi * 110 * t)).astype(np.float32)
    out = features.patches(loud[None, :], P)
    assert np.isfinite(out).all()
    with np.errstate(over="ignore"):
        naive = np.log10(10000 * np.float16(60000.0) + 1)  # what the original computed for a loud bin
    assert not np.isfinite(naive)
