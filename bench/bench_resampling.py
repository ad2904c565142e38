"""Resampling: how far our decode path moves song-level tags from the training recipe, and what it costs.

    python bench/bench_resampling.py [--manifest ../shared/corpus/dev.csv] [--tracks 8] [--seconds 30]

Training used librosa.load(sr=16000) with resampy 'kaiser_best'. We decode with ffmpeg straight to
16 kHz (SoX resampler when ffmpeg has it). For each track: decode the middle `seconds` at the file's
native rate once, resample it three ways, run the same network, and compare the song-level mean tag
probabilities with kaiser_best's. Prints a table; numbers go to models/msd_musicnn/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _native(path: Path, start: float, seconds: float) -> tuple[np.ndarray, int]:
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
                            "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    sr = int(probe.stdout.strip().splitlines()[0])
    raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", str(start), "-t", str(seconds), "-i", str(path),
                          "-ac", "1", "-f", "f32le", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype="<f4").copy(), sr


def _ffmpeg_resample(x: np.ndarray, sr: int, soxr: bool) -> np.ndarray:
    af = ["-af", "aresample=resampler=soxr:precision=28"] if soxr else []
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "-",
                          "-ar", "16000", *af, "-f", "f32le", "-"], input=x.tobytes(), capture_output=True, check=True)
    return np.frombuffer(out.stdout, dtype="<f4").copy()


def main() -> None:
    import resampy

    from classifier.audio import features, slicing
    from classifier.model.backbone import Backbone

    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", type=Path, default=Path(__file__).resolve().parents[2] / "shared/corpus/dev.csv")
    ap.add_argument("--tracks", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=30.0)
    args = ap.parse_args()
    rows = [r for r in csv.DictReader(open(args.manifest)) if r["format"] in ("ogg", "opus")]
    rows = rows[:: max(1, len(rows) // args.tracks)][: args.tracks]
    bb = Backbone.load("msd_musicnn")
    p = bb.params
    window = (p.patch_frames - 1) * p.hop_length
    methods = {
        "resampy kaiser_best (training)": lambda x, sr: resampy.resample(x, sr, 16000, filter="kaiser_best"),
        "ffmpeg soxr precision 28 (ours)": lambda x, sr: _ffmpeg_resample(x, sr, True),
        "ffmpeg swr default": lambda x, sr: _ffmpeg_resample(x, sr, False),
        "soxr_hq (librosa default)": lambda x, sr: __import__("soxr").resample(x, sr, 16000, quality="HQ"),
    }
    dev = {m: [] for m in methods}
    cost = {m: 0.0 for m in methods}
    audio_s = 0.0
    for r in rows:
        path = Path(r["path"])
        start = max(0.0, (float(r["duration_s"]) - args.seconds) / 2)
        x, sr = _native(path, start, args.seconds)
        audio_s += len(x) / sr
        ref = None
        for m, fn in methods.items():
            t0 = time.perf_counter()
            y = np.asarray(fn(x, sr), dtype=np.float32)
            cost[m] += time.perf_counter() - t0
            w = slicing.windows(y, window, window)
            tags = bb.predict(features.patches(np.ascontiguousarray(w.samples), p)).tags.mean(axis=0)
            if ref is None:
                ref = tags
            dev[m].append(float(np.abs(tags - ref).max()))
    print(f"{len(rows)} tracks x {args.seconds:.0f} s (native rates 44.1/48 kHz), song-level mean tag probabilities")
    print(f"{'resampler':34s} {'max |dtag|':>10s} {'mean max':>9s} {'x realtime':>10s}")
    for m in methods:
        print(f"{m:34s} {max(dev[m]):10.4f} {np.mean(dev[m]):9.4f} {audio_s / max(cost[m], 1e-9):10.0f}")


if __name__ == "__main__":
    main()
