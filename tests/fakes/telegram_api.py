"""A Telegram Bot API stand-in on 127.0.0.1 (aiohttp), for driving the real python-telegram-bot against.

It implements what the bot uses: getMe, getUpdates (long poll), sendMessage, editMessageText, sendPhoto
(multipart), sendChatAction, getFile and the file download, setMyCommands, deleteWebhook; any method can
be told to fail once (e.g. 429 with `retry_after`). Tests push updates in (`send_text`, `send_voice`, ...)
and assert on what the bot sent (`calls`, `conversation`, `wait_for`).

The stand-in classifier the bot tests use is in tests/fakes/classifier.py (shared with Discord's tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from aiohttp import web

from classifier.settings import Settings

# Re-exported for tests/test_history.py, which still imports them from here (they live in fakes/classifier.py).
from tests.fakes.classifier import canned_genre, canned_verdict  # noqa: F401

__all__ = ["FakeBotAPI", "Call", "bot_running", "TOKEN"]

TOKEN = "123456789:TEST-token_never-to-be-logged"


@dataclass(frozen=True)
class Call:
    """One request the bot made: method, form fields (raw strings) and uploaded files."""

    method: str
    params: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)
    at: float = 0.0

    def json(self, name: str, default: Any = None) -> Any:
        raw = self.params.get(name)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except ValueError:
            return raw

    @property
    def chat_id(self) -> int | None:
        raw = self.params.get("chat_id")
        return int(raw) if raw is not None and raw.lstrip("-").isdigit() else None

    @property
    def text(self) -> str | None:
        return self.params.get("text", self.params.get("caption"))


class FakeBotAPI:
    """The stand-in server. `async with FakeBotAPI() as api:` starts it on a free loopback port."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.bot_user = {"id": 4242, "is_bot": True, "first_name": "Spy", "username": "spy_test_bot",
                         "can_join_groups": True, "can_read_all_group_messages": False,
                         "supports_inline_queries": False}
        self.calls: list[Call] = []
        self.downloads: list[str] = []
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._files: dict[str, tuple[str, bytes]] = {}
        self._failures: dict[str, list[tuple[int, str, dict[str, Any]]]] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._file_ids = itertools.count(1)
        self._chats: dict[int, dict[str, Any]] = {}
        self._changed: asyncio.Condition | None = None
        self._closing = False
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def __aenter__(self) -> "FakeBotAPI":
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_route("POST", "/bot{token}/{method}", self._method)
        app.router.add_route("GET", "/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing = True
        await self._notify()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def settings(self, base: Settings) -> Settings:
        """`base` pointed at this server."""
        return base.replace(telegram_token=self.token, telegram_base_url=self.base_url,
                            telegram_base_file_url=self.base_file_url)

    # -- what users do -----------------------------------------------------------------------------------
    @staticmethod
    def user(user_id: int = 111, name: str = "Ada") -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": name}

    def private_chat(self, user: dict[str, Any]) -> dict[str, Any]:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        self._chats[chat["id"]] = chat
        return chat

    def group_chat(self, chat_id: int = -100500, title: str = "Dance floor") -> dict[str, Any]:
        chat = {"id": chat_id, "type": "supergroup", "title": title}
        self._chats[chat_id] = chat
        return chat

    def add_file(self, data: bytes, path: str) -> str:
        """Make bytes downloadable; returns the file_id."""
        file_id = f"file-{next(self._file_ids)}"
        self._files[file_id] = (path, data)
        return file_id

    async def send(self, chat: dict[str, Any], user: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """Queue a message update from `user` in `chat`; returns the message."""
        message = {"message_id": next(self._message_ids), "date": int(time.time()), "chat": chat, "from": user,
                   **fields}
        self.messages[(chat["id"], message["message_id"])] = message
        self._updates.append({"update_id": next(self._update_ids), "message": message})
        await self._notify()
        return message

    async def send_text(self, chat: dict[str, Any], user: dict[str, Any], text: str, *,
                        entities: list[dict[str, Any]] | None = None, mention: bool = False,
                        reply_to: dict[str, Any] | None = None) -> dict[str, Any]:
        """A text message. Starting with '/' makes it a command; `mention` prefixes '@bot '."""
        ents = list(entities or [])
        if mention:
            handle = "@" + self.bot_user["username"]
            text = f"{handle} {text}"
            ents = [{"type": "mention", "offset": 0, "length": len(handle)}] + [
                {**e, "offset": e["offset"] + len(handle) + 1} for e in ents]
        if text.startswith("/"):
            ents.insert(0, {"type": "bot_command", "offset": 0, "length": len(text.split()[0])})
        extra: dict[str, Any] = {"text": text}
        if ents:
            extra["entities"] = ents
        if reply_to is not None:
            extra["reply_to_message"] = reply_to
        return await self.send(chat, user, **extra)

    async def send_voice(self, chat: dict[str, Any], user: dict[str, Any], data: bytes, *, duration: int = 20,
                         size: int | None = None, reply_to: dict[str, Any] | None = None) -> dict[str, Any]:
        file_id = self.add_file(data, f"voice/file_{len(self._files)}.oga")
        voice = {"file_id": file_id, "file_unique_id": "u" + file_id, "duration": duration,
                 "mime_type": "audio/ogg", "file_size": len(data) if size is None else size}
        extra = {"reply_to_message": reply_to} if reply_to is not None else {}
        return await self.send(chat, user, voice=voice, **extra)

    async def send_document(self, chat: dict[str, Any], user: dict[str, Any], data: bytes, *, file_name: str,
                            mime_type: str | None, size: int | None = None, with_size: bool = True) -> dict[str, Any]:
        """A file sent as a document (`with_size=False`: Telegram left file_size out, as it may)."""
        file_id = self.add_file(data, f"documents/{file_name}")
        doc: dict[str, Any] = {"file_id": file_id, "file_unique_id": "u" + file_id, "file_name": file_name}
        if with_size:
            doc["file_size"] = len(data) if size is None else size
        if mime_type:
            doc["mime_type"] = mime_type
        return await self.send(chat, user, document=doc)

    async def send_audio(self, chat: dict[str, Any], user: dict[str, Any], data: bytes, *, file_name: str,
                         duration: int, title: str | None = None) -> dict[str, Any]:
        file_id = self.add_file(data, f"music/{file_name}")
        audio = {"file_id": file_id, "file_unique_id": "u" + file_id, "duration": duration, "file_name": file_name,
                 "mime_type": "audio/mpeg", "file_size": len(data), **({"title": title} if title else {})}
        return await self.send(chat, user, audio=audio)

    def fail_next(self, method: str, *, code: int = 429, description: str | None = None,
                  retry_after: int | None = None) -> None:
        """The next call of `method` fails (a 429 with `retry_after`, or any Bot API error)."""
        params = {"retry_after": retry_after} if retry_after is not None else {}
        text = description or (f"Too Many Requests: retry after {retry_after}" if code == 429 else "Bad Request")
        self._failures.setdefault(method, []).append((code, text, params))

    # -- what the bot did ----------------------------------------------------------------------------------
    def of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (chat_id is None or c.chat_id == chat_id)]

    def conversation(self, chat_id: int) -> list[tuple[str, str]]:
        """What the chat saw, in order: ("send" | "edit" | "photo", text or caption)."""
        kinds = {"sendMessage": "send", "editMessageText": "edit", "sendPhoto": "photo"}
        return [(kinds[c.method], c.text or "") for c in self.calls if c.method in kinds and c.chat_id == chat_id]

    def replies(self, chat_id: int) -> list[str]:
        """The texts of messages sent to the chat (not edits)."""
        return [text for kind, text in self.conversation(chat_id) if kind == "send"]

    def current_text(self, chat_id: int, message_id: int) -> str | None:
        m = self.messages.get((chat_id, message_id))
        return None if m is None else m.get("text")

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Wait until `predicate()` is truthy: re-checked after every request the bot makes, and every 50 ms
        (for predicates about things other than requests, such as log records)."""
        assert self._changed is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate()):
            if loop.time() > deadline:
                raise TimeoutError(f"still waiting after {timeout} s")
            with contextlib.suppress(asyncio.TimeoutError):
                async with self._changed:
                    await asyncio.wait_for(self._changed.wait(), 0.05)
        return result

    async def settle(self, quiet_s: float = 0.3) -> None:
        """Wait until the bot has made no request for `quiet_s` seconds."""
        while True:
            n = len(self.calls)
            await asyncio.sleep(quiet_s)
            if len(self.calls) == n:
                return

    # -- the server ------------------------------------------------------------------------------------------
    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        params: dict[str, str] = {}
        files: dict[str, bytes] = {}
        if request.can_read_body:
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    files[name] = value.file.read()
                else:
                    params[name] = str(value)
        if method != "getUpdates":
            self.calls.append(Call(method, params, files, time.monotonic()))
            await self._notify()
        failures = self._failures.get(method)
        if failures:
            code, text, extra = failures.pop(0)
            return _error(code, text, extra)
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            return _error(404, "Not Found: method not found")
        try:
            result = await handler(params, files)
        except _ApiError as exc:
            return _error(exc.code, exc.text)
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        self.downloads.append(path)
        for stored_path, data in self._files.values():
            if stored_path == path:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)

    def _chat(self, raw: str) -> dict[str, Any]:
        chat_id = int(raw)
        return self._chats.get(chat_id, {"id": chat_id, "type": "private", "first_name": "?"})

    def _bot_message(self, params: dict[str, str], **fields: Any) -> dict[str, Any]:
        chat = self._chat(params["chat_id"])
        message = {"message_id": next(self._message_ids), "date": int(time.time()), "chat": chat,
                   "from": self.bot_user, **fields}
        self.messages[(chat["id"], message["message_id"])] = message
        return message

    # Bot API methods ---------------------------------------------------------------------------------------
    async def _m_getMe(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return self.bot_user

    async def _m_deleteWebhook(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True

    async def _m_setMyCommands(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True

    async def _m_sendChatAction(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        return True

    async def _m_getUpdates(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        assert self._changed is not None
        if not self._updates and timeout > 0 and not self._closing:
            with contextlib.suppress(asyncio.TimeoutError):
                async with self._changed:
                    await asyncio.wait_for(self._changed.wait_for(lambda: self._updates or self._closing), timeout)
        limit = int(params.get("limit") or 100)
        return self._updates[:limit]

    async def _m_sendMessage(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        text = params.get("text", "")
        if not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        return self._bot_message(params, text=text)

    async def _m_editMessageText(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        key = (int(params["chat_id"]), int(params["message_id"]))
        message = self.messages.get(key)
        if message is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if message.get("text") == params.get("text"):
            raise _ApiError(400, "Bad Request: message is not modified: specified new message content and "
                                 "reply markup are exactly the same as a current content and reply markup of the "
                                 "message")
        message.update(text=params.get("text", ""), edit_date=int(time.time()))
        return message

    async def _m_sendPhoto(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        data = files.get("photo")
        if not data:
            raise _ApiError(400, "Bad Request: there is no photo in the request")
        size = {"file_id": f"photo-{len(self.calls)}", "file_unique_id": f"p{len(self.calls)}", "width": 800,
                "height": 800, "file_size": len(data)}
        extra = {"caption": params["caption"]} if "caption" in params else {}
        return self._bot_message(params, photo=[size], **extra)

    async def _m_getFile(self, params: dict[str, str], files: dict[str, bytes]) -> Any:
        file_id = params.get("file_id", "")
        if file_id not in self._files:
            raise _ApiError(400, "Bad Request: invalid file_id")
        path, data = self._files[file_id]
        return {"file_id": file_id, "file_unique_id": "u" + file_id, "file_size": len(data), "file_path": path}


class _ApiError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


def _error(code: int, text: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": text}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)


@contextlib.asynccontextmanager
async def bot_running(api: FakeBotAPI, settings: Settings, classifier: Any) -> AsyncIterator[Any]:
    """The real PTB Application from `bot.telegram_app.build`, polling `api` for the block."""
    from bot import telegram_app

    app = telegram_app.build(api.settings(settings), classifier)
    async with telegram_app.running(app, poll_timeout_s=5.0):
        yield app
