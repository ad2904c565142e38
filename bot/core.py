"""What every chat front end does alike: jobs with progress, answers with charts, history, corrections, failures.

    core = BotCore("telegram", settings, classifier, history)
    what = core.source(text)                            # or a `Clip` (bot.media) made from an attachment
    await core.answer(reply, "identify", what)          # `reply`: the platform's `Reply` for this request

A platform file maps its events onto these calls, renders `Post`s its own way (an HTML message, an embed)
and supplies one small adapter per request, a `Reply`: acknowledge, edit the status, replace the status
with a `Post`, send another `Post`, tell a failure's sentence. Nothing here imports a platform library.

Every job (`BotCore.job`, generic; `BotCore.answer` is /identify and /genre on top of it): a clip is looked
at first (type, size: `Clip.check`) so a refusal costs nothing; the chat's and the process's concurrent jobs
are counted (`bot.limits`); the request is acknowledged at once (a "listening…" message, Discord's
deferral) and that status is edited as the work moves (downloading/fetching, analysing 4/10 slices); an
attached clip is saved to a folder removed afterwards; then the status is replaced by the answer. Charts
are drawn in a thread when the platform is ready to send them; one that fails is logged and left out (the
text stands alone). With a `History`, answers are kept per chat; a failed write is logged, never shown.
Every failure reaches `fail`, the one place that logs it and tells the user (`bot.replies` sentences).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import logging
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    AsyncIterator,
    Awaitable,
    Callable,
    ClassVar,
    Hashable,
    Sequence,
    TypeVar,
)

from bot import charts, links, replies
from bot.history import history_text, link_at
from bot.limits import JobGuard, RateLimiter
from bot.media import Clip
from bot.status import Status
from classifier import errors
from classifier.model.verdict import GenreReport, Verdict
from classifier.serve.api import Classifier, Query
from classifier.settings import Settings
from classifier.sources.links import Source
from classifier.store.history import MAX_RECENT, History, Record

__all__ = ["BotCore", "Reply", "Post", "Attachment", "Button", "Job", "CHART_NAME", "HISTORY_PAGE"]

log = logging.getLogger(__name__)

CHART_NAME = "chart.png"
HISTORY_PAGE = 10      # answers per /history page: a phone screen
T = TypeVar("T")


# --- what goes out ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Attachment:
    """A file that goes with a post. `load()` makes its bytes when the platform is ready to send them (None:
    leave it out, already logged), so a platform that sends files after the text shows the text first."""

    name: str
    caption: str
    load: Callable[[], Awaitable[bytes | None]] = field(compare=False, repr=False)

    @property
    def image(self) -> bool:
        return self.name.lower().endswith((".png", ".jpg", ".jpeg"))

    @classmethod
    def of(cls, name: str, data: bytes, caption: str = "") -> "Attachment":
        """A file whose bytes are already there (a CUE sheet, a CSV)."""
        async def load() -> bytes:
            return data
        return cls(name, caption, load)


@dataclass(frozen=True, slots=True)
class Button:
    """A button under a post. `action` ("wrong:12") says what a press means; each platform carries it in its
    own id (Telegram's callback data, Discord's custom id) and routes the press back by it."""

    label: str
    action: str
    emoji: str | None = None
    disabled: bool = False


Text = Callable[[replies.Markup], str]
"""Marked-up text: written for whichever `replies.Markup` the platform renders with."""


@dataclass(frozen=True, slots=True)
class Post:
    """One message out, before a platform renders it.

    text : a plain sentence (str: sent as it is, no markup) or marked-up `Text`
    answer : a structured answer (Discord: an embed; elsewhere `answer.render`); takes the place of `text`
    files, buttons : what goes with it
    private : only the asker sees it, where the platform can do that (Discord's ephemeral messages)
    card : set apart as a box, where the platform has one (a Discord embed)
    """

    text: str | Text | None = None
    answer: replies.Answer | None = None
    files: tuple[Attachment, ...] = ()
    buttons: tuple[Button, ...] = ()
    private: bool = False
    card: bool = False

    def body(self, m: replies.Markup) -> tuple[str, bool]:
        """The text written in `m`, and whether it is marked up (False: send it with no parse mode)."""
        if self.answer is not None:
            return self.answer.render(m), True
        if callable(self.text):
            return self.text(m), True
        return self.text or "", False


# --- the per-platform adapter ------------------------------------------------------------------------------

class Reply(abc.ABC):
    """One request's way back to its chat: the small adapter each platform supplies.

    key : the event being answered (an update id, an interaction id): how `BotCore.fail` finds its job
    chat, user : as History names them (user "" when the platform does not say who asked)
    job_id : names the job in the log line ("tg-12", "dc-34")
    upload_limit_bytes : the largest file this chat takes
    """

    errors: ClassVar[tuple[type[BaseException], ...]] = ()    # the platform's API errors: a failed edit or send
    must_answer: ClassVar[bool] = False    # every refusal must be told (Discord interactions), not only the first
    edit_interval_s: ClassVar[float] = 1.0   # the fastest the platform takes edits of one message

    def __init__(self, key: Hashable, *, chat: str, user: str, job_id: str,
                 upload_limit_bytes: int = charts.MAX_PNG_BYTES) -> None:
        self.key, self.chat, self.user, self.job_id = key, chat, user, job_id
        self.upload_limit_bytes = upload_limit_bytes

    @property
    def message_id(self) -> str | None:
        """The status message, once acknowledged, where the platform gives it an id History can keep."""
        return None

    @property
    @abc.abstractmethod
    def acknowledged(self) -> bool:
        """Whether a status (or a deferral) is showing that `finish` would replace."""

    @abc.abstractmethod
    async def acknowledge(self) -> str:
        """Show at once that work has started; returns the status text now showing ("" for none)."""

    @abc.abstractmethod
    async def progress(self, text: str) -> None:
        """Change the status text."""

    @abc.abstractmethod
    async def finish(self, post: Post) -> str | None:
        """Replace the status with `post`; returns the id of the message that now shows it (None: unknown)."""

    @abc.abstractmethod
    async def send(self, post: Post) -> str | None:
        """A new message in answer to the request; returns its id (None: unknown)."""

    async def tell(self, text: str) -> None:
        """A failure's sentence: in place of the status if one is showing, else as a reply only the asker sees
        where the platform can do that."""
        if self.acknowledged:
            await self.finish(Post(text=text))
        else:
            await self.send(Post(text=text, private=True))


# --- jobs ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Job:
    """A running job: its request, its status, and (once a clip is saved) the query to classify."""

    reply: Reply
    status: Status
    started: float = field(default_factory=time.perf_counter)
    query: Query | None = None
    note: str | None = None      # a line for the answer ("I listened to the first 2 min.")
    finished: bool = False       # the answer is out: a later failure must not replace it

    async def ask(self, call: Callable[[Query, Status], Awaitable[T]]) -> T:
        """Run a classifier call with this job's progress; no progress edit lands after it."""
        assert self.query is not None
        try:
            return await call(self.query, self.status)
        finally:
            self.status.close()

    async def finish(self, post: Post) -> str | None:
        """Replace the status with the answer (after any progress edit in flight)."""
        shown = await self.status.final(lambda: self.reply.finish(post))
        self.finished = True
        return shown


# --- the core ------------------------------------------------------------------------------------------------

class BotCore:
    """What one front end shares with the others: settings, classifier, history, limits, the jobs running."""

    def __init__(self, platform: str, settings: Settings, classifier: Classifier,
                 history: History | None = None) -> None:
        self.platform = platform          # History's name for the front end ("telegram", "discord")
        self.settings = settings
        self.classifier = classifier
        self.history = history
        self.rate = RateLimiter(settings.user_requests_per_minute)
        self.jobs = JobGuard(settings.max_jobs_per_chat, settings.max_jobs_total)
        self._live: dict[Hashable, Job] = {}     # Reply.key -> its running job, for `fail`

    # -- what a request asks about ------------------------------------------------------------------------------
    def source(self, text: str, *, at: str | float | None = None, reply_text: str | None = None,
               extra_urls: Sequence[str] = ()) -> Source:
        """Chat text -> a `Source` (`bot.links.source_in`, with this process's extra hosts and length limit)."""
        return links.source_in(text, at=at, reply_text=reply_text, extra_urls=extra_urls,
                               extra_hosts=self.settings.fetch_extra_hosts, max_chars=self.settings.max_message_chars)

    def pick(self, clips: Sequence[Clip], text: str, extra_urls: Sequence[str] = ()) -> Source | Clip:
        """What a message asks about: its first audio clip, else its link; a file that is not audio is refused
        by name when there is no link beside it."""
        for clip in clips:
            if clip.audio_like():
                return clip
        if clips and not (links.looks_like_link(text) or extra_urls):
            clips[0].check(self.settings.max_file_bytes)     # not audio: raises with the file's name
        return self.source(text, extra_urls=extra_urls)

    def admit(self, reply: Reply) -> bool:
        """The per-user rate: True to go on, False to stay quiet; raises Busy ("slow down")."""
        return self.rate.check(reply.user or reply.chat, tell_every_time=reply.must_answer)

    # -- jobs ------------------------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def job(self, reply: Reply, what: Source | Clip) -> AsyncIterator[Job]:
        """A job's life around the body: refuse early, count it, acknowledge, save the clip; the body asks the
        classifier (`job.ask`) and answers (`job.finish`). A failure keeps the job for `fail` to tell."""
        if isinstance(what, Clip):
            what.check(self.settings.max_file_bytes)
        async with self.jobs.job(reply.chat):
            shown = await reply.acknowledge()
            job = Job(reply, Status(reply.progress, shown, interval_s=reply.edit_interval_s, edit_errors=reply.errors))
            self._live[reply.key] = job
            try:
                async with self._query(what, job.status) as (job.query, job.note):
                    yield job
            except asyncio.CancelledError:      # shutting down: no failure boundary will come for this one
                self._live.pop(reply.key, None)
                raise
            else:
                self._live.pop(reply.key, None)
            finally:
                job.status.close()

    @contextlib.asynccontextmanager
    async def _query(self, what: Source | Clip, status: Status) -> AsyncIterator[tuple[Query, str | None]]:
        """A Query for a link, or for a clip saved to a folder that is removed afterwards."""
        if isinstance(what, Source):
            yield Query(source=what), None
            return
        s = self.settings
        await status("downloading", 0, 0)
        with tempfile.TemporaryDirectory(prefix=f"spy-{self.platform}-") as tmp:
            path = Path(tmp) / f"clip{what.suffix}"
            await what.save(path, s.max_file_bytes)
            size = path.stat().st_size
            if size > s.max_file_bytes:            # the platform's stated size was wrong
                raise errors.DownloadTooLarge(replies.file_too_big(size, s.max_file_bytes), detail=f"{size} bytes")
            note = None
            if what.duration_s is not None and what.duration_s - (what.start_s or 0.0) > s.max_clip_seconds:
                note = replies.clipped_note(s.max_clip_seconds, what.start_s)
            yield Query(path=path, at=what.start_s, duration_s=s.max_clip_seconds, label=what.label), note

    async def answer(self, reply: Reply, kind: str, what: Source | Clip) -> None:
        """/identify or /genre: the job, then the answer with its chart (and "Wrong?" under artist answers)."""
        call = {"identify": self.classifier.identify, "genre": self.classifier.genre}[kind]
        async with self.job(reply, what) as job:
            result: Verdict | GenreReport = await job.ask(call)
            shown_at = reply.message_id
            record_id = await self.remember(reply, result)
            wrong = (Button(replies.WRONG, f"wrong:{record_id}", "✏️"),) \
                if record_id is not None and isinstance(result, Verdict) else ()
            chart = Attachment(CHART_NAME, replies.chart_caption(result),
                               functools.partial(self.chart, result, reply.upload_limit_bytes))
            shown = await job.finish(Post(answer=replies.answer_for(result, note=job.note), files=(chart,),
                                          buttons=wrong))
            if record_id is not None and shown is not None and shown != shown_at:
                assert self.history is not None      # the answer went out as a new message: /correct finds it there
                await self._write(self.history.set_message(record_id, shown), reply)
        host = what.host if isinstance(what, Source) else f"{self.platform}:{what.kind.replace(' ', '_')}"
        log.info("job %s chat=%s %s source=%s seconds=%.1f slices=%d answer=%s timings=%s wall=%.2fs",
                 reply.job_id, reply.chat, kind, host, result.seconds, result.slices,
                 getattr(result, "verdict", "genre"), dict(result.timings), time.perf_counter() - job.started)

    async def chart(self, result: Verdict | GenreReport, limit_bytes: int) -> bytes | None:
        """The chart PNG, drawn in a thread; None (logged) when it fails or is over the upload limit."""
        try:
            png = await asyncio.to_thread(charts.render_chart, result)
        except Exception:  # noqa: BLE001 - the answer goes out without it
            log.warning("chart not drawn", exc_info=True)
            return None
        if len(png) > min(limit_bytes, charts.MAX_PNG_BYTES):
            log.warning("chart of %d bytes is over the upload limit of %d", len(png), limit_bytes)
            return None
        return png

    # -- history ----------------------------------------------------------------------------------------------------
    def kept(self) -> History:
        """The history, or a refusal saying there is none."""
        if self.history is None:
            raise errors.BadRequest(replies.HISTORY_OFF)
        return self.history

    async def remember(self, reply: Reply, result: Verdict | GenreReport) -> int | None:
        """Keep the answer in the chat's history; its record id, or None without history (or if the write fails)."""
        if self.history is None:
            return None
        return await self._write(self.history.record(
            platform=self.platform, chat=reply.chat, user=reply.user, result=result, message=reply.message_id,
            source=link_at(result.source, result.start, self.settings.fetch_extra_hosts)), reply)

    async def _write(self, write: Awaitable[T], reply: Reply) -> T | None:
        """Await a history write. The answer matters more than its record: a failed write is logged, not shown."""
        try:
            return await write
        except sqlite3.Error:
            log.warning("history: could not write for job %s", reply.job_id, exc_info=True)
            return None

    async def history_post(self, chat: str, n: int, offset: int = 0) -> Post:
        """/history: one page of the chat's last `n` answers, `offset` records back, newest first, with
        "‹ Newer" / "Older ›" buttons ("history:<n>:<offset>"; disabled where there is no page) when they
        do not fit one page. Only the asker needs to see it."""
        history = self.kept()
        n = max(1, min(n, MAX_RECENT))
        offset = max(0, min(offset, n - 1))
        total = min(n, await history.count(self.platform, chat))
        records = await history.recent(self.platform, chat, min(HISTORY_PAGE, n - offset), offset)
        buttons = () if total <= HISTORY_PAGE else (
            Button(replies.NEWER, f"history:{n}:{max(0, offset - HISTORY_PAGE)}", disabled=offset == 0),
            Button(replies.OLDER, f"history:{n}:{offset + HISTORY_PAGE}", disabled=offset + HISTORY_PAGE >= total))
        text = functools.partial(history_text, records, offset=offset, total=total)
        return Post(text=text, buttons=buttons, private=True, card=True)

    async def record_in(self, chat: str, record_id: int) -> Record:
        """A record of this chat, or a refusal (a button can be forged, or outlive its record)."""
        record = await self.kept().get(record_id)
        if record is None or record.platform != self.platform or record.chat != chat:
            raise errors.BadRequest(replies.RECORD_GONE, detail=f"record {record_id}")
        return record

    async def correct(self, reply: Reply, record_id: int, artist: str) -> None:
        """Keep a member's correction of an answer in this chat, and thank them."""
        record = await self.kept().correct(record_id, user=reply.user, artist=artist, platform=self.platform,
                                           chat=reply.chat)
        log.info("correction record=%s chat=%s", record.id, reply.chat)
        thanks = functools.partial(replies.thanks, record.id, record.correction or artist)
        await reply.send(Post(text=thanks, private=True))

    async def forget_me(self, reply: Reply) -> None:
        """/forget_me: delete the sender's records (and corrections) in this chat."""
        history = self.kept()
        if not reply.user:
            raise errors.BadRequest(replies.WHO_ARE_YOU)
        n = await history.forget_user(self.platform, reply.chat, reply.user)
        await reply.send(Post(text=replies.forgotten(n), private=True))

    # -- the one failure boundary ------------------------------------------------------------------------------------
    async def fail(self, key: Hashable, exc: BaseException | None, reply: Reply | None) -> None:
        """Log a failure once, then tell the user in a sentence: in place of the status of the job `key` names
        if it has one, else through `reply` (None: nobody to tell)."""
        if isinstance(exc, errors.SpyError):
            log.info("refused: %s (%s)", exc.code, exc.detail or exc.user_message)
        else:
            log.error("unhandled error", exc_info=exc)
        job = self._live.pop(key, None)
        if job is not None and job.finished:
            job = None
        target = job.reply if job is not None else reply
        if target is None:
            return
        text = replies.error_text(exc) if exc is not None else replies.GENERIC_ERROR
        try:
            if job is not None:
                await job.status.final(lambda: target.tell(text))
            else:
                await target.tell(text)
        except target.errors as told:
            log.warning("could not tell chat %s about %s: %s", target.chat, type(exc).__name__, told)
