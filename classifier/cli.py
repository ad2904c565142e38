"""`spy`: the command line. One boundary: SpyErrors become a sentence on stderr and exit code 1.

    spy demo                          generate a library offline, enrol, train, identify a held-out track
    spy genre SOURCE [--at T] [--json]
    spy identify SOURCE [--at T] [--json]
    spy enrol ARTIST SOURCE... | spy enrol --manifest FILE.csv
    spy artists | spy forget ARTIST|TRACK | spy train [--arch head|seedcnn]
    spy eval --manifest FILE.csv [--query-seconds 30] [--json]
    spy bench                         time the pipeline on generated audio (prints a table)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import errors
from .settings import Settings, load_settings

__all__ = ["main", "build_parser"]

log = logging.getLogger("spy")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # TensorFlow's C++ and absl chatter is not ours to show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for noisy in ("tensorflow", "absl", "h5py", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _query(settings: Settings, source: str, at: str | None, seconds: float | None) -> Any:
    """A Query from a CLI argument: an existing path is a file, anything else must be a link."""
    from .client import Query
    from .sources import find_source, parse_time

    at_s = parse_time(at) if at else None
    path = Path(source)
    if path.exists() or not any(c in source for c in ":/") or source.startswith(("./", "/", "~")):
        if not path.exists():
            raise errors.MissingFile(f"I can't find the file {source!r}.")
        return Query(path=path, at=at_s, duration_s=seconds, label=path.name)
    return Query(source=find_source(source, at=at_s, extra_hosts=settings.fetch_extra_hosts),
                 duration_s=seconds)


class _Bar:
    """A tqdm progress bar on stderr for long inputs (only on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.bar: Any = None

    async def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled or stage != "analysing" or total < 20:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="slice", desc="analysing", leave=False, file=sys.stderr)
        self.bar.total = max(self.bar.total, total)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def render_genre(d: dict[str, Any]) -> str:
    lines = [f"{d['source']}  ·  {d['seconds']:.1f} s, {d['slices']} slices"]
    lines.append("Genres:      " + " · ".join(f"{g['label']} {_pct(g['score'])} ({g['votes']} vote{'' if g['votes'] == 1 else 's'})" for g in d["genres"]))
    lines.append("Descriptors: " + " · ".join(f"{g['label']} {_pct(g['score'])}" for g in d["descriptors"]))
    if d.get("hint"):
        lines.append(d["hint"])
    t = d["timings"]
    lines.append("Timings:     " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()))
    return "\n".join(lines)


def render_identify(d: dict[str, Any]) -> str:
    head = "I think this is:" if d["verdict"] == "identified" else "I don't know. The nearest (weak) candidates:"
    lines = [f"{d['source']}  ·  {d['seconds']:.1f} s, {d['slices']} slices", head]
    for i, a in enumerate(d["artists"], 1):
        lines.append(f"  {i}. {a['name']:<28} {_pct(a['score']):>4}  ({a['votes']}/{d['slices']} slices)")
    lines.append(f"Confidence:  {_pct(d['confidence'])} (vote share {_pct(d['vote_share'])})")
    if d["genres"]:
        lines.append("Genre:       " + " · ".join(f"{g['label']} {_pct(g['score'])}" for g in d["genres"][:3]))
    if d.get("hint"):
        lines.append(d["hint"])
    lines.append(f"Model:       {d['model']['id']} ({d['model']['artists']} artists)")
    lines.append("Timings:     " + ", ".join(f"{k} {v:.2f} s" for k, v in d["timings"].items()))
    return "\n".join(lines)


async def _classify(settings: Settings, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    from .client import make_classifier

    query = _query(settings, args.source, args.at, args.seconds)
    classifier = make_classifier(settings)
    bar = _Bar(not args.json)
    try:
        if kind == "genre":
            result = await classifier.genre(query, bar)
        else:
            result = await classifier.identify(query, bar)
    finally:
        bar.close()
        await classifier.aclose()
    return result.to_dict()


def cmd_genre(settings: Settings, args: argparse.Namespace) -> int:
    d = asyncio.run(_classify(settings, args, "genre"))
    print(json.dumps(d, indent=2) if args.json else render_genre(d))
    return 0


def cmd_identify(settings: Settings, args: argparse.Namespace) -> int:
    d = asyncio.run(_classify(settings, args, "identify"))
    print(json.dumps(d, indent=2) if args.json else render_identify(d))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spy", description="Deep House Spy: who made this track?")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: SPY_LOG_LEVEL or INFO)")
    sub = p.add_subparsers(dest="command", required=True)

    for name, helptext in (("genre", "the clip's genres and descriptors"),
                           ("identify", "the five artists whose style the clip most resembles")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("source", help="an audio/video file, or a YouTube/SoundCloud link")
        sp.add_argument("--at", help="start time, e.g. 1:02:03 (overrides the link's ?t=)")
        sp.add_argument("--seconds", type=float, default=None,
                        help="how much to analyse from the start (default: the whole file, or the fetch window for links)")
        sp.add_argument("--json", action="store_true", help="print the stable JSON shape")
        sp.set_defaults(func=cmd_genre if name == "genre" else cmd_identify)

    from . import commands  # enrol, train, eval, demo, bench: the operator's commands

    commands.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"spy: {exc}", file=sys.stderr)
        return 2
    _configure_logging(args.log_level or settings.log_level)
    from .features import limit_blas_threads

    limit_blas_threads()
    func: Callable[[Settings, argparse.Namespace], int] = args.func
    try:
        return func(settings, args)
    except errors.SpyError as exc:
        log.debug("failed: %s (%s)", exc.code, exc.detail, exc_info=True)
        print(f"spy: {exc.user_message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("spy: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
