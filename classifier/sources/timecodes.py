"""Times as people type them: read one (`parse_time`), write one (`format_time`), find them in chat text.

A moment in a DJ set comes as `1:02:03`, `62:03`, `1h02m03s`, `1h 2m 3s`, `1m30`, `90s`, `90sec` or `3723`,
before or after the link, alone or with `at`, `@`, `from` or `t=` in front. `find_times` reads them all out
of a message; `parse_time` reads one time field (`--at`, Discord's `at:`, a link's `t=`).

Pure functions: no I/O. Every length is checked before any number is read, so no input raises anything
but `errors.BadTime` (Python refuses to turn more than 4,300 digits into an int, for one).
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass

from classifier import errors

__all__ = ["parse_time", "format_time", "find_times", "TimeMention", "bad_time", "TIME_HINT",
           "LONGEST_TIME_S", "MAX_TIME_CHARS"]

TIME_HINT = "Write it like 1:02:03, 62:03 or 1h2m3s."
LONGEST_TIME_S = 1e7      # ~115 days: anything longer is a typo, not a moment in a recording
MAX_TIME_CHARS = 40       # "1 hour 02 minutes 03.5 seconds" fits; a 5,000-digit number does not

_UNIT_WORDS = {
    "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "m": "m", "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "s": "s", "sec": "s", "secs": "s", "second": "s", "seconds": "s",
}
_UNIT_ALT = "|".join(sorted(_UNIT_WORDS, key=len, reverse=True))   # longest first: "mins" before "m"
_UNIT_TOKEN = re.compile(rf"(\d+(?:\.\d+)?)({_UNIT_ALT})?", re.ASCII)
_NEXT_UNIT = {"h": "m", "m": "s"}
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0}
# `--at 2:3` is read leniently (a field can only hold a time); in chat text only two-digit fields count,
# so a score ("3:1") or a ratio ("4:3") is not read as a time.
_COLON = re.compile(r"(\d+):(\d{1,2})(?::(\d{1,2}))?(\.\d+)?", re.ASCII)
_COLON_WORD = re.compile(r"\d{1,3}:\d{2}(?::\d{2})?(?:\.\d+)?", re.ASCII)
_COLON_LOOKALIKE = re.compile(r"\d+(?::\d+)+(?:\.\d+)?", re.ASCII)     # "1:99", "1:02:75", "1:02:03:04"
_NUMBER = re.compile(r"\d+(?:\.\d+)?", re.ASCII)
# "90s", "1990s", "00s": more often a decade than ninety seconds, so they need `at` in front or to stand alone.
_DECADE = re.compile(r"(?:1[0-9]|20)?[0-9]0s", re.ASCII)
_CONTEXT_WORDS = frozenset({"at", "@", "from", "t=", "around", "starting", "start", "timestamp"})
_GLUED_CONTEXT = ("@", "t=", "~")


def bad_time(text: str) -> errors.BadTime:
    """The error for an unreadable time, quoting (at most 40 characters of) what was written."""
    shown = text if len(text) <= 40 else text[:37] + "..."
    return errors.BadTime(f"I could not read the time \u201c{shown}\u201d. {TIME_HINT}")


def parse_time(text: str) -> float:
    """Seconds from any way people write a moment: `3723`, `1h2m3s`, `62m3s`, `1m30`, `1:02:03`, `62:03`,
    `1 hour 2 min`, `90sec`, `t=90`.

    A bare number after a unit takes the next smaller unit (`1m30` is 90 s, `1h30` is 90 min), because that
    is what people mean (yt-dlp's own parser rejects `1m30`). Raises `errors.BadTime` on anything else.
    """
    raw = str(text)
    if len(raw) > 3 * MAX_TIME_CHARS:                   # before unquoting: %3A triples a colon's length
        raise bad_time(raw)
    raw = urllib.parse.unquote(raw).strip()
    s = raw.lower().replace(" ", "")
    if s.startswith("t="):
        s = s[2:]
    if len(s) > MAX_TIME_CHARS:
        raise bad_time(raw)
    colon = _COLON.fullmatch(s)
    if colon:
        a, b, c, frac = colon.groups()
        if c is None:                                   # m:ss (minutes may exceed 59: "62:03")
            minutes, seconds, hours = int(a), int(b), 0
        else:                                           # h:mm:ss
            hours, minutes, seconds = int(a), int(b), int(c)
            if minutes >= 60:
                raise bad_time(raw)
        if seconds >= 60:
            raise bad_time(raw)
        value = hours * 3600 + minutes * 60 + seconds + (float(frac) if frac else 0.0)
    else:
        value = _parse_units(s, raw)
    if not math.isfinite(value) or value > LONGEST_TIME_S:
        raise bad_time(raw)
    return float(value)


def _parse_units(s: str, raw: str) -> float:
    tokens = _UNIT_TOKEN.findall(s)
    if not tokens or "".join(n + u for n, u in tokens) != s:
        raise bad_time(raw)
    total, last_unit = 0.0, ""
    for i, (number, word) in enumerate(tokens):
        unit = _UNIT_WORDS.get(word, "")
        if not unit:
            if i != len(tokens) - 1:
                raise bad_time(raw)
            unit = _NEXT_UNIT.get(last_unit, "s")       # "1m30" -> 30 s, "1h30" -> 30 min
        if last_unit and "hms".index(unit) <= "hms".index(last_unit):
            raise bad_time(raw)                         # units must go down: h, then m, then s
        total += float(number) * _UNIT_S[unit]
        last_unit = unit
    return total


def format_time(seconds: float) -> str:
    """`1:02:03` above an hour, else `2:03`; fractions of a second are dropped."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a time: {seconds!r}")
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# --- times in free text ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TimeMention:
    """A time typed in a message: what was written, its value, and whether it clearly means a moment."""

    text: str          # the words as typed, e.g. "1h 2m 3s"
    seconds: float
    clear: bool        # colon form, unit glued to a number, or `at`/`@`/`from`/`t=` in front


# Words are runs of printable ASCII: emoji, CJK and other Unicode punctuation end a word ("1:02:03🔥").
_WORD = re.compile(r"[\x21-\x7e]+")
_LEADING = "([{<\"'*_~"
_TRAILING = ".,;:!?)]}>\"'*_~"


def _words(text: str) -> list[str]:
    out = []
    for match in _WORD.finditer(text):
        word = match.group(0).lstrip(_LEADING).rstrip(_TRAILING)
        if word:
            out.append(word)
    return out


def _timeish(word: str) -> bool:
    """Could this word be (part of) a time written with units: a number, a unit, or both glued?"""
    low = word.lower()
    return bool(_NUMBER.fullmatch(low) or low in _UNIT_WORDS or _UNIT_TOKEN.fullmatch(low)
                or (low[:1].isdigit() and all(w in _UNIT_WORDS or not w for w in re.split(r"[\d.]+", low))))


def find_times(text: str) -> tuple[list[TimeMention], bool]:
    """Every time typed in `text` (links already removed), and whether the text is *only* a time.

    Returns
    -------
    mentions : the times in order, each with `clear` set when it cannot be anything but a moment.
    alone : True when the text holds nothing but one time and filler (`at`, `please`, punctuation), so a
        bare `3723` or `90s` after a link means a moment.

    Raises
    ------
    errors.BadTime  a word shaped like a time that is not one (`1:99`, `1:02:75`, `1s2m`), or a time
        far too long to be one where a time is expected (`at 99999...`).
    """
    words = _words(text)
    mentions: list[TimeMention] = []
    covered: set[int] = set()                   # indices of words that are part of a time
    i = 0
    while i < len(words):
        word, context = words[i], i > 0 and words[i - 1].lower() in _CONTEXT_WORDS
        for glue in _GLUED_CONTEXT:
            if word.lower().startswith(glue) and len(word) > len(glue):
                word, context = word[len(glue):], True
        if _COLON_WORD.fullmatch(word) or (_COLON_LOOKALIKE.fullmatch(word) and _two_digit_fields(word)):
            mentions.append(TimeMention(word, parse_time(word), True))
            covered.add(i)
            i += 1
            continue
        if not _timeish(word) or word.lower() in _UNIT_WORDS:
            i += 1
            continue
        end, seconds = _longest_run(words, i, word)
        if seconds is None:
            if end and (context or len(words) == 1):
                raise bad_time(word)            # e.g. 5,000 digits where a time is expected
            i += 1
            continue
        typed = [word, *words[i + 1:end]]
        glued = any(_GLUED_UNIT.search(w.lower()) for w in typed)
        clear = context or (glued and not _DECADE.fullmatch(" ".join(typed).lower()))
        mentions.append(TimeMention(" ".join(typed), seconds, clear))
        covered.update(range(i, end))
        i = end
    alone = len(mentions) == 1 and all(k in covered or w.lower() in _FILLER for k, w in enumerate(words))
    return mentions, alone


_GLUED_UNIT = re.compile(r"\d[a-z]")


def _longest_run(words: list[str], i: int, first: str) -> tuple[int, float | None]:
    """The longest run of words from `i` that reads as one time ("1h 2m 3s", "1 hour 2 min", "90 sec"):
    `(end, seconds)`, or `(end, None)` when none does (`end` > 0 if only because it is far too long).

    Words join only where a number meets a unit ("1 h", "1h 30"), so "track 2 3723" never becomes 23723 s.
    """
    run, best, too_long = first, None, False
    for j in range(i + 1, min(i + 7, len(words)) + 1):
        if len(run) > MAX_TIME_CHARS:
            too_long = best is None
            break
        try:
            best = (j, parse_time(run))
        except errors.BadTime:
            if j == i + 1 and _looks_like_units(run):
                raise bad_time(run) from None   # "1s2m", "1h2h": units, but in no order
        if j == len(words) or not _timeish(words[j]) or run[-1].isdigit() == words[j][0].isdigit():
            break
        run += words[j]
    if best is not None:
        return best
    return (1 if too_long else 0), None


_FILLER = frozenset({"please", "pls", "plz", "thanks", "thx", "ty", "id", "?", "!"}) | _CONTEXT_WORDS


def _two_digit_fields(word: str) -> bool:
    """`1:99` and `1:02:75` are meant as times (and get a sentence); `3:1` and `4:3` are scores and ratios."""
    fields = word.split(".")[0].split(":")
    return all(len(f) == 2 for f in fields[1:])


def _looks_like_units(word: str) -> bool:
    """`1s2m` or `1h2h`: numbers and unit letters only, with at least two units (so "2m" alone is fine)."""
    parts = _UNIT_TOKEN.findall(word.lower())
    return "".join(n + u for n, u in parts) == word.lower() and sum(1 for _, u in parts if u) >= 2
