"""Chat text -> a `Source`: the ONE place in bot/ where a message's words become a link and a time.

Every front end reaches it through `bot.core.BotCore.source`. The reading itself (a time wherever people
type it, every single-track link form, the refusals) is `classifier.sources.links.understand`; this module
adds what only a chat needs: whether a message is worth reading at all in a group.
"""

from __future__ import annotations

import re
from typing import Iterable

from classifier.sources.links import Source, understand

__all__ = ["source_in", "looks_like_link"]

_LINKISH = re.compile(r"(?i)https?://|www\.|\b(?:youtu\.be|youtube\.com|soundcloud\.com)\b|\b\d{1,3}(?:\.\d{1,3}){3}:\d+")


def source_in(text: str, *, at: str | float | None = None, reply_text: str | None = None,
              extra_urls: Iterable[str] = (), extra_hosts: tuple[str, ...] = (), max_chars: int = 8192) -> Source:
    """The track a message asks about and where to listen (`understand`): an explicit `at` option wins, then a
    time typed anywhere in `text`, then one typed in the message it answers (`reply_text`, whose link is used
    when `text` has none), then the link's own. Raises named `errors.BadSource` subclasses with a sentence."""
    return understand(text, at=at, reply_text=reply_text, extra_urls=extra_urls, extra_hosts=extra_hosts,
                      max_chars=max_chars)


def looks_like_link(text: str) -> bool:
    """Whether the text has anything link-like in it (in group chats the bot only answers those)."""
    return bool(_LINKISH.search(text or ""))
