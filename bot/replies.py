"""Turn verdicts, genre reports, progress and errors into chat text: platform-neutral, with markup hooks.

Every front end (Telegram, Discord, ...) renders through this module, so the product says the same thing
everywhere. Two layers:

- `Answer` holds the parts of one reply as plain strings (title, top-5 `Row`s with bars and percentages,
  confidence, genre and source lines). A Discord embed maps them onto its fields; `Answer.render(markup)`
  joins them into one message for platforms that take text.
- `Markup` is the only platform-specific bit: how to escape text and how to write bold and links.
  `PLAIN`, `HTML` (Telegram's parse mode) and `MARKDOWN` (Discord) are provided.

Failures become sentences with `error_text(exc)`: a `SpyError`'s own `user_message` (plus the wait for
`Busy`), a generic sentence for anything else. Nothing here raises or touches the network.

Every sentence a chat user reads lives here, the platforms' command menus, usage texts, history and
correction sentences included, so the product's voice can be read (and changed) in one file; that is
why this module is longer than the ~400 lines a module usually gets.
"""

from __future__ import annotations

import html
import math
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from classifier import errors
from classifier.model.verdict import GenreReport, Verdict
from classifier.model.voting import Candidate
from classifier.sources.links import format_time

__all__ = [
    "Markup", "PLAIN", "HTML", "MARKDOWN", "Row", "Answer", "identify_answer", "genre_answer", "answer_for",
    "progress_text", "error_text", "GENERIC_ERROR", "format_wait", "bar", "percent", "slow_down", "chat_busy",
    "all_busy", "file_too_big", "empty_file", "not_audio", "usage", "help_text", "start_text", "about_text",
    "chart_caption", "LISTENING", "WRONG", "CONTEXT_MENU", "BOTH_GIVEN", "HISTORY_OFF", "GROUPS_NOTE",
    "TELEGRAM_MENU", "TELEGRAM_HISTORY_MENU", "DISCORD_COMMANDS", "DISCORD_OPTIONS", "download_failed",
    "option_usage", "telegram_help", "history_usage", "CORRECT_USAGE", "which_artist", "thanks", "forgotten",
    "WHO_ARE_YOU", "RECORD_GONE", "LIST_TOO_OLD", "REPLY_WITH_NAME", "NAME_PLACEHOLDER", "NOT_IN_HISTORY", "NEWER",
    "OLDER", "FORM_TITLE", "FORM_LABEL", "HISTORY_N",
]

GENERIC_ERROR = errors.SpyError.default_message
LISTENING = "🎧 Listening…"
BAR_CELLS = 8          # a phone's narrow column fits 8 cells, a percentage and a name on one line
_FULL, _EMPTY = "█", "░"
_NAME_CHARS = 40       # names longer than this are cut (a chat line, not a database)


# --- markup -----------------------------------------------------------------------------------------

def _same(text: str) -> str:
    return text


def _plain_link(text: str, url: str) -> str:
    return url          # plain text has no hidden links: show the whole address


def _html_link(text: str, url: str) -> str:
    return f'<a href="{html.escape(url, quote=True)}">{text}</a>'


_MD_SPECIAL = re.compile(r"([\\*_~`|>\[\]()#-])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


@dataclass(frozen=True, slots=True)
class Markup:
    """How one platform writes text. `bold`, `italic` and `link` receive text that is already escaped."""

    escape: Callable[[str], str] = _same
    bold: Callable[[str], str] = _same
    italic: Callable[[str], str] = _same
    link: Callable[[str, str], str] = _plain_link    # (escaped text, raw URL)


PLAIN = Markup()
HTML = Markup(escape=lambda s: html.escape(s, quote=False), bold=lambda s: f"<b>{s}</b>",
              italic=lambda s: f"<i>{s}</i>", link=_html_link)
MARKDOWN = Markup(escape=_md_escape, bold=lambda s: f"**{s}**", italic=lambda s: f"*{s}*",
                  link=lambda text, url: f"[{text}](<{url}>)")


# --- small pieces -------------------------------------------------------------------------------------

def percent(x: float) -> str:
    """`0.784` -> `"78%"` (clamped to 0..100)."""
    return f"{round(100 * min(1.0, max(0.0, x))):d}%"


def bar(x: float, cells: int = BAR_CELLS) -> str:
    """A text bar for a share in 0..1: `bar(0.5, 8)` -> `████░░░░`."""
    full = round(cells * min(1.0, max(0.0, x)))
    return _FULL * full + _EMPTY * (cells - full)


def clipped_note(limit_s: float, at_s: float | None = None) -> str:
    """The note under an answer when only part of a long file was heard (both bots send it)."""
    if at_s:
        return f"I listened to {format_wait(limit_s)} from {format_time(at_s)}."
    return f"I listened to the first {format_wait(limit_s)}."


def format_wait(seconds: float) -> str:
    """`12.2` -> `"13 s"`, `75` -> `"1 min 15 s"` (rounded up: never tell someone to come back too early)."""
    s = max(1, math.ceil(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    return f"{m} min {s} s" if s else f"{m} min"


def _clock(seconds: float) -> str:
    from classifier.sources.links import format_time

    return format_time(max(0.0, seconds)) if math.isfinite(seconds) else "?"


def _short(name: str, limit: int = _NAME_CHARS) -> str:
    name = " ".join(str(name).split())
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _link_text(url: str) -> str:
    """A URL as people read it: no scheme, no `www.`, cut to fit a phone line."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.netloc or "").removeprefix("www.")
    rest = parts.path.rstrip("/")
    if parts.query:
        rest += "?" + parts.query
    return _short(host + rest, 48)


# --- answers ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Row:
    """One candidate: `rank`, `label`, its `share` (0..1) and how many of the clip's `slices` voted for it."""

    rank: int
    label: str
    share: float
    votes: int
    slices: int

    @property
    def percent(self) -> str:
        return percent(self.share)

    @property
    def bar(self) -> str:
        return bar(self.share)

    def render(self, m: Markup = PLAIN) -> str:
        # Bar and percentage first: they line up on a phone however long the names are.
        return f"{self.rank}. {self.bar} {self.percent:>4}  {m.escape(_short(self.label))}"


@dataclass(frozen=True, slots=True)
class Answer:
    """The parts of one reply, as plain unescaped strings (None: leave the part out).

    title : the headline, e.g. "I think this is Deep Pulse" (`subject` is the part to emphasise)
    intro : a sentence under the title ("The nearest, all weak:")
    rows : the ranked candidates (the top-5)
    confidence, genre, descriptors : one line each, already labelled ("Confidence: ...", "Genre: ...")
    source : "Source: <where> · 0:10–0:40"; `source_url` is the link when there is one
    note : a hint from the classifier or the bot ("I listened to the first 2:00.")
    """

    kind: str                           # "identify" | "genre"
    identified: bool
    title: str
    subject: str | None = None
    intro: str | None = None
    rows: tuple[Row, ...] = ()
    confidence: str | None = None
    genre: str | None = None
    descriptors: str | None = None
    source: str | None = None
    source_where: str | None = None     # the part of `source` that is the link's text
    source_url: str | None = None
    note: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)   # raw numbers, for embeds and logs

    def title_markup(self, m: Markup = PLAIN) -> str:
        if self.subject and self.subject in self.title:
            before, _, after = self.title.partition(self.subject)
            return m.escape(before) + m.bold(m.escape(self.subject)) + m.escape(after)
        return m.bold(m.escape(self.title))

    def source_markup(self, m: Markup = PLAIN) -> str | None:
        if self.source is None:
            return None
        if self.source_url and self.source_where and self.source_where in self.source:
            before, _, after = self.source.partition(self.source_where)
            return m.escape(before) + m.link(m.escape(self.source_where), self.source_url) + m.escape(after)
        return m.escape(self.source)

    def lines(self, m: Markup = PLAIN) -> list[str]:
        out = [self.title_markup(m)]
        if self.intro:
            out.append(m.escape(self.intro))
        out.extend(r.render(m) for r in self.rows)
        for part in (self.confidence, self.genre, self.descriptors):
            if part:
                out.append(m.escape(part))
        src = self.source_markup(m)
        if src:
            out.append(src)
        if self.note:
            out.append(m.italic(m.escape(self.note)))
        return out

    def render(self, m: Markup = PLAIN) -> str:
        """The whole reply as one message: readable on its own, without the chart."""
        return "\n".join(self.lines(m))


def _rows(cands: Sequence[Candidate], slices: int) -> tuple[Row, ...]:
    return tuple(Row(i, c.label, c.score, c.votes, slices) for i, c in enumerate(cands, 1))


def _source(display: str, start: float, seconds: float) -> tuple[str, str, str | None]:
    """("Source: where · 0:10–0:40", where, url or None)."""
    span = f"{_clock(round(start))}–{_clock(round(start + seconds))}"   # 14.98 s of audio reads as 15
    is_url = display.startswith(("http://", "https://"))
    where = _link_text(display) if is_url else _short(display)
    return f"Source: {where} · {span}", where, display if is_url else None


def _genre_line(genres: Sequence[Candidate], n: int = 3) -> str | None:
    if not genres:
        return None
    return "Genre: " + " · ".join(f"{g.label} {percent(g.score)}" for g in genres[:n])


def _slices(n: int) -> str:
    return f"{n} slice" if n == 1 else f"{n} slices"


def identify_answer(v: Verdict, *, note: str | None = None) -> Answer:
    """The reply to "who made this?": top-5 artists with bars, the vote's confidence, genre and source."""
    top = v.artists[0] if v.artists else None
    if v.identified and top is not None:
        title, subject, intro = f"🎧 I think this is {top.label}.", top.label, None
        confidence = (f"Confidence: {percent(v.confidence)} · {top.votes} of {_slices(v.slices)} "
                      f"voted {top.label}")
    else:
        title, subject = "🤷 I don't know this one.", None
        known = f"any of the {v.model_artists} artists I know" if v.model_artists else "any artist I know"
        intro = (f"It doesn't sound enough like {known}. The nearest, all weak:" if v.artists
                 else f"It doesn't sound like {known}.")
        confidence = f"Confidence: {percent(v.confidence)}, too low to name anyone"
    source, where, url = _source(v.source, v.start, v.seconds)
    return Answer(
        kind="identify", identified=v.identified and top is not None, title=title, subject=subject, intro=intro,
        rows=_rows(v.artists, v.slices), confidence=confidence, genre=_genre_line(v.genres), source=source,
        source_where=where, source_url=url, note=_note(v.hint, note),
        fields={"confidence": v.confidence, "vote_share": v.vote_share, "slices": v.slices, "seconds": v.seconds,
                "start": v.start, "model": v.model_id},
    )


def genre_answer(g: GenreReport, *, note: str | None = None) -> Answer:
    """The reply to /genre: the top genres with bars, the descriptors, the source."""
    top = g.genres[0] if g.genres else None
    title = f"🎛 Genre: {top.label}" if top else "🎛 I can't tell the genre of this one."
    descriptors = ("Sounds: " + " · ".join(d.label for d in g.descriptors[:4])) if g.descriptors else None
    source, where, url = _source(g.source, g.start, g.seconds)
    return Answer(
        kind="genre", identified=top is not None, title=title, subject=top.label if top else None,
        rows=_rows(g.genres, g.slices), descriptors=descriptors, source=source, source_where=where, source_url=url,
        note=_note(g.hint, note), fields={"slices": g.slices, "seconds": g.seconds, "start": g.start},
    )


def answer_for(result: Verdict | GenreReport, *, note: str | None = None) -> Answer:
    """`identify_answer` or `genre_answer`, whichever fits the result."""
    if isinstance(result, Verdict):
        return identify_answer(result, note=note)
    return genre_answer(result, note=note)


def _note(*notes: str | None) -> str | None:
    parts = [n for n in notes if n]
    return " ".join(parts) if parts else None


def chart_caption(result: Verdict | GenreReport) -> str:
    what = "artists" if isinstance(result, Verdict) else "genres"
    return f"Top {what}, and the vote of each slice along the clip."


# --- progress -----------------------------------------------------------------------------------------

def progress_text(stage: str, done: int = 0, total: int = 0) -> str:
    """One status line for a job's stage: "listening", "downloading", "fetching", "analysing", "done"."""
    if stage == "downloading":
        return "⬇️ Downloading your audio…"
    if stage == "fetching":
        return "⬇️ Fetching the audio from the link…"
    if stage == "analysing":
        if total > 0:
            return f"🔎 Analysing… {min(done, total)}/{_slices(total)}"
        return f"🔎 Analysing… {_slices(done)}" if done else "🔎 Analysing…"
    if stage == "done":
        return "✅ Done. Writing the answer…"
    return LISTENING


# --- errors and refusals --------------------------------------------------------------------------------

def error_text(exc: BaseException) -> str:
    """The sentence a chat user sees for a failure. Unknown exceptions get a generic sentence (never details)."""
    if not isinstance(exc, errors.SpyError):
        return GENERIC_ERROR
    message = exc.user_message
    if isinstance(exc, errors.Busy) and exc.retry_after_s > 0:
        wait = f"Try again in {format_wait(exc.retry_after_s)}."
        vague = "Try again in a moment."
        message = message.replace(vague, wait) if vague in message else f"{message} {wait}"
    return message


def slow_down(per_minute: int) -> str:
    times = "once" if per_minute == 1 else f"{per_minute} times"
    return f"Slow down a little: I listen {times} a minute for each person."


def chat_busy(per_chat: int) -> str:
    clips = "a clip" if per_chat == 1 else f"{per_chat} clips"
    return f"I'm already listening to {clips} from this chat. Let me finish first."


def all_busy() -> str:
    return "I'm listening to a lot of music right now."


def _mb(n: int) -> str:
    """Bytes as Telegram counts them (its "20 MB" is 20 MiB): `20971520` -> `"20 MB"`, `21500000` -> `"20.5 MB"`."""
    if n < 1 << 20:
        return f"{max(1, round(n / 1024))} kB"
    value = f"{n / (1 << 20):.1f}".removesuffix(".0")
    return f"{value} MB"


def file_too_big(size: int | None, limit: int) -> str:
    what = f"That file is {_mb(size)}" if size else "That file is too big"
    return f"{what}; I can download up to {_mb(limit)}. Send a shorter piece, or a link."


def empty_file(kind: str) -> str:
    return f"That {kind} is empty: there is nothing in it to listen to."


def not_audio(name: str | None, mime: str | None) -> str:
    what = f"“{_short(name, 30)}”" if name else "That file"
    kind = f" ({mime})" if mime else ""
    return (f"{what}{kind} is not audio. Send an MP3, M4A, OGG, WAV, a voice note, or a YouTube or "
            "SoundCloud link.")


def usage(command: str, prefix: str = "/") -> str:
    """How to call /identify or /genre, shown when it comes without anything to listen to."""
    return (f"Send {prefix}{command} with a link, like {prefix}{command} https://youtu.be/… 1:02:03, "
            f"or reply {prefix}{command} to a voice note or an audio file.")


# --- help, start, about -------------------------------------------------------------------------------

def help_text(m: Markup = PLAIN, *, prefix: str = "/", max_file_bytes: int | None = None,
              max_clip_seconds: float | None = None, groups: str | None = None) -> str:
    """What the bot does and how to ask, with examples. `groups`: a platform's sentence about group chats."""
    e, b = m.escape, m.bold
    limits = []
    if max_file_bytes:
        limits.append(f"up to {_mb(max_file_bytes)}")
    if max_clip_seconds:
        limits.append(f"I listen to {_clock(max_clip_seconds)} at most")
    limit_text = f" ({', '.join(limits)})" if limits else ""
    lines = [
        e("Send me music and I'll tell you which artists it sounds like, and its genre."),
        "",
        e("• Paste a YouTube or SoundCloud link. Add a time for a moment in a long mix: ?t=1h02m03s"),
        e(f"• Send a voice note, an audio file or a video note{limit_text}."),
        e("• ") + b(e(f"{prefix}identify <link> [time]")) + e(" — who made this?"),
        e("• ") + b(e(f"{prefix}genre <link>")) + e(f", or reply {prefix}genre to a voice note or audio file"),
        e("• ") + b(e(f"{prefix}about")) + e(" — the model and the artists it knows"),
        "",
        b(e("Examples")),
        e(f"{prefix}identify https://youtu.be/dQw4w9WgXcQ 1:02:03"),
        e(f"{prefix}identify https://soundcloud.com/artist/track#t=2:30"),
        e(f"{prefix}genre https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=95"),
    ]
    if groups:
        lines += ["", e(groups)]
    return "\n".join(lines)


def start_text(m: Markup = PLAIN, **kwargs: Any) -> str:
    return m.bold(m.escape("Hi! I'm Deep House Spy.")) + "\n" + help_text(m, **kwargs)


def about_text(about: Mapping[str, Any], m: Markup = PLAIN) -> str:
    """The model and its artists, from `Classifier.about()`."""
    e = m.escape
    model = about.get("model") or None
    backbones = ", ".join(str(b) for b in about.get("backbones") or ()) or "the tagging networks"
    if not model:
        return "\n".join([e("No artists are enrolled yet, so I can only tell genres. "
                           f"Genres come from {backbones}.")] + _fetch_line(about, m))
    names = [str(a) for a in model.get("artists") or ()]
    lines = [m.bold(e(f"Model {model.get('id', '?')}")) + e(f": {len(names)} artists")]
    if model.get("created"):
        lines.append(e(f"Trained {model['created']}."))
    shown = names[:50]
    if shown:
        lines.append(e(", ".join(_short(n) for n in shown) + (f" and {len(names) - len(shown)} more" if
                                                               len(names) > len(shown) else "")))
    lines.append(e(f"Genres come from {backbones}. I compare each 3-s slice of a clip with the artists I know "
                   "and let the slices vote."))
    return "\n".join(lines + _fetch_line(about, m))


def _fetch_line(about: Mapping[str, Any], m: Markup) -> list[str]:
    """"Links: yt-dlp 2026.10.26; YouTube challenges: deno 2.9.8 with yt-dlp-ejs 0.8.0" (or what is missing)."""
    tools = about.get("fetch")
    if not isinstance(tools, Mapping):
        return []
    from classifier.sources.jsruntime import FetchTools

    try:
        line = FetchTools(**tools).summary()
    except TypeError:                    # a service of another version: say nothing rather than something wrong
        return []
    return [m.escape(f"Links: {line}.")]


# --- commands, menus and usage -------------------------------------------------------------------------

WRONG = "Wrong? Tell me the artist"               # the button under an artist answer
CONTEXT_MENU = "Identify artist"                   # Discord: a message -> Apps -> this
BOTH_GIVEN = "Give me a link or a file, not both."
HISTORY_OFF = "History is not enabled in this build."
GROUPS_NOTE = "In groups, use the commands, mention me, or reply to one of my messages."
WHO_ARE_YOU = "I can't tell who you are here, so I can't tell which requests are yours."
RECORD_GONE = "I can't find that answer in this chat's history any more."
LIST_TOO_OLD = "That list is too old. Send /history again."
REPLY_WITH_NAME = "Reply to my question with the artist's name."
NAME_PLACEHOLDER = "The artist's name"
CORRECT_USAGE = "Reply /correct <artist> to my answer, like: /correct Deep Pulse"
NOT_IN_HISTORY = "I don't have that message in this chat's history. " + CORRECT_USAGE
NEWER, OLDER = "‹ Newer", "Older ›"
FORM_TITLE, FORM_LABEL = "Who is it?", "Artist"     # Discord's correction form

TELEGRAM_MENU = (
    ("identify", "Who made this? /identify <link> [1:02:03]"),
    ("genre", "The genre: /genre <link>, or reply /genre to a voice note"),
    ("about", "The model and the artists it knows"),
    ("help", "How to use me, with examples"),
)
TELEGRAM_HISTORY_MENU = (     # in the menu only when the bot keeps history
    ("history", "The last answers in this chat: /history [n]"),
    ("correct", "Reply /correct <artist> to an answer I got wrong"),
    ("forget_me", "Delete your requests from this chat's history"),
)
DISCORD_COMMANDS = {
    "identify": "Who made this? A link (with a time) or an audio file.",
    "genre": "The genre of a link (with a time) or an audio file.",
    "history": "The last answers in this channel (only you see them).",
    "forget_me": "Delete your requests from this channel's history.",
    "about": "The model and the artists it knows.",
}
DISCORD_OPTIONS = {"link": "A YouTube or SoundCloud link", "file": "A voice message or an audio file",
                   "at": "Where to listen, like 1:02:03 or 62:03"}
HISTORY_N = "How many answers to show (default {page}, at most {most})"


def download_failed(platform: str) -> str:
    """A platform would not hand over a file it had announced."""
    return f"I could not download that file from {platform}. Send it again?"


def option_usage(command: str) -> str:
    """How to call a Discord /identify or /genre, whose options are all optional in the schema."""
    return (f"Give /{command} a link or a file: /{command} link:https://youtu.be/… at:1:02:03, or attach a voice "
            f"message or an audio file. On any message: Apps -> {CONTEXT_MENU}.")


def telegram_help(m: Markup, *, start: bool, history: bool, **limits: Any) -> str:
    """/start or /help on Telegram: the shared help, the note about groups, and the history commands if kept."""
    text = (start_text if start else help_text)(m, groups=GROUPS_NOTE, **limits)
    if not history:
        return text
    e, b = m.escape, m.bold
    return text + "\n\n" + "\n".join([
        e("• ") + b(e("/history [n]")) + e(" — the last answers in this chat"),
        e(f"• Got it wrong? Press “{WRONG}” under the answer, or reply ") + b(e("/correct <artist>"))
        + e(" to it"),
        e("• ") + b(e("/forget_me")) + e(" — delete your requests from this chat's history"),
    ])


def history_usage(page: int, most: int) -> str:
    return f"Send /history for the last {page} answers, or /history 25 for more (up to {most})."


def which_artist(who: str, record_id: int) -> str:
    """The question under a "Wrong?" press on Telegram; `who` is already marked up. It must end with the record
    id in this form: the member's reply is matched to the record through it."""
    return f"{who}, which artist is it? Reply to this message with the name. (answer #{record_id})"


def thanks(record_id: int, artist: str, m: Markup = PLAIN) -> str:
    e = m.escape
    return (e(f"✏️ Thanks, noted: answer #{record_id} is ") + m.bold(e(artist))
            + e(". The operator reviews corrections before the model learns from them."))


def forgotten(n: int) -> str:
    """After /forget_me deleted `n` records."""
    if not n:
        return "🧹 I had nothing of yours in this chat's history."
    return f"🧹 Done: I deleted your {n} request{'' if n == 1 else 's'} from this chat's history."
