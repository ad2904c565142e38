"""`spy bot` / `python -m bot`: run the chat front ends on one event loop, every resource opened in one place.

    TELEGRAM_TOKEN=...  spy bot          Telegram (long polling)
    DISCORD_TOKEN=...   spy bot          Discord (bot.discord_app, when it exists)
    CLASSIFIER_URL=...                   use a remote `spy serve` instead of the in-process model

Both bots share one `History` (bot/history.py), opened here with the other resources; it is pruned to
`history_retention_days` at start and every few hours while the bots run.

Tokens never reach the logs: httpx (which logs every request URL, and Telegram's URLs contain the token)
is kept at WARNING, and a filter on the root handlers replaces any token that still turns up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Iterable

from classifier import errors
from classifier.client import Classifier, LocalClassifier, make_classifier
from classifier.settings import Settings

from .history import History

__all__ = ["main", "serve", "run", "quiet_secrets", "Redact"]

log = logging.getLogger("bot")


class Redact(logging.Filter):
    """Replace secrets in log records (message, arguments and formatted traceback) with `<token>`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<token>")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):     # a malformed log call: logging reports it itself, later
            return True
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


def quiet_secrets(settings: Settings, handlers: Iterable[logging.Handler] | None = None) -> Redact:
    """Keep tokens out of the logs: httpx/httpcore to WARNING, and a `Redact` filter on the root handlers."""
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    redact = Redact([settings.telegram_token, settings.discord_token, settings.classifier_token])
    for handler in (logging.getLogger().handlers if handlers is None else handlers):
        handler.addFilter(redact)
    return redact


async def run(settings: Settings, *, classifier: Classifier | None = None,
              stop: asyncio.Event | None = None) -> None:
    """Run every configured front end until `stop` is set (SIGINT/SIGTERM set it when none is given)."""
    stop = stop or _stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        if classifier is None:
            classifier = make_classifier(settings)
            stack.push_async_callback(classifier.aclose)
            if isinstance(classifier, LocalClassifier):
                await classifier.start()           # load the networks before the first user waits on them
        history = History(settings.database, retention_days=settings.history_retention_days,
                          extra_hosts=settings.fetch_extra_hosts)
        stack.callback(history.close)                  # closed last: after both bots have stopped
        stack.push_async_callback(_cancel, asyncio.create_task(history.prune_periodically(), name="history-prune"))
        if settings.telegram_token:
            from telegram.error import InvalidToken

            from . import telegram_app

            try:
                await stack.enter_async_context(telegram_app.running(
                    telegram_app.build(settings, classifier, history=history)))
            except InvalidToken:
                # PTB's message quotes the token itself: replace it, and drop the chained traceback.
                raise errors.Unauthorized("Telegram rejected TELEGRAM_TOKEN. Check it with @BotFather.") from None
            log.info("Telegram bot is polling")
        if settings.discord_token:
            # The Discord issue: `bot.discord_app.build(settings, classifier, history=...)` returns a discord.Client.
            # Imported only when its token is set, so a Telegram-only deployment never loads discord.py.
            from . import discord_app  # type: ignore[attr-defined]

            client = discord_app.build(settings, classifier, history=history)
            await stack.enter_async_context(client)                      # closes the client on exit
            task = asyncio.create_task(client.start(settings.discord_token), name="discord")
            task.add_done_callback(lambda _: stop.set())                 # a dead gateway stops the process
            stack.push_async_callback(_cancel, task)
            log.info("Discord bot is connecting")
        await stop.wait()
        log.info("stopping")


async def _cancel(task: asyncio.Task[object]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def serve(settings: Settings) -> int:
    """Blocking entry point (logging already configured): run until SIGINT/SIGTERM."""
    if not (settings.telegram_token or settings.discord_token):
        print("spy bot: set TELEGRAM_TOKEN and/or DISCORD_TOKEN (environment or .env).", file=sys.stderr)
        return 2
    quiet_secrets(settings)
    # Opt in to PTB 23's timedelta durations now: PTB 22 otherwise warns from inside its own RetryAfter on every 429.
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))
    return 0


def main() -> int:
    """`python -m bot`: like `spy bot`, with errors shown the way the CLI shows them."""
    from classifier.cli import main as cli_main

    return cli_main([*sys.argv[1:], "bot"])      # `python -m bot --log-level DEBUG` works as with spy


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
