"""Which number should decide "I don't know"? Four confidence statistics, calibrated and tested alike.

    python bench/confidence_rules.py data/dev-cache-h15.sqlite3

Reads the cache index that bench/corpus_cache.py builds. For each statistic of a clip's log-mean vote:

- calibration: the product's own held-out chunks (`calibrate.held_out_chunks`: 3 folds over the training
  tracks, some artists left out entirely; 10/30/60/120-s chunks sliced every 3 s). The threshold
  minimising false accepts + false rejects averaged over the lengths (`calibrate.choose_threshold`, what
  `spy train` does for the winner's score), and the rates there.
- test: that threshold applied to the 44 test tracks' middle 30 s (3-s hop, both offsets of the
  cached 1.5-s grid: 88 queries), scored by the head trained on all training tracks (false accept,
  false reject), and by four heads each trained without a quarter of the artists, so that every test
  track is also queried as a non-enrolled artist's (as `spy eval` does).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feature_variants import middle_windows, splits  # noqa: E402

from classifier.model import (
    heads,  # noqa: E402
    voting,  # noqa: E402
)
from classifier.training import calibrate  # noqa: E402
from classifier.training.evaluate import unknown_heads  # noqa: E402

Statistic = Callable[[voting.Ranking, np.ndarray], float]   # (log-mean ranking, slice probabilities) -> number

STATISTICS: dict[str, Statistic] = {
    "winner's log-mean score (product)": lambda r, p: r.candidates[0].score,
    "margin over the runner-up": lambda r, p: r.candidates[0].score - r.candidates[1].score,
    "winner's vote share": lambda r, p: r.vote_share,
    "winner's mean probability": lambda r, p: float(p[:, int(np.argmax(np.log(np.clip(p, 1e-12, 1)).mean(0)))].mean()),
}


def stats_of(probs: np.ndarray, labels: tuple[str, ...]) -> tuple[str, dict[str, float]]:
    r = voting.rank(probs, labels, k=2, rule="logmean")
    return r.candidates[0].label, {name: float(f(r, probs)) for name, f in STATISTICS.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    args = ap.parse_args()
    train, test, y_te = splits(args.db)
    cfg = heads.HeadConfig()

    cal: dict[str, tuple[dict[float, list[float]], dict[float, list[float]]]] = {
        n: ({s: [] for s in calibrate.CALIBRATION_SECONDS}, {s: [] for s in calibrate.CALIBRATION_SECONDS})
        for n in STATISTICS}
    for seconds, artist, probs, labels in calibrate.held_out_chunks(train, cfg):
        winner, st = stats_of(probs, labels)
        for name, v in st.items():
            cal[name][0 if winner == artist else 1][seconds].append(v)

    model, mean, scale = heads.fit(train, cfg)
    heads_u = unknown_heads(train, cfg)
    p_te = np.asarray(model(((test.pooled - mean) / scale).astype(np.float32), training=False))
    known: list[tuple[bool, dict[str, float]]] = []
    unknown: list[dict[str, float]] = []
    for offset in (0, 1):
        for sel in middle_windows(test.starts, test.track, offset=offset):
            winner, st = stats_of(p_te[sel], train.labels)
            known.append((winner == train.labels[y_te[sel[0]]], st))
            for held_out, sub_labels, (m, mu, sd) in heads_u:
                if int(y_te[sel[0]]) in held_out:
                    pu = np.asarray(m(((test.pooled[sel] - mu) / sd).astype(np.float32), training=False))
                    unknown.append(stats_of(pu, sub_labels)[1])

    n_right = sum(len(v) for v in cal[next(iter(STATISTICS))][0].values())
    n_wrong = sum(len(v) for v in cal[next(iter(STATISTICS))][1].values())
    print(f"calibration chunks: {n_right} right, {n_wrong} wrong or non-enrolled; test: {len(known)} queries, "
          f"{len(unknown)} as non-enrolled")
    print(f"{'statistic':36s} {'threshold':>9s} | {'cal FA+FR':>9s} {'FA':>5s} {'FR':>5s} | "
          f"{'test FA':>7s} {'FR':>5s} {'non-enrolled':>12s}")
    ok = np.array([k[0] for k in known])
    for name in STATISTICS:
        right, wrong = cal[name]
        t, rates = calibrate.choose_threshold({s: np.array(v) for s, v in right.items()},
                                            {s: np.array(v) for s, v in wrong.items()})
        v = np.array([k[1][name] for k in known])
        u = np.array([k[name] for k in unknown])
        print(f"{name:36s} {t:9.3f} | {rates['false_accept'] + rates['false_reject']:9.3f} "
              f"{rates['false_accept']:5.2f} {rates['false_reject']:5.2f} | {np.mean(v[~ok] >= t):7.2f} "
              f"{np.mean(v[ok] < t):5.2f} {np.mean(u >= t):12.2f}", flush=True)


if __name__ == "__main__":
    main()
