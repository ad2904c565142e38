"""Benchmark: fetch a 30-s window at 1:00:00 of a 2-hour set on loopback, against downloading the whole file.

    .venv/bin/python bench/bench_fetch.py [--runs 5] [--media-dir /tmp/spy-bench-media]

The set is served by the test suite's loopback media host (Range support, counts the bytes it sends).
Columns: bytes the host handed to its kernel ("sent"), bytes our egress proxy read from the network ("read"),
each against the window's own bytes (file size x 30 s / duration), and seconds from the call to a finished
audio file (median of warm runs; the first, cold run also pays for loading extractors). "sent" includes what
sat in socket buffers when ffmpeg hung up, so it depends on the host's send buffer (`--sndbuf`).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.settings import Settings  # noqa: E402
from classifier.sources.fetch import fetch_window  # noqa: E402
from classifier.sources.links import Source  # noqa: E402
from tests.fakes.media_host import MediaHost  # noqa: E402

SET_S = 2 * 3600
AT_S = 3600.0
WINDOW_S = 30.0
LINK_BPS = 100e6

# name -> (ffmpeg output options, description). Built by looping a one-minute encode with stream copy,
# which takes a second instead of encoding two hours of audio.
FORMATS = {
    "set.mp3": (["-c", "copy"], "MP3 128k CBR"),
    "set-frag.m4a": (["-c", "copy", "-f", "mp4", "-movflags", "+frag_keyframe+empty_moov+default_base_moof"
                      "+global_sidx", "-frag_duration", "10000000"], "M4A AAC 128k, fragmented + sidx (as YouTube)"),
    "set-faststart.m4a": (["-c", "copy", "-movflags", "+faststart"], "M4A AAC 128k, one moov at the front"),
}


def make_media(directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    tone = "aevalsrc='0.3*sin(2*PI*(220+20*floor(t/10))*t)':s=44100:d=60"
    minute = {"mp3": directory / "minute.mp3", "m4a": directory / "minute.m4a"}
    codecs = {"mp3": ["-c:a", "libmp3lame", "-b:a", "128k"], "m4a": ["-c:a", "aac", "-b:a", "128k"]}
    for kind, path in minute.items():
        if not path.exists():
            _ffmpeg("-f", "lavfi", "-i", tone, "-ac", "2", *codecs[kind], str(path))
    out = {}
    for name, (options, _) in FORMATS.items():
        path = directory / name
        if not path.exists():
            src = minute["mp3" if name.endswith(".mp3") else "m4a"]
            _ffmpeg("-stream_loop", str(SET_S // 60 - 1), "-i", str(src), *options, str(path))
        out[name] = path
    return out


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def media_seconds(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                          str(path)], check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def whole_file(host: MediaHost, name: str) -> tuple[int, float]:
    host.reset()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.perf_counter()
    with opener.open(host.url(name)) as response, tempfile.TemporaryFile() as sink:
        while chunk := response.read(1 << 20):
            sink.write(chunk)
    return host.bytes_sent, time.perf_counter() - started


def windowed(host: MediaHost, name: str, settings: Settings) -> tuple[int, int, float, int]:
    host.reset()
    source = Source("extra", host.url(name), AT_S)
    with tempfile.TemporaryDirectory(prefix="spy-bench-") as workdir:
        started = time.perf_counter()
        fetched = fetch_window(source, settings, Path(workdir), window_s=WINDOW_S)
        seconds = time.perf_counter() - started
        size = fetched.path.stat().st_size
    host.wait_idle()        # responses still draining into closed connections count too
    return host.bytes_sent, fetched.bytes_read, seconds, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--media-dir", type=Path, default=Path(tempfile.gettempdir()) / "spy-bench-media")
    parser.add_argument("--sndbuf", type=int, default=64 * 1024,
                        help="the host's per-connection send buffer in bytes; 0 = the kernel's autotuning")
    args = parser.parse_args()
    files = make_media(args.media_dir)
    rows = []
    with MediaHost(sndbuf=args.sndbuf or None) as host:
        settings = Settings(fetch_extra_hosts=(host.hostport,), data_dir=args.media_dir / "data")
        for name, path in files.items():
            host.add(name, path)
            duration = media_seconds(path)
            own = path.stat().st_size * WINDOW_S / duration
            cold = windowed(host, name, settings)
            warm = [windowed(host, name, settings) for _ in range(args.runs)]
            whole_bytes, whole_s = whole_file(host, name)
            sent = statistics.median(w[0] for w in warm)
            read = statistics.median(w[1] for w in warm)
            rows.append((FORMATS[name][1], path.stat().st_size, own, sent, read, cold[2],
                         statistics.median(w[2] for w in warm), whole_bytes, whole_s))
    buffers = f"{args.sndbuf // 1024} KiB" if args.sndbuf else "autotuned"
    print(f"\n2-hour set on loopback, {WINDOW_S:.0f}-s window at 1:00:00, host send buffer {buffers} "
          f"(median of {args.runs} warm runs)\n")
    head = ("media", "file MB", "window KB", "sent KB", "sent/window", "read KB", "read/window", "cold s",
            "warm s", "whole MB", "whole s", "transfer @100 Mbit/s: window / whole")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for label, size, own, sent, read, cold_s, warm_s, whole_bytes, whole_s in rows:
        print(f"| {label} | {size / 1e6:.1f} | {own / 1e3:.0f} | {sent / 1e3:.0f} | {sent / own:.2f} | "
              f"{read / 1e3:.0f} | {read / own:.2f} | {cold_s:.2f} | {warm_s:.2f} | {whole_bytes / 1e6:.1f} | "
              f"{whole_s:.2f} | {read * 8 / LINK_BPS:.2f} s / {whole_bytes * 8 / LINK_BPS:.1f} s |")
    print("\nsent: bytes the host handed to its kernel; read: bytes our egress proxy took off the wire.")
    print("The last column is a projection (bytes / link rate), not a measurement: loopback hides transfer time.")


if __name__ == "__main__":
    main()
