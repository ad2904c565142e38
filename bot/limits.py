"""Per-user request rate and per-chat / total job concurrency, shared by every front end.

    limiter = RateLimiter(settings.user_requests_per_minute)
    jobs = JobGuard(settings.max_jobs_per_chat, settings.max_jobs_total)

    if limiter.check(user_id):                 # raises errors.Busy("Slow down ...", retry_after_s=...)
        async with jobs.job(chat_id):          # raises errors.Busy("I'm already listening ...")
            ...

Both refuse at once instead of queueing: a chat user would rather hear "try again in 20 s" now than
wait silently behind a queue. Both live in one process and one event loop (no locks needed: nothing
here awaits between checking and counting).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from typing import AsyncIterator, Callable, Hashable

from bot import replies
from classifier import errors

__all__ = ["RateLimiter", "JobGuard"]

_SWEEP_EVERY = 1024   # hits between sweeps of idle users, so the table does not grow forever


class RateLimiter:
    """A sliding window: at most `per_minute` requests per key in any `window_s` seconds.

    `per_minute <= 0` means no limit. `clock` is injectable for tests.
    """

    def __init__(self, per_minute: int, *, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._clock = clock
        self._hits: dict[Hashable, deque[float]] = {}
        self._told_until: dict[Hashable, float] = {}
        self._since_sweep = 0

    def hit(self, key: Hashable) -> float:
        """Count a request if the key has room: 0.0. Otherwise count nothing and return the seconds to wait."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        self._sweep(now)
        q = self._hits.setdefault(key, deque())
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if len(q) < self.per_minute:
            q.append(now)
            return 0.0
        return max(0.0, q[0] + self.window_s - now)

    def check(self, key: Hashable, *, tell_every_time: bool = False) -> bool:
        """True: go ahead (the request is counted). Raises `errors.Busy` with the wait on the first refused
        request; False for further requests refused within that same wait (the user was told: stay quiet,
        so a flood does not turn into a flood of replies). `tell_every_time`: raise for every refused
        request (where each must be answered anyway, like a Discord interaction)."""
        wait = self.hit(key)
        if wait <= 0:
            self._told_until.pop(key, None)
            return True
        now = self._clock()
        if self._told_until.get(key, -math.inf) > now and not tell_every_time:
            return False
        self._told_until[key] = now + wait
        raise errors.Busy(replies.slow_down(self.per_minute), retry_after_s=wait,
                          detail=f"rate limit {self.per_minute}/min")

    def _sweep(self, now: float) -> None:
        self._since_sweep += 1
        if self._since_sweep < _SWEEP_EVERY:
            return
        self._since_sweep = 0
        for key in [k for k, q in self._hits.items() if not q or q[-1] <= now - self.window_s]:
            del self._hits[key]
        for key in [k for k, until in self._told_until.items() if until <= now]:
            del self._told_until[key]


class JobGuard:
    """Concurrent jobs per chat and in total. `job(chat)` is an async context manager that refuses at once
    with `errors.Busy`; its `retry_after_s` estimates when a running job ends (from recent job durations)."""

    def __init__(self, per_chat: int, total: int, *, typical_job_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_chat = per_chat
        self.total = total
        self._clock = clock
        self._typical_s = typical_job_s
        self._started: dict[Hashable, list[float]] = {}

    def running(self, chat: Hashable | None = None) -> int:
        """Jobs running in one chat, or in all chats."""
        if chat is not None:
            return len(self._started.get(chat, ()))
        return sum(len(v) for v in self._started.values())

    @contextlib.asynccontextmanager
    async def job(self, chat: Hashable) -> AsyncIterator[None]:
        now = self._clock()
        mine = self._started.get(chat, [])
        if self.per_chat > 0 and len(mine) >= self.per_chat:
            raise errors.Busy(replies.chat_busy(self.per_chat), retry_after_s=self._eta(mine, now),
                              detail=f"chat has {len(mine)} jobs")
        if self.total > 0 and self.running() >= self.total:
            everyone = [t for v in self._started.values() for t in v]
            raise errors.Busy(replies.all_busy(), retry_after_s=self._eta(everyone, now),
                              detail=f"{len(everyone)} jobs running")
        self._started.setdefault(chat, []).append(now)
        try:
            yield
        finally:
            started = self._started.get(chat, [])
            if now in started:
                started.remove(now)
            if not started:
                self._started.pop(chat, None)
            # A moving average of job durations makes the next "try again in" honest.
            self._typical_s = 0.8 * self._typical_s + 0.2 * max(0.0, self._clock() - now)

    def _eta(self, starts: list[float], now: float) -> float:
        """Seconds until the oldest of these jobs is expected to finish (at least 1)."""
        oldest = min(starts) if starts else now
        return max(1.0, self._typical_s - (now - oldest))
