"""Chat history as chat text: one line per answer, and the `/history` page (both bots render through this)."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Sequence

from bot import replies
from classifier import errors
from classifier.sources.links import find_source, format_time
from classifier.store.history import Record

__all__ = ["history_text", "record_line", "link_at"]


def link_at(source: str, start_s: float, extra_hosts: tuple[str, ...]) -> str:
    """A link moved to the analysed moment, in its platform's own form; anything else unchanged."""
    if not source.startswith(("http://", "https://")):
        return source
    try:
        return find_source(source, extra_hosts=extra_hosts).with_start(start_s).display_url()
    except errors.BadSource:          # a host this process does not know: keep the link as the bot showed it
        return source


def _link_text(url: str, limit: int = 40) -> str:
    parts = urllib.parse.urlsplit(url)
    text = (parts.netloc or "").removeprefix("www.") + parts.path.rstrip("/")
    if parts.query:
        text += "?" + parts.query
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(name: str, limit: int = 40) -> str:
    name = " ".join(name.split())
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%d %b %H:%M UTC")


def record_line(r: Record, m: replies.Markup = replies.PLAIN) -> str:
    """One record on one line: what was answered, with its link at the analysed moment, and when."""
    e = m.escape
    name = e(_short(r.winner)) if r.winner else ""
    score = replies.percent(r.confidence)
    if r.kind == "genre":
        what = f"🎛 {e('genre')} {m.bold(name)} {score}" if name else "🎛 " + e("genre unclear")
    elif r.verdict == "identified" and name:
        what = f"🎧 {m.bold(name)} {score}"
    elif name:
        what = "🤷 " + e("didn't know (nearest ") + name + e(f" {score})")
    else:
        what = "🤷 " + e("didn't know")
    where = (m.link(e(_link_text(r.source)), r.source) + e(f" at {format_time(r.start_s)}")) if r.is_link \
        else e(r.source)
    line = f"{what} · {where} · {e(_when(r.created))}"
    if r.correction:
        line += " · " + e("✏️ corrected: ") + m.bold(e(_short(r.correction)))
    return line


def history_text(records: Sequence[Record], m: replies.Markup = replies.PLAIN, *, offset: int = 0,
                 total: int | None = None) -> str:
    """The `/history` reply: a header, then one numbered line per record (newest first)."""
    if not records:
        return m.escape("Nothing identified in this chat yet." if offset == 0 else "No older answers here.")
    first, last = offset + 1, offset + len(records)
    if total is not None and total > len(records):
        head = f"🕘 Answers {first}–{last} of {total} in this chat, newest first:"
    elif len(records) == 1:
        head = "🕘 The last answer in this chat:"
    else:
        head = f"🕘 The last {len(records)} answers in this chat, newest first:"
    lines = [m.bold(m.escape(head))]
    lines += [f"{i}. {record_line(r, m)}" for i, r in enumerate(records, first)]
    return "\n".join(lines)
