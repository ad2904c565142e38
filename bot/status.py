"""The status message both bots edit while a job runs: throttled, serialised progress edits.

Progress edits are fire-and-forget (a throttled edit never holds up the work) and serialised by a FIFO
lock; after `close()` none lands, so a late progress report from the model's thread can never overwrite
the answer. The same text is never sent twice, and within a stage at most one edit per `interval_s`.
Each platform subclasses it with its own `_edit_progress` (and its own `finish`).
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot import replies

__all__ = ["Status"]

log = logging.getLogger(__name__)


class Status:
    #: platform exceptions a failed progress edit may raise (progress is a courtesy: the answer still comes)
    edit_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, text: str = "", *, interval_s: float = 1.0) -> None:
        self._lock = asyncio.Lock()
        self._closed = False
        self._text = text
        self._stage = "listening"
        self._at = 0.0
        self._interval_s = interval_s
        self._tasks: set[asyncio.Task[None]] = set()

    async def _edit_progress(self, text: str) -> None:  # pragma: no cover - every platform overrides it
        raise NotImplementedError

    async def __call__(self, stage: str, done: int, total: int) -> None:
        """The Classifier's progress callback: `progress(stage, done, total)`."""
        text = replies.progress_text(stage, done, total)
        now = time.monotonic()
        finished = 0 < total <= done
        if self._closed or text == self._text or (stage == self._stage and now - self._at < self._interval_s
                                                   and not finished):
            return
        self._text, self._stage, self._at = text, stage, now
        task = asyncio.create_task(self._show(text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _show(self, text: str) -> None:
        async with self._lock:
            if self._closed:
                return
            try:
                await self._edit_progress(text)
            except self.edit_errors as exc:
                log.debug("progress edit failed: %s", exc)

    def close(self) -> None:
        self._closed = True
