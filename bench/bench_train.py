"""Time `spy train` at the issue's scale: 40 artists x 10 tracks x 60 s (hop 1.5 s: 40 slices a track).

    python bench/bench_train.py

Features are drawn at random around per-artist centres (training time does not depend on their values);
the index, the fit, the 3-fold threshold calibration and the artifact are all the real code.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.settings import Settings  # noqa: E402
from classifier.store.index import Index  # noqa: E402
from classifier.training import train  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings(data_dir=Path(tmp))
        with Index(s.database) as index:
            for a in range(40):
                centre = rng.standard_normal(1506).astype(np.float32)
                for t in range(10):
                    n = 40
                    pooled = centre + rng.standard_normal((n, 1506)).astype(np.float32) * 2
                    index.add_track(artist=f"artist {a:02d}", title=f"t{t}", source="-", duration_s=60.0,
                                    content_hash=f"{a}-{t}", split=None, backbone="msd_musicnn", hop_s=1.5,
                                    starts=np.arange(n, dtype=np.float32) * 1.5,
                                    embedding=rng.standard_normal((n, 200)).astype(np.float32), pooled=pooled)
            t0 = time.perf_counter()
            head = train.train(index, s.heads_dir)
            total = time.perf_counter() - t0
    print(f"{'artists':>8s} {'tracks':>7s} {'slices':>7s} {'fit s':>7s} {'train+calibrate s':>18s}")
    print(f"{len(head.labels):8d} {head.summary['tracks']:7d} {head.summary['slices']:7d} "
          f"{head.summary['fit_seconds']:7.1f} {total:18.1f}")


if __name__ == "__main__":
    main()
