"""The Telegram front end (python-telegram-bot v22): links, voice notes and audio in; answers and a chart out.

    app = build(settings, classifier, history=history)   # a PTB Application, nothing started yet
    async with running(app):                   # initialise, set the command menu, poll, process updates
        ...                                    # on exit: stop polling, stop processing, shut down

What the bot answers:

- Private chats: any message. A link (YouTube, SoundCloud) is identified; anything else gets a sentence
  saying what to send. Voice notes, audio files, video notes, videos and audio documents are identified.
- Commands anywhere: `/identify <link> [1:02:03]`, `/genre <link>`, and both as a reply to a voice note,
  an audio file or a message with a link; `/start`, `/help`, `/about`.
- Groups: commands, plus messages that mention the bot (`@name <link>`) or reply to one of its messages.
  Telegram's privacy mode (on by default, changed with @BotFather -> /setprivacy) already limits bots in
  groups to commands, mentions and replies to the bot; with privacy mode off the bot sees everything but
  still answers only those, so it never talks over a group's conversation.

Every job: the user's rate is checked, the chat's and the process's concurrent jobs are counted, a
"listening..." reply goes out at once and is edited as the job moves (downloading/fetching, analysing
4/10 slices), then replaced by the answer; the chart follows as a photo. Handlers that wait on work run
with `block=False`, so one slow clip never holds up other chats. Every failure reaches `on_error`,
the one place that logs it and tells the user in a sentence from `bot.replies`.

With a `History` (bot/history.py), every answer is also kept for its chat, and three commands and two
buttons appear:

- `/history [n]`: the chat's last n answers, newest first, 10 to a message with "Older"/"Newer" buttons.
- "Wrong? Tell me the artist" under each artist answer: the bot asks the member (a forced reply that names
  the answer, "(answer #12)") and stores their reply as the correction. `/correct <artist>` sent as a reply
  to the answer (or to that question) does the same in one step.
- `/forget_me`: deletes the sender's records in this chat.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from telegram import (
    BotCommand,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    MessageEntity,
    Update,
)
from telegram.constants import ChatAction, ChatType, ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bot import charts, links, media, replies
from bot.history import history_text, link_at
from bot.limits import JobGuard, RateLimiter
from bot.status import Status
from classifier import errors
from classifier.model.verdict import GenreReport, Verdict
from classifier.serve.api import Classifier, Query
from classifier.settings import Settings
from classifier.sources.links import Source
from classifier.store.history import MAX_RECENT, History

__all__ = ["build", "running", "COMMANDS", "HISTORY_COMMANDS", "TelegramSpy", "PLATFORM"]

log = logging.getLogger(__name__)

COMMANDS = (
    ("identify", "Who made this? /identify <link> [1:02:03]"),
    ("genre", "The genre: /genre <link>, or reply /genre to a voice note"),
    ("about", "The model and the artists it knows"),
    ("help", "How to use me, with examples"),
)
HISTORY_COMMANDS = (     # in the menu only when the bot keeps history
    ("history", "The last answers in this chat: /history [n]"),
    ("correct", "Reply /correct <artist> to an answer I got wrong"),
    ("forget_me", "Delete your requests from this chat's history"),
)
PLATFORM = "telegram"    # History's name for this front end
GROUPS_NOTE = "In groups, use the commands, mention me, or reply to one of my messages."
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
_EDIT_INTERVAL_S = 1.0     # Telegram tolerates about one edit a second per chat; stage changes always show
_RETRIES_429 = 3           # AIORateLimiter waits out a 429's retry_after this many times before giving up
_HISTORY_PAGE = 10         # records per /history message: a phone screen
_WRONG = "Wrong? Tell me the artist"
_PROMPT_ID = re.compile(r"\(answer #(\d+)\)\s*$")    # the record a correction question is about

Context = ContextTypes.DEFAULT_TYPE


def build(settings: Settings, classifier: Classifier, history: History | None = None) -> Application:
    """The PTB Application for `settings.telegram_token`, with its handlers; nothing is started yet.

    `history`: where answers are kept per chat (None: no history, and no /history, /correct, /forget_me).

    `telegram_base_url` / `telegram_base_file_url` point it at a self-hosted Bot API server (which lifts the
    cloud's 20 MB download limit; set `telegram_local_mode` when that server runs with `--local`).
    """
    if not settings.telegram_token:
        raise ValueError("TELEGRAM_TOKEN is not set")
    # The HTTP clients, made here (with PTB's own defaults) so that `running` can close them on a failed start.
    http = (HTTPXRequest(), HTTPXRequest(connection_pool_size=1))
    app = (Application.builder()
           .token(settings.telegram_token.get_secret_value())
           .request(http[0])
           .get_updates_request(http[1])
           .base_url(settings.telegram_base_url)
           .base_file_url(settings.telegram_base_file_url)
           .local_mode(settings.telegram_local_mode)
           .rate_limiter(AIORateLimiter(max_retries=_RETRIES_429))
           .job_queue(None)
           .post_init(_set_commands)
           .build())
    app.bot_data["http"] = http
    TelegramSpy(settings, classifier, history).install(app)
    return app


@contextlib.asynccontextmanager
async def running(app: Application, *, poll_timeout_s: float = 30.0) -> AsyncIterator[Application]:
    """Run `app` for the body of the block: initialise, post-init, poll, process; then stop in PTB's order."""
    try:
        await app.initialize()                                  # getMe: a bad token fails here
    except BaseException:
        # PTB's shutdown() skips an application whose initialize() failed, which would leave its HTTP
        # clients open: close the ones `build` made.
        await asyncio.gather(*(request.shutdown() for request in app.bot_data.get("http", ())))
        raise
    try:
        if app.post_init is not None:
            await app.post_init(app)

        def polling_error(exc: TelegramError) -> None:         # getUpdates failures go to the same handler
            app.create_task(app.process_error(update=None, error=exc))

        assert app.updater is not None
        await app.updater.start_polling(timeout=dt.timedelta(seconds=poll_timeout_s),
                                        allowed_updates=[Update.MESSAGE, Update.CALLBACK_QUERY],
                                        error_callback=polling_error)
        await app.start()
        yield app
    finally:
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if app.running:
            await app.stop()
        await app.shutdown()


async def _set_commands(app: Application) -> None:
    """The command menu users see when they type '/'."""
    spy = app.bot_data.get("spy")
    commands = COMMANDS + (HISTORY_COMMANDS if spy is not None and spy.history is not None else ())
    try:
        await app.bot.set_my_commands([BotCommand(name, text) for name, text in commands])
    except TelegramError as exc:   # a menu is a nicety: the bot works without one
        log.warning("could not set the command menu: %s", exc)


# --- what a message asks about -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Media:
    """A file attached to a message."""

    file_id: str
    size: int | None
    kind: str                 # "voice note", "audio file", "video note", "video", "file"
    name: str | None
    mime: str | None
    duration_s: float | None

    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def suffix(self) -> str:
        return media.clip_suffix(self.name, {"voice note": ".ogg", "video note": ".mp4", "video": ".mp4"}.get(
            self.kind, ".bin"))

    def audio_like(self) -> bool:
        """Voice, audio and video are audio; a document is when its type or name says so, or says nothing."""
        return self.kind != "file" or media.audio_like(self.name, self.mime)


def _duration_s(media: Any) -> float | None:
    """A voice/audio/video duration in seconds. PTB 22.2+ keeps it as a timedelta in `_duration`; the public
    `duration` returns an int with a deprecation warning unless PTB_TIMEDELTA is set, so read the timedelta."""
    value = getattr(media, "_duration", None)
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def media_of(message: Message) -> _Media | None:
    """The audio-bearing attachment of a message, if any (documents are checked later by `audio_like`)."""
    if message.voice:
        v = message.voice
        return _Media(v.file_id, v.file_size, "voice note", None, v.mime_type, _duration_s(v))
    if message.audio:
        a = message.audio
        name = a.file_name or " – ".join(x for x in (a.performer, a.title) if x) or None
        return _Media(a.file_id, a.file_size, "audio file", name, a.mime_type, _duration_s(a))
    if message.video_note:
        n = message.video_note
        return _Media(n.file_id, n.file_size, "video note", None, None, _duration_s(n))
    if message.video:
        v2 = message.video
        return _Media(v2.file_id, v2.file_size, "video", v2.file_name, v2.mime_type, _duration_s(v2))
    if message.document:
        d = message.document
        return _Media(d.file_id, d.file_size, "file", d.file_name, d.mime_type, None)
    return None


def _hidden_urls(message: Message) -> list[str]:
    """URLs behind words (text_link entities): the text alone does not show them."""
    out = []
    for parse in (message.parse_entities, message.parse_caption_entities):
        out += [e.url for e in parse([MessageEntity.TEXT_LINK]) if e.url]
    return out


def _mentioned(message: Message, bot_id: int, username: str | None) -> bool:
    handle = "@" + (username or "").lower()
    for parse in (message.parse_entities, message.parse_caption_entities):
        for entity, text in parse([MessageEntity.MENTION, MessageEntity.TEXT_MENTION]).items():
            if entity.type == MessageEntity.MENTION and text.lower() == handle:
                return True
            if entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot_id:
                return True
    return False


def _wrong_button(record_id: int) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(_WRONG, callback_data=f"wrong:{record_id}")]])


def _prompted_record(message: Message, bot_id: int) -> int | None:
    """The record id when `message` replies to the bot's "which artist is it? ... (answer #12)"."""
    target = message.reply_to_message
    if target is None or target.from_user is None or target.from_user.id != bot_id:
        return None
    found = _PROMPT_ID.search(target.text or "")
    return int(found[1]) if found else None


def _replies_to_bot(message: Message, bot_id: int) -> bool:
    r = message.reply_to_message
    return r is not None and r.from_user is not None and r.from_user.id == bot_id


# --- the status message -----------------------------------------------------------------------------------

class _Status(Status):
    """The "listening..." reply, edited as the job moves and finally replaced by the answer (or the error).

    Progress edits are fire-and-forget (a throttled edit never holds up the work) and serialised by a
    FIFO lock; after `close()` none lands, so a late progress report from the model's thread can never
    overwrite the answer. The same text is never sent twice, and within a stage at most one edit a second.
    """

    edit_errors = (TelegramError,)

    def __init__(self, message: Message) -> None:
        super().__init__(message.text or "", interval_s=_EDIT_INTERVAL_S)
        self.message = message

    async def _edit_progress(self, text: str) -> None:
        await self.message.edit_text(text)

    async def finish(self, text: str, *, html: bool = False,
                     reply_markup: InlineKeyboardMarkup | None = None) -> Message:
        """Replace the status with the final text (a new message if the status can no longer be edited)."""
        self._closed = True
        mode = ParseMode.HTML if html else None
        async with self._lock:
            try:
                edited = await self.message.edit_text(text, parse_mode=mode, link_preview_options=_NO_PREVIEW,
                                                      reply_markup=reply_markup)
                return edited if isinstance(edited, Message) else self.message
            except BadRequest as exc:
                if "not modified" in str(exc).lower():
                    return self.message
                log.info("could not edit the status message (%s); sending the answer anew", exc)
                return await self.message.get_bot().send_message(
                    self.message.chat_id, text, parse_mode=mode, link_preview_options=_NO_PREVIEW,
                    reply_markup=reply_markup)


# --- the handlers -------------------------------------------------------------------------------------------

class TelegramSpy:
    """The handlers, with what they share: settings, the classifier, the history, the limits, the live status
    messages."""

    def __init__(self, settings: Settings, classifier: Classifier, history: History | None = None) -> None:
        self.settings = settings
        self.classifier = classifier
        self.history = history
        self.rate = RateLimiter(settings.user_requests_per_minute)
        self.jobs = JobGuard(settings.max_jobs_per_chat, settings.max_jobs_total)
        self._status: dict[int, _Status] = {}     # update_id -> its status message, for on_error

    def install(self, app: Application) -> None:
        msg = filters.UpdateType.MESSAGE
        media = filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.VIDEO | filters.Document.ALL
        app.add_handler(CommandHandler("start", self.on_start, filters=msg))
        app.add_handler(CommandHandler("help", self.on_help, filters=msg))
        app.add_handler(CommandHandler("about", self.on_about, filters=msg, block=False))
        app.add_handler(CommandHandler("identify", self.on_identify, filters=msg, block=False))
        app.add_handler(CommandHandler("genre", self.on_genre, filters=msg, block=False))
        app.add_handler(MessageHandler(msg & media, self.on_media, block=False))
        if self.history is not None:
            app.add_handler(CommandHandler("history", self.on_history, filters=msg, block=False))
            app.add_handler(CommandHandler("correct", self.on_correct, filters=msg, block=False))
            app.add_handler(CommandHandler("forget_me", self.on_forget_me, filters=msg, block=False))
            app.add_handler(CallbackQueryHandler(self.on_history_page, pattern=r"^hist:\d+:\d+$", block=False))
            app.add_handler(CallbackQueryHandler(self.on_wrong, pattern=r"^wrong:\d+$", block=False))
        app.add_handler(MessageHandler(msg & filters.TEXT & ~filters.COMMAND, self.on_text, block=False))
        app.add_error_handler(self.on_error)
        app.bot_data["spy"] = self

    # -- simple commands ---------------------------------------------------------------------------------
    def _help(self, start: bool) -> str:
        s = self.settings
        kwargs = {"max_file_bytes": s.max_file_bytes, "max_clip_seconds": s.max_clip_seconds, "groups": GROUPS_NOTE}
        text = (replies.start_text if start else replies.help_text)(replies.HTML, **kwargs)
        if self.history is None:
            return text
        e, b = replies.HTML.escape, replies.HTML.bold
        return text + "\n\n" + "\n".join([
            e("• ") + b(e("/history [n]")) + e(" — the last answers in this chat"),
            e(f"• Got it wrong? Press “{_WRONG}” under the answer, or reply ") + b(e("/correct <artist>"))
            + e(" to it"),
            e("• ") + b(e("/forget_me")) + e(" — delete your requests from this chat's history"),
        ])

    async def on_start(self, update: Update, context: Context) -> None:
        """/start: a greeting and the help."""
        await update.effective_message.reply_text(self._help(True), parse_mode=ParseMode.HTML,
                                                  link_preview_options=_NO_PREVIEW)

    async def on_help(self, update: Update, context: Context) -> None:
        """/help: what to send, with examples."""
        await update.effective_message.reply_text(self._help(False), parse_mode=ParseMode.HTML,
                                                  link_preview_options=_NO_PREVIEW)

    async def on_about(self, update: Update, context: Context) -> None:
        """/about: the model and its artists."""
        about = await self.classifier.about()
        await update.effective_message.reply_text(replies.about_text(about, replies.HTML), parse_mode=ParseMode.HTML)

    # -- requests ----------------------------------------------------------------------------------------------
    async def on_identify(self, update: Update, context: Context) -> None:
        """/identify <link> [time], or as a reply to a voice note, audio file or link."""
        await self._command(update, context, "identify")

    async def on_genre(self, update: Update, context: Context) -> None:
        """/genre <link>, or as a reply to a voice note, audio file or link."""
        await self._command(update, context, "genre")

    async def on_media(self, update: Update, context: Context) -> None:
        """A voice note, audio file, video note, video or document: identify it."""
        message = update.effective_message
        private = message.chat.type == ChatType.PRIVATE
        if not (private or _replies_to_bot(message, context.bot.id)
                or _mentioned(message, context.bot.id, context.bot.username)):
            return                                   # a group's own voice notes are not for us
        if self._admit(update):
            await self._run(update, context, "identify", media_of(message))

    async def on_text(self, update: Update, context: Context) -> None:
        """A message with a link (groups: only when it mentions the bot or replies to it)."""
        message = update.effective_message
        text = message.text or ""
        if self.history is not None and (record_id := _prompted_record(message, context.bot.id)) is not None:
            await self._correct(update, record_id, text)   # the answer to "which artist is it?"
            return
        if message.chat.type != ChatType.PRIVATE:
            mentioned = _mentioned(message, context.bot.id, context.bot.username)
            linked = links.looks_like_link(text) or bool(_hidden_urls(message))
            if not (mentioned or (linked and _replies_to_bot(message, context.bot.id))):
                return
        if self._admit(update):
            source = links.source_from(text, extra_urls=_hidden_urls(message),
                                       extra_hosts=self.settings.fetch_extra_hosts)
            await self._run(update, context, "identify", source)

    async def _command(self, update: Update, context: Context, kind: str) -> None:
        message = update.effective_message
        if not self._admit(update):
            return
        extra = self.settings.fetch_extra_hosts
        what: Source | _Media | None
        if context.args:
            text, at = links.split_args(context.args)
            what = links.source_from(text, at=at, extra_urls=_hidden_urls(message), extra_hosts=extra)
        elif message.reply_to_message is not None:
            target = message.reply_to_message
            what = media_of(target) or links.source_from(target.text or target.caption or "",
                                                         extra_urls=_hidden_urls(target), extra_hosts=extra)
        else:
            raise errors.BadSource(replies.usage(kind))
        await self._run(update, context, kind, what)

    def _admit(self, update: Update) -> bool:
        """The per-user rate: True to go on, False to stay quiet; raises Busy ("slow down") once per wait."""
        who = update.effective_user.id if update.effective_user else update.effective_chat.id
        return self.rate.check(who)

    def _refuse_early(self, media: _Media) -> None:
        """Refuse what cannot work before downloading a byte."""
        if not media.audio_like():
            raise errors.Undecodable(replies.not_audio(media.name, media.mime), detail=f"mime {media.mime}")
        if media.size == 0:
            raise errors.Undecodable(replies.empty_file(media.kind), detail="0 bytes")
        if media.size is not None and media.size > self.settings.max_file_bytes:
            raise errors.DownloadTooLarge(replies.file_too_big(media.size, self.settings.max_file_bytes),
                                          detail=f"{media.size} bytes")

    async def _run(self, update: Update, context: Context, kind: str, what: Source | _Media | None) -> None:
        """One job: acknowledge, listen (with progress), answer, then the chart."""
        message = update.effective_message
        if what is None:
            raise errors.BadSource()
        if isinstance(what, _Media):
            self._refuse_early(what)
        t0 = time.perf_counter()
        async with self.jobs.job(message.chat_id):
            status = _Status(await message.reply_text(replies.LISTENING))
            self._status[update.update_id] = status
            try:
                async with self._query(context, what, status) as (query, note):
                    if kind == "genre":
                        result: Verdict | GenreReport = await self.classifier.genre(query, status)
                    else:
                        result = await self.classifier.identify(query, status)
            except asyncio.CancelledError:            # shutting down: no error handler will come for this one
                self._status.pop(update.update_id, None)
                raise
            finally:
                status.close()
            answer = replies.answer_for(result, note=note)
            record_id = await self._remember(update, result, status.message)
            button = _wrong_button(record_id) if record_id is not None and isinstance(result, Verdict) else None
            shown = await status.finish(answer.render(replies.HTML), html=True, reply_markup=button)
            self._status.pop(update.update_id, None)
            if record_id is not None and shown.message_id != status.message.message_id:
                assert self.history is not None
                await self._history_write(self.history.set_message(record_id, str(shown.message_id)), update)
        host = what.host if isinstance(what, Source) else f"telegram:{what.kind.replace(' ', '_')}"
        log.info("job tg-%s chat=%s %s source=%s seconds=%.1f slices=%d answer=%s timings=%s wall=%.2fs",
                 update.update_id, message.chat_id, kind, host, result.seconds, result.slices,
                 getattr(result, "verdict", "genre"), dict(result.timings), time.perf_counter() - t0)
        await self._send_chart(context, shown, result)

    @contextlib.asynccontextmanager
    async def _query(self, context: Context, what: Source | _Media,
                     status: _Status) -> AsyncIterator[tuple[Query, str | None]]:
        """A classifier Query for a link, or for a Telegram file downloaded to a folder removed afterwards."""
        if isinstance(what, Source):
            yield Query(source=what), None
            return
        s = self.settings
        await status("downloading", 0, 0)
        with tempfile.TemporaryDirectory(prefix="spy-telegram-") as tmp:
            path = Path(tmp) / f"clip{what.suffix}"
            try:
                tg_file = await context.bot.get_file(what.file_id)
                if tg_file.file_size is not None and tg_file.file_size > s.max_file_bytes:
                    raise errors.DownloadTooLarge(replies.file_too_big(tg_file.file_size, s.max_file_bytes))
                await tg_file.download_to_drive(path)
            except BadRequest as exc:
                if "too big" in str(exc).lower():     # the cloud Bot API serves files up to 20 MB
                    raise errors.DownloadTooLarge(replies.file_too_big(what.size, s.max_file_bytes),
                                                  detail=str(exc)) from exc
                raise errors.FetchFailed("I could not download that file from Telegram. Send it again?",
                                         detail=str(exc)) from exc
            except TelegramError as exc:
                raise errors.FetchFailed("I could not download that file from Telegram. Send it again?",
                                         detail=str(exc)) from exc
            note = None
            if what.duration_s is not None and what.duration_s > s.max_clip_seconds:
                note = replies.clipped_note(s.max_clip_seconds)
            yield Query(path=path, duration_s=s.max_clip_seconds, label=what.label), note

    async def _send_chart(self, context: Context, answer: Message, result: Verdict | GenreReport) -> None:
        """The chart under the answer. The text stands alone, so a chart that fails is logged and skipped."""
        try:
            await context.bot.send_chat_action(answer.chat_id, ChatAction.UPLOAD_PHOTO)
            png = await asyncio.to_thread(charts.render_chart, result)
            await answer.reply_photo(png, caption=replies.chart_caption(result), do_quote=True)
        except Exception:  # noqa: BLE001 - the answer is already in the chat
            log.warning("chart not sent to chat %s", answer.chat_id, exc_info=True)

    # -- history ------------------------------------------------------------------------------------------------
    async def _remember(self, update: Update, result: Verdict | GenreReport, answer: Message) -> int | None:
        """Keep the answer in the chat's history; its record id, or None without history (or if the write fails)."""
        if self.history is None:
            return None
        user = update.effective_user
        return await self._history_write(self.history.record(
            platform=PLATFORM, chat=str(update.effective_chat.id), user=str(user.id) if user else "",
            source=link_at(result.source, result.start, self.settings.fetch_extra_hosts), result=result,
            message=str(answer.message_id)), update)

    async def _history_write(self, write: Any, update: Update) -> Any:
        """Await a history write. The answer matters more than its record: a failed write is logged, not shown."""
        try:
            return await write
        except sqlite3.Error:
            log.warning("history: could not write for job tg-%s", update.update_id, exc_info=True)
            return None

    def _history(self) -> History:
        assert self.history is not None      # the history handlers are installed only with a History
        return self.history

    async def on_history(self, update: Update, context: Context) -> None:
        """/history [n]: the chat's last n answers, newest first, a page at a time."""
        message = update.effective_message
        n = _HISTORY_PAGE
        if context.args:
            if len(context.args) > 1 or not context.args[0].isdigit() or not 1 <= int(context.args[0]) <= MAX_RECENT:
                raise errors.BadRequest(f"Send /history for the last {_HISTORY_PAGE} answers, or /history 25 "
                                        f"for more (up to {MAX_RECENT}).")
            n = int(context.args[0])
        text, keyboard = await self._history_page(message.chat_id, n, 0)
        await message.reply_text(text, parse_mode=ParseMode.HTML, link_preview_options=_NO_PREVIEW,
                                 reply_markup=keyboard)

    async def on_history_page(self, update: Update, context: Context) -> None:
        """The "Older" / "Newer" buttons under a /history list: show that page in the same message."""
        query = update.callback_query
        _, n, offset = query.data.split(":")
        if not isinstance(query.message, Message):       # too old for Telegram to show us: nothing to edit
            await query.answer("That list is too old. Send /history again.")
            return
        text, keyboard = await self._history_page(query.message.chat_id, int(n), int(offset))
        await query.answer()
        with contextlib.suppress(BadRequest):             # "not modified": a double tap
            await query.message.edit_text(text, parse_mode=ParseMode.HTML, link_preview_options=_NO_PREVIEW,
                                          reply_markup=keyboard)

    async def _history_page(self, chat_id: int, n: int, offset: int) -> tuple[str, InlineKeyboardMarkup | None]:
        """One page of the last `n` answers, starting `offset` records back, with its buttons."""
        history = self._history()
        n = max(1, min(n, MAX_RECENT))
        offset = max(0, min(offset, n - 1))
        total = min(n, await history.count(PLATFORM, str(chat_id)))
        records = await history.recent(PLATFORM, str(chat_id), min(_HISTORY_PAGE, n - offset), offset)
        buttons = []
        if offset > 0:
            newer = max(0, offset - _HISTORY_PAGE)
            buttons.append(InlineKeyboardButton("‹ Newer", callback_data=f"hist:{n}:{newer}"))
        if offset + _HISTORY_PAGE < total:
            buttons.append(InlineKeyboardButton("Older ›", callback_data=f"hist:{n}:{offset + _HISTORY_PAGE}"))
        text = history_text(records, replies.HTML, offset=offset, total=total)
        return text, InlineKeyboardMarkup([buttons]) if buttons else None

    async def on_wrong(self, update: Update, context: Context) -> None:
        """The "Wrong? Tell me the artist" button: ask the member who pressed it for the name."""
        query = update.callback_query
        record_id = int(query.data.split(":")[1])
        record = await self._history().get(record_id)
        if not isinstance(query.message, Message) or record is None or record.platform != PLATFORM \
                or record.chat != str(query.message.chat_id):
            raise errors.BadRequest("I can't find that answer in this chat's history any more.")
        await query.answer("Reply to my question with the artist's name.")
        who = query.from_user.mention_html() if query.from_user else "Hey"
        await query.message.reply_text(
            f"{who}, which artist is it? Reply to this message with the name. (answer #{record_id})",
            parse_mode=ParseMode.HTML, do_quote=True,
            reply_markup=ForceReply(selective=True, input_field_placeholder="The artist's name"))

    async def on_correct(self, update: Update, context: Context) -> None:
        """/correct <artist>, as a reply to an answer (or to the bot's "which artist is it?")."""
        message = update.effective_message
        target = message.reply_to_message
        usage = "Reply /correct <artist> to my answer, like: /correct Deep Pulse"
        if target is None or target.from_user is None or target.from_user.id != context.bot.id:
            raise errors.BadRequest(usage)
        record_id = _prompted_record(message, context.bot.id)
        if record_id is None:
            record = await self._history().by_message(PLATFORM, str(message.chat_id), str(target.message_id))
            if record is None:
                raise errors.BadRequest("I don't have that message in this chat's history. " + usage)
            record_id = record.id
        if not context.args:
            raise errors.BadRequest(usage)
        await self._correct(update, record_id, " ".join(context.args))

    async def _correct(self, update: Update, record_id: int, artist: str) -> None:
        message = update.effective_message
        user = update.effective_user
        record = await self._history().correct(record_id, user=str(user.id) if user else "", artist=artist,
                                               platform=PLATFORM, chat=str(message.chat_id))
        e = replies.HTML.escape
        await message.reply_text(
            e(f"✏️ Thanks, noted: answer #{record.id} is ") + replies.HTML.bold(e(record.correction or artist))
            + e(". The operator reviews corrections before the model learns from them."), parse_mode=ParseMode.HTML)

    async def on_forget_me(self, update: Update, context: Context) -> None:
        """/forget_me: delete the sender's records (and corrections) in this chat."""
        message = update.effective_message
        user = update.effective_user
        if user is None:
            raise errors.BadRequest("I can't tell who you are here, so I can't tell which requests are yours.")
        n = await self._history().forget_user(PLATFORM, str(message.chat_id), str(user.id))
        text = (f"🧹 Done: I deleted your {n} request{'' if n == 1 else 's'} from this chat's history." if n
                else "🧹 I had nothing of yours in this chat's history.")
        await message.reply_text(text)

    # -- the one error boundary ----------------------------------------------------------------------------
    async def on_error(self, update: object, context: Context) -> None:
        """Log each failure once, then tell the user in a sentence (editing the job's status message if any)."""
        exc = context.error
        if isinstance(exc, errors.SpyError):
            log.info("refused: %s (%s)", exc.code, exc.detail or exc.user_message)
        elif update is None and isinstance(exc, TelegramError):
            log.warning("Telegram: %s", exc)        # a polling hiccup; PTB retries by itself
        else:
            log.error("unhandled error", exc_info=exc)
        if not isinstance(update, Update):
            return
        text = replies.error_text(exc) if exc is not None else replies.GENERIC_ERROR
        status = self._status.pop(update.update_id, None)
        try:
            if update.callback_query is not None:   # a button: answer it where the member looks, not in the chat
                await update.callback_query.answer(text, show_alert=True)
            elif status is not None:
                await status.finish(text)
            elif update.effective_message is not None:
                await update.effective_message.reply_text(text)
        except TelegramError as told:
            log.warning("could not tell chat %s about %s: %s", update.effective_chat and update.effective_chat.id,
                        type(exc).__name__, told)
