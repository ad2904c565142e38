"""The "I don't know" threshold, chosen on held-out chunks of the training tracks themselves."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from classifier.model import voting
from classifier.model.heads import Dataset, HeadConfig, features_of, fit

__all__ = ["CALIBRATION_SECONDS", "calibrate", "choose_threshold", "held_out_chunks"]


# Clip lengths the threshold is calibrated on: a voice note, a link's window, a long upload.
CALIBRATION_SECONDS = (10.0, 30.0, 60.0, 120.0)


def _query_chunks(ds: Dataset, seconds: float, hop_s: float) -> list[tuple[int, np.ndarray]]:
    """Consecutive non-overlapping `seconds`-long chunks per track, sliced as a query would be.

    Enrolment stores a slice every 1.5 s; a query is sliced every `hop_s` (3 s). Each chunk keeps only
    slices at least `hop_s` apart, so it has as many slices as a real query of that length.
    Returns (artist, slice indices) pairs: whole chunks only, or the whole track (3 slices or more)
    when it is shorter than one chunk.
    """
    full = int((seconds - 2.976 + 1e-6) // hop_s) + 1     # slices in a whole chunk
    out = []
    for t in np.unique(ds.track):
        idx = np.flatnonzero(ds.track == t)
        idx = idx[np.argsort(ds.starts[idx], kind="stable")]
        lo = float(ds.starts[idx[0]])
        chunks: dict[int, list[int]] = {}
        last: dict[int, float] = {}
        for i in idx:    # one pass: a slice joins its chunk if it fits inside and is hop_s past the last one
            st = float(ds.starts[i])
            c = int((st - lo + 1e-6) // seconds)
            if st + 2.976 <= lo + (c + 1) * seconds + 1e-6 and st >= last.get(c, -np.inf) + hop_s - 1e-3:
                chunks.setdefault(c, []).append(int(i))
                last[c] = st
        # whole chunks only (a 9-s tail is not a 30-s query), unless the track is shorter than one chunk:
        # then, like a query of that track, it is all there is
        whole = [sel for _, sel in sorted(chunks.items()) if len(sel) >= full]
        if not whole and len(chunks) == 1 and len(chunks[0]) >= 3:
            whole = [chunks[0]]
        out += [(int(ds.y[sel[0]]), np.array(sel)) for sel in whole]
    return out


def held_out_chunks(ds: Dataset, cfg: HeadConfig, *, lengths: tuple[float, ...] = CALIBRATION_SECONDS,
                    hop_s: float = 3.0, folds: int = 3,
                    seed: int = 0) -> Iterator[tuple[float, str | None, np.ndarray, tuple[str, ...]]]:
    """Query-like chunks of training tracks, each scored by a head that never saw its track.

    Tracks are split into `folds` groups; each fold trains on the others and scores chunks of its
    held-out tracks, `lengths` seconds long and sliced every `hop_s` seconds as queries are. In each
    fold about one artist in nine (at least one, a different set per fold) is also left out entirely,
    so its chunks play the part of tracks by artists nobody enrolled.

    Yields (chunk seconds, the chunk's artist or None if that fold's head does not know it,
    per-slice probabilities (n, k), that head's k labels).
    """
    rng = np.random.default_rng(seed)
    tracks = np.unique(ds.track)
    rng.shuffle(tracks)
    fold_of = {int(t): i % folds for i, t in enumerate(tracks)}
    artists = np.arange(len(ds.labels))
    rng.shuffle(artists)
    for f in range(folds):
        unknown = set(int(a) for a in artists[f::folds][:max(1, len(artists) // (folds * 3))])
        test_mask = np.array([fold_of[int(t)] == f for t in ds.track])
        train_mask = ~test_mask & ~np.isin(ds.y, list(unknown))
        kept = sorted(set(np.unique(ds.y[train_mask]).tolist()))
        if len(kept) < 2:
            continue
        remap = {a: i for i, a in enumerate(kept)}
        sub = Dataset(ds.embedding[train_mask], ds.pooled[train_mask], ds.starts[train_mask],
                      np.array([remap[int(a)] for a in ds.y[train_mask]]), ds.track[train_mask],
                      tuple(ds.labels[a] for a in kept))
        model, mean, scale = fit(sub, cfg)
        test = Dataset(ds.embedding[test_mask], ds.pooled[test_mask], ds.starts[test_mask], ds.y[test_mask],
                       ds.track[test_mask], ds.labels)
        x_all = features_of(cfg.feature, test.embedding, test.pooled)
        p_all = np.asarray(model(((x_all - mean) / scale).astype(np.float32), training=False))
        for seconds in lengths:
            for artist, sel in _query_chunks(test, seconds, hop_s):
                yield seconds, (ds.labels[artist] if artist in remap else None), p_all[sel], sub.labels


def calibrate(ds: Dataset, cfg: HeadConfig, *, lengths: tuple[float, ...] = CALIBRATION_SECONDS,
              hop_s: float = 3.0, folds: int = 3, seed: int = 0) -> tuple[float, dict[str, Any]]:
    """Choose the "I don't know" threshold on held-out data from the training set itself.

    On `held_out_chunks` (chunks of held-out training tracks, some by artists left out entirely),
    the threshold on the winner's score is the one that minimises false accepts (wrong or
    non-enrolled winner accepted) plus false rejects (right winner refused), averaged over the
    lengths so that each length counts the same (on the dev corpus the best threshold for each
    length alone showed no trend with the length, so one threshold from all the chunks is kept
    rather than four, each from a quarter of them). On dev the winner's score separated right
    from wrong better than its margin over the runner-up, its vote share or its mean
    probability (bench/confidence_rules.py).

    Returns (threshold, rates): the rates at that threshold, over all lengths and per length.
    """
    right: dict[float, list[float]] = {s: [] for s in lengths}
    wrong: dict[float, list[float]] = {s: [] for s in lengths}
    for seconds, artist, probs, labels in held_out_chunks(ds, cfg, lengths=lengths, hop_s=hop_s, folds=folds,
                                                           seed=seed):
        c = voting.rank(probs, labels, k=1, rule=cfg.rule).candidates[0]  # type: ignore[arg-type]
        (right if c.label == artist else wrong)[seconds].append(c.score)
    threshold, rates = choose_threshold({s: np.array(v) for s, v in right.items()},
                                        {s: np.array(v) for s, v in wrong.items()})
    return threshold, {**rates, "hop_s": hop_s}


def choose_threshold(right: dict[float, np.ndarray], wrong: dict[float, np.ndarray]) -> tuple[float, dict[str, Any]]:
    """The score threshold minimising false accepts + false rejects, averaged over clip lengths.

    right / wrong : clip length -> winner scores of chunks whose winner was right / wrong (or not enrolled)
    Lengths without chunks on both sides are left out. Returns (threshold, rates at it).
    """
    used = [s for s in right if len(right[s]) and len(wrong.get(s, ()))]
    if not used:
        return 0.0, {"n_right": int(sum(map(len, right.values()))), "n_wrong": int(sum(map(len, wrong.values())))}

    def rates_at(t: float, s: float) -> tuple[float, float]:
        return float(np.mean(wrong[s] >= t)), float(np.mean(right[s] < t))

    grid = np.unique(np.concatenate([*(right[s] for s in used), *(wrong[s] for s in used), [0.0]]))
    _, best = min((float(np.mean([sum(rates_at(t, s)) for s in used])), float(t)) for t in grid)
    by_length = {f"{s:g}": dict(zip(("false_accept", "false_reject"), rates_at(best, s)),
                                n_right=len(right[s]), n_wrong=len(wrong[s])) for s in used}
    return best, {"threshold": best,
                  "false_accept": float(np.mean([v["false_accept"] for v in by_length.values()])),
                  "false_reject": float(np.mean([v["false_reject"] for v in by_length.values()])),
                  "n_right": sum(v["n_right"] for v in by_length.values()),
                  "n_wrong": sum(v["n_wrong"] for v in by_length.values()), "by_length": by_length}
