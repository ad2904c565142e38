"""Chat text -> a `Source`: the link in a message or a command's arguments, and an optional trailing time.

`source_from` is the ONE place in bot/ where chat text becomes a `Source`: every front end reaches it
through `bot.core.BotCore.source` (Telegram with `/identify <link> [1:02:03]` arguments, message text and
hidden link URLs; Discord with its `link`/`at` options and pasted messages). Parsing itself is
`classifier.sources`' job; this only decides which words are the link and which is the time.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from classifier.sources.links import Source, find_source

__all__ = ["split_args", "source_from", "looks_like_link"]

# A word that is meant as a time: digits with colons or h/m/s units, optionally `t=` (`1:02:03`, `1h2m3s`, `95`).
_TIME_WORD = re.compile(r"(?i)(?:t=)?(?=.*\d)[\d:.hms]+")
_LINKISH = re.compile(r"(?i)https?://|www\.|\b(?:youtu\.be|youtube\.com|soundcloud\.com)\b|\b\d{1,3}(?:\.\d{1,3}){3}:\d+")


def split_args(args: Sequence[str]) -> tuple[str, str | None]:
    """`["https://youtu.be/x", "1:02:03"]` -> `("https://youtu.be/x", "1:02:03")`: the last word is the time
    when there is more than one word and it looks like a time (a bad time is then refused by `parse_time`,
    with a sentence that says how to write one)."""
    words = [w for w in args if w.strip()]
    if len(words) >= 2 and _TIME_WORD.fullmatch(words[-1]) and not looks_like_link(words[-1]):
        return " ".join(words[:-1]), words[-1]
    return " ".join(words), None


def source_from(text: str, *, at: str | float | None = None, trailing_time: bool = False,
                extra_urls: Iterable[str] = (), extra_hosts: tuple[str, ...] = ()) -> Source:
    """The first supported link in `text` (then in `extra_urls`, e.g. hidden links behind words), with `at`
    overriding its own time. `trailing_time`: `text` is a command's arguments, whose last word may be the
    time (`split_args`; `at`, when given, wins). Raises errors.BadSource / NotAllowed / PlaylistRefused
    with a sentence."""
    if trailing_time:
        text, trailing = split_args(text.split())
        at = at if at is not None else trailing
    joined = " ".join([text, *extra_urls]).strip()
    return find_source(joined, at=at, extra_hosts=extra_hosts)


def looks_like_link(text: str) -> bool:
    """Whether the text has anything link-like in it (in group chats the bot only answers those)."""
    return bool(_LINKISH.search(text or ""))
