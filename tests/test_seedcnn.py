"""The seed CNN (comparison architecture): slices, a real training run, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classifier.model.backbone import load_params
from classifier.training import seedcnn


def test_seedcnn_trains_saves_and_reloads(demo_lib, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = seedcnn.SeedConfig(filters=(4, 8), dense=16, epochs=3, hop_s=3.0)
    params = load_params("msd_musicnn")
    starts, x = seedcnn.slices_of(demo_lib["Deep Pulse"][0], params, cfg)
    assert x.shape[1:] == (96, 96) and x.dtype == np.float16 and len(starts) == len(x) >= 7
    tracks = [(a, p) for a, paths in demo_lib.items() for p in paths[:1]]
    head = seedcnn.train_from_tracks(tracks, tmp_path, cfg)
    assert head.labels == tuple(sorted(demo_lib)) and head.summary["slices"] > 0
    again = seedcnn.SeedHead.load(tmp_path / head.id)
    p1, p2 = head.predict(x), again.predict(x)
    assert p1.shape == (len(x), 3)
    np.testing.assert_allclose(p1, p2, atol=1e-5)
    np.testing.assert_allclose(p1.sum(axis=1), 1.0, atol=1e-4)
