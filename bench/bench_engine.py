"""The in-process engine against the classifier it replaced, side by side on the same 30-s clip.

    .venv/bin/python bench/bench_engine.py [--rounds 10] [--old-rev a960f8c]

"old" is `LocalClassifier` exactly as it was at `--old-rev` (its source is read with `git show` and imported
from a temporary file): fetch -> decode -> network -> head in one worker thread via `pipeline.analyse`.
"new" is `Engine`, what `make_classifier` returns now: the decode pool, the one ModelWorker and its batches.
Both run in this process on the same cached networks, with the same settings and the same trained head
(five procedural artists, generated and trained here first; nothing is downloaded). Each is started and
warmed with two calls first, then the two alternate call by call, so a neighbour's load on a shared CPU
falls on both alike. Prints wall time per call (median, mean, best) and CPU seconds per call (this process,
all its threads, plus the ffmpeg/ffprobe children it reaped: a cost a neighbour's load does not inflate the
way it inflates wall time) for identify and genre, the machine's load before and after, and whether both gave
the same answer.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _old_local(rev: str, folder: Path) -> Any:
    """The LocalClassifier class as it was at `rev`."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:classifier/serve/local.py"], check=True,
                            capture_output=True, text=True).stdout
    path = folder / "old_local.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_local", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_local"] = module            # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.LocalClassifier


def _trained(folder: Path) -> Any:
    """Settings whose database holds five procedural artists and an active head (as tests/conftest.py trained5)."""
    from classifier.model import heads
    from classifier.model.backbone import Backbone
    from classifier.settings import Settings
    from classifier.store.index import Index
    from classifier.training import demo, train
    from classifier.training.enrol import Report, enrol_items, items_from_sources

    s = Settings(data_dir=folder / "data")
    backbone = Backbone.load("msd_musicnn")
    with Index(s.database) as index:
        for artist in demo.STYLES:
            slug = artist.lower().replace(" ", "-")
            path = demo.write_wav(folder / "lib" / f"{slug}.wav", demo.render(artist, 15.0, seed=0))
            enrol_items(items_from_sources(artist, [str(path)], Report()), index, backbone, s, hop_s=1.5)
        train.train(index, s.heads_dir, heads.HeadConfig(epochs=30), calibrate_threshold=False)
    return s


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def _bench(settings: Any, clip: Path, rounds: int, old_cls: Any) -> None:
    from classifier.serve.api import Query
    from classifier.serve.engine import Engine

    query = Query(path=clip, label="clip30")
    old, new = old_cls(settings), Engine(settings)
    times: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    answers: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        for clf in (old, new):
            await clf.start()
            for _ in range(2):                        # warm: graph tracing, librosa, ffmpeg, page cache
                await clf.identify(query)
                await clf.genre(query)
        print(f"load before: {_load()}")
        for _ in range(rounds):
            for kind in ("identify", "genre"):
                for name, clf in (("old", old), ("new", new)):
                    t0, c0 = time.perf_counter(), _cpu_s()
                    answer = await (clf.identify(query) if kind == "identify" else clf.genre(query))
                    times.setdefault((kind, name), []).append(time.perf_counter() - t0)
                    cpu.setdefault((kind, name), []).append(_cpu_s() - c0)
                    d = answer.to_dict()
                    del d["timings"]
                    answers[kind, name] = d
        print(f"load after:  {_load()}")
    finally:
        await old.aclose()
        await new.aclose()
    print(f"\n{'call':10s} {'classifier':34s} {'median s':>9s} {'mean s':>8s} {'best s':>8s} {'CPU s':>7s}")
    for kind in ("identify", "genre"):
        for name, label in (("old", "LocalClassifier (pipeline.analyse)"), ("new", "Engine (pool + ModelWorker)")):
            t = times[kind, name]
            print(f"{kind:10s} {label:34s} {statistics.median(t):9.3f} {statistics.mean(t):8.3f} {min(t):8.3f} "
                  f"{statistics.median(cpu[kind, name]):7.3f}")
        ratio = statistics.median(times[kind, "new"]) / statistics.median(times[kind, "old"])
        cpu_ratio = statistics.median(cpu[kind, "new"]) / statistics.median(cpu[kind, "old"])
        same = answers[kind, "old"] == answers[kind, "new"]
        print(f"{kind:10s} new/old: wall median {ratio:.2f}, CPU median {cpu_ratio:.2f}; "
              f"same answer (JSON without timings): {same}")
    print(f"\n{rounds} alternating rounds after two warm-up calls each; {os.cpu_count()} CPUs; 30-s MP3 clip; "
          "CPU s is the median per call")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--old-rev", default="a960f8c", help="the commit whose LocalClassifier is the baseline")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="spy-bench-engine-") as tmp:
        folder = Path(tmp)
        from classifier.training import demo

        wav = demo.write_wav(folder / "clip30.wav", demo.render("Deep Pulse", 30.0, seed=3))
        clip = folder / "clip30.mp3"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "libmp3lame", "-b:a",
                        "192k", str(clip)], check=True)
        old_cls = _old_local(args.old_rev, folder)
        settings = _trained(folder)
        asyncio.run(_bench(settings, clip, args.rounds, old_cls))


if __name__ == "__main__":
    main()
