"""The Discord front end (discord.py 2.x): slash commands, a context menu and pasted links in; embeds and charts out.

    bot = build(settings, classifier, history)   # a commands.AutoShardedBot; nothing connects yet
    async with bot:                              # bot/__main__ does this
        await bot.start(settings.discord_token.get_secret_value())  # log in, sync the commands, connect to the gateway

What the bot answers:

- `/identify link: file: at:` and `/genre` with the same options. Discord has no "one of these options is
  required" rule, so both options are optional in the schema and one is required at run time. `at` (1:02:03,
  62:03, 1h2m3s) overrides a link's own time, or says where to start in a file.
- The message context menu "Identify artist" (a message -> Apps): the message's audio attachment (voice
  messages included), or else its first link.
- `/about`: the model and its artists.
- With a `History` (bot/history.py), every answer is kept for its channel, as on Telegram: `/history [n]` lists
  the channel's last n answers (ephemeral: only the asker sees it; 10 to a page with "‹ Newer"/"Older ›"
  buttons), artist answers carry a "Wrong? Tell me the artist" button that opens a form for the name, and
  `/forget_me` deletes the sender's records in that channel. Without one, `/history` says history is off.
- Opt-in (`SPY_DISCORD_MESSAGE_CONTENT=1`): links and audio in ordinary messages, in DMs and, in servers, in
  messages that mention the bot or reply to it (as on Telegram). That asks for the privileged message-content
  intent, which must also be switched on in the Developer Portal (Bot -> Privileged Gateway Intents);
  without it Discord refuses the connection and start-up stops with a sentence saying so.

Every job: the user's rate and the channel's and the process's jobs are checked and the input is looked at
(type, size) *before* anything is acknowledged, so a refusal is an ephemeral reply only its author sees. Then
the interaction is deferred (Discord wants an answer within 3 s), the deferred response is edited as the job
moves (downloading/fetching, analysing 4/10 slices), and finally replaced by an embed (top-5 with bars, the
vote's confidence, genre, the source link at its time) with the chart attached as its image. Failures after
the deferral replace the deferred response. Limits and sentences come from `bot.limits` and `bot.replies`,
shared with Telegram; one difference is the platform's: an interaction must be answered, and an ephemeral
answer disturbs nobody, so every request over the rate limit is told (Telegram stays quiet after the first).

Sharding: the bot is a `commands.AutoShardedBot`. It asks Discord (GET /gateway/bot) how many shards to run
at every start: one below Discord's threshold, more once the bot is in enough servers that Discord requires
sharding (2,500 guilds), so nothing needs configuring. Every failure reaches one boundary (`DiscordSpy.fail`,
called by the command tree's `on_error`, the message listener, the buttons and the form), which logs it once
and tells the user in a sentence from `bot.replies`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Hashable, Sequence

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot import charts, links, media, replies
from bot.history import history_text, link_at
from bot.limits import JobGuard, RateLimiter
from bot.status import Status
from classifier import errors
from classifier.model.verdict import GenreReport, Verdict
from classifier.serve.api import Classifier, Query
from classifier.settings import Settings
from classifier.sources.links import Source, parse_time
from classifier.store.history import MAX_ARTIST_CHARS, MAX_RECENT, History

__all__ = ["build", "SpyBot", "DiscordSpy", "intents_for", "answer_embed", "CONTEXT_MENU", "HISTORY_OFF", "CHART_NAME",
           "PLATFORM", "WRONG"]

log = logging.getLogger(__name__)

PLATFORM = "discord"        # History's name for this front end
CONTEXT_MENU = "Identify artist"
CHART_NAME = "chart.png"
HISTORY_OFF = "History is not enabled in this build."
BOTH_GIVEN = "Give me a link or a file, not both."
WRONG = "Wrong? Tell me the artist"
DOWNLOAD_FAILED = "I could not download that file from Discord. Send it again?"
HISTORY_PAGE = 10           # answers per page of /history, as on Telegram: a phone screen
_EDIT_INTERVAL_S = 1.0      # a webhook takes about 5 edits per 2 s; stage changes always show
_LINK_CHARS, _AT_CHARS = 500, 32
# what /identify and /genre say about their options
_CLIP_OPTIONS = {"link": "A YouTube or SoundCloud link", "file": "A voice message or an audio file",
                 "at": "Where to listen, like 1:02:03 or 62:03"}
_FORM_TIMEOUT_S = 15 * 60   # an abandoned form is forgotten when its interaction token expires anyway
_COLOURS = {"identified": discord.Colour.green(), "unknown": discord.Colour.light_grey(),
            "genre": discord.Colour.blurple()}


def intents_for(settings: Settings) -> discord.Intents:
    """Only what the bot uses. Interactions need no intent at all; messages only with the opt-in setting."""
    intents = discord.Intents.none()
    intents.guilds = True                       # the guild and channel cache that interactions resolve against
    if settings.discord_message_content:
        intents.guild_messages = intents.dm_messages = True
        intents.message_content = True          # privileged: switched on in the Developer Portal as well
    return intents


def build(settings: Settings, classifier: Classifier, history: History | None = None,
          **options: Any) -> "SpyBot":
    """The bot for `settings.discord_token`, with its commands; nothing connects until `start`.

    `history`: where answers are kept per channel (None: /history says it is off, no buttons, no /forget_me).
    `options` go to discord.py's client (tests pass `guild_ready_timeout`; `shard_count` fixes the shards).
    """
    if not settings.discord_token:
        raise ValueError("DISCORD_TOKEN is not set")
    return SpyBot(DiscordSpy(settings, classifier, history), **options)


class SpyBot(commands.AutoShardedBot):
    """discord.py's bot with our start-up: the cog and its buttons, the command sync, sentences for bad tokens."""

    def __init__(self, spy: "DiscordSpy", **options: Any) -> None:
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())   # names never ping anyone
        # The bot never joins voice channels: discord.py's start-up warnings about voice libraries are noise.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        super().__init__(command_prefix=commands.when_mentioned, help_command=None,
                         intents=intents_for(spy.settings), **options)
        self.spy = spy
        spy.bot = self

    async def setup_hook(self) -> None:
        await self.add_cog(self.spy)
        self.add_dynamic_items(WrongButton, HistoryPage)
        await self.spy.sync(self.tree)

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: pasted links are the cog's (opt-in) listener's business."""

    async def login(self, token: str) -> None:
        try:
            await super().login(token)
        except discord.LoginFailure:
            raise errors.Unauthorized("Discord rejected DISCORD_TOKEN. Copy it again from the Developer Portal "
                                      "(your application -> Bot -> Reset Token).") from None

    async def connect(self, *, reconnect: bool = True) -> None:
        try:
            await super().connect(reconnect=reconnect)
        except discord.PrivilegedIntentsRequired:
            raise errors.Unauthorized("Discord refused the message-content intent. Switch it on in the Developer "
                                      "Portal (Bot -> Privileged Gateway Intents -> Message Content Intent), or "
                                      "unset SPY_DISCORD_MESSAGE_CONTENT.") from None


# --- what a request asks about -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Clip:
    """An attachment to listen to, and where in it to start."""

    attachment: discord.Attachment
    kind: str                  # "voice message", "audio file", "video", "file"
    at: float | None = None

    @property
    def label(self) -> str:
        return self.kind if self.kind == "voice message" else (self.attachment.filename or self.kind)

    @property
    def suffix(self) -> str:
        return media.clip_suffix(self.attachment.filename,
                                 {"voice message": ".ogg", "video": ".mp4"}.get(self.kind, ".bin"))

    def audio_like(self) -> bool:
        """Voice, audio and video are audio; another file is when its type or name says so, or says nothing."""
        return self.kind != "file" or media.audio_like(self.attachment.filename, self.attachment.content_type)


def clip_of(attachment: discord.Attachment, at: float | None = None) -> _Clip:
    mime = (attachment.content_type or "").lower()
    if attachment.is_voice_message():
        kind = "voice message"
    elif mime.startswith("audio/"):
        kind = "audio file"
    elif mime.startswith("video/"):
        kind = "video"
    else:
        kind = "file"
    return _Clip(attachment, kind, at)


def _usage(kind: str) -> str:
    return (f"Give /{kind} a link or a file: /{kind} link:https://youtu.be/… at:1:02:03, or attach a voice message "
            f"or an audio file. On any message: Apps -> {CONTEXT_MENU}.")


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


def answer_embed(answer: replies.Answer, *, chart: bool) -> discord.Embed:
    """The answer as an embed: title (linking to the source), ranked rows with bars, labelled fields, the chart."""
    m = EMBED
    colour = _COLOURS["genre"] if answer.kind == "genre" else _COLOURS["identified" if answer.identified
                                                                       else "unknown"]
    lines = ([m.escape(answer.intro)] if answer.intro else []) + [r.render(m) for r in answer.rows]
    embed = discord.Embed(title=m.escape(answer.title), url=answer.source_url, colour=colour,
                          description="\n".join(lines) or None)
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
    if chart:
        embed.set_image(url=f"attachment://{CHART_NAME}")
    return embed


# --- the status message ----------------------------------------------------------------------------------------

class _Status(Status):
    """The deferred response (or the bot's reply), edited as the job moves and finally replaced by the answer."""

    edit_errors = (discord.HTTPException,)

    def __init__(self, edit: Callable[..., Awaitable[Any]], text: str = "") -> None:
        super().__init__(text, interval_s=_EDIT_INTERVAL_S)
        self._edit = edit

    async def _edit_progress(self, text: str) -> None:
        await self._edit(content=text)

    async def finish(self, *, content: str | None = None, embed: discord.Embed | None = None,
                     files: Sequence[discord.File] = (), view: discord.ui.View | None = None) -> None:
        """Replace the status with the answer (or a sentence): content, embed, attachments and buttons at once."""
        self._closed = True
        async with self._lock:
            await self._edit(content=content, embed=embed, attachments=list(files), view=view)


# --- buttons and the correction form ---------------------------------------------------------------------------

def _spy(interaction: discord.Interaction) -> "DiscordSpy":
    return interaction.client.spy  # type: ignore[attr-defined]


class WrongButton(discord.ui.DynamicItem[discord.ui.Button], template=r"spy:wrong:(?P<id>[0-9]+)"):
    """ "Wrong? Tell me the artist" under an identify answer. The record id lives in the custom id, so the
    button keeps working after a restart."""

    def __init__(self, record_id: int) -> None:
        super().__init__(discord.ui.Button(label=WRONG, emoji="✏️",
                                           style=discord.ButtonStyle.secondary, custom_id=f"spy:wrong:{record_id}"))
        self.record_id = record_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: Any, /) -> "WrongButton":
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Open the form."""
        try:
            await interaction.response.send_modal(Correction(self.record_id))
        except Exception as exc:  # noqa: BLE001 - the one boundary decides what to say
            await _spy(interaction).fail(interaction, exc)


class Correction(discord.ui.Modal, title="Who is it?"):
    """The form behind "Wrong?": one line for the artist."""

    artist: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label="Artist", placeholder="The artist's name", min_length=1, max_length=MAX_ARTIST_CHARS)

    def __init__(self, record_id: int) -> None:
        super().__init__(custom_id=f"spy:correct:{record_id}", timeout=_FORM_TIMEOUT_S)
        self.record_id = record_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        spy = _spy(interaction)
        if spy.history is None:
            raise errors.SpyError(HISTORY_OFF)
        # The record must be this channel's: a button never reaches another channel's history.
        record = await spy.history.correct(self.record_id, user=str(interaction.user.id), artist=self.artist.value,
                                           platform=PLATFORM, chat=str(interaction.channel_id))
        log.info("correction record=%s chat=%s", record.id, interaction.channel_id)
        e = EMBED.escape
        await interaction.response.send_message(
            e(f"✏️ Thanks, noted: answer #{record.id} is ") + EMBED.bold(e(record.correction or ""))
            + e(". The operator reviews corrections before the model learns from them."), ephemeral=True)

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await _spy(interaction).fail(interaction, error)


class HistoryPage(discord.ui.DynamicItem[discord.ui.Button], template=r"spy:history:(?P<n>[0-9]+):(?P<offset>[0-9]+)"):
    """ "‹ Newer" / "Older ›" under /history: the page is in the custom id, the channel is where it is clicked."""

    def __init__(self, n: int, offset: int, label: str, *, disabled: bool = False) -> None:
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, disabled=disabled,
                                           custom_id=f"spy:history:{n}:{offset}"))
        self.n, self.offset = n, offset

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: Any, /) -> "HistoryPage":
        return cls(int(match["n"]), int(match["offset"]), getattr(item, "label", None) or "")

    async def callback(self, interaction: discord.Interaction) -> None:
        """Show that page in place."""
        spy = _spy(interaction)
        try:
            embed, view = await spy.history_page(interaction.channel_id or 0, self.n, self.offset)
            await interaction.response.edit_message(embed=embed, view=view)
        except Exception as exc:  # noqa: BLE001 - the one boundary decides what to say
            await spy.fail(interaction, exc)


# --- the commands ----------------------------------------------------------------------------------------------

_CONTEXTS = app_commands.AppCommandContext(guild=True, dm_channel=True)
_INSTALLS = app_commands.AppInstallationType(guild=True)


class DiscordSpy(commands.Cog):
    """The commands and listener, with what they share: settings, the classifier, the limits, the history."""

    def __init__(self, settings: Settings, classifier: Classifier, history: History | None = None) -> None:
        self.settings = settings
        self.classifier = classifier
        self.history = history
        self.rate = RateLimiter(settings.user_requests_per_minute)
        self.jobs = JobGuard(settings.max_jobs_per_chat, settings.max_jobs_total)
        self._status: dict[Hashable, _Status] = {}     # the live status of each job, for `fail`
        self.bot: commands.Bot = None  # type: ignore[assignment]  # set by SpyBot
        self.context_menu = app_commands.ContextMenu(name=CONTEXT_MENU, callback=self.identify_message,
                                                     allowed_contexts=_CONTEXTS, allowed_installs=_INSTALLS)

    async def cog_load(self) -> None:
        bot = self.bot
        bot.tree.add_command(self.context_menu)
        bot.tree.error(self.on_tree_error)
        if self.settings.discord_message_content:
            bot.add_listener(self.on_message, "on_message")

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(CONTEXT_MENU, type=discord.AppCommandType.message)
        self.bot.remove_listener(self.on_message, "on_message")

    async def sync(self, tree: app_commands.CommandTree) -> None:
        """Register the commands: to the development guild when one is set (instant), else globally."""
        if self.history is None:
            tree.remove_command("forget_me")      # nothing to forget
        guild_id = self.settings.discord_dev_guild_id
        try:
            if guild_id:
                guild = discord.Object(id=guild_id)
                tree.copy_global_to(guild=guild)
                synced = await tree.sync(guild=guild)
            else:
                synced = await tree.sync()
        except discord.HTTPException as exc:   # the commands already registered keep working
            log.warning("could not sync the commands: %s", exc)
            return
        log.info("synced %d commands %s", len(synced), f"to guild {guild_id}" if guild_id else "globally")

    # -- slash commands -------------------------------------------------------------------------------------
    @app_commands.command(name="identify", description="Who made this? A link (with a time) or an audio file.")
    @app_commands.describe(**_CLIP_OPTIONS)
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def identify(self, interaction: discord.Interaction,
                       link: app_commands.Range[str, 1, _LINK_CHARS] | None = None,
                       file: discord.Attachment | None = None,
                       at: app_commands.Range[str, 1, _AT_CHARS] | None = None) -> None:
        """/identify: the top-5 artists of a link or a file."""
        await self._slash(interaction, "identify", link, file, at)

    @app_commands.command(name="genre", description="The genre of a link (with a time) or an audio file.")
    @app_commands.describe(**_CLIP_OPTIONS)
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def genre(self, interaction: discord.Interaction,
                    link: app_commands.Range[str, 1, _LINK_CHARS] | None = None,
                    file: discord.Attachment | None = None,
                    at: app_commands.Range[str, 1, _AT_CHARS] | None = None) -> None:
        """/genre: the genres of a link or a file."""
        await self._slash(interaction, "genre", link, file, at)

    @app_commands.command(name="history", description="The last answers in this channel (only you see them).")
    @app_commands.describe(n=f"How many answers to show (default {HISTORY_PAGE}, at most {MAX_RECENT})")
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def history_command(self, interaction: discord.Interaction,
                              n: app_commands.Range[int, 1, MAX_RECENT] = HISTORY_PAGE) -> None:
        """/history [n]: the channel's last n answers, newest first."""
        if self.history is None:
            await interaction.response.send_message(HISTORY_OFF, ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        embed, view = await self.history_page(interaction.channel_id or 0, n, 0)
        await interaction.edit_original_response(embed=embed, view=view)

    @app_commands.command(name="forget_me", description="Delete your requests from this channel's history.")
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def forget_me(self, interaction: discord.Interaction) -> None:
        """/forget_me: delete the sender's records (and corrections) in this channel."""
        if self.history is None:
            raise errors.SpyError(HISTORY_OFF)
        n = await self.history.forget_user(PLATFORM, str(interaction.channel_id), str(interaction.user.id))
        text = (f"🧹 Done: I deleted your {n} request{'' if n == 1 else 's'} from this chat's history." if n
                else "🧹 I had nothing of yours in this chat's history.")
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="about", description="The model and the artists it knows.")
    @app_commands.allowed_contexts(guilds=True, dms=True)
    @app_commands.allowed_installs(guilds=True)
    async def about(self, interaction: discord.Interaction) -> None:
        """/about: the model and its artists (deferred: the model's worker may be busy with a clip)."""
        await interaction.response.defer(thinking=True)
        about = await self.classifier.about()
        embed = discord.Embed(title="Deep House Spy", description=replies.about_text(about, EMBED),
                              colour=_COLOURS["genre"])
        await interaction.edit_original_response(embed=embed)

    async def identify_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps -> Identify artist: the message's audio attachment or voice message, else its link."""
        self._admit_interaction(interaction)
        await self._interaction_job(interaction, "identify", self._from_message(message))

    # -- pasted links (opt-in) -----------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        """A link or audio in a DM, or in a server message that mentions the bot or replies to it."""
        if message.author.bot or not self._for_me(message):
            return
        try:
            if self.rate.check(message.author.id):
                await self._message_job(message, "identify", self._from_message(message))
        except Exception as exc:  # noqa: BLE001 - the one boundary decides what to say
            await self.fail(message, exc)

    def _for_me(self, message: discord.Message) -> bool:
        me = self.bot.user
        if message.guild is None:
            return True
        if me is not None and me in message.mentions and not message.mention_everyone:
            return True
        ref = message.reference.resolved if message.reference is not None else None
        replied = isinstance(ref, discord.Message) and me is not None and ref.author.id == me.id
        linked = links.looks_like_link(message.content) or bool(message.attachments)
        return replied and linked

    # -- one request --------------------------------------------------------------------------------------------
    async def _slash(self, interaction: discord.Interaction, kind: str, link: str | None,
                     file: discord.Attachment | None, at: str | None) -> None:
        self._admit_interaction(interaction)
        what: Source | _Clip
        if link and file:
            raise errors.BadSource(BOTH_GIVEN)
        if file is not None:
            what = clip_of(file, parse_time(at) if at else None)
        elif link:
            text, trailing = links.split_args(link.split())
            what = links.source_from(text, at=at or trailing, extra_hosts=self.settings.fetch_extra_hosts)
        else:
            raise errors.BadSource(_usage(kind))
        await self._interaction_job(interaction, kind, what)

    def _admit_interaction(self, interaction: discord.Interaction) -> None:
        """The per-user rate. Every refused interaction is told (ephemerally): Discord wants an answer."""
        wait = self.rate.hit(interaction.user.id)
        if wait > 0:
            raise errors.Busy(replies.slow_down(self.rate.per_minute), retry_after_s=wait,
                              detail=f"rate limit {self.rate.per_minute}/min")

    def _from_message(self, message: discord.Message) -> Source | _Clip:
        """A message's first audio attachment, else its first link; refuses other attachments by name."""
        clips = [clip_of(a) for a in message.attachments]
        for clip in clips:
            if clip.audio_like():
                return clip
        extra = [e.url for e in message.embeds if e.url]
        if clips and not (links.looks_like_link(message.content) or extra):
            first = clips[0].attachment
            raise errors.Undecodable(replies.not_audio(first.filename, first.content_type),
                                     detail=f"mime {first.content_type}")
        return links.source_from(message.content or "", extra_urls=extra,
                                 extra_hosts=self.settings.fetch_extra_hosts)

    def _refuse_early(self, clip: _Clip) -> None:
        """Refuse what cannot work before acknowledging or downloading anything."""
        a, limit = clip.attachment, self.settings.max_file_bytes
        if not clip.audio_like():
            raise errors.Undecodable(replies.not_audio(a.filename, a.content_type), detail=f"mime {a.content_type}")
        if a.size == 0:
            raise errors.Undecodable(replies.empty_file(clip.kind), detail="0 bytes")
        if a.size > limit:
            raise errors.DownloadTooLarge(replies.file_too_big(a.size, limit), detail=f"{a.size} bytes")

    async def _interaction_job(self, interaction: discord.Interaction, kind: str, what: Source | _Clip) -> None:
        """Defer, listen (editing the deferred response), answer with the embed and the chart."""
        if isinstance(what, _Clip):
            self._refuse_early(what)
        key = ("interaction", interaction.id)
        async with self.jobs.job(interaction.channel_id):
            await interaction.response.defer(thinking=True)
            status = _Status(interaction.edit_original_response)
            await self._job(key, f"dc-{interaction.id}", interaction.channel_id, interaction.user.id, kind, what,
                            status, upload_limit=interaction.filesize_limit)

    async def _message_job(self, message: discord.Message, kind: str, what: Source | _Clip) -> None:
        """Reply "listening...", edit that reply as the job moves, then make it the answer."""
        if isinstance(what, _Clip):
            self._refuse_early(what)
        key = ("message", message.id)
        async with self.jobs.job(message.channel.id):
            reply = await message.reply(replies.LISTENING, mention_author=False)
            status = _Status(reply.edit, replies.LISTENING)
            limit = message.guild.filesize_limit if message.guild is not None else charts.MAX_PNG_BYTES
            await self._job(key, f"dcm-{message.id}", message.channel.id, message.author.id, kind, what, status,
                            upload_limit=limit)

    async def _job(self, key: Hashable, job_id: str, chat: Any, user: int, kind: str, what: Source | _Clip,
                   status: _Status, *, upload_limit: int) -> None:
        t0 = time.perf_counter()
        self._status[key] = status
        try:
            async with self._query(what, status) as (query, note):
                if kind == "genre":
                    result: Verdict | GenreReport = await self.classifier.genre(query, status)
                else:
                    result = await self.classifier.identify(query, status)
        except asyncio.CancelledError:            # shutting down: nobody is left to tell
            self._status.pop(key, None)
            raise
        finally:
            status.close()
        record_id = await self._record(chat, user, result)
        answer = replies.answer_for(result, note=note)
        png = await self._chart(result, upload_limit)
        files = [discord.File(io.BytesIO(png), filename=CHART_NAME, description=replies.chart_caption(result))] \
            if png else []
        view = None
        if record_id is not None and isinstance(result, Verdict):
            view = discord.ui.View(timeout=None)
            view.add_item(WrongButton(record_id))
        await status.finish(embed=answer_embed(answer, chart=bool(png)), files=files, view=view)
        self._status.pop(key, None)
        host = what.host if isinstance(what, Source) else f"discord:{what.kind.replace(' ', '_')}"
        log.info("job %s chat=%s %s source=%s seconds=%.1f slices=%d answer=%s timings=%s wall=%.2fs",
                 job_id, chat, kind, host, result.seconds, result.slices, getattr(result, "verdict", "genre"),
                 dict(result.timings), time.perf_counter() - t0)

    @contextlib.asynccontextmanager
    async def _query(self, what: Source | _Clip, status: _Status) -> AsyncIterator[tuple[Query, str | None]]:
        """A classifier Query for a link, or for an attachment downloaded to a folder removed afterwards."""
        if isinstance(what, Source):
            yield Query(source=what), None
            return
        s = self.settings
        await status("downloading", 0, 0)
        with tempfile.TemporaryDirectory(prefix="spy-discord-") as tmp:
            path = Path(tmp) / f"clip{what.suffix}"
            try:
                data = await what.attachment.read()     # discord.py's own HTTP session, from Discord's CDN
            except (discord.HTTPException, aiohttp.ClientError) as exc:
                raise errors.FetchFailed(DOWNLOAD_FAILED, detail=f"{type(exc).__name__}: {exc}") from exc
            if len(data) > s.max_file_bytes:            # the attachment's stated size was wrong
                raise errors.DownloadTooLarge(replies.file_too_big(len(data), s.max_file_bytes))
            path.write_bytes(data)
            note = None
            duration = what.attachment.duration
            if duration is not None and duration - (what.at or 0.0) > s.max_clip_seconds:
                note = replies.clipped_note(s.max_clip_seconds, what.at)
            yield Query(path=path, at=what.at, duration_s=s.max_clip_seconds, label=what.label), note

    async def _chart(self, result: Verdict | GenreReport, limit: int) -> bytes | None:
        """The chart PNG, or None: the embed stands alone, so a chart that fails is logged and left out."""
        try:
            png = await asyncio.to_thread(charts.render_chart, result)
        except Exception:  # noqa: BLE001 - the answer goes out without it
            log.warning("chart not drawn", exc_info=True)
            return None
        if len(png) > min(limit, charts.MAX_PNG_BYTES):
            log.warning("chart of %d bytes is over the upload limit of %d", len(png), limit)
            return None
        return png

    async def _record(self, chat: Any, user: int, result: Verdict | GenreReport) -> int | None:
        """Remember the answer for /history; the answer goes out even if the store fails."""
        if self.history is None:
            return None
        try:
            return await self.history.record(platform=PLATFORM, chat=str(chat), user=str(user), result=result,
                                             source=link_at(result.source, result.start, self.settings.fetch_extra_hosts))
        except sqlite3.Error:       # the answer matters more than its record: logged, not shown
            log.warning("history: could not write for job in channel %s", chat, exc_info=True)
            return None

    async def history_page(self, chat: int, n: int, offset: int) -> tuple[discord.Embed, discord.ui.View | None]:
        """One page of the channel's last `n` answers, `offset` records back, newest first (`bot.history`'s
        lines, as on Telegram), with "‹ Newer" / "Older ›" buttons when they do not fit one page."""
        if self.history is None:
            raise errors.SpyError(HISTORY_OFF)
        n = max(1, min(n, MAX_RECENT))
        offset = max(0, min(offset, n - 1))
        total = min(n, await self.history.count(PLATFORM, str(chat)))
        records = await self.history.recent(PLATFORM, str(chat), min(HISTORY_PAGE, n - offset), offset)
        embed = discord.Embed(description=history_text(records, EMBED, offset=offset, total=total),
                              colour=_COLOURS["genre"])
        if total <= HISTORY_PAGE:
            return embed, None
        view = discord.ui.View(timeout=None)
        view.add_item(HistoryPage(n, max(0, offset - HISTORY_PAGE), "‹ Newer", disabled=offset == 0))
        view.add_item(HistoryPage(n, offset + HISTORY_PAGE, "Older ›", disabled=offset + HISTORY_PAGE >= total))
        return embed, view

    # -- the one error boundary -------------------------------------------------------------------------------
    async def on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """The command tree's on_error: every command and the context menu end here when they fail."""
        await self.fail(interaction, error.original if isinstance(error, app_commands.CommandInvokeError) else error)

    async def fail(self, where: discord.Interaction | discord.Message, exc: BaseException) -> None:
        """Log each failure once, then tell the user in a sentence: in the job's status if it has one, else
        ephemerally (interactions) or as a reply (messages)."""
        if isinstance(exc, errors.SpyError):
            log.info("refused: %s (%s)", exc.code, exc.detail or exc.user_message)
        else:
            log.error("unhandled error", exc_info=exc)
        text = replies.error_text(exc)
        interaction = where if isinstance(where, discord.Interaction) else None
        status = self._status.pop(("interaction" if interaction else "message", where.id), None)
        try:
            if status is not None:
                await status.finish(content=text)
            elif interaction is None:
                await where.reply(text, mention_author=False)             # type: ignore[union-attr]
            elif not interaction.response.is_done():
                await interaction.response.send_message(text, ephemeral=True)
            elif interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
                await interaction.edit_original_response(content=text, embed=None, attachments=[], view=None)
            else:
                await interaction.followup.send(text, ephemeral=True)
        except discord.HTTPException as told:
            log.warning("could not tell channel %s about %s: %s", where.channel and where.channel.id,
                        type(exc).__name__, told)
