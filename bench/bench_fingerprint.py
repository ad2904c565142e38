"""Known-track fingerprint benchmark: recall per playing condition, false matches, query time, index size.

    python bench/bench_fingerprint.py [--manifest ../shared/corpus/dev.csv] [--big-hours 500]

1. Enrol every *train* track of the manifest as known: decode at 8 kHz (the real path), peaks into a real
   SQLite file (store/fingerprints.py), then load the in-memory index from it, as the service will.
2. Queries: one 10-s window of every train track and one 30-s window of every third, at a seeded random
   place, under each condition of bench/fp_conditions.py (ffmpeg for Opus/tempo/pitch/EQ). A query is
   right when the match names its track; a match naming another track is a false match.
3. Non-enrolled: every non-overlapping 10-s and 30-s window of every *test* track (not enrolled). Any match
   there is a false match. The decision threshold (known.MIN_COVERAGE, MIN_HITS) is compared with the
   best score any of them reached: the margin.
4. A large library: the train tracks' peak constellations copied at other pitches (+-4..23 bins of 1/24
   octave, with time scaled as vinyl would) until it holds >= --big-hours of audio; index bytes per hour
   and query time (peaks + lookup, measured apart) against it, and recall of clean 10-s windows there.
   These copies are *not* real recordings: their peak statistics are music's, moved in pitch and time.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fp_conditions as cond  # noqa: E402

from classifier.audio import fingerprint as fp  # noqa: E402
from classifier.model.known import KnownTracks, TrackRef  # noqa: E402
from classifier.store import db  # noqa: E402
from classifier.store import fingerprints as store  # noqa: E402
from classifier.training.fingerprints import fingerprint_file  # noqa: E402


def enrol(train: list[dict[str, str]], path: Path) -> tuple[KnownTracks, list[fp.Peaks], int, float]:
    """Peaks of each train track into SQLite, then the index from SQLite. -> (index, peaks, blob bytes, s)"""
    conn = db.connect(path)
    t0 = time.perf_counter()
    with db.transaction(conn) as c:
        for i, row in enumerate(train):
            c.execute("INSERT OR IGNORE INTO artists(name, created) VALUES (?, 0)", (row["artist"],))
            aid = c.execute("SELECT id FROM artists WHERE name = ?", (row["artist"],)).fetchone()[0]
            c.execute("INSERT INTO tracks(id, artist_id, title, source, duration_s, content_hash, split, backbone,"
                      " hop_s, n_slices, added) VALUES (?,?,?,?,?,?,?,?,?,?,0)",
                      (i + 1, aid, row["title"], row["path"], float(row["duration_s"]), f"h{i}", "train", "fp",
                       3.0, 0))
    peaks = []
    for i, row in enumerate(train):
        peaks.append(fingerprint_file(Path(row["path"])))
        store.save(conn, i + 1, peaks[-1], fp.PARAMS.version)
    extract_s = time.perf_counter() - t0
    blob = conn.execute("SELECT SUM(length(peaks)) FROM fingerprints").fetchone()[0]
    index = store.load_known(conn, fp.PARAMS.version)
    conn.close()
    return index, peaks, int(blob), extract_s


def queries(index: KnownTracks, train: list[dict[str, str]], others: list[dict[str, str]],
            rng: np.random.Generator, every: int) -> dict[tuple[str, int], list[tuple[float, int, bool]]]:
    """(condition, seconds) -> [(coverage, hits, names the right track)] of each query's best candidate."""
    out: dict[tuple[str, int], list[tuple[float, int, bool]]] = {}
    for k, row in enumerate(train):
        if k % every:
            continue
        dur = float(row["duration_s"])
        for seconds in (10, 30):
            if seconds == 30 and k % (3 * every):
                continue
            start = float(rng.uniform(0, max(0.0, dur - seconds * 1.1 - 1)))
            other = others[k % len(others)]
            for c in cond.CONDITIONS:
                clip = cond.render(c, Path(row["path"]), start, seconds, other=Path(other["path"]),
                                   other_start=float(rng.uniform(0, max(0.0, float(other["duration_s"]) - seconds))),
                                   seed=k)
                cand = index.best(clip)
                out.setdefault((c, seconds), []).append(
                    (0.0, 0, False) if cand is None else (cand.coverage, cand.hits, cand.track.track_id == k + 1))
        print(f"  queried {k + 1}/{len(train)}", end="\r", file=sys.stderr, flush=True)
    return out


def negatives(index: KnownTracks, test: list[dict[str, str]]) -> tuple[int, int, list[tuple[float, int, str]]]:
    """(windows, false matches, the best (coverage, hits, what) scores) over non-enrolled windows."""
    n = false = 0
    scores: list[tuple[float, int, str]] = []
    for row in test:
        wave = cond.decode(Path(row["path"]))
        for seconds in (10, 30):
            size = seconds * cond.SR
            for s in range(0, wave.size - size + 1, size):
                cand = index.best(wave[s:s + size])
                n += 1
                if cand is not None:
                    scores.append((cand.coverage, cand.hits, f"{row['title']} @{s // cond.SR}s/{seconds}s -> "
                                   f"{cand.track.title}"))
                    false += cand.hits >= index.min_hits and cand.coverage >= index.min_coverage
    scores.sort(reverse=True)
    return n, false, scores


def big_library(base: KnownTracks, peaks: list[fp.Peaks], hours: float) -> tuple[KnownTracks, float]:
    """Copies of the corpus constellations at other pitches (vinyl-style time scaling) up to `hours`."""
    entries = [(ref, p) for ref, p in zip(base.refs, peaks)]
    shifts = [k for k in range(4, 24)] + [-k for k in range(4, 24)]
    copy = 0
    total = base.hours
    while total < hours:
        k = shifts[copy % len(shifts)]
        tempo = 1.0 + 0.02 * ((copy // len(shifts)) + 1)
        scale = 2.0 ** (-k / 24) * tempo
        for ref, p in zip(base.refs, peaks):
            f = p.f.astype(np.int64) + k
            keep = (f >= 0) & (f < fp.PARAMS.n_bins)
            t = np.round(p.t[keep].astype(np.float64) * scale).astype(np.int64)
            order = np.lexsort((f[keep], t))
            entries.append((TrackRef(-1, ref.artist, f"{ref.title} (copy {copy})"),
                            fp.Peaks(t[order].astype(np.uint32), f[keep][order].astype(np.uint8),
                                     int(p.n_frames * scale) + 1)))
            total += p.n_frames * scale * fp.PARAMS.frame_s / 3600
        copy += 1
    t0 = time.perf_counter()
    big = KnownTracks.build(entries)
    return big, time.perf_counter() - t0


def timing(index: KnownTracks, clips: list[np.ndarray], want: list[int]) -> dict[str, float]:
    t_peaks, t_match, right = [], [], 0
    for clip, track in zip(clips, want):
        t0 = time.perf_counter()
        p = fp.peaks(clip)
        t1 = time.perf_counter()
        m = index.match(p)
        t2 = time.perf_counter()
        t_peaks.append(t1 - t0)
        t_match.append(t2 - t1)
        right += m is not None and m.track_id == track
    total = np.add(t_peaks, t_match) * 1000
    return {"peaks_ms": float(np.median(t_peaks) * 1000), "match_ms": float(np.median(t_match) * 1000),
            "total_ms": float(np.median(total)), "total_p95_ms": float(np.percentile(total, 95)),
            "recall": right / len(clips)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=Path("/work/shared/corpus/dev.csv"))
    ap.add_argument("--big-hours", type=float, default=500.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=1, help="query every n-th enrolled track (time on a busy box)")
    args = ap.parse_args()
    with open(args.manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    rng = np.random.default_rng(args.seed)
    print(f"load at start: {os.getloadavg()}; {len(train)} enrolled tracks, {len(test)} not enrolled")

    with tempfile.TemporaryDirectory() as tmp:
        index, peaks, blob, extract_s = enrol(train, Path(tmp) / "index.sqlite3")
    hours = index.hours
    print(f"enrolled {hours:.2f} h in {extract_s:.0f} s (decode + peaks); thresholds: coverage >= "
          f"{index.min_coverage}, hits >= {index.min_hits}")

    t0 = time.perf_counter()
    res = queries(index, train, test, rng, args.every)
    print(f"\n{sum(len(v) for v in res.values())} condition queries in {time.perf_counter() - t0:.0f} s")
    def accepted(cov: float, hits: int) -> bool:
        return hits >= index.min_hits and cov >= index.min_coverage

    print(f"\n{'condition':<10} {'recall 10s':>11} {'n':>4} {'recall 30s':>11} {'n':>4} {'wrong-track':>12}")
    for c in cond.CONDITIONS:
        r10, r30 = res[(c, 10)], res[(c, 30)]
        wrong = sum(accepted(v, h) and not ok for v, h, ok in r10 + r30)
        rec10 = np.mean([accepted(v, h) and ok for v, h, ok in r10])
        rec30 = np.mean([accepted(v, h) and ok for v, h, ok in r30])
        print(f"{c:<10} {rec10:>11.3f} {len(r10):>4} {rec30:>11.3f} {len(r30):>4} {wrong:>12}")

    n_neg, false, scores = negatives(index, test)
    print(f"\nnon-enrolled windows: {n_neg}, false matches: {false}")
    above = [s for s in scores if s[1] >= index.min_hits]
    top = above[0] if above else (0.0, 0, "-")
    print(f"best non-enrolled coverage with hits >= {index.min_hits}: {top[0]:.3f} ({top[2]}); "
          f"threshold {index.min_coverage}: margin {index.min_coverage - top[0]:+.3f}")
    print("five best non-enrolled candidates (coverage, hits):",
          [(round(c, 3), h) for c, h, _ in scores[:5]])
    print("most hits of a non-enrolled candidate:", max((h, round(c, 3), w) for c, h, w in scores) if scores else None)
    # the same queries at other thresholds: what the choice costs and buys
    print(f"\n{'hits>=':>6} {'cov>=':>6} {'false(non-enr.)':>15} {'wrong-track':>11} " +
          " ".join(f"{c:>8}" for c in cond.CONDITIONS) + "   (10-s recall)")
    for mh in (8, 10, 12, 15):
        for mc in (0.25, 0.30, 0.35, 0.40):
            fm = sum(h >= mh and c >= mc for c, h, _ in scores)
            wr = sum(h >= mh and v >= mc and not ok for vals in res.values() for v, h, ok in vals)
            recs = [np.mean([h >= mh and v >= mc and ok for v, h, ok in res[(c, 10)]]) for c in cond.CONDITIONS]
            print(f"{mh:>6} {mc:>6.2f} {fm:>15} {wr:>11} " + " ".join(f"{r:>8.3f}" for r in recs))

    # the large library: sizes and time
    big, build_s = big_library(index, peaks, args.big_hours)
    clips, want = [], []
    for k, row in enumerate(train[:100]):
        start = float(rng.uniform(0, max(0.0, float(row["duration_s"]) - 11)))
        clips.append(cond.decode(Path(row["path"]), start, 10.0))
        want.append(k + 1)
    t_small = timing(index, clips, want)
    t_big = timing(big, clips, want)
    print(f"\nlarge library: {big.hours:.0f} h, {len(big)} tracks, {big.n_hashes / 1e6:.0f} M hashes, built in "
          f"{build_s:.0f} s")
    print(f"{'index':<8} {'hours':>6} {'MB in RAM':>10} {'MB/h RAM*':>9} {'peaks ms':>9} {'match ms':>9} "
          f"{'total ms':>9} {'p95 ms':>7} {'recall':>7}")
    for name, idx, t in (("dev", index, t_small), ("large", big, t_big)):
        per_hour = (idx.nbytes - idx.starts.nbytes) / 1e6 / idx.hours
        print(f"{name:<8} {idx.hours:>6.1f} {idx.nbytes / 1e6:>10.1f} {per_hour:>9.2f} "
              f"{t['peaks_ms']:>9.1f} {t['match_ms']:>9.1f} {t['total_ms']:>9.1f} {t['total_p95_ms']:>7.1f} "
              f"{t['recall']:>7.3f}")
    print(f"* per hour of audio, beside the fixed lookup table of {index.starts.nbytes / 1e6:.0f} MB")
    print(f"on disk (SQLite blobs of peaks): {blob / 1e6 / hours:.2f} MB per hour of audio")
    print(f"load at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
