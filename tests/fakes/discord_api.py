"""A Discord stand-in on 127.0.0.1 (aiohttp): the gateway websocket, the REST API and the attachment CDN.

The real discord.py client connects to it once `discord.http.Route.BASE` and
`discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` point here (the `discord_api` fixture does that).

Gateway: HELLO, heartbeats, IDENTIFY (the token and the intents are checked: a wrong token closes with 4004,
the message-content intent without `allow_message_content` with 4014, as Discord does), READY, one GUILD_CREATE
per guild, then whatever the test dispatches (INTERACTION_CREATE, MESSAGE_CREATE).

REST: login (users/@me, the application), GET /gateway/bot, the command sync (PUT .../commands, kept as the
schema later interactions are built from), interaction callbacks (answered within `ack_deadline_s` or
refused with 10062 "Unknown interaction", once only, as Discord does), the webhook edits and follow-ups of an
interaction (JSON or multipart), channel messages and their edits. Every request is recorded as a `Call`.

Tests act as users: `slash()` builds a chat-input interaction from the synced schema and refuses, with
`Refused`, what Discord's client would not send (unknown or missing options, wrong types, lengths and ranges,
a command not offered in DMs); `context_menu()`, `click()` and `submit()` (a modal) likewise; `post()` sends an
ordinary message. JSON goes out as exactly `application/json`: discord.py parses nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp import web

__all__ = ["FakeDiscord", "Call", "Ask", "Refused", "TOKEN", "discord_api_fixture", "discord_running"]

TOKEN = "MTAxMDEwMTAxMDEwMTAx.G7fake.discord-token_never-to-be-logged"
API = "/api/v10"
_DISCORD_EPOCH_MS = 1420070400000
_EPHEMERAL, _LOADING, _VOICE_MESSAGE = 1 << 6, 1 << 7, 1 << 13
_MESSAGE_CONTENT_INTENT = 1 << 15
_STRING, _INTEGER, _BOOLEAN, _NUMBER, _ATTACHMENT = 3, 4, 5, 10, 11
_PY_TYPES: dict[int, tuple[type, ...]] = {_STRING: (str,), _INTEGER: (int,), _BOOLEAN: (bool,),
                                          _NUMBER: (int, float)}


class Refused(Exception):
    """What Discord (its client or its API) would refuse before the bot hears of it."""


@dataclass(frozen=True)
class Call:
    """One request the bot made: method, path (after /api/v10), query, JSON body (or payload_json), files."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    content_type: str = ""
    at: float = 0.0

    @property
    def multipart(self) -> bool:
        return self.content_type.startswith("multipart/")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return list((self.body or {}).get("embeds") or []) if isinstance(self.body, dict) else []

    @property
    def content(self) -> str | None:
        return self.body.get("content") if isinstance(self.body, dict) else None


@dataclass
class Ask:
    """One interaction a test sent, and how to find what the bot did with it."""

    api: "FakeDiscord"
    id: str
    token: str
    payload: dict[str, Any]

    @property
    def calls(self) -> list[Call]:
        """Every request about this interaction: its callback, then webhook edits and follow-ups, in order."""
        return [c for c in self.api.calls if c.path.split("/")[3:4] == [self.token]]

    @property
    def callback(self) -> Call | None:
        found = [c for c in self.calls if c.path.endswith("/callback")]
        return found[0] if found else None

    @property
    def callback_type(self) -> int | None:
        return self.callback.body.get("type") if self.callback else None

    @property
    def edits(self) -> list[Call]:
        return [c for c in self.calls if c.method == "PATCH" and c.path.endswith("/messages/@original")]

    @property
    def followups(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and c.path.startswith("/webhooks/")]

    @property
    def original(self) -> dict[str, Any] | None:
        """The interaction's response message as it stands now."""
        state = self.api.interactions.get(self.token)
        mid = state and state.get("original")
        return self.api.messages.get(mid) if mid else None

    @property
    def modal(self) -> dict[str, Any] | None:
        state = self.api.interactions.get(self.token)
        return state.get("modal") if state else None

    def answered(self) -> bool:
        """An immediate message, or a deferral whose response has since been edited to its final form."""
        msg = self.original
        if msg is None:
            return False
        return not (msg["flags"] & _LOADING) and (bool(msg["embeds"]) or bool(msg["content"])) and \
            not self._is_progress(msg)

    @staticmethod
    def _is_progress(msg: dict[str, Any]) -> bool:
        return not msg["embeds"] and msg["content"].startswith(("🎧", "⬇️", "🔎", "✅"))

    async def done(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the final answer (or sentence) and return the message."""
        await self.api.wait_for(self.answered, timeout=timeout)
        assert self.original is not None
        return self.original


class FakeDiscord:
    """The stand-in. `async with FakeDiscord() as api:` listens on a free loopback port."""

    def __init__(self, token: str = TOKEN, *, allow_message_content: bool = True, shards: int = 1) -> None:
        self.token = token
        self.allow_message_content = allow_message_content
        self.shards = shards
        self.ack_deadline_s = 3.0
        self.upload_limit = 10 * 1024 * 1024
        self._ids = itertools.count(1)
        self.app_id = self.snowflake()
        self.bot_user = {"id": str(self.app_id), "username": "Deep House Spy", "discriminator": "0",
                         "global_name": None, "avatar": None, "bot": True, "flags": 0}
        self.owner = self.user(1, "owner")
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.calls: list[Call] = []
        self.identifies: list[dict[str, Any]] = []
        self.gateway_queries: list[dict[str, str]] = []
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.interactions: dict[str, dict[str, Any]] = {}
        self.attachments: dict[str, tuple[bytes, str]] = {}
        self.cdn_requests: list[str] = []
        self.ready = asyncio.Event()
        self._failures: list[tuple[str, re.Pattern[str], float, bool]] = []
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = itertools.count(1)
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def __aenter__(self) -> "FakeDiscord":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("GET", "/gateway", self._gateway)
        app.router.add_route("GET", "/attachments/{key}/{name}", self._cdn)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1000)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- ids, users, channels, attachments ----------------------------------------------------------------------
    def snowflake(self) -> int:
        return ((int(time.time() * 1000) - _DISCORD_EPOCH_MS) << 22) | (next(self._ids) & 0x3FFFFF)

    @staticmethod
    def user(user_id: int = 111, name: str = "ada") -> dict[str, Any]:
        return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name.title(),
                "avatar": None, "bot": False, "flags": 0}

    def channel(self) -> dict[str, Any]:
        """The guild's text channel."""
        return {"id": str(self.channel_id), "type": 0, "guild_id": str(self.guild_id), "name": "sets",
                "position": 0, "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None,
                "last_message_id": None, "rate_limit_per_user": 0}

    def dm(self, user: dict[str, Any]) -> dict[str, Any]:
        """The DM channel between `user` and the bot (id derived from the user's, so it is stable)."""
        return {"id": str(int(user["id"]) + 10_000), "type": 1, "recipients": [user], "last_message_id": None,
                "flags": 0}

    def attachment(self, data: bytes, filename: str, content_type: str | None, *, voice: bool = False,
                   duration: float | None = None, size: int | None = None) -> dict[str, Any]:
        """An uploaded file, served from this stand-in's CDN. `voice`: a Discord voice message."""
        att_id = str(self.snowflake())
        self.attachments[att_id] = (data, content_type or "application/octet-stream")
        url = f"http://127.0.0.1:{self.port}/attachments/{att_id}/{filename}"
        att: dict[str, Any] = {"id": att_id, "filename": filename, "size": len(data) if size is None else size,
                               "url": url, "proxy_url": url}
        if content_type:
            att["content_type"] = content_type
        if voice:
            att.update(duration_secs=duration if duration is not None else 20.0, waveform="AAAA", flags=0)
        elif duration is not None:
            att["duration_secs"] = duration
        return att

    # -- what users do ---------------------------------------------------------------------------------------
    async def post(self, user: dict[str, Any], content: str = "", *, dm: bool = False,
                   attachments: list[dict[str, Any]] | None = None, mention: bool = False,
                   reply_to: dict[str, Any] | None = None, dispatch: bool = True) -> dict[str, Any]:
        """A message from `user` (in the guild channel, or their DM); dispatched as MESSAGE_CREATE. `mention`
        starts it with the bot's mention; `reply_to` makes it a reply (without a ping)."""
        channel = self.dm(user) if dm else self.channel()
        atts = list(attachments or [])
        voice = any("waveform" in a for a in atts)
        mentions = [self.bot_user] if mention else []
        if mention:
            content = f"<@{self.app_id}> {content}".strip()
        msg = self._message(channel, user, content, attachments=atts, mentions=mentions,
                            flags=_VOICE_MESSAGE if voice else 0, reply_to=reply_to)
        if dispatch:
            data = dict(msg)
            if not dm:
                data["member"] = self._member_of(user, with_user=False)
            await self.dispatch("MESSAGE_CREATE", data)
        return msg

    async def slash(self, name: str, user: dict[str, Any], *, dm: bool = False, **options: Any) -> Ask:
        """A chat-input command as Discord's client would send it, built from the synced schema."""
        command = self._command(name, 1, dm)
        schema = {o["name"]: o for o in command.get("options") or []}
        given = {k: v for k, v in options.items() if v is not None}
        for key in given:
            if key not in schema:
                raise Refused(f"/{name} has no option {key!r}")
        opts, resolved = [], {}
        for opt_name, spec in schema.items():
            if opt_name not in given:
                if spec.get("required"):
                    raise Refused(f"/{name}: option {opt_name!r} is required")
                continue
            value = given[opt_name]
            opts.append({"name": opt_name, "type": spec["type"], "value": self._check_option(name, spec, value,
                                                                                               resolved)})
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1}
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = {"attachments": resolved}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._interact(2, data, user, dm=dm)

    async def context_menu(self, name: str, message: dict[str, Any], user: dict[str, Any]) -> Ask:
        """A message context-menu command (Apps -> name) on `message`."""
        dm = self.messages.get(message["id"], message).get("guild_id") is None
        command = self._command(name, 3, dm)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 3, "target_id": message["id"],
                                "resolved": {"messages": {message["id"]: self.messages.get(message["id"], message)}}}
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._interact(2, data, user, dm=dm)

    async def click(self, message: dict[str, Any], custom_id: str, user: dict[str, Any]) -> Ask:
        """A button press on a message the bot sent (refused if there is no such enabled button)."""
        msg = self.messages[message["id"]]
        buttons = [c for row in msg.get("components") or [] for c in row.get("components") or []]
        button = next((b for b in buttons if b.get("custom_id") == custom_id), None)
        if button is None:
            raise Refused(f"no button {custom_id!r} on message {msg['id']}")
        if button.get("disabled"):
            raise Refused(f"button {custom_id!r} is disabled")
        data = {"custom_id": custom_id, "component_type": button["type"]}
        return await self._interact(3, data, user, dm=msg.get("guild_id") is None, message=msg)

    async def submit(self, opened: Ask, user: dict[str, Any], **values: str) -> Ask:
        """Fill in and submit the modal the bot opened in answer to `opened` (keys: the inputs' custom ids or
        labels, lowercased)."""
        modal = opened.modal
        if modal is None:
            raise Refused("no modal was opened")

        def fill(component: dict[str, Any]) -> dict[str, Any]:
            if component["type"] == 1:
                return {"type": 1, "components": [fill(c) for c in component["components"]]}
            if component["type"] == 18:
                label = str(component.get("label", "")).lower()
                inner = dict(component["component"], label=label)
                return {"type": 18, "component": fill(inner)}
            if component["type"] == 4:
                keys = (component["custom_id"], str(component.get("label", "")).lower())
                value = next((values[k] for k in keys if k in values), "")
                if component.get("required", True) and not value:
                    raise Refused(f"{keys[1] or keys[0]} is required")
                if not component.get("min_length", 0) <= len(value) <= component.get("max_length", 4000):
                    raise Refused(f"{keys[1] or keys[0]}: {len(value)} characters")
                return {"type": 4, "custom_id": component["custom_id"], "value": value}
            return {"type": component["type"], "custom_id": component.get("custom_id")}

        data = {"custom_id": modal["custom_id"], "components": [fill(c) for c in modal["components"]]}
        state = self.interactions[opened.token]
        msg = self.messages.get(state["message_id"]) if state.get("message_id") else None
        return await self._interact(5, data, user, dm=state["dm"], message=msg)

    def rate_limit_next(self, method: str, pattern: str, *, retry_after: float = 0.5, via: bool = True) -> None:
        """The next `method` request whose path matches `pattern` gets a 429 with `retry_after`. Discord's
        answers come through Cloudflare with a `Via` header; without one discord.py takes the 429 for a
        Cloudflare ban and does not retry."""
        self._failures.append((method, re.compile(pattern), retry_after, via))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """A gateway DISPATCH to the bot's live connection."""
        await asyncio.wait_for(self.ready.wait(), 30)
        ws = self._sockets[-1]
        await ws.send_str(json.dumps({"op": 0, "t": event, "s": next(self._seq), "d": data}))

    # -- what the bot did ----------------------------------------------------------------------------------
    def of(self, method: str, pattern: str) -> list[Call]:
        """Calls whose path matches the regex `pattern` (searched)."""
        rx = re.compile(pattern)
        return [c for c in self.calls if c.method == method and rx.search(c.path)]

    def synced(self, guild: int | None = None) -> list[dict[str, Any]]:
        return self.commands.get(guild, [])

    def channel_messages(self, channel_id: int | str, *, by_bot: bool = True) -> list[dict[str, Any]]:
        return [m for m in self.messages.values() if m["channel_id"] == str(channel_id)
                and (m["author"]["id"] == str(self.app_id)) == by_bot]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Wait until `predicate()` is truthy: checked after every request the bot makes, and every 50 ms."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s; calls: "
                                     f"{[(c.method, c.path) for c in self.calls][-12:]}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))

    async def settle(self, quiet_s: float = 0.3) -> None:
        """Wait until the bot has made no request for `quiet_s` seconds."""
        count = -1
        while count != len(self.calls):
            count = len(self.calls)
            await asyncio.sleep(quiet_s)

    # -- internals: interactions ------------------------------------------------------------------------------
    def _command(self, name: str, ctype: int, dm: bool) -> dict[str, Any]:
        scopes = ([] if dm else [self.guild_id]) + [None]
        for scope in scopes:
            for command in self.commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == ctype:
                    contexts = command.get("contexts")
                    if dm and ((contexts is not None and 1 not in contexts) or command.get("dm_permission") is False):
                        raise Refused(f"{name} is not offered in DMs")
                    if not dm and contexts is not None and 0 not in contexts:
                        raise Refused(f"{name} is not offered in servers")
                    return command
        raise Refused(f"no synced command {name!r} (type {ctype})")

    def _check_option(self, command: str, spec: dict[str, Any], value: Any, resolved: dict[str, Any]) -> Any:
        where = f"/{command} {spec['name']}"
        kind = spec["type"]
        if kind == _ATTACHMENT:
            if not isinstance(value, dict) or "id" not in value or "url" not in value:
                raise Refused(f"{where}: takes an uploaded file")
            resolved[value["id"]] = value
            return value["id"]
        types = _PY_TYPES.get(kind)
        if types is None:
            raise Refused(f"{where}: option type {kind} is not supported by this stand-in")
        if not isinstance(value, types) or (kind != _BOOLEAN and isinstance(value, bool)):
            raise Refused(f"{where}: {value!r} is not a {types[0].__name__}")
        if kind == _STRING and not spec.get("min_length", 0) <= len(value) <= spec.get("max_length", 6000):
            raise Refused(f"{where}: {len(value)} characters")
        if kind in (_INTEGER, _NUMBER) and not (spec.get("min_value", -2 ** 53) <= value
                                                <= spec.get("max_value", 2 ** 53)):
            raise Refused(f"{where}: {value} is out of range")
        if spec.get("choices") and value not in [c["value"] for c in spec["choices"]]:
            raise Refused(f"{where}: {value!r} is not one of the choices")
        return value

    async def _interact(self, itype: int, data: dict[str, Any], user: dict[str, Any], *, dm: bool,
                        message: dict[str, Any] | None = None) -> Ask:
        iid, token = str(self.snowflake()), "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(24)
        channel = self.dm(user) if dm else self.channel()
        payload: dict[str, Any] = {
            "id": iid, "application_id": str(self.app_id), "type": itype, "data": data, "token": token,
            "version": 1, "channel_id": channel["id"], "channel": channel, "locale": "en-US", "entitlements": [],
            "app_permissions": "2248473465835073", "attachment_size_limit": self.upload_limit,
            "context": 1 if dm else 0,
            "authorizing_integration_owners": {"0": str(self.guild_id)} if not dm else {"1": user["id"]},
        }
        if dm:
            payload["user"] = user
        else:
            payload.update(guild_id=str(self.guild_id), guild_locale="en-US", member=self._member_of(user))
        if message is not None:
            payload["message"] = message
        self.interactions[token] = {"id": iid, "created": time.monotonic(), "responded": None, "original": None,
                                    "modal": None, "dm": dm, "channel": channel, "user": user,
                                    "message_id": message["id"] if message else None}
        await self.dispatch("INTERACTION_CREATE", payload)
        return Ask(self, iid, token, payload)

    def _member_of(self, user: dict[str, Any], *, with_user: bool = True) -> dict[str, Any]:
        member: dict[str, Any] = {"roles": [], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                                  "flags": 0, "permissions": "2248473465835073", "nick": None}
        if with_user:
            member["user"] = user
        return member

    def _message(self, channel: dict[str, Any], author: dict[str, Any], content: str, *,
                 attachments: list[dict[str, Any]] | None = None, embeds: list[dict[str, Any]] | None = None,
                 components: list[dict[str, Any]] | None = None, flags: int = 0, mtype: int = 0,
                 mentions: list[dict[str, Any]] | None = None, reply_to: dict[str, Any] | None = None,
                 webhook_id: str | None = None, interaction: dict[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "id": str(self.snowflake()), "channel_id": channel["id"], "type": 19 if reply_to else mtype,
            "content": content, "author": author, "attachments": attachments or [], "embeds": embeds or [],
            "components": components or [], "mentions": mentions or [], "mention_roles": [], "pinned": False,
            "mention_everyone": False, "tts": False, "flags": flags,
            "timestamp": dt.datetime.now(dt.timezone.utc).isoformat(), "edited_timestamp": None,
        }
        if channel.get("guild_id"):
            msg["guild_id"] = channel["guild_id"]
        if reply_to is not None:
            msg["message_reference"] = {"type": 0, "message_id": reply_to["id"], "channel_id": reply_to["channel_id"],
                                        **({"guild_id": reply_to["guild_id"]} if reply_to.get("guild_id") else {})}
            msg["referenced_message"] = self.messages.get(reply_to["id"], reply_to)
        if webhook_id is not None:
            msg["webhook_id"] = webhook_id
            msg["application_id"] = str(self.app_id)
        if interaction is not None:
            msg["interaction_metadata"] = interaction
        self.messages[msg["id"]] = msg
        return msg

    def _edit(self, msg: dict[str, Any], body: dict[str, Any], files: dict[str, tuple[str, bytes]]) -> None:
        """Apply a message PATCH: the keys present replace; attachments keep the listed ids and add the files."""
        if "content" in body:
            msg["content"] = body["content"] or ""
        if "embeds" in body:
            msg["embeds"] = body["embeds"] or []
        if "components" in body:
            msg["components"] = body["components"] or []
        if "flags" in body and body["flags"] is not None:
            msg["flags"] = (msg["flags"] & _EPHEMERAL) | (body["flags"] & ~_EPHEMERAL)
        if "attachments" in body or files:
            msg["attachments"] = self._attachments(body.get("attachments"), files, msg["attachments"])
        msg["flags"] &= ~_LOADING
        msg["edited_timestamp"] = dt.datetime.now(dt.timezone.utc).isoformat()

    def _attachments(self, listed: list[dict[str, Any]] | None, files: dict[str, tuple[str, bytes]],
                     current: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keep = {str(a["id"]) for a in listed or []}
        out = [a for a in current if a["id"] in keep] if listed is not None else list(current)
        for index, (filename, data) in enumerate(files.values()):
            meta = next((a for a in listed or [] if str(a.get("id")) == str(index)), {})
            att = self.attachment(data, filename, "image/png" if filename.endswith(".png") else None)
            if meta.get("description"):
                att["description"] = meta["description"]
            out.append(att)
        return out

    # -- internals: HTTP -----------------------------------------------------------------------------------------
    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body, files = await _read_body(request)
        call = Call(request.method, path, dict(request.query), body, files, request.content_type, time.monotonic())
        self.calls.append(call)
        self._changed.set()
        for failure in self._failures:
            method, pattern, retry_after, via = failure
            if method == call.method and pattern.search(path):
                self._failures.remove(failure)
                headers = {"Via": "1.1 google"} if via else {}
                headers.update({"X-RateLimit-Scope": "user", "Retry-After": str(int(retry_after + 0.999))})
                body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
                return web.Response(body=json.dumps(body).encode(), status=429, content_type="application/json",
                                    headers=headers)
        try:
            return await self._route(request, call)
        except _ApiError as exc:
            return _json({"message": exc.text, "code": exc.code}, status=exc.status)

    async def _route(self, request: web.Request, call: Call) -> web.StreamResponse:
        p, m = call.path, call.method
        if p.startswith("/interactions/") or p.startswith("/webhooks/"):
            return await self._webhook(call)
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise _ApiError(401, 0, "401: Unauthorized")
        if m == "GET" and p == "/users/@me":
            return _json(self.bot_user)
        if m == "GET" and p == "/oauth2/applications/@me":
            return _json({"id": str(self.app_id), "name": "Deep House Spy", "description": "", "icon": None,
                          "bot_public": True, "bot_require_code_grant": False, "owner": self.owner,
                          "verify_key": "0" * 64, "flags": 1 << 19, "team": None, "summary": "",
                          "rpc_origins": [], "tags": []})
        if m == "GET" and p in ("/gateway/bot", "/gateway"):
            return _json({"url": self.gateway_url, "shards": self.shards,
                          "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0,
                                                  "max_concurrency": 1}})
        match = re.fullmatch(r"/applications/(\d+)(?:/guilds/(\d+))?/commands", p)
        if m == "PUT" and match:
            return _json(self._sync(int(match[1]), int(match[2]) if match[2] else None, call.body))
        match = re.fullmatch(r"/channels/(\d+)/messages", p)
        if m == "POST" and match:
            return _json(self._channel_post(match[1], call))
        match = re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p)
        if m == "PATCH" and match:
            msg = self.messages.get(match[2])
            if msg is None:
                raise _ApiError(404, 10008, "Unknown Message")
            self._edit(msg, call.body or {}, call.files)
            return _json(msg)
        if m == "POST" and re.fullmatch(r"/channels/(\d+)/typing", p):
            return web.Response(status=204)
        raise _ApiError(404, 0, f"404: Not Found ({m} {p})")

    def _sync(self, app_id: int, guild: int | None, body: Any) -> list[dict[str, Any]]:
        if app_id != self.app_id:
            raise _ApiError(403, 50001, "Missing Access")
        if not isinstance(body, list) or len(body) > 100:
            raise _ApiError(400, 50035, "Invalid Form Body")
        out = []
        for command in body:
            ctype = command.get("type", 1)
            if ctype == 1 and (not re.fullmatch(r"[-_a-z0-9]{1,32}", command["name"])
                               or not 1 <= len(command.get("description", "")) <= 100):
                raise _ApiError(400, 50035, f"Invalid Form Body (command {command['name']!r})")
            options = command.get("options") or []
            required = [bool(o.get("required")) for o in options]
            if required != sorted(required, reverse=True) or len(options) > 25:
                raise _ApiError(400, 50035, "Invalid Form Body (required options must come first)")
            stored = dict(command, id=str(self.snowflake()), application_id=str(self.app_id), version="1",
                          description=command.get("description", ""))
            if guild is not None:
                stored["guild_id"] = str(guild)
            out.append(stored)
        self.commands[guild] = out
        return out

    def _channel_post(self, channel_id: str, call: Call) -> dict[str, Any]:
        body = call.body or {}
        channel = self.channel() if channel_id == str(self.channel_id) else next(
            (m["channel"] for m in self.interactions.values() if m["channel"]["id"] == channel_id),
            {"id": channel_id, "type": 1})
        ref = body.get("message_reference")
        reply_to = self.messages.get(str(ref["message_id"])) if ref else None
        msg = self._message(channel, self.bot_user, body.get("content") or "", embeds=body.get("embeds"),
                            components=body.get("components"), reply_to=reply_to,
                            attachments=self._attachments(body.get("attachments"), call.files, []))
        return msg

    async def _webhook(self, call: Call) -> web.StreamResponse:
        p, m = call.path, call.method
        match = re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p)
        if match and m == "POST":
            return _json(self._callback(match[1], match[2], call))
        match = re.fullmatch(r"/webhooks/(\d+)/([^/]+)(?:/messages/([^/]+))?", p)
        if match is None or int(match[1]) != self.app_id or match[2] not in self.interactions:
            raise _ApiError(404, 10015, "Unknown Webhook")
        state = self.interactions[match[2]]
        if state["responded"] is None:
            raise _ApiError(404, 10015, "Unknown Webhook")     # no response yet: nothing to edit or follow
        which = match[3]
        if m == "POST" and which is None:
            flags = (call.body or {}).get("flags") or 0
            msg = self._message(state["channel"], self.bot_user, (call.body or {}).get("content") or "",
                                embeds=(call.body or {}).get("embeds"), components=(call.body or {}).get("components"),
                                flags=flags, webhook_id=str(self.app_id),
                                attachments=self._attachments((call.body or {}).get("attachments"), call.files, []))
            return _json(msg)
        mid = state["original"] if which == "@original" else which
        msg = self.messages.get(mid or "")
        if msg is None:
            raise _ApiError(404, 10008, "Unknown Message")
        if m == "PATCH":
            self._edit(msg, call.body or {}, call.files)
        elif m == "DELETE":
            del self.messages[msg["id"]]
            return web.Response(status=204)
        return _json(msg)

    def _callback(self, iid: str, token: str, call: Call) -> dict[str, Any]:
        state = self.interactions.get(token)
        if state is None or state["id"] != iid:
            raise _ApiError(404, 10062, "Unknown interaction")
        if state["responded"] is not None:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if time.monotonic() - state["created"] > self.ack_deadline_s:
            raise _ApiError(404, 10062, "Unknown interaction")
        body = call.body or {}
        rtype, data = body.get("type"), body.get("data") or {}
        state["responded"] = rtype
        flags = data.get("flags") or 0
        meta = {"id": iid, "type": 2, "user": state["user"]}
        resource: dict[str, Any] = {"type": rtype}
        if rtype in (4, 5):
            msg = self._message(state["channel"], self.bot_user, data.get("content") or "",
                                embeds=data.get("embeds"), components=data.get("components"),
                                flags=flags | (_LOADING if rtype == 5 else 0), mtype=20, webhook_id=str(self.app_id),
                                interaction=meta, attachments=self._attachments(data.get("attachments"), call.files,
                                                                                []))
            state["original"] = msg["id"]
            resource["message"] = msg
        elif rtype == 7:
            msg = self.messages[state["message_id"]]
            self._edit(msg, data, call.files)
            state["original"] = msg["id"]
            resource["message"] = msg
        elif rtype == 6:
            state["original"] = state["message_id"]
        elif rtype == 9:
            state["modal"] = data
        else:
            raise _ApiError(400, 50035, f"Invalid Form Body (callback type {rtype})")
        return {"interaction": {"id": iid, "type": 2, "response_message_id": resource.get("message", {}).get("id"),
                                "response_message_loading": rtype == 5,
                                "response_message_ephemeral": bool(flags & _EPHEMERAL)},
                "resource": resource}

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["key"]
        self.cdn_requests.append(key)
        self._changed.set()
        if key not in self.attachments:
            return web.Response(status=404)
        data, mime = self.attachments[key]
        return web.Response(body=data, content_type=mime)

    # -- internals: the gateway ------------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.gateway_queries.append(dict(request.query))
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for message in ws:
            data = json.loads(message.data)
            op = data.get("op")
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                await self._identify(ws, data["d"])
            elif op == 6:                                   # RESUME: start over, as after a lost session
                await ws.send_str(json.dumps({"op": 9, "d": False}))
        if ws in self._sockets:
            self._sockets.remove(ws)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> None:
        self.identifies.append({k: v for k, v in d.items() if k != "token"})
        if d.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if int(d.get("intents") or 0) & _MESSAGE_CONTENT_INTENT and not self.allow_message_content:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self._sockets.append(ws)
        shard = d.get("shard") or [0, 1]
        ready = {"v": 10, "user": self.bot_user, "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                 "session_id": secrets.token_hex(16), "resume_gateway_url": self.gateway_url, "shard": shard,
                 "application": {"id": str(self.app_id), "flags": 1 << 19}, "private_channels": [],
                 "relationships": []}
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": next(self._seq), "d": ready}))
        guild = {"id": str(self.guild_id), "name": "Dance floor", "unavailable": False, "member_count": 2,
                 "owner_id": self.owner["id"], "large": False, "joined_at": "2024-01-01T00:00:00+00:00",
                 "channels": [self.channel()], "threads": [], "members": [], "voice_states": [], "presences": [],
                 "roles": [{"id": str(self.guild_id), "name": "@everyone", "permissions": "2248473465835073",
                            "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False,
                            "flags": 0}],
                 "emojis": [], "stickers": [], "features": [], "stage_instances": [], "guild_scheduled_events": [],
                 "soundboard_sounds": [], "premium_tier": 0, "preferred_locale": "en-US", "nsfw_level": 0,
                 "verification_level": 0, "default_message_notifications": 0, "explicit_content_filter": 0,
                 "mfa_level": 0, "system_channel_flags": 0}
        await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": next(self._seq), "d": guild}))
        self.ready.set()


class _ApiError(Exception):
    def __init__(self, status: int, code: int, text: str) -> None:
        super().__init__(text)
        self.status, self.code, self.text = status, code, text


def _json(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": discord.py treats "application/json; charset=utf-8" as text.
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


async def _read_body(request: web.Request) -> tuple[Any, dict[str, tuple[str, bytes]]]:
    if request.content_type.startswith("multipart/"):
        body: Any = None
        files: dict[str, tuple[str, bytes]] = {}
        reader = await request.multipart()
        async for part in reader:
            data = await part.read()  # type: ignore[union-attr]
            if part.name == "payload_json":  # type: ignore[union-attr]
                body = json.loads(data)
            elif part.name:  # type: ignore[union-attr]
                files[part.name] = (part.filename or part.name, bytes(data))  # type: ignore[union-attr]
        return body, files
    raw = await request.read()
    if not raw:
        return None, {}
    try:
        return json.loads(raw), {}
    except ValueError:
        return raw.decode("utf-8", "replace"), {}


# --- fixtures --------------------------------------------------------------------------------------------------

@pytest.fixture(name="discord_api")
async def discord_api_fixture(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """The stand-in, with discord.py's REST base and default gateway pointed at it (import it into a test
    module to have `discord_api`; the function's own name differs, so test parameters do not shadow it)."""
    import yarl
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    async with FakeDiscord() as api:
        monkeypatch.setattr(Route, "BASE", api.base)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(api.gateway_url + "/"))
        yield api


@contextlib.asynccontextmanager
async def discord_running(api: FakeDiscord, settings: Any, classifier: Any, history: Any = None,
                          **options: Any) -> AsyncIterator[Any]:
    """The real bot from `bot.discord_app.build`, logged in to `api` and ready, for the block."""
    from bot import discord_app

    bot = discord_app.build(settings.replace(discord_token=api.token), classifier, history,
                            guild_ready_timeout=0.05, **options)
    async with bot:
        task = asyncio.create_task(bot.start(api.token), name="discord-test")
        try:
            waiter = asyncio.create_task(bot.wait_until_ready())
            done, _ = await asyncio.wait({task, waiter}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                waiter.cancel()
                task.result()                     # start-up failed: raise its error here
            if waiter not in done:
                raise AssertionError("the bot did not become ready")
            yield bot
        finally:
            await bot.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
