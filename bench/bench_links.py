"""Benchmark: `spy link` on 1,000 messages of ordinary chat text (the issue's bar: well under 1 s per hundred).

    .venv/bin/python bench/bench_links.py [--messages 1000] [--runs 5]

The messages are generated, deterministic: three in four are chat with no link but plenty of numbers, times
and punctuation ("lol the drop at 1:23 tho", "see you at 10:30", "top 10 of 2024 🔥"), one in four asks about
a YouTube or SoundCloud link with a time typed somewhere. Two measures:

- in-process: `links.understand` on every message, best of `--runs` (what a bot pays per message);
- end to end: `spy link --json --file -` in a fresh interpreter, all messages through standard input, wall
  clock including Python's start and the CLI's imports (what an operator waits for), median of `--runs`.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from classifier import errors  # noqa: E402
from classifier.sources.links import understand  # noqa: E402

CHAT = [
    "lol the drop at {m}:{s:02d} tho", "see you at {h}:30 tonight", "top {n} tracks of 2024 🔥", "anyone going?",
    "that 90s vibe is unreal", "{n} people in the room, {n2} outside", "ok", "haha", "who's playing at 11?",
    "set starts {h}h, doors {h2}pm", "new EP out friday!!", "3:1 in the final, what a game", "ratio 16:9 pls",
    "version 2.{n}.1 broke everything", "¿alguien tiene el link? 谢谢", "brb 5 min", "this is a {n} hour set",
]
ASK = [
    "who is this at {m}:{s:02d}? https://youtu.be/dQw4w9WgXcQ", "https://soundcloud.com/dj-x/live-set {h}:{m:02d}:{s:02d}",
    "/identify https://www.youtube.com/watch?v=dQw4w9WgXcQ&t={n}s", "ID? 🔥 https://youtu.be/dQw4w9WgXcQ?si=x @{m}m{s}s",
    "[the set](https://soundcloud.com/dj-x/live-set#t={m}:{s:02d}) at the end",
]


def messages(n: int, seed: int = 15) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        template = rng.choice(ASK if i % 4 == 0 else CHAT)
        out.append(template.format(m=rng.randrange(60), s=rng.randrange(60), h=rng.randrange(1, 3),
                                   h2=rng.randrange(8, 12), n=rng.randrange(2, 99), n2=rng.randrange(2, 99)))
    return out


def in_process(texts: list[str]) -> tuple[float, int]:
    ok = 0
    started = time.perf_counter()
    for text in texts:
        try:
            understand(text)
            ok += 1
        except errors.BadSource:
            pass
    return time.perf_counter() - started, ok


def end_to_end(texts: list[str]) -> float:
    started = time.perf_counter()
    run = subprocess.run([str(ROOT / ".venv" / "bin" / "spy"), "link", "--json", "--file", "-"],
                         input="\n".join(texts), capture_output=True, text=True, cwd=ROOT, timeout=600)
    elapsed = time.perf_counter() - started
    if run.returncode not in (0, 1) or len(run.stdout.splitlines()) != len(texts):
        raise SystemExit(f"spy link failed: {run.returncode} {run.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    texts = messages(args.messages)
    inner = [in_process(texts) for _ in range(args.runs)]
    best, ok = min(t for t, _ in inner), inner[0][1]
    outer = [end_to_end(texts) for _ in range(args.runs)]
    load = os.getloadavg()[0]
    per_100 = 100 / len(texts)
    print(f"{len(texts)} messages, {ok} understood as a link, load average {load:.1f} (2 cores)\n")
    print("| measure | total | per 100 messages |")
    print("|---|---:|---:|")
    print(f"| understand(), in-process, best of {args.runs} | {best * 1e3:.0f} ms | {best * per_100 * 1e3:.1f} ms |")
    med = statistics.median(outer)
    print(f"| spy link --json --file -, fresh process, median of {args.runs} | {med:.2f} s | "
          f"{med * per_100 * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
