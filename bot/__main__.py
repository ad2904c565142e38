"""`spy bot` / `python -m bot`: run the chat front ends on one event loop, every resource opened in one place.

    TELEGRAM_TOKEN=...  spy bot          Telegram (long polling)
    DISCORD_TOKEN=...   spy bot          Discord (bot.discord_app)
    CLASSIFIER_URL=...                   use a remote `spy serve` instead of the in-process model

Both bots share one `History` (classifier/store/history.py), opened here with the other resources; it is pruned to
`history_retention_days` at start and every few hours while the bots run.

Tokens never reach the logs (`classifier.logs.quiet_secrets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from classifier import errors, logs
from classifier.serve.api import Classifier
from classifier.serve.client import make_classifier
from classifier.settings import Settings, load_settings
from classifier.store.history import History

__all__ = ["main", "serve", "run"]

log = logging.getLogger("bot")


async def run(settings: Settings, *, classifier: Classifier | None = None,
              stop: asyncio.Event | None = None) -> None:
    """Run every configured front end until `stop` is set (SIGINT/SIGTERM set it when none is given)."""
    stop = stop or _stop_on_signals()
    async with contextlib.AsyncExitStack() as stack:
        if classifier is None:
            classifier = make_classifier(settings)
            stack.push_async_callback(classifier.aclose)
            await classifier.start()               # in-process: load the networks before the first user waits
        history = History(settings.database, retention_days=settings.history_retention_days)
        stack.callback(history.close)                  # closed last: after both bots have stopped
        stack.push_async_callback(_cancel, asyncio.create_task(history.prune_periodically(), name="history-prune"))
        if settings.telegram_token:
            from telegram.error import InvalidToken

            from bot import telegram_app

            try:
                await stack.enter_async_context(telegram_app.running(
                    telegram_app.build(settings, classifier, history=history)))
            except InvalidToken:
                # PTB's message quotes the token itself: replace it, and drop the chained traceback.
                raise errors.Unauthorized("Telegram rejected TELEGRAM_TOKEN. Check it with @BotFather.") from None
            log.info("Telegram bot is polling")
        if settings.discord_token:
            # Imported only when its token is set, so a Telegram-only deployment never loads discord.py.
            from bot import discord_app

            client = discord_app.build(settings, classifier, history=history)
            await stack.enter_async_context(client)                      # closes the client on exit
            task = asyncio.create_task(client.start(settings.discord_token.get_secret_value()), name="discord")
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
    logs.quiet_secrets(settings)
    # Opt in to PTB 23's timedelta durations now: PTB 22 otherwise warns from inside its own RetryAfter on every 429.
    os.environ.setdefault("PTB_TIMEDELTA", "true")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))
    return 0


def main() -> int:
    """`python -m bot`: like `spy bot`. Settings from the environment and `.env`; errors as sentences."""
    try:
        settings = load_settings()
    except ValueError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    try:
        return serve(settings)
    except errors.SpyError as exc:
        print(f"bot: {exc.user_message}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
