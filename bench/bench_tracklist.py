"""Tracklists of synthetic DJ mixes: boundaries, per-segment artists, the fixed-window baseline, speed.

    python bench/bench_tracklist.py build ../shared/corpus/dev.csv data/mixes     # render the mixes (once)
    python bench/bench_tracklist.py eval data/mixes data/dev-cache-h15.sqlite3     # tables (analyses cached)
    python bench/bench_tracklist.py speed data/mixes data/dev-cache-h15.sqlite3    # 3-hour set vs pipeline

Mixes (training/mixes.py): 12 excerpts of 2-4 minutes (never longer than the track; tracks under 2 minutes
are not used), tempo uniform within +-6 %, key lock (rubberband) on half of them and vinyl-style (pitch
moves with tempo) on the other half, equal-power crossfades of 8-32 s, MP3 128 kb/s. "test" mixes use the
dev corpus' *test* tracks only; "tune" mixes use its *training* tracks and are only for choosing the
segmentation's parameters (the head was trained on those tracks, so their artist accuracy means nothing).
The head is the product's default, trained and calibrated on the training split of the cache index
(bench/corpus_cache.py) as `spy train` does.

Metrics: boundary precision/recall/F (mir_eval.segment.detection, the set's start and end trimmed) within
+-10 s and +-20 s of the middle of each crossfade, pooled over mixes (hits summed); time-weighted top-1 and
top-5 of the segments' artists over each track's solo part (outside both of its crossfades); the same for
"fixed windows": every 30 s of the set voted on its own with the same head and vote rule.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mixbench  # noqa: E402

from classifier.tracklist import TracklistParams, tracklist  # noqa: E402
from classifier.training import mixes  # noqa: E402

SET_SECONDS = 3 * 3600.0


def _mixes(folder: Path, prefix: str) -> list[mixes.Mix]:
    return [mixes.Mix.load(p) for p in sorted(folder.glob(f"{prefix}*.json"))]


def _score(rows: list[tuple[mixes.Mix, object, object]], params: TracklistParams, head) -> dict:  # noqa: ANN001
    """Pool the metrics of one configuration over mixes. rows: (truth, analysis, unused)."""
    hits = {10: 0, 20: 0}
    n_est = n_ref = 0
    t1 = t5 = tot = 0.0
    b1 = b5 = 0.0
    same_found = same_total = 0
    for truth, a, _ in rows:
        tl = tracklist(a, head, truth.path.name, params)  # type: ignore[arg-type]
        n_est += len(tl.segments) - 1
        n_ref += len(truth.tracks) - 1
        for w in hits:
            _, r, _ = mixbench.boundary_prf(truth, tl, w)
            hits[w] += int(round(r * (len(truth.tracks) - 1)))
        h1, h5, secs = mixbench.solo_overlap(truth, mixbench.tracklist_intervals(tl))
        f1, f5, _ = mixbench.solo_overlap(truth, mixbench.fixed_windows(a, head))  # type: ignore[arg-type]
        t1, t5, tot = t1 + h1 * secs, t5 + h5 * secs, tot + secs
        b1, b5 = b1 + f1 * secs, b5 + f5 * secs
        est = [s.start_s for s in tl.segments[1:]]
        for prev, cur in zip(truth.tracks, truth.tracks[1:]):
            if prev.artist == cur.artist:
                same_total += 1
                same_found += any(abs(e - cur.boundary_s) <= 20.0 for e in est)
    out = {"n_est": n_est, "n_ref": n_ref, "top1": t1 / tot, "top5": t5 / tot, "fixed_top1": b1 / tot,
           "fixed_top5": b5 / tot, "same": f"{same_found}/{same_total}"}
    for w, h in hits.items():
        p = h / n_est if n_est else 0.0
        r = h / n_ref if n_ref else 0.0
        out[f"p{w}"], out[f"r{w}"], out[f"f{w}"] = p, r, (2 * p * r / (p + r) if p + r else 0.0)
    return out


def _oracle(truth: mixes.Mix, a, head, rule: str) -> tuple[float, float, float, float]:  # noqa: ANN001
    """Time-weighted top-1, top-5, solo seconds and per-slice top-1 when each solo part is voted alone."""
    from classifier.model import heads, voting

    probs = head.predict(heads.features_of(head.config.feature, a.embedding, a.pooled))
    h1 = h5 = sl = tot = 0.0
    for t in truth.tracks:
        sel = np.flatnonzero((a.starts_s >= t.solo_start_s) & (a.starts_s + mixbench.WIN <= t.solo_end_s))
        if sel.size == 0:
            continue
        names = [c.label for c in voting.rank(probs[sel], head.labels, k=5, rule=rule).candidates]  # type: ignore[arg-type]
        w = t.solo_end_s - t.solo_start_s
        h1, h5, tot = h1 + w * (names[0] == t.artist), h5 + w * (t.artist in names), tot + w
        sl += w * float(np.mean(probs[sel].argmax(1) == head.labels.index(t.artist)))
    return h1 / tot, h5 / tot, tot, sl / tot


def _row(label: str, s: dict) -> str:
    return (f"| {label} | {s['n_est']}/{s['n_ref']} | {s['p10']:.2f} / {s['r10']:.2f} / **{s['f10']:.2f}** | "
            f"{s['p20']:.2f} / {s['r20']:.2f} / **{s['f20']:.2f}** | {s['top1']:.3f} / {s['top5']:.3f} | "
            f"{s['fixed_top1']:.3f} / {s['fixed_top5']:.3f} | {s['same']} |")


HEADER = ("| configuration | segments found / true | +-10 s P / R / F | +-20 s P / R / F | tracklist top-1 / top-5 | "
          "fixed 30-s windows top-1 / top-5 | same-artist boundaries found |\n|---|---:|---:|---:|---:|---:|---:|")


def cmd_build(args: argparse.Namespace) -> None:
    mixbench.build_mixes(args.manifest, args.folder, split="test", count=args.test_mixes, n_tracks=args.tracks,
                         seed=args.seed, prefix="test")
    mixbench.build_mixes(args.manifest, args.folder, split="train", count=args.tune_mixes, n_tracks=args.tracks,
                         seed=args.seed, prefix="tune")


def cmd_eval(args: argparse.Namespace) -> None:
    from classifier.model.backbone import Backbone

    t0 = time.perf_counter()
    bb = Backbone.load("msd_musicnn")
    head = mixbench.dev_head(args.cache, args.folder / "head")
    print(f"head: {len(head.labels)} artists, threshold {head.threshold:.3f} ({time.perf_counter() - t0:.0f} s)")
    sets = {}
    for prefix in ("tune", "test"):
        sets[prefix] = []
        for truth in _mixes(args.folder, prefix):
            t1 = time.perf_counter()
            a = mixbench.analyse_cached(truth.path, bb)
            sets[prefix].append((truth, a, None))
            print(f"{truth.path.stem}: {len(truth.tracks)} tracks, {a.seconds / 60:.1f} min, {a.n_slices} slices "
                  f"({time.perf_counter() - t1:.0f} s)", flush=True)
    base = TracklistParams()
    configs = [("default " + f"({base.feature}, penalty {base.segment.penalty:g})", base)]
    if args.sweep:
        for feature in ("embedding", "tags", "probs", "embedding+probs"):
            for pen in (2.0, 4.0, 8.0, 16.0, 32.0):
                configs.append((f"{feature}, penalty {pen:g}",
                                replace(base, feature=feature, segment=replace(base.segment, penalty=pen))))
        for guard in (0.0, 8.0, 24.0):
            configs.append((f"guard {guard:g} s", replace(base, segment=replace(base.segment, guard_s=guard))))
        for merge in (0.0, 0.3, 0.7, 1.0):
            configs.append((f"merge below {merge:g}", replace(base, merge_below=merge)))
        configs.append(("min track 30 s", replace(base, segment=replace(base.segment, min_track_s=30.0))))
        configs.append(("kernel rbf", replace(base, segment=replace(base.segment, kernel="rbf"))))
        configs.append(("kernel cosine", replace(base, segment=replace(base.segment, kernel="cosine"))))
    for prefix in ("tune", "test"):
        if not sets[prefix]:
            continue
        for rule in ("logmean", "mean"):   # the vote with perfect boundaries: each track's solo part alone
            o = [_oracle(t, a, head, rule) for t, a, _ in sets[prefix]]
            w = sum(x[2] for x in o)
            print(f"{prefix}: oracle boundaries, {rule} vote on each solo part: top-1 "
                  f"{sum(x[0] * x[2] for x in o) / w:.3f}, top-5 {sum(x[1] * x[2] for x in o) / w:.3f}, per-slice top-1 "
                  f"{sum(x[3] * x[2] for x in o) / w:.3f}")
        n = sum(len(m.tracks) for m, _, _ in sets[prefix])
        print(f"\n{prefix} mixes ({len(sets[prefix])} mixes, {n} tracks"
              + ("; artist columns meaningless: the head was trained on these tracks" if prefix == "tune" else "")
              + ")\n\n" + HEADER)
        for label, params in configs:
            t1 = time.perf_counter()
            s = _score(sets[prefix], params, head)
            print(_row(label, s) + f"  <!-- {time.perf_counter() - t1:.1f} s -->", flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.1f}")


# -- speed ---------------------------------------------------------------------------------------------
def _three_hours(folder: Path) -> Path:
    """The mixes joined end to end (MP3 stream copy), repeated until three hours, cut at three hours."""
    out = folder / "set3h.mp3"
    if out.exists():
        return out
    parts = sorted(folder.glob("t*.mp3"))
    lst = folder / "set3h.txt"
    total = 0.0
    lines = []
    while total < SET_SECONDS:
        for p in parts:
            lines.append(f"file '{p.resolve()}'")
            total += mixes.Mix.load(p.with_suffix(".json")).seconds
    lst.write_text("\n".join(lines) + "\n")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(lst),
                    "-t", str(SET_SECONDS), "-c", "copy", str(out)], check=True)
    return out


def _child(args: argparse.Namespace) -> None:
    """One measured run in a fresh process; prints a JSON line."""
    t0 = time.perf_counter()
    from classifier import pipeline
    from classifier.model.backbone import Backbone

    bb = Backbone.load("msd_musicnn")
    if args.child == "pipeline":   # bench/bench_pipeline.py's way: warm the model, then analyse at hop 3 s
        bb.predict(np.zeros((32, 187, 96), np.float32))
        pipeline.analyse(args.file, [bb], duration_s=6.0)
        t1 = time.perf_counter()
        a = pipeline.analyse(args.file, [bb], hop_s=3.0, batch_size=32)
        work, n, segs = time.perf_counter() - t1, a.n_slices, 0
        extra = {}
    else:                          # the tracklist path, cold: 10-minute chunks fed as the engine will feed them
        from classifier.model import heads
        from classifier.tracklist import TracklistBuilder

        head = heads.Head.load(args.head)
        t1 = time.perf_counter()
        b = TracklistBuilder(head)
        for start in np.arange(0.0, SET_SECONDS, 600.0):
            b.add(pipeline.analyse(args.file, [bb], hop_s=3.0, batch_size=32, start_s=float(start), duration_s=600.0,
                                   keep_pooled=True))
        tl = b.finish(args.file.name)
        json.dumps(tl.to_dict())
        work, n, segs = time.perf_counter() - t1, b.n_slices, len(tl.segments)
        extra = {"segment_s": tl.timings["segment"], "head_s": tl.timings["head"]}
    print(json.dumps({**(extra if args.child == "tracklist" else {}), "work_s": work, "process_s": time.perf_counter() - t0, "slices": n, "segments": segs,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def cmd_speed(args: argparse.Namespace) -> None:
    mixbench.dev_head(args.cache, args.folder / "head")
    path = _three_hours(args.folder)
    rows = []
    for kind in ("pipeline", "tracklist"):
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, __file__, "speed", str(args.folder), str(args.cache), "--child", kind,
                              "--file", str(path), "--head", str(args.folder / "head")],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"{kind} run failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
        wall = time.perf_counter() - t0
        r = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append((kind, wall, r, load0, os.getloadavg()[0]))
    print("| run | slices | segments | whole process (start-up included) | x real time | analysis alone | "
          "peak RSS | load before / after |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, wall, r, l0, l1 in rows:
        print(f"| {kind} | {r['slices']} | {r['segments']} | {wall:.1f} s | {SET_SECONDS / wall:.0f} | "
              f"{r['work_s']:.1f} s | {r['peak_rss_mib']:.0f} MiB | {l0:.1f} / {l1:.1f} |")
    print(f"\nratio tracklist / pipeline: whole process {rows[1][1] / rows[0][1]:.2f}x, analysis alone "
          f"{rows[1][2]['work_s'] / rows[0][2]['work_s']:.2f}x (3-hour set, {path.stat().st_size / 1e6:.0f} MB MP3); "
          f"in the tracklist run: segmentation {rows[1][2]['segment_s']:.2f} s, head (incl. its share of "
          f"bookkeeping) {rows[1][2]['head_s']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("manifest", type=Path)
    b.add_argument("folder", type=Path)
    b.add_argument("--test-mixes", type=int, default=3)
    b.add_argument("--tune-mixes", type=int, default=1)
    b.add_argument("--tracks", type=int, default=12)
    b.add_argument("--seed", type=int, default=0)
    for name in ("eval", "speed"):
        e = sub.add_parser(name)
        e.add_argument("folder", type=Path)
        e.add_argument("cache", type=Path)
        e.add_argument("--sweep", action="store_true")
        e.add_argument("--child", choices=("pipeline", "tracklist"), help=argparse.SUPPRESS)
        e.add_argument("--file", type=Path, help=argparse.SUPPRESS)
        e.add_argument("--head", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cmd == "build":
        cmd_build(args)
    elif args.cmd == "eval":
        cmd_eval(args)
    elif args.child:
        _child(args)
    else:
        cmd_speed(args)


if __name__ == "__main__":
    main()
