"""What a job listens to: a `Query` made into a `Clip` (a local file and the part of it to analyse), and the
length rules every way in shares.

    link  -> fetch `seconds` (default fetch_window_seconds), at most max_clip_seconds, around its time
    file  -> from its start time, `seconds` or else max_clip_seconds (then a hint says it was cut); a file
             longer than max_audio_seconds, or a start at or past its end, is refused with its length

These rules live here once, so `spy identify long.mp3` answers the same in-process and through `spy serve`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from classifier import errors
from classifier.audio import decode
from classifier.serve.api import Query
from classifier.settings import Settings
from classifier.sources.links import Source, format_time

if TYPE_CHECKING:  # pragma: no cover - yt-dlp is a heavy import; only link jobs load it
    from classifier.sources.fetch import Fetched

__all__ = ["Clip", "from_file", "from_fetched", "fetch_seconds", "source_of", "checked"]


@dataclass(frozen=True, slots=True)
class Clip:
    """A local audio file, the part of it to analyse, and how to show it."""

    path: Path
    seek_s: float               # where in the file to start
    duration_s: float           # the most to analyse from there (at most max_clip_seconds)
    offset_s: float             # where the analysed audio starts in the user's source (for timelines)
    display: str                # the answer's "source"
    host: str                   # for the job's log line: a link's host, or "file"
    hint: str | None = None     # a sentence for the user (a long set's start, a cut file)
    cut_hint: bool = False      # say so if the file goes on past duration_s (no length was asked for)
    fetch_s: float = 0.0        # seconds the link took to fetch


def source_of(query: Query) -> Source:
    """The query's link with its start time (the query's `at` wins over the link's own ?t=)."""
    assert query.source is not None
    return query.source if query.at is None else query.source.with_start(query.at)


def fetch_seconds(query: Query, settings: Settings) -> float:
    """Seconds of a link to fetch: the length asked for, else fetch_window_seconds; at most max_clip_seconds."""
    return min(query.duration_s or settings.fetch_window_seconds, settings.max_clip_seconds)


def from_file(query: Query, settings: Settings) -> Clip:
    """A file query's clip: from `at`, the length asked for or max_clip_seconds (cut with a hint)."""
    assert query.path is not None
    at = float(query.at or 0.0)
    asked = query.duration_s
    duration = settings.max_clip_seconds if asked is None else min(asked, settings.max_clip_seconds)
    return Clip(Path(query.path), at, duration, at, query.display, "file", cut_hint=asked is None)


def from_fetched(query: Query, fetched: "Fetched", settings: Settings, fetch_s: float) -> Clip:
    """A fetched window's clip: the whole file (it holds just the window), timed against the source."""
    source = source_of(query)
    return Clip(fetched.path, 0.0, settings.max_clip_seconds, fetched.start_s, source.display_url(), source.host,
                hint=fetched.hint, fetch_s=fetch_s)


def checked(clip: Clip, settings: Settings) -> Clip:
    """(blocking: ffprobe) The clip, refused if the file is too long or `seek_s` is past what it holds, and
    with a hint when it is cut to `duration_s`.

    Raises
    ------
    MissingFile, Undecodable (from the probe), AudioTooLong, BadSource (start past the end), TooShort
    """
    probed = decode.probe_duration(clip.path)
    if probed is None:          # the container does not say: the decoder's own backstops apply
        return clip
    if probed > settings.max_audio_seconds:
        raise errors.AudioTooLong(f"That audio is {_minutes(probed)} long; I take at most "
                                  f"{_minutes(settings.max_audio_seconds)}. Send a shorter piece.",
                                  detail=f"{probed:.1f} s")
    if clip.seek_s > 0 and clip.seek_s >= probed:
        raise errors.BadSource(f"That file is {format_time(probed)} long: there is nothing at "
                               f"{format_time(clip.seek_s)}.", detail=f"{probed:.1f} s, start {clip.seek_s:.1f} s")
    if clip.seek_s > 0 and probed - clip.seek_s < settings.min_audio_seconds:
        raise errors.TooShort(f"That audio is {_minutes(probed)} long: from {format_time(clip.seek_s)} there is "
                              f"less than {settings.min_audio_seconds:.0f} s left to hear.", detail=f"{probed:.1f} s")
    if clip.cut_hint and probed - clip.seek_s > clip.duration_s + 1.0:
        return replace(clip, hint=f"I listened to {_minutes(clip.duration_s)} from {format_time(clip.seek_s)}. "
                                  "To hear another part, send it with a start time (at).")
    return clip


def _minutes(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
