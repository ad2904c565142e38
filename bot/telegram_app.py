"""The Telegram front end (python-telegram-bot v22): links, voice notes and audio in; answers and a chart out.

    app = build(settings, classifier, history=history)   # a PTB Application, nothing started yet
    async with running(app):                   # initialise, set the command menu, poll, process updates
        ...                                    # on exit: stop polling, stop processing, shut down

Private chats: any link or audio (voice notes, audio files, video notes, videos, audio documents).
Commands anywhere: `/identify <link> [1:02:03]`, `/genre <link>` (both also as a reply to a voice note,
a file or a link), `/start`, `/help`, `/about`; with a `History`, `/history [n]`, `/correct <artist>` (as a
reply to an answer), `/forget_me` and the "Wrong?" button, which asks for the name in a forced reply that
names the record ("(answer #12)"). Groups: commands, and messages that mention the bot or reply to it.
Telegram's privacy mode already limits bots in groups to those; with it off the bot still answers only
those, so it never talks over a group's conversation.

Jobs, progress, charts, history and failures are `bot.core`'s: this file maps updates onto it, and
`bot.telegram_reply` shows its posts as HTML messages (the "listening..." reply edited into the answer).
Handlers that wait on work run with `block=False`; every failure reaches `on_error`, then `BotCore.fail`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import re
from typing import AsyncIterator

from telegram import BotCommand, ForceReply, Message, MessageEntity, Update
from telegram.constants import ChatType, ParseMode
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

from bot import links, replies
from bot.core import HISTORY_PAGE, BotCore, Post
from bot.media import Clip
from bot.telegram_reply import TelegramReply, clip_of, render
from classifier import errors
from classifier.serve.api import Classifier
from classifier.settings import Settings
from classifier.sources.links import Source, parse_time
from classifier.store.history import MAX_RECENT, History

__all__ = ["build", "running", "TelegramSpy", "PLATFORM"]

log = logging.getLogger(__name__)

PLATFORM = "telegram"    # History's name for this front end
_RETRIES_429 = 3           # AIORateLimiter waits out a 429's retry_after this many times before giving up
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
    app = (Application.builder().token(settings.telegram_token.get_secret_value())
           .request(http[0]).get_updates_request(http[1])
           .base_url(settings.telegram_base_url).base_file_url(settings.telegram_base_file_url)
           .local_mode(settings.telegram_local_mode).rate_limiter(AIORateLimiter(max_retries=_RETRIES_429))
           .job_queue(None).post_init(_set_commands).build())
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
    menu = replies.TELEGRAM_MENU + (replies.TELEGRAM_HISTORY_MENU if spy and spy.core.history is not None else ())
    try:
        await app.bot.set_my_commands([BotCommand(name, text) for name, text in menu])
    except TelegramError as exc:   # a menu is a nicety: the bot works without one
        log.warning("could not set the command menu: %s", exc)


# --- what a message asks about -------------------------------------------------------------------------

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


def _from_bot(message: Message | None, bot_id: int) -> bool:
    return message is not None and message.from_user is not None and message.from_user.id == bot_id


def _prompted_record(message: Message, bot_id: int) -> int | None:
    """The record id when `message` replies to the bot's "which artist is it? ... (answer #12)"."""
    target = message.reply_to_message
    found = _PROMPT_ID.search(target.text or "") if target is not None and _from_bot(target, bot_id) else None
    return int(found[1]) if found else None


# --- the handlers -------------------------------------------------------------------------------------------

class TelegramSpy:
    """The handlers; what they share (settings, classifier, history, limits, running jobs) is the `core`."""

    def __init__(self, settings: Settings, classifier: Classifier, history: History | None = None) -> None:
        self.core = BotCore(PLATFORM, settings, classifier, history)

    def install(self, app: Application) -> None:
        msg, p = filters.UpdateType.MESSAGE, functools.partial
        media = filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.VIDEO | filters.Document.ALL
        commands = {"start": p(self.on_help, start=True), "help": self.on_help, "about": self.on_about,
                    "identify": p(self.on_command, kind="identify"), "genre": p(self.on_command, kind="genre")}
        if self.core.history is not None:
            commands |= {"history": self.on_history, "correct": self.on_correct, "forget_me": self.on_forget_me}
            # "hist:" too: the buttons under lists sent before the actions had one name on every platform
            app.add_handler(CallbackQueryHandler(self.on_history_page, pattern=r"^hist(ory)?:\d+:\d+$", block=False))
            app.add_handler(CallbackQueryHandler(self.on_wrong, pattern=r"^wrong:\d+$", block=False))
        for name, handler in commands.items():   # all but the instant ones wait on work: never hold up other chats
            app.add_handler(CommandHandler(name, handler, filters=msg, block=name in ("start", "help")))
        app.add_handler(MessageHandler(msg & media, self.on_media, block=False))
        app.add_handler(MessageHandler(msg & filters.TEXT & ~filters.COMMAND, self.on_text, block=False))
        app.add_error_handler(self.on_error)
        app.bot_data["spy"] = self

    async def on_help(self, update: Update, context: Context, *, start: bool = False) -> None:
        """/help (and /start, with a greeting): what to send, with examples."""
        s = self.core.settings
        text = functools.partial(replies.telegram_help, start=start, history=self.core.history is not None,
                                 max_file_bytes=s.max_file_bytes, max_clip_seconds=s.max_clip_seconds)
        await TelegramReply(update).send(Post(text=text))

    async def on_about(self, update: Update, context: Context) -> None:
        """/about: the model and its artists."""
        about = await self.core.classifier.about()
        await TelegramReply(update).send(Post(text=functools.partial(replies.about_text, about)))

    # -- requests ----------------------------------------------------------------------------------------------
    async def on_command(self, update: Update, context: Context, *, kind: str) -> None:
        """/identify or /genre: `<link> [time]`, or as a reply to a voice note, an audio file or a link."""
        message = update.effective_message
        if not self.core.admit(reply := TelegramReply(update)):
            return
        what: Source | Clip
        target = message.reply_to_message
        clip = clip_of(target) if target is not None else None
        if clip is not None and not context.args:        # reply /genre to a voice note (or to a file: refused)
            what = self.core.pick([clip], target.text or target.caption or "", _hidden_urls(target))
        elif clip is not None and clip.audio_like():     # reply /identify 1:02 to an audio file: from 1:02
            what = dataclasses.replace(clip, start_s=parse_time(" ".join(context.args)))
        elif context.args or target is not None:
            # `/identify <link> at 1:02:03`, or `/identify 1:02:03` sent as a reply to a message with a link
            answered = None if target is None else " ".join([target.text or target.caption or "",
                                                             *_hidden_urls(target)])
            what = self.core.source(message.text or "", reply_text=answered, extra_urls=_hidden_urls(message))
        else:
            raise errors.BadSource(replies.usage(kind))
        await self.core.answer(reply, kind, what)

    async def on_media(self, update: Update, context: Context) -> None:
        """A voice note, audio file, video note, video or document: identify it."""
        message, bot = update.effective_message, context.bot
        if message.chat.type != ChatType.PRIVATE and not (_from_bot(message.reply_to_message, bot.id)
                                                          or _mentioned(message, bot.id, bot.username)):
            return                                   # a group's own voice notes are not for us
        if self.core.admit(reply := TelegramReply(update)):
            clip = clip_of(message)
            what = self.core.pick([clip] if clip else [], message.caption or "", _hidden_urls(message))
            await self.core.answer(reply, "identify", what)

    async def on_text(self, update: Update, context: Context) -> None:
        """A message with a link (groups: only when it mentions the bot or replies to it)."""
        message, bot = update.effective_message, context.bot
        text = message.text or ""
        if self.core.history is not None and (record_id := _prompted_record(message, bot.id)) is not None:
            await self.core.correct(TelegramReply(update), record_id, text)   # the answer to "which artist is it?"
            return
        if message.chat.type != ChatType.PRIVATE:
            linked = links.looks_like_link(text) or bool(_hidden_urls(message))
            if not (_mentioned(message, bot.id, bot.username) or linked and _from_bot(message.reply_to_message,
                                                                                      bot.id)):
                return
        if self.core.admit(reply := TelegramReply(update)):
            await self.core.answer(reply, "identify", self.core.source(text, extra_urls=_hidden_urls(message)))

    # -- history ------------------------------------------------------------------------------------------------
    async def on_history(self, update: Update, context: Context) -> None:
        """/history [n]: the chat's last n answers, newest first, a page at a time."""
        n = HISTORY_PAGE
        if context.args:
            if len(context.args) > 1 or not context.args[0].isdigit() or not 1 <= int(context.args[0]) <= MAX_RECENT:
                raise errors.BadRequest(replies.history_usage(HISTORY_PAGE, MAX_RECENT))
            n = int(context.args[0])
        await TelegramReply(update).send(await self.core.history_post(str(update.effective_chat.id), n))

    async def on_history_page(self, update: Update, context: Context) -> None:
        """The "Older" / "Newer" buttons under a /history list: show that page in the same message."""
        query = update.callback_query
        _, n, offset = query.data.split(":")
        if not isinstance(query.message, Message):       # too old for Telegram to show us: nothing to edit
            await query.answer(replies.LIST_TOO_OLD)
            return
        text, kwargs = render(await self.core.history_post(str(query.message.chat_id), int(n), int(offset)))
        await query.answer()
        with contextlib.suppress(BadRequest):             # "not modified": a double tap
            await query.message.edit_text(text, **kwargs)

    async def on_wrong(self, update: Update, context: Context) -> None:
        """The "Wrong? Tell me the artist" button: ask the member who pressed it for the name."""
        query = update.callback_query
        record_id = int(query.data.split(":")[1])
        if not isinstance(query.message, Message):
            raise errors.BadRequest(replies.RECORD_GONE)
        await self.core.record_in(str(query.message.chat_id), record_id)
        await query.answer(replies.REPLY_WITH_NAME)
        who = query.from_user.mention_html() if query.from_user else "Hey"
        await query.message.reply_text(
            replies.which_artist(who, record_id), parse_mode=ParseMode.HTML, do_quote=True,
            reply_markup=ForceReply(selective=True, input_field_placeholder=replies.NAME_PLACEHOLDER))

    async def on_correct(self, update: Update, context: Context) -> None:
        """/correct <artist>, as a reply to an answer (or to the bot's "which artist is it?")."""
        message = update.effective_message
        target = message.reply_to_message
        if target is None or not _from_bot(target, context.bot.id):
            raise errors.BadRequest(replies.CORRECT_USAGE)
        record_id = _prompted_record(message, context.bot.id)
        if record_id is None:
            record = await self.core.kept().by_message(PLATFORM, str(message.chat_id), str(target.message_id))
            if record is None:
                raise errors.BadRequest(replies.NOT_IN_HISTORY)
            record_id = record.id
        if not context.args:
            raise errors.BadRequest(replies.CORRECT_USAGE)
        await self.core.correct(TelegramReply(update), record_id, " ".join(context.args))

    async def on_forget_me(self, update: Update, context: Context) -> None:
        """/forget_me: delete the sender's records (and corrections) in this chat."""
        await self.core.forget_me(TelegramReply(update))

    # -- the one error boundary ----------------------------------------------------------------------------
    async def on_error(self, update: object, context: Context) -> None:
        """PTB's error handler: every handler's failure (and polling's) ends here, and goes on to the core."""
        if isinstance(update, Update):
            await self.core.fail(update.update_id, context.error, TelegramReply(update))
        elif isinstance(context.error, TelegramError):
            log.warning("Telegram: %s", context.error)        # a polling hiccup; PTB retries by itself
        else:
            log.error("unhandled error", exc_info=context.error)
