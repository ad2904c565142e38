"""Logging for every process (`spy`, `spy serve`, `spy bot`): one format, quiet libraries, no secrets.

Tokens never reach the logs: httpx (which logs every request URL, and Telegram's URLs contain the token)
is kept at WARNING, and a filter on the root handlers replaces any token that still turns up.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable

from classifier.settings import Settings

__all__ = ["configure", "quiet_secrets", "Redact"]


def configure(level: str) -> None:
    """Log to stderr at `level`; TensorFlow's, absl's and the plotting libraries' chatter at WARNING."""
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # TensorFlow's C++ and absl chatter is not ours to show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for noisy in ("tensorflow", "absl", "h5py", "numba", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
    redact = Redact([t.get_secret_value() for t in (settings.telegram_token, settings.discord_token,
                                                   settings.classifier_token)])
    for handler in (logging.getLogger().handlers if handlers is None else handlers):
        handler.addFilter(redact)
    return redact
