"""Telegram as `bot.core` sees it: a message's attachment as a `Clip`, and the `Reply` adapter for an update.

The adapter acknowledges with a "listening…" reply, edits it as the job moves and then into the answer (an
HTML message; a new one if the status can no longer be edited); files follow as replies to the answer,
pictures as photos, since a Telegram message is text or a file with a short caption.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
from pathlib import Path
from typing import Any, Sequence

from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    Message,
    Update,
)
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, TelegramError

from bot import replies
from bot.core import Attachment, Post, Reply
from bot.media import Clip
from classifier import errors

__all__ = ["TelegramReply", "clip_of", "render"]

log = logging.getLogger(__name__)

_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)
# Message attributes that carry something to listen to, and what answers call them.
_MEDIA = (("voice", "voice note"), ("audio", "audio file"), ("video_note", "video note"), ("video", "video"),
          ("document", "file"))


def _duration_s(media: Any) -> float | None:
    """A voice/audio/video duration in seconds. PTB 22.2+ keeps it as a timedelta in `_duration`; the public
    `duration` returns an int with a deprecation warning unless PTB_TIMEDELTA is set, so read the timedelta."""
    value = getattr(media, "_duration", None)
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


def clip_of(message: Message) -> Clip | None:
    """The attachment of a message that may be audio, if any (documents are checked by `Clip.check`)."""
    found = next(((getattr(message, attr), kind) for attr, kind in _MEDIA if getattr(message, attr)), None)
    if found is None:
        return None
    media, kind = found
    name = getattr(media, "file_name", None)
    if kind == "audio file":
        name = name or " – ".join(x for x in (media.performer, media.title) if x) or None
    return Clip(kind, name, getattr(media, "mime_type", None), media.file_size, _duration_s(media),
                save=functools.partial(_save, message.get_bot(), media.file_id, media.file_size))


async def _save(bot: Bot, file_id: str, size: int | None, path: Path, max_bytes: int) -> None:
    """Download a file from Telegram to `path` (refused first when getFile says it is over `max_bytes`)."""
    try:
        file = await bot.get_file(file_id)
        if file.file_size is not None and file.file_size > max_bytes:
            raise errors.DownloadTooLarge(replies.file_too_big(file.file_size, max_bytes))
        data = await file.download_as_bytearray()
    except BadRequest as exc:
        if "too big" in str(exc).lower():     # the cloud Bot API serves files up to 20 MB
            raise errors.DownloadTooLarge(replies.file_too_big(size, max_bytes), detail=str(exc)) from exc
        raise errors.FetchFailed(replies.download_failed("Telegram"), detail=str(exc)) from exc
    except TelegramError as exc:
        raise errors.FetchFailed(replies.download_failed("Telegram"), detail=str(exc)) from exc
    await asyncio.to_thread(path.write_bytes, data)     # PTB's download_to_drive writes on the event loop


# --- posts as Telegram messages ---------------------------------------------------------------------------

def render(post: Post) -> tuple[str, dict[str, Any]]:
    """A post's text and the send/edit arguments that go with it (Telegram has no disabled buttons)."""
    text, marked = post.body(replies.HTML)
    buttons = [InlineKeyboardButton(b.label, callback_data=b.action) for b in post.buttons if not b.disabled]
    return text, {"parse_mode": ParseMode.HTML if marked else None, "link_preview_options": _NO_PREVIEW,
                  "reply_markup": InlineKeyboardMarkup([buttons]) if buttons else None}


class TelegramReply(Reply):
    """An update's message (or button press), and the bot's status reply to it once acknowledged."""

    errors = (TelegramError,)
    edit_interval_s = 1.0      # Telegram tolerates about one edit a second per chat; stage changes always show

    def __init__(self, update: Update) -> None:
        chat, user = update.effective_chat, update.effective_user
        super().__init__(update.update_id, chat=str(chat.id) if chat else "", user=str(user.id) if user else "",
                         job_id=f"tg-{update.update_id}")
        self.message, self.query = update.effective_message, update.callback_query
        self.status: Message | None = None

    @property
    def message_id(self) -> str | None:
        return str(self.status.message_id) if self.status is not None else None

    @property
    def acknowledged(self) -> bool:
        return self.status is not None

    async def acknowledge(self) -> str:
        self.status = await self.message.reply_text(replies.LISTENING)  # type: ignore[union-attr]
        return replies.LISTENING

    async def progress(self, text: str) -> None:
        await self.status.edit_text(text)  # type: ignore[union-attr]

    async def finish(self, post: Post) -> str | None:
        """Edit the status into the post (a new message if it can no longer be edited), then send its files."""
        status = self.status
        assert status is not None
        text, kwargs = render(post)
        try:
            edited = await status.edit_text(text, **kwargs)
            shown = edited if isinstance(edited, Message) else status
        except BadRequest as exc:
            shown = status
            if "not modified" not in str(exc).lower():
                log.info("could not edit the status message (%s); sending the answer anew", exc)
                shown = await status.get_bot().send_message(status.chat_id, text, **kwargs)
        await _attach(shown, post.files)
        return str(shown.message_id)

    async def send(self, post: Post) -> str | None:
        text, kwargs = render(post)
        sent = await self.message.reply_text(text, **kwargs)  # type: ignore[union-attr]
        await _attach(sent, post.files)
        return str(sent.message_id)

    async def tell(self, text: str) -> None:
        if self.query is not None and self.status is None:   # a button: answer where the member looks
            await self.query.answer(text, show_alert=True)
        else:
            await super().tell(text)


async def _attach(to: Message, files: Sequence[Attachment]) -> None:
    """Files after the text, as replies to it (a Telegram message is text, or a file with a short caption).
    The text stands alone, so a file that fails is logged and skipped."""
    for file in files:
        action = ChatAction.UPLOAD_PHOTO if file.image else ChatAction.UPLOAD_DOCUMENT
        try:
            await to.get_bot().send_chat_action(to.chat_id, action)
            if (data := await file.load()) is not None:
                send = to.reply_photo if file.image else to.reply_document
                await send(data, filename=file.name, caption=file.caption or None, do_quote=True)
        except Exception:  # noqa: BLE001 - the answer is already in the chat
            log.warning("%s not sent to chat %s", file.name, to.chat_id, exc_info=True)
