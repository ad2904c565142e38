"""Where to listen in a recording: one window for a question, or windows spread over a track to enrol it.

Pure functions of the asked-for time and the media's length (known only once yt-dlp has read the page).
"""

from __future__ import annotations

import math

from classifier import errors
from classifier.sources.timecodes import format_time

__all__ = ["choose_window", "spread_windows", "LONG_SET_S"]

# Tracks rarely run past 15 minutes and mixes rarely stay under 20: longer media is treated as a set, where
# the middle is an arbitrary moment, so we listen to its start and say how to pick a moment instead.
LONG_SET_S = 20 * 60.0


def choose_window(start_s: float | None, window_s: float, media_s: float | None,
                  platform: str = "youtube") -> tuple[float, float, str | None]:
    """Where to listen: `(start_s, duration_s, hint)`.

    The asked-for time, moved back if the window would run past the end; with no time, the middle of a
    track, or the start of a set longer than `LONG_SET_S` plus a hint; with no time and no known length,
    the start. Raises `errors.BadSource` for a time past the end.
    """
    if media_s is not None and (not math.isfinite(media_s) or media_s <= 0):
        media_s = None
    hint = None
    if start_s is not None:
        if media_s is not None and start_s >= media_s:
            raise errors.BadSource(f"That link asks for {format_time(start_s)}, but the recording is only "
                                   f"{format_time(media_s)} long.")
        start = start_s if media_s is None else max(0.0, min(start_s, media_s - window_s))
    elif media_s is None:
        start = 0.0
    elif media_s > LONG_SET_S:
        start = 0.0
        how = "?t=1h02m03s" if platform == "youtube" else "#t=1:02:03"
        hint = (f"This is a {_long(media_s)} set, so I listened to its start: add {how} to the link "
                f"for a specific moment.")
    else:
        start = max(0.0, media_s / 2 - window_s / 2)
    duration = window_s if media_s is None else min(window_s, media_s - start)
    return start, duration, hint


def spread_windows(count: int, window_s: float, media_s: float | None) -> list[tuple[float, float]]:
    """`count` windows of `window_s` spread over a track, as `(start_s, duration_s)`, for enrolment.

    Centred at 1/(count+1), 2/(count+1), ... of the track, so neither the intro nor the outro (often beats
    alone in dance music) is all that is heard. A track shorter than all windows together is taken whole;
    one of unknown length gives a single window of `count * window_s` from the start.
    """
    if count < 1 or window_s <= 0:
        raise ValueError(f"need at least one window of positive length, got {count} x {window_s}")
    if media_s is None or not math.isfinite(media_s) or media_s <= 0:
        return [(0.0, count * window_s)]
    if media_s <= count * window_s:
        return [(0.0, media_s)]
    starts = [min(max(0.0, media_s * (k + 1) / (count + 1) - window_s / 2), media_s - window_s)
              for k in range(count)]
    return [(round(start, 3), window_s) for start in starts]


def _long(seconds: float) -> str:
    hours = seconds / 3600
    return f"{hours:.0f}-hour" if hours >= 1.5 else f"{seconds / 60:.0f}-minute"
