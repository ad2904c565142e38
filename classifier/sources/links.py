"""Chat text -> a `Source`: the link in a message (or in the message it answers) and the time typed with it.

`understand` is the one function every front end calls with what a user sent; `spy link` prints what it
returns. The pieces: `timecodes` reads times, `platforms` turns one URL into a canonical `Source`; this
module finds the URLs and the typed times in free text and decides which time wins.

Pure functions only: nothing here touches the network. `fetch.py` resolves share links and downloads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterable

from classifier import errors
from classifier.sources.platforms import (
    MAX_URL_CHARS,
    SOUNDCLOUD_HOSTS,
    SOUNDCLOUD_SHORT_HOST,
    YOUTUBE_HOSTS,
    Page,
    Source,
    egress_allowed,
    from_url,
    is_allowed_url,
    page_of,
    split_host_port,
    split_url,
)
from classifier.sources.timecodes import (
    LONGEST_TIME_S,
    bad_time,
    find_times,
    format_time,
    parse_time,
)

__all__ = [
    "understand", "find_source", "urls_in", "MAX_TEXT_CHARS",
    # re-exported: the names front ends and fetch.py have always imported from here
    "Source", "Page", "page_of", "from_url", "parse_time", "format_time", "is_allowed_url", "egress_allowed",
    "split_host_port", "YOUTUBE_HOSTS", "SOUNDCLOUD_HOSTS", "SOUNDCLOUD_SHORT_HOST",
]

# Longest text read at all, checked before any parsing. Telegram's messages stop at 4,096 characters and
# Discord's at 4,000; a longer one is a paste of something else. (`settings.max_message_chars` sets it.)
MAX_TEXT_CHARS = 8192

# RFC 3986's characters, less `'` (people quote links with it). A link ends at anything else: a space, an
# emoji, CJK or other Unicode punctuation (`youtu.be/ID。`), since browsers copy links percent-encoded.
_URL_CHAR = r"[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]"
_CANDIDATE = re.compile(rf"""(?ix)
      https?://{_URL_CHAR}+                                            # anything with a scheme (IPs, localhost)
    | (?<![A-Za-z0-9@.-])(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+[a-z]{{2,63}}  # or a bare domain ...
      (?::\d{{1,5}})?(?:[/?#]{_URL_CHAR}*)?                            # ... with an optional port and path
""")
_TRAILING = ".,;:!?*~"
# `[label](https://...)`: the target is the link (its label may be the same URL, or words).
_MARKDOWN_LINK = re.compile(r"\[([^\[\]\n]{0,500})\]\((https?://[^\s()<>]{1,2048}(?:\([^\s()<>]{0,200}\))?)\)",
                            re.I)
# Discord's mentions, custom emoji and timestamps (`<@123>`, `<:name:123>`, `<t:1700000000:R>`) hold numbers
# and colons that must not be read as times.
_DISCORD_MARKUP = re.compile(r"<(?:@[!&]?|#|a?:\w{1,64}:|t:|/[\w -]{1,64}:)\d{1,20}(?::[tTdDfFR])?>")
_COMMAND = re.compile(r"^\s*[/!][A-Za-z_]{1,32}(?:@\w{1,64})?(?=\s|$)")


def urls_in(text: str, extra_hosts: tuple[str, ...] = ()) -> tuple[list[str], str]:
    """URL-looking words in order (bare domains only with `www.`, a path, or a known host), and the text
    with them taken out (where a typed time is looked for)."""
    text = _DISCORD_MARKUP.sub(" ", text)
    text = _MARKDOWN_LINK.sub(lambda m: f" {m.group(2)} {m.group(1)} ", text)
    urls: list[str] = []
    rest: list[str] = []
    last = 0
    for match in _CANDIDATE.finditer(text):
        word = _trim(match.group(0), text[:match.start()])
        if match.group(0).lower().startswith(("http://", "https://")):
            urls.append(word)
        else:
            host = split_host_port(re.split(r"[/?#]", word, maxsplit=1)[0])[0]
            if not (host in YOUTUBE_HOSTS or host in SOUNDCLOUD_HOSTS or host.startswith("www.")
                    or re.search(r"[/?#]", word)):
                continue
            urls.append("https://" + word)
        rest.append(text[last:match.start()])
        last = match.start() + len(word)
    rest.append(text[last:])
    return urls, " ".join(rest)


def _trim(word: str, before: str) -> str:
    """Drop what ends a sentence or closes a bracket around the link, never what belongs to it: `)` only
    when unbalanced, `_` only when an `_` opened it (Markdown emphasis), since a slug or an id may end in `_`."""
    emphasis = len(before) - len(before.rstrip("_"))
    while word:
        last = word[-1]
        if last in _TRAILING or (last == ")" and word.count(")") > word.count("(")) or (
                last == "]" and word.count("]") > word.count("[")):
            word = word[:-1]
        elif last == "_" and emphasis > 0:
            word, emphasis = word[:-1], emphasis - 1
        else:
            break
    return word


@dataclass(frozen=True, slots=True)
class _Reading:
    """One message read: its first usable link (or why none was), and its words without links."""

    source: Source | None
    refusal: errors.BadSource | None
    rest: str


def _read(text: str, extra_urls: Iterable[str], extra_hosts: tuple[str, ...]) -> _Reading:
    urls, rest = urls_in(text, extra_hosts)
    rest = _COMMAND.sub(" ", rest)
    # A later good link wins over an earlier bad one; otherwise the most specific refusal is kept:
    # what is wrong with a platform link beats "wrong host", which beats "no link at all".
    platform_refusal: errors.BadSource | None = None
    host_refusal: errors.NotAllowed | None = None
    for url in [*urls, *extra_urls]:
        if len(url) > MAX_URL_CHARS:
            platform_refusal = platform_refusal or errors.TextTooLong(
                f"That link is {len(url):,} characters long; a track link is much shorter. Copy it again "
                "with the Share button.")
            continue
        if split_url(url) is None:
            continue
        try:
            return _Reading(from_url(url, extra_hosts), None, rest)
        except errors.NotAllowed as exc:
            host_refusal = host_refusal or exc
        except errors.BadSource as exc:
            platform_refusal = platform_refusal or exc
    return _Reading(None, platform_refusal or host_refusal, rest)


def _typed_time(rest: str, source: Source | None) -> float | None:
    """The one time typed in a message's words, or None; two different ones raise `errors.TwoTimes`."""
    mentions, alone = find_times(rest)
    times: list[float] = []
    for mention in mentions:
        if (mention.clear or alone) and mention.seconds not in times:
            times.append(mention.seconds)
    if len(times) > 1:
        shown = " and ".join(format_time(t) for t in times[:3])
        raise errors.TwoTimes(f"You wrote two different times, {shown}. Which one do you mean? Send the link "
                              "again with just that one.", times_s=tuple(times),
                              source=None if source is None else source.with_start(None))
    return times[0] if times else None


def _explicit(at: str | float) -> float:
    if isinstance(at, str):
        return parse_time(at)
    value = float(at)
    if not math.isfinite(value) or value < 0 or value > LONGEST_TIME_S:
        raise bad_time(str(at))
    return value


def _check_length(text: str | None, max_chars: int, what: str) -> None:
    if text is not None and len(text) > max_chars:
        raise errors.TextTooLong(f"That {what} is {len(text):,} characters long; I read at most {max_chars:,}. "
                                 "Send just the link (and a time, if you like).")


def understand(text: str, *, at: str | float | None = None, reply_text: str | None = None,
               extra_urls: Iterable[str] = (), extra_hosts: tuple[str, ...] = (),
               max_chars: int = MAX_TEXT_CHARS) -> Source:
    """What a chat message asks for: the track it links to and where to listen.

    Parameters
    ----------
    text : the message, or a command's text (`/identify <link> at 1:02:03`; the command word is ignored).
    at : an explicit time field (Discord's `at:`, `--at`, the HTTP API's `at`); it wins over any other time.
    reply_text : the message that `text` answers, with its hidden link URLs appended. Its link is used when
        `text` has no link at all (`/identify 1:02:03` sent as a reply to a link).
    extra_urls : the message's own hidden links (Telegram text links, Discord embeds), after its visible ones.
    extra_hosts : operator-added `host:port` media hosts (`settings.fetch_extra_hosts`).
    max_chars : longest `text` or `reply_text` read at all (`settings.max_message_chars`).

    The start, first found wins: `at`; a time typed in `text` (before or after the link, `at 1:02:03`,
    `@62:03`, `from 1h 2m 3s`, `t=90`, or a bare `3723`/`90s` when it is all that was typed beside the link);
    a time typed in `reply_text`; the time in the link itself (`?t=`, `#t=`). None: no time anywhere.

    Raises
    ------
    errors.TwoTimes         two different times typed in one message (`.times_s`, `.source` let a bot ask)
    errors.BadTime          a time that cannot be read (`at 1:99`, `--at soon`), with how to write one
    errors.TextTooLong      a message or link too long to be one
    errors.NotAllowed       links only to hosts outside the allowlist
    errors.PlaylistRefused  a playlist, set, channel or profile instead of one track
    errors.BadSource        no link at all, or a platform page that is not a track
    """
    extra = [u for u in extra_urls if u]
    _check_length(text, max_chars, "message")
    _check_length(reply_text, max_chars, "message")
    for url in extra:
        _check_length(url, MAX_URL_CHARS, "link")
    if at is not None and not (isinstance(at, str) and not at.strip()):
        start: float | None = _explicit(at)
    else:
        start = None
    own = _read(text or "", extra, extra_hosts)
    # The message it answers counts only when this one has no link at all: a refused link of its own (a
    # playlist, another host) is what the user meant, and the refusal says what to do about it.
    answered = reply_text is not None and own.source is None and own.refusal is None
    reply = _read(reply_text, (), extra_hosts) if answered else None
    source = own.source or (reply.source if reply else None)
    if start is None:
        start = _typed_time(own.rest, source)
        if start is None and reply is not None and reply.source is not None:
            start = _typed_time(reply.rest, source)
    if source is None:
        refusal = own.refusal or (reply.refusal if reply else None)
        if refusal is not None:
            raise refusal
        if start is not None:
            raise errors.BadSource(f"I see the time {format_time(start)} but no link. Paste the link with it, "
                                   "or send it as a reply to the message with the link.")
        raise errors.BadSource()
    return source if start is None else source.with_start(start)


def find_source(text: str, *, at: str | float | None = None, extra_hosts: tuple[str, ...] = ()) -> Source:
    """`understand(text, at=at, extra_hosts=extra_hosts)`: kept for the callers that only have one text."""
    return understand(text, at=at, extra_hosts=extra_hosts)
