"""`spy genre` and `spy identify`: one file or link, answered on the terminal or as JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any

from classifier import errors
from classifier.settings import Settings
from classifier.sources.timecodes import format_time, parse_time
from spy.render import render_genre, render_identify

__all__ = ["register"]


def _query(settings: Settings, source: str, at: str | None, seconds: float | None, *, identify: bool = False) -> Any:
    """A Query from a CLI argument: an existing path is a file, anything else must be a link.

    The cheap checks run here, before the classifier (and TensorFlow, 13 s and 750 MB) is loaded: the file
    exists, is a file, is not empty, holds audio (ffprobe reads its header), and `--at` is inside it; a link
    is understood without a connection; `identify` has a trained model to ask.
    """
    from classifier.serve.api import Query
    from classifier.sources.links import understand

    at_s = parse_time(at) if at is not None and at.strip() else None
    if _looks_like_path(source):
        path = Path(source).expanduser()
        duration = _check_file(path, settings)
        if at_s is not None and duration is not None and at_s >= duration:
            raise errors.BadTime(f"{path.name} is {format_time(duration)} long, so it has nothing at "
                                 f"{format_time(at_s)}. Give an --at before {format_time(duration)}.")
        query = Query(path=path, at=at_s, duration_s=seconds, label=path.name)
    else:
        query = Query(source=understand(source, at=at_s, extra_hosts=settings.fetch_extra_hosts,
                                        max_chars=settings.max_message_chars), duration_s=seconds)
    if identify:
        _check_model(settings)
    return query


def _looks_like_path(source: str) -> bool:
    if source.startswith(("./", "/", "~", "../")) or not any(c in source for c in ":/"):
        return True
    try:
        return Path(source).expanduser().exists()
    except OSError:                              # a name longer than the file system allows: not a path
        return False


def _check_file(path: Path, settings: Settings) -> float | None:
    """The file's duration from its header (None if the container does not say), or a sentence why not."""
    from classifier.audio.decode import probe_duration

    try:
        if not path.exists():
            raise errors.MissingFile(f"I can't find the file {path.name!r}. Check the path and try again.")
        if path.is_dir():
            raise errors.MissingFile(f"{path.name!r} is a folder. Give one audio file (spy enrol takes folders).")
        if not path.is_file():
            raise errors.MissingFile(f"{path.name!r} is not a regular file. Give an audio file.")
        if path.stat().st_size == 0:
            raise errors.Undecodable(f"{path.name} is empty (0 bytes). Give a file with audio in it.")
    except OSError as exc:                       # a name too long, a permission, a broken disk
        raise errors.MissingFile(f"I can't read {path.name[:60]!r}: {exc.strerror or exc}.") from exc
    duration = probe_duration(path)
    if duration is not None and duration <= 0:
        raise errors.Undecodable(f"{path.name} holds no audio samples (its length is 0:00). Give another file.")
    if duration is not None and duration > settings.max_audio_seconds:
        raise errors.AudioTooLong(f"{path.name} is {format_time(duration)} long; I read at most "
                                  f"{format_time(settings.max_audio_seconds)}. Cut it, or use --at and --seconds.")
    return duration


def _check_model(settings: Settings) -> None:
    """`identify` needs a trained artist model; say which step is missing (enrol, or train)."""
    if settings.classifier_url:
        return                                   # the remote classifier answers for its own model
    from classifier.store import registry
    from classifier.store.index import Index

    if registry.current_head(settings.database) is not None:
        return
    artists = []
    if settings.database.exists():
        with Index(settings.database) as index:
            artists = index.artists()
    if artists:
        raise errors.NoModel(f"{len(artists)} artist(s) are enrolled, but no model is trained yet. Run "
                             "`spy train`, then ask again.")
    raise errors.NoModel()


def _seconds(text: str) -> float:
    """argparse type for --seconds: a positive, finite number of seconds."""
    try:
        value = float(text) if len(text) < 40 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, like 30 (got {text[:40]!r})")
    return value


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

    query = _query(settings, args.source, args.at, args.seconds, identify=kind == "identify")
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
        sp.add_argument("--at", help="start time, e.g. 1:02:03 (wins over a time in the link or typed with it)")
        sp.add_argument("--seconds", type=_seconds, default=None,
                        help="how much to analyse from the start (default and most: max_clip_seconds for files, "
                             "the fetch window for links)")
        sp.add_argument("--json", action="store_true", help="print the stable JSON shape")
        sp.set_defaults(func=cmd_genre if name == "genre" else cmd_identify)
