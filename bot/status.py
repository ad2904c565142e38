"""The status line a job shows while it runs ("listening…", "analysing 4/10 slices"): throttled, serialised edits.

Progress edits are fire-and-forget (a throttled edit never holds up the work) and serialised by a FIFO
lock; `final` closes the status and makes its edit after any progress edit in flight, and after it no
progress edit lands, so a late report from the model's thread can never overwrite the answer. The same
text is never sent twice, and within a stage at most one edit per `interval_s`. The platform supplies
only `edit`: how to change the status message's text.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, TypeVar

from bot import replies

__all__ = ["Status"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Status:
    """The Classifier's progress callback, drawn as edits of one status message."""

    def __init__(self, edit: Callable[[str], Awaitable[object]], text: str = "", *, interval_s: float = 1.0,
                 edit_errors: tuple[type[BaseException], ...] = ()) -> None:
        self._edit = edit
        self._edit_errors = edit_errors   # progress is a courtesy: a failed edit is logged, the answer still comes
        self._lock = asyncio.Lock()
        self._closed = False
        self._text = text
        self._stage = "listening"
        self._at = 0.0
        self._interval_s = interval_s
        self._tasks: set[asyncio.Task[None]] = set()

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
                await self._edit(text)
            except self._edit_errors as exc:
                log.debug("progress edit failed: %s", exc)

    def close(self) -> None:
        """No progress edit lands after this."""
        self._closed = True

    async def final(self, action: Callable[[], Awaitable[T]]) -> T:
        """Close, then run `action` (the edit that replaces the status) once the edits in flight are done."""
        self._closed = True
        async with self._lock:
            return await action()
