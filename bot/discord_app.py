"""The Discord front end (discord.py 2.x): slash commands, a context menu and pasted links in; embeds and charts out.

    bot = build(settings, classifier, history)   # a commands.AutoShardedBot; nothing connects yet
    async with bot:                              # bot/__main__ does this
        await bot.start(settings.discord_token.get_secret_value())  # log in, sync the commands, connect to the gateway

What the bot answers:

- `/identify link: file: at:` and `/genre` with the same options. Discord has no "one of these options is
  required" rule, so both options are optional in the schema and one is required at run time. `at` (1:02:03,
  62:03, 1h2m3s) overrides a link's own time, or says where to start in a file.
- The message context menu "Identify artist" (a message -> Apps): the message's audio attachment (voice
  messages included), or else its first link. `/about`: the model and its artists.
- With a `History`: `/history [n]` (ephemeral: only the asker sees it), a "Wrong? Tell me the artist" button
  under artist answers that opens a form for the name, and `/forget_me`. Without one, `/history` says so.
- Opt-in (`SPY_DISCORD_MESSAGE_CONTENT=1`): links and audio in ordinary messages, in DMs and, in servers, in
  messages that mention the bot or reply to it (as on Telegram). That asks for the privileged message-content
  intent, which must also be switched on in the Developer Portal (Bot -> Privileged Gateway Intents);
  without it Discord refuses the connection and start-up stops with a sentence saying so.

Jobs, progress, charts, history and failures are `bot.core`'s; this file maps interactions and messages onto
it and shows its posts as embeds (`bot.discord_reply`). The input is looked at before anything is
acknowledged, so a refusal is an ephemeral reply only its author sees; then the interaction is deferred
(Discord wants an answer within 3 s) and the deferred response becomes the answer, with the chart attached.
An interaction must be answered, so every request over the rate limit is told (Telegram stays quiet after
the first). Sharding: an `AutoShardedBot` asks Discord (GET /gateway/bot) how many shards to run at every
start, so nothing needs configuring. Every failure reaches `DiscordSpy.fail`, then `BotCore.fail`.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import links, replies
from bot.core import HISTORY_PAGE, BotCore
from bot.discord_reply import (
    EMBED,
    Action,
    InteractionReply,
    MessageReply,
    clip_of,
    colour,
)
from bot.media import Clip
from classifier import errors
from classifier.serve.api import Classifier
from classifier.settings import Settings
from classifier.sources.links import Source, parse_time
from classifier.store.history import MAX_ARTIST_CHARS, MAX_RECENT, History

__all__ = ["build", "SpyBot", "DiscordSpy", "intents_for", "PLATFORM"]

log = logging.getLogger(__name__)

PLATFORM = "discord"        # History's name for this front end
_LINK_CHARS, _AT_CHARS = 500, 32
_FORM_TIMEOUT_S = 15 * 60   # an abandoned form is forgotten when its interaction token expires anyway
_Link = app_commands.Range[str, 1, _LINK_CHARS]
_At = app_commands.Range[str, 1, _AT_CHARS]


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
                         intents=intents_for(spy.settings), **options,
                         # every command, in servers and in DMs with the bot, for server installs
                         allowed_contexts=app_commands.AppCommandContext(guild=True, dm_channel=True),
                         allowed_installs=app_commands.AppInstallationType(guild=True))
        self.spy = spy
        spy.bot = self

    async def setup_hook(self) -> None:
        await self.add_cog(self.spy)
        self.add_dynamic_items(Action)
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


class Correction(discord.ui.Modal, title=replies.FORM_TITLE):
    """The form behind "Wrong?": one line for the artist."""

    artist: discord.ui.TextInput[Any] = discord.ui.TextInput(
        label=replies.FORM_LABEL, placeholder=replies.NAME_PLACEHOLDER, min_length=1, max_length=MAX_ARTIST_CHARS)

    def __init__(self, record_id: int) -> None:
        super().__init__(custom_id=f"spy:correct:{record_id}", timeout=_FORM_TIMEOUT_S)
        self.record_id = record_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        # The record must be this channel's: a button never reaches another channel's history.
        await _spy(interaction).core.correct(InteractionReply(interaction), self.record_id, self.artist.value)

    async def on_error(self, interaction: discord.Interaction, error: Exception, /) -> None:
        await _spy(interaction).fail(interaction, error)


def _spy(interaction: discord.Interaction) -> "DiscordSpy":
    return interaction.client.spy  # type: ignore[attr-defined]


# --- the commands ----------------------------------------------------------------------------------------------

class DiscordSpy(commands.Cog):
    """The commands, buttons and listener; what they share (settings, classifier, history, limits) is the `core`."""

    def __init__(self, settings: Settings, classifier: Classifier, history: History | None = None) -> None:
        self.settings = settings
        self.core = BotCore(PLATFORM, settings, classifier, history)
        self.bot: commands.Bot = None  # type: ignore[assignment]  # set by SpyBot
        self.context_menu = app_commands.ContextMenu(name=replies.CONTEXT_MENU, callback=self.identify_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.context_menu)
        self.bot.tree.error(self.on_tree_error)
        if self.settings.discord_message_content:
            self.bot.add_listener(self.on_message, "on_message")

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(replies.CONTEXT_MENU, type=discord.AppCommandType.message)
        self.bot.remove_listener(self.on_message, "on_message")

    async def sync(self, tree: app_commands.CommandTree) -> None:
        """Register the commands: to the development guild when one is set (instant), else globally."""
        if self.core.history is None:
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

    # -- slash commands and the context menu ------------------------------------------------------------------
    @app_commands.command(name="identify", description=replies.DISCORD_COMMANDS["identify"])
    @app_commands.describe(**replies.DISCORD_OPTIONS)
    async def identify(self, interaction: discord.Interaction, link: _Link | None = None,
                       file: discord.Attachment | None = None, at: _At | None = None) -> None:
        """/identify: the top-5 artists of a link or a file."""
        await self._slash(interaction, "identify", link, file, at)

    @app_commands.command(name="genre", description=replies.DISCORD_COMMANDS["genre"])
    @app_commands.describe(**replies.DISCORD_OPTIONS)
    async def genre(self, interaction: discord.Interaction, link: _Link | None = None,
                    file: discord.Attachment | None = None, at: _At | None = None) -> None:
        """/genre: the genres of a link or a file."""
        await self._slash(interaction, "genre", link, file, at)

    @app_commands.command(name="history", description=replies.DISCORD_COMMANDS["history"])
    @app_commands.describe(n=replies.HISTORY_N.format(page=HISTORY_PAGE, most=MAX_RECENT))
    async def history_command(self, interaction: discord.Interaction,
                              n: app_commands.Range[int, 1, MAX_RECENT] = HISTORY_PAGE) -> None:
        """/history [n]: the channel's last n answers, newest first (only the asker sees them)."""
        self.core.kept()
        await interaction.response.defer(ephemeral=True, thinking=True)
        await InteractionReply(interaction).finish(await self.core.history_post(str(interaction.channel_id), n))

    @app_commands.command(name="forget_me", description=replies.DISCORD_COMMANDS["forget_me"])
    async def forget_me(self, interaction: discord.Interaction) -> None:
        """/forget_me: delete the sender's records (and corrections) in this channel."""
        await self.core.forget_me(InteractionReply(interaction))

    @app_commands.command(name="about", description=replies.DISCORD_COMMANDS["about"])
    async def about(self, interaction: discord.Interaction) -> None:
        """/about: the model and its artists (deferred: the model's worker may be busy with a clip)."""
        await interaction.response.defer(thinking=True)
        about = await self.core.classifier.about()
        embed = discord.Embed(title="Deep House Spy", description=replies.about_text(about, EMBED),
                              colour=colour("genre"))
        await interaction.edit_original_response(embed=embed)

    async def identify_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Apps -> Identify artist: the message's audio attachment or voice message, else its link."""
        self.core.admit(reply := InteractionReply(interaction))
        await self.core.answer(reply, "identify", self._from_message(message))

    async def _slash(self, interaction: discord.Interaction, kind: str, link: str | None,
                     file: discord.Attachment | None, at: str | None) -> None:
        self.core.admit(reply := InteractionReply(interaction))
        what: Source | Clip
        if link and file:
            raise errors.BadSource(replies.BOTH_GIVEN)
        if file is not None:
            what = clip_of(file, parse_time(at) if at else None)
        elif link:
            what = self.core.source(link, at=at)
        else:
            raise errors.BadSource(replies.option_usage(kind))
        await self.core.answer(reply, kind, what)

    def _from_message(self, message: discord.Message) -> Source | Clip:
        """A message's first audio attachment, else its first link (also behind embeds)."""
        return self.core.pick([clip_of(a) for a in message.attachments], message.content or "",
                              [e.url for e in message.embeds if e.url])

    # -- buttons -----------------------------------------------------------------------------------------------
    async def on_button(self, interaction: discord.Interaction, action: str) -> None:
        """A press on one of the bot's buttons (`bot.discord_reply.Action`): "wrong:<record>" opens the form,
        "history:<n>:<offset>" shows that page of /history in place."""
        name, *args = action.split(":")
        if name == "wrong":
            await interaction.response.send_modal(Correction(int(args[0])))
        elif name == "history":
            post = await self.core.history_post(str(interaction.channel_id), int(args[0]), int(args[1]))
            await InteractionReply(interaction).update(post)
        else:
            raise errors.BadRequest(detail=f"unknown button {action!r}")

    # -- pasted links (opt-in) -----------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        """A link or audio in a DM, or in a server message that mentions the bot or replies to it."""
        if message.author.bot or not self._for_me(message):
            return
        try:
            if self.core.admit(reply := MessageReply(message)):
                await self.core.answer(reply, "identify", self._from_message(message))
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
        return replied and (links.looks_like_link(message.content) or bool(message.attachments))

    # -- the one error boundary -------------------------------------------------------------------------------
    async def on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """The command tree's on_error: every command and the context menu end here when they fail."""
        await self.fail(interaction, error.original if isinstance(error, app_commands.CommandInvokeError) else error)

    async def fail(self, where: discord.Interaction | discord.Message, exc: BaseException) -> None:
        """Every failure (commands, the listener, buttons, the form) goes on to the core from here."""
        reply = InteractionReply(where) if isinstance(where, discord.Interaction) else MessageReply(where)
        await self.core.fail(where.id, exc, reply)

