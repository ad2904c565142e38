"""Discord as `bot.core` sees it: an attachment as a `Clip`, and the `Reply` adapters that show posts as embeds.

Two ways in need two adapters: an interaction (a slash command, the context menu, a button, the form) is
deferred and its deferred response edited; a pasted message gets a "listening…" reply that is edited. Both
render a `Post` the same way: an answer as an embed (top-5 with bars, labelled fields, the source link at its
time) with its image attached, other marked-up text in an embed or as plain content, files uploaded with the
message, buttons as `Action`s whose custom id carries the button's action, so they survive a restart.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any, Sequence

import aiohttp
import discord

from bot import charts, replies
from bot.core import Button, Post, Reply
from bot.media import Clip
from classifier import errors

__all__ = ["EMBED", "Action", "InteractionReply", "MessageReply", "answer_embed", "clip_of", "colour"]

_COLOURS = {"identified": discord.Colour.green(), "unknown": discord.Colour.light_grey(),
            "genre": discord.Colour.blurple()}


def colour(kind: str) -> discord.Colour:
    """An embed's colour: "identified", "unknown" or "genre" (also the colour of anything else)."""
    return _COLOURS.get(kind, _COLOURS["genre"])


def clip_of(attachment: discord.Attachment, start_s: float | None = None) -> Clip:
    """An attachment to listen to, from `start_s` seconds; downloaded from Discord's CDN by discord.py."""
    mime = (attachment.content_type or "").lower()
    kind = ("voice message" if attachment.is_voice_message() else "audio file" if mime.startswith("audio/")
            else "video" if mime.startswith("video/") else "file")

    async def save(path: Path, max_bytes: int) -> None:      # the core checks the size on disk
        try:
            data = await attachment.read()     # discord.py's own HTTP session
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            raise errors.FetchFailed(replies.download_failed("Discord"),
                                     detail=f"{type(exc).__name__}: {exc}") from exc
        await asyncio.to_thread(path.write_bytes, data)

    # A voice message's file name is Discord's, not the sender's: answers call it by its kind.
    name = None if kind == "voice message" else attachment.filename
    return Clip(kind, name, attachment.content_type, attachment.size, attachment.duration, save, start_s)


# --- rendering -------------------------------------------------------------------------------------------------

def _embed_link(text: str, url: str) -> str:
    # A bare URL in (...) breaks on its own parentheses; encode them (they mean the same in a URL).
    return f"[{text}]({url.replace('(', '%28').replace(')', '%29')})"


EMBED = replies.Markup(escape=replies.MARKDOWN.escape, bold=replies.MARKDOWN.bold, italic=replies.MARKDOWN.italic,
                       link=_embed_link)
"""Discord markdown inside embeds, where links are written `[text](url)`."""


def _field(line: str) -> tuple[str, str]:
    """ "Genre: house 41%" -> ("Genre", "house 41%"): `replies` labels its lines, an embed wants name and value."""
    name, sep, value = line.partition(": ")
    return (name, value) if sep else ("\u200b", line)


def answer_embed(answer: replies.Answer, *, image: str | None = None) -> discord.Embed:
    """The answer as an embed: title (linking to the source), ranked rows with bars, labelled fields, and
    `image` (the name of a file uploaded with it) as its picture."""
    m = EMBED
    embed = discord.Embed(title=m.escape(answer.title), url=answer.source_url,
                          colour=colour("genre" if answer.kind == "genre" else
                                        "identified" if answer.identified else "unknown"),
                          description="\n".join(([m.escape(answer.intro)] if answer.intro else [])
                                                + [r.render(m) for r in answer.rows]) or None)
    for line in (answer.confidence, answer.genre, answer.descriptors):
        if line:
            name, value = _field(line)
            embed.add_field(name=name, value=m.escape(value), inline=False)
    source = answer.source_markup(m)
    if source:
        name, value = _field(source)
        embed.add_field(name=name, value=value, inline=False)
    if answer.note:
        embed.set_footer(text=answer.note)
    if image:
        embed.set_image(url=f"attachment://{image}")
    return embed


class Action(discord.ui.DynamicItem[discord.ui.Button], template=r"spy:(?P<action>[a-z_]+(?::[0-9]+)+)"):
    """Every button the bot sends. Its `Button.action` rides in the custom id ("spy:wrong:12"), so the button
    keeps working after a restart; a press goes to the cog's `on_button`."""

    def __init__(self, button: Button) -> None:
        super().__init__(discord.ui.Button(label=button.label, emoji=button.emoji, disabled=button.disabled,
                                           style=discord.ButtonStyle.secondary, custom_id=f"spy:{button.action}"))
        self.action = button.action

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: Any, /) -> "Action":
        return cls(Button(getattr(item, "label", None) or "", match["action"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        spy = interaction.client.spy  # type: ignore[attr-defined]
        try:
            await spy.on_button(interaction, self.action)
        except Exception as exc:  # noqa: BLE001 - the one boundary decides what to say
            await spy.fail(interaction, exc)


def _view(buttons: Sequence[Button]) -> discord.ui.View | None:
    if not buttons:
        return None
    view = discord.ui.View(timeout=None)
    for button in buttons:
        view.add_item(Action(button))
    return view


async def _render(post: Post) -> dict[str, Any]:
    """The arguments of an edit that makes a message show `post`, its files loaded now (on Discord they go up
    with the message, so the image can sit inside the answer's embed)."""
    files = [(f, await f.load()) for f in post.files]
    uploads = [discord.File(io.BytesIO(data), filename=f.name, description=f.caption or None)
               for f, data in files if data is not None]
    image = next((f.name for f, data in files if data is not None and f.image), None)
    content, embed = None, None
    if post.answer is not None:
        embed = answer_embed(post.answer, image=image)
    elif post.card:
        embed = discord.Embed(description=post.body(EMBED)[0], colour=colour("genre"))
    else:
        content = post.body(EMBED)[0]
    return {"content": content, "embed": embed, "attachments": uploads, "view": _view(post.buttons)}


def _new(edit: dict[str, Any]) -> dict[str, Any]:
    """An edit's arguments as a new message's (which takes `files`, and nothing where there is nothing)."""
    out = {k: v for k, v in edit.items() if v is not None and k != "attachments"}
    return out | ({"files": edit["attachments"]} if edit["attachments"] else {})


# --- the adapters ----------------------------------------------------------------------------------------------

class InteractionReply(Reply):
    """An interaction, acknowledged by deferring it; its deferred response is the status, then the answer."""

    errors = (discord.HTTPException,)
    edit_interval_s = 1.0       # a webhook takes about 5 edits per 2 s; stage changes always show
    must_answer = True          # Discord wants every interaction answered; an ephemeral answer disturbs nobody

    def __init__(self, interaction: discord.Interaction) -> None:
        super().__init__(interaction.id, chat=str(interaction.channel_id), user=str(interaction.user.id),
                         job_id=f"dc-{interaction.id}", upload_limit_bytes=interaction.filesize_limit)
        self.interaction = interaction

    @property
    def acknowledged(self) -> bool:
        return self.interaction.response.type is discord.InteractionResponseType.deferred_channel_message

    async def acknowledge(self) -> str:
        await self.interaction.response.defer(thinking=True)
        return ""

    async def progress(self, text: str) -> None:
        await self.interaction.edit_original_response(content=text)

    async def finish(self, post: Post) -> str | None:
        await self.interaction.edit_original_response(**await _render(post))
        return None

    async def send(self, post: Post) -> str | None:
        kwargs = _new(await _render(post))
        if self.interaction.response.is_done():
            await self.interaction.followup.send(ephemeral=post.private, **kwargs)
        else:
            await self.interaction.response.send_message(ephemeral=post.private, **kwargs)
        return None

    async def update(self, post: Post) -> None:
        """Show `post` in place of the message whose button was pressed."""
        await self.interaction.response.edit_message(**await _render(post))


class MessageReply(Reply):
    """A pasted message, acknowledged with a "listening…" reply that becomes the answer."""

    errors = (discord.HTTPException,)
    edit_interval_s = 1.0

    def __init__(self, message: discord.Message) -> None:
        limit = message.guild.filesize_limit if message.guild is not None else charts.MAX_PNG_BYTES
        super().__init__(message.id, chat=str(message.channel.id), user=str(message.author.id),
                         job_id=f"dcm-{message.id}", upload_limit_bytes=limit)
        self.message = message
        self.status: discord.Message | None = None

    @property
    def acknowledged(self) -> bool:
        return self.status is not None

    async def acknowledge(self) -> str:
        self.status = await self.message.reply(replies.LISTENING, mention_author=False)
        return replies.LISTENING

    async def progress(self, text: str) -> None:
        assert self.status is not None
        await self.status.edit(content=text)

    async def finish(self, post: Post) -> str | None:
        assert self.status is not None
        await self.status.edit(**await _render(post))
        return None

    async def send(self, post: Post) -> str | None:
        await self.message.reply(mention_author=False, **_new(await _render(post)))
        return None
