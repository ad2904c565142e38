"""Helpers for the tracklist and robustness benchmarks: corpus rows, mixes, cached analyses, the dev head, metrics.

Nothing here is product code: it reads the dev corpus (never in tests/CI) and writes under data/.
"""
from __future__ import annotations

import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from classifier import pipeline  # noqa: E402
from classifier.model import heads, voting  # noqa: E402
from classifier.model.setlist import Tracklist  # noqa: E402
from classifier.training import calibrate, mixes  # noqa: E402

WIN = 2.976


def corpus(manifest: Path, split: str, *, min_seconds: float = 0.0) -> list[mixes.Source]:
    """The manifest's rows of one split (at least `min_seconds` long) as mix sources."""
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split and float(r["duration_s"]) >= min_seconds]
    return [mixes.Source(Path(r["path"]), r["artist"], r["title"], float(r["duration_s"])) for r in rows]


def build_mixes(manifest: Path, out: Path, *, split: str, count: int, n_tracks: int, seed: int,
                prefix: str) -> list[Path]:
    """Plan and render `count` mixes of `n_tracks` excerpts from one split; skip those already there."""
    out.mkdir(parents=True, exist_ok=True)
    sources = corpus(manifest, split, min_seconds=120.0)   # excerpts of 2-4 minutes need 2 minutes of track
    done = []
    for m in range(count):
        truth = out / f"{prefix}{m + 1}.json"
        if not truth.exists():
            rng = np.random.default_rng([seed, m, 0 if split == "test" else 1])
            plan = mixes.plan_mix(sources, rng, n_tracks=n_tracks)
            t0 = time.perf_counter()
            mix = mixes.render_mix(plan, out / f"{prefix}{m + 1}.mp3")
            mix.save(truth)
            print(f"{truth.stem}: {len(mix.tracks)} tracks, {mix.seconds / 60:.1f} min, rendered in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        done.append(truth)
    return done


def analyse_cached(mp3: Path, backbone, *, hop_s: float = 3.0) -> pipeline.Analysis:  # noqa: ANN001
    """pipeline.analyse at `hop_s` with pooled features, cached beside the file as .h<hop>.npz."""
    cache = mp3.with_suffix(f".h{hop_s:g}.npz")
    if cache.exists():
        z = np.load(cache)
        return pipeline.Analysis(
            seconds=float(z["seconds"]), offset_s=0.0, starts_s=z["starts"], tags={backbone.name: z["tags"]},
            labels={backbone.name: backbone.labels}, embedding=z["embedding"], pooled=z["pooled"].astype(np.float32),
            rms_dbfs=float(z["rms"]), timings={k: float(z["t_" + k]) for k in ("decode", "features", "network", "total")})
    a = pipeline.analyse(mp3, [backbone], hop_s=hop_s, keep_pooled=True)
    assert a.pooled is not None
    np.savez(cache, seconds=a.seconds, starts=a.starts_s, tags=a.tags[backbone.name], embedding=a.embedding,
             pooled=a.pooled.astype(np.float16), rms=a.rms_dbfs, **{"t_" + k: v for k, v in a.timings.items()})
    return a


def dev_head(cache_db: Path, folder: Path) -> heads.Head:
    """The product's default head trained on the cache's train split and calibrated as `spy train` does."""
    if (folder / "head.json").exists():
        return heads.Head.load(folder)
    from classifier.store.index import Index

    with Index(cache_db) as index:
        ds = thin(index.dataset(split="train"))
    cfg = heads.HeadConfig()
    model, mean, scale = heads.fit(ds, cfg)
    threshold, rates = calibrate.calibrate(ds, cfg, hop_s=3.0)
    head = heads.Head("dev-train", ds.labels, "msd_musicnn", cfg, mean, scale, model, threshold,
                      summary={"slices": int(len(ds.y)), "calibration": rates})
    head.save(folder)
    return head


def thin(ds: heads.Dataset, hop_s: float = 3.0) -> heads.Dataset:
    """Keep slices on a `hop_s` grid (plus each track's last slice): the cache holds tracks enrolled every 1.5 s
    and every 3 s; the benchmark head trains on every 3 s alike (README: 1.5 s gained nothing measurable)."""
    on_grid = np.abs(ds.starts / hop_s - np.round(ds.starts / hop_s)) < 1e-3
    last = np.r_[ds.track[1:] != ds.track[:-1], True]
    keep = on_grid | last
    return heads.Dataset(ds.embedding[keep], ds.pooled[keep], ds.starts[keep], ds.y[keep], ds.track[keep], ds.labels)


# -- metrics ------------------------------------------------------------------------------------------
def boundary_prf(truth: mixes.Mix, tl: Tracklist, window: float) -> tuple[float, float, float]:
    """mir_eval's segment boundary detection (start and end of the set trimmed) within +-window seconds."""
    import mir_eval

    est = np.array([[s.start_s, s.end_s] for s in tl.segments])
    ref = truth.intervals()
    est[-1, 1] = ref[-1, 1] = max(est[-1, 1], ref[-1, 1])   # same end: only inner boundaries count
    est[0, 0] = ref[0, 0] = 0.0
    return mir_eval.segment.detection(ref, est, window=window, trim=True)


def solo_overlap(truth: mixes.Mix, intervals: list[tuple[float, float, list[str]]]) -> tuple[float, float, float]:
    """Time-weighted top-1 and top-5 over the truth's solo parts (outside transitions).

    intervals : (start, end, ranked artist names) covering the set
    Returns (top-1, top-5, seconds of solo time).
    """
    hit1 = hit5 = total = 0.0
    for t in truth.tracks:
        a, b = t.solo_start_s, t.solo_end_s
        total += max(0.0, b - a)
        for s, e, names in intervals:
            ov = max(0.0, min(b, e) - max(a, s))
            if ov and names:
                hit1 += ov * (names[0] == t.artist)
                hit5 += ov * (t.artist in names[:5])
    return hit1 / total, hit5 / total, total


def tracklist_intervals(tl: Tracklist) -> list[tuple[float, float, list[str]]]:
    return [(s.start_s, s.end_s, [c.label for c in s.artists]) for s in tl.segments]


def fixed_windows(a: pipeline.Analysis, head: heads.Head, seconds: float = 30.0) -> list[tuple[float, float, list[str]]]:
    """What fixed-window tools do: every `seconds` of the set voted on its own (same head, same rule)."""
    probs = head.predict(heads.features_of(head.config.feature, a.embedding, a.pooled))
    out = []
    for w0 in np.arange(0.0, a.seconds, seconds):
        sel = np.flatnonzero((a.starts_s >= w0 - 1e-6) & (a.starts_s + WIN <= w0 + seconds + 1e-6))
        if sel.size == 0:
            continue
        r = voting.rank(probs[sel], head.labels, k=5, rule=head.config.rule)  # type: ignore[arg-type]
        out.append((float(w0), float(min(w0 + seconds, a.seconds)), [c.label for c in r.candidates]))
    return out
