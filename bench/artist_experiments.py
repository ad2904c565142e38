"""Head experiments on a cached corpus index (bench/corpus_cache.py): one lever at a time.

    python bench/artist_experiments.py data/dev-cache-h15.sqlite3 [--query-seconds 30] [--only NAME]

Test queries are the middle `query-seconds` of each test track, taken from the cached whole-track
slices (the same windows `spy eval` decodes). Training uses split=train only. Prints one table row per
configuration: song-level top-1 / top-5 / macro top-1 (mean-probability vote unless stated), slice top-1.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import (
    heads,  # noqa: E402
    voting,  # noqa: E402
)
from classifier.model.heads import Dataset  # noqa: E402
from classifier.store.index import Index  # noqa: E402

WIN = 2.976


def middle(ds: Dataset, seconds: float) -> list[tuple[int, np.ndarray]]:
    out = []
    for t in np.unique(ds.track):
        idx = np.flatnonzero(ds.track == t)
        s = ds.starts[idx]
        mid = (s.min() + s.max() + WIN) / 2
        sel = idx[(s >= mid - seconds / 2 - 1e-6) & (s + WIN <= mid + seconds / 2 + 1e-6)]
        if len(sel) == 0:
            sel = idx
        out.append((int(ds.y[idx[0]]), sel))
    return out


def thin(ds: Dataset, every: int) -> Dataset:
    keep = np.zeros(len(ds.y), bool)
    for t in np.unique(ds.track):
        idx = np.flatnonzero(ds.track == t)
        keep[idx[::every]] = True
    return Dataset(ds.embedding[keep], ds.pooled[keep], ds.starts[keep], ds.y[keep], ds.track[keep], ds.labels)


def limit(ds: Dataset, seconds: float) -> Dataset:
    keep = np.zeros(len(ds.y), bool)
    for t in np.unique(ds.track):
        idx = np.flatnonzero(ds.track == t)
        s = ds.starts[idx]
        mid = (s.min() + s.max() + WIN) / 2
        keep[idx[(s >= mid - seconds / 2) & (s + WIN <= mid + seconds / 2 + 1e-6)]] = True
    return Dataset(ds.embedding[keep], ds.pooled[keep], ds.starts[keep], ds.y[keep], ds.track[keep], ds.labels)


def evaluate(train: Dataset, test: Dataset, cfg: heads.HeadConfig, q: float, rule: str | None = None,
             query_every: int = 1) -> dict:
    t0 = time.perf_counter()
    model, mean, scale = heads.fit(train, cfg)
    fit_s = time.perf_counter() - t0
    xt = heads.features_of(cfg.feature, test.embedding, test.pooled)
    p_all = np.asarray(model(((xt - mean) / scale).astype(np.float32), training=False))
    hits, hits5, sl, sn, per = [], [], 0, 0, {}
    for y, sel in middle(test, q):
        sel = sel[::query_every]
        p = p_all[sel]
        r = voting.rank(p, train.labels, k=5, rule=rule or cfg.rule)
        h = r.candidates[0].label == train.labels[y]
        hits.append(h)
        hits5.append(train.labels[y] in [c.label for c in r.candidates])
        sl += int((p.argmax(1) == y).sum())
        sn += len(sel)
        per.setdefault(y, []).append(h)
    return {"top1": np.mean(hits), "top5": np.mean(hits5), "macro": np.mean([np.mean(v) for v in per.values()]),
            "slice": sl / sn, "fit_s": fit_s, "n": len(hits)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--query-seconds", type=float, default=30.0)
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    with Index(args.db) as index:
        train = index.dataset(split="train")
        test_all = index.dataset(split="test")
    lab = {n: i for i, n in enumerate(train.labels)}
    test = Dataset(test_all.embedding, test_all.pooled, test_all.starts,
                   np.array([lab[test_all.labels[y]] for y in test_all.y]), test_all.track, train.labels)
    base = heads.HeadConfig()
    R = dataclasses.replace
    lin = R(base, hidden=0, noise=0.0, dropout=0.0)
    configs = {
        "linear embedding (baseline), mean": (train, R(lin, feature="embedding"), "mean"),
        "linear pooled l2 3e-3, mean": (train, R(lin, l2=3e-3), "mean"),
        "linear pooled l2 3e-3, logmean": (train, R(lin, l2=3e-3), "logmean"),
        "linear pooled l2 3e-3, majority": (train, R(lin, l2=3e-3), "majority"),
        "linear pooled l2 1e-3, logmean": (train, R(lin, l2=1e-3), "logmean"),
        "linear pooled l2 1e-2, logmean": (train, R(lin, l2=1e-2), "logmean"),
        "linear pooled l2 3e-3 no balance, logmean": (train, R(lin, l2=3e-3, balance="none"), "logmean"),
        "linear pooled l2 3e-3 hop 3 s train, logmean": (thin(train, 2), R(lin, l2=3e-3), "logmean"),
        "linear pooled l2 3e-3 60 s/track, logmean": (limit(train, 60), R(lin, l2=3e-3), "logmean"),
        "linear pooled l2 3e-3 noise 0.1, logmean": (train, R(lin, l2=3e-3, noise=0.1), "logmean"),
        "mlp256 pooled, logmean": (train, base, "logmean"),
        "linear pooled l2 3e-3 100 epochs, logmean": (train, R(lin, l2=3e-3, epochs=100, solver="adam"), "logmean"),
        "linear pooled l2 3e-3 L-BFGS, logmean": (train, R(lin, l2=3e-3, solver="lbfgs"), "logmean"),
        "linear pooled l2 3e-3 L-BFGS, mean": (train, R(lin, l2=3e-3, solver="lbfgs"), "mean"),
        "linear pooled l2 3e-3 Adam 40 epochs, logmean": (train, R(lin, l2=3e-3, solver="adam"), "logmean"),
        "linear pooled l2 3e-3 100 ep lr 3e-3, logmean": (train, R(lin, l2=3e-3, epochs=100, learning_rate=3e-3, solver="adam"), "logmean"),
    }
    print(f"{'configuration':40s} {'top1':>6s} {'top5':>6s} {'macro':>6s} {'slice':>6s} {'fit s':>6s}  (q={args.query_seconds:.0f}s)")
    for name, (tr, cfg, rule) in configs.items():
        if args.only and args.only not in name:
            continue
        r = evaluate(tr, test, cfg, args.query_seconds, rule)
        print(f"{name:40s} {r['top1']:6.3f} {r['top5']:6.3f} {r['macro']:6.3f} {r['slice']:6.3f} {r['fit_s']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
