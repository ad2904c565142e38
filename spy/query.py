"""`spy genre` and `spy identify`: one file or link, answered on the terminal or as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from classifier import errors
from classifier.settings import Settings
from spy.render import render_genre, render_identify

__all__ = ["register"]


def _query(settings: Settings, source: str, at: str | None, seconds: float | None) -> Any:
    """A Query from a CLI argument: an existing path is a file, anything else must be a link."""
    from classifier.serve.api import Query
    from classifier.sources.links import find_source, parse_time

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


async def _classify(settings: Settings, args: argparse.Namespace, kind: str) -> dict[str, Any]:
    from classifier.serve.client import make_classifier

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


def register(sub: Any) -> None:
    for name, helptext in (("genre", "the clip's genres and descriptors"),
                           ("identify", "the five artists whose style the clip most resembles")):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("source", help="an audio/video file, or a YouTube/SoundCloud link")
        sp.add_argument("--at", help="start time, e.g. 1:02:03 (overrides the link's ?t=)")
        sp.add_argument("--seconds", type=float, default=None,
                        help="how much to analyse from the start (default and most: max_clip_seconds for files, "
                             "the fetch window for links)")
        sp.add_argument("--json", action="store_true", help="print the stable JSON shape")
        sp.set_defaults(func=cmd_genre if name == "genre" else cmd_identify)
