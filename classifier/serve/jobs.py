"""The service's jobs: admission (backpressure), the bounded decode pool, the path from a clip to an answer.

A job holds one of `max_queue_jobs` places (past that: Busy, 429 with Retry-After), decodes and featurises
in a pool of `max_concurrent_decodes` threads, and sends each chunk's patches to the one model worker
(batcher.py) as soon as it is ready, so decoding overlaps the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier import errors, pipeline
from classifier.audio import decode, features
from classifier.model import heads
from classifier.pipeline import genre_report
from classifier.serve.batcher import ModelWorker
from classifier.serve.metrics import Metrics
from classifier.settings import Settings
from classifier.store import registry

__all__ = ["Clip", "Jobs", "unavailable"]

log = logging.getLogger(__name__)

_NOT_READY_RETRY_S = 5.0


@dataclass(frozen=True, slots=True)
class Clip:
    """Audio to analyse: a local file, the part of it wanted, and how to show it."""

    path: Path
    seek_s: float                 # where in the file to start
    duration_s: float | None      # how much (None: up to max_clip_seconds)
    offset_s: float               # where the analysed audio starts in the user's source (for timelines)
    hint: str | None
    display: str                  # the "source" field of the answer
    host: str                     # for the job's log line: a link's host, or "upload"
    fetch_s: float = 0.0


class Jobs:
    """The jobs a service holds: a bounded count (backpressure), a bounded decode pool, one model worker."""

    def __init__(self, settings: Settings, worker: ModelWorker, metrics: Metrics) -> None:
        self.settings, self.worker, self.metrics = settings, worker, metrics
        self.slots = max(1, settings.max_concurrent_decodes)
        self.pool = ThreadPoolExecutor(self.slots, thread_name_prefix="spy-decode")
        self._decoding = asyncio.Semaphore(self.slots)
        self.active = 0
        self.draining = False
        self._ids = itertools.count(1)
        self._job_s = 1.0                       # moving average of a job's wall time, for Retry-After
        self._finished: deque[float] = deque()  # when recent jobs finished (the last 30 s), for Retry-After
        self._fetcher: Any = None
        self._warm = False

    def check_open(self) -> None:
        """503 while the model loads and while shutting down (with Retry-After: try again, maybe elsewhere)."""
        if self.draining:
            raise unavailable("The listening service is restarting. Try again in a moment.")
        if not self.ready:
            raise unavailable("The listening service is starting up. Try again in a moment.")

    @property
    def ready(self) -> bool:
        return self.worker.ready and self._warm

    async def start(self) -> None:
        """Load and warm the networks, then the feature path (librosa's first call costs seconds)."""
        await self.worker.start()
        p = self.worker.params(self.worker.names[0])
        silence = np.zeros((1, (p.patch_frames - 1) * p.hop_length), np.float32)
        await asyncio.get_running_loop().run_in_executor(self.pool, features.patches, silence, p)
        self._warm = True

    @contextlib.contextmanager
    def admit(self) -> Iterator[int]:
        """Hold one of max_queue_jobs places for a job, or refuse with Busy (429) at once."""
        if self.active >= self.settings.max_queue_jobs:
            raise errors.Busy(retry_after_s=self.retry_after(), detail=f"{self.active} jobs held")
        self.active += 1
        try:
            yield next(self._ids)
        finally:
            self.active -= 1

    def retry_after(self) -> float:
        """Seconds for the jobs held now to drain at the recent completion rate (1 to 60)."""
        now = time.monotonic()
        while self._finished and self._finished[0] < now - 30.0:
            self._finished.popleft()
        if len(self._finished) >= 2:
            rate = len(self._finished) / max(1.0, now - self._finished[0])
        else:
            rate = self.slots / max(self._job_s, 0.1)
        return float(min(60, max(1, math.ceil(self.active / rate))))

    @property
    def fetcher(self) -> Any:
        if self._fetcher is None:
            from classifier.sources.fetch import (
                Fetcher,  # yt-dlp is a heavy import; only link requests need it
            )

            self._fetcher = Fetcher(self.settings)
        return self._fetcher

    async def genre(self, job: int, clip: Clip) -> dict[str, object]:
        analysis, hint = await self.analyse(clip, self.worker.names, keep_pooled=False)
        report = genre_report(analysis, clip.display, hint)
        self._done(job, "genre", clip, analysis, dict(report.timings))
        return report.to_dict()

    async def head(self) -> heads.Head:
        """The active artist head (loaded in the model thread), or NoModel."""
        head = await self.worker.call(registry.current_head, self.settings.database)
        if head is None:
            raise errors.NoModel()
        if head.backbone not in self.worker.names:
            raise errors.NoModel(detail=f"head {head.id} needs {head.backbone}, not loaded here")
        return head

    async def identify(self, job: int, clip: Clip, head: heads.Head) -> dict[str, object]:
        analysis, hint = await self.analyse(clip, (head.backbone,), keep_pooled=head.config.feature == "pooled")
        verdict = await self.worker.call(functools.partial(pipeline.verdict, head, analysis, clip.display, hint))
        self._done(job, "identify", clip, analysis, dict(verdict.timings))
        return verdict.to_dict()

    async def analyse(self, clip: Clip, names: tuple[str, ...], *, keep_pooled: bool) -> tuple[pipeline.Analysis, str | None]:
        """Decode and featurise in the pool, score in the model worker's batches, assemble the Analysis.

        A job holds a decode slot only while it decodes; its patches go to the worker as soon as each
        chunk is ready, so decoding the next chunk (or the next job) overlaps the network.
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        t_total = time.perf_counter() - clip.fetch_s
        lock = threading.Lock()   # a stream's generator runs in one pool thread at a time
        scored: list[asyncio.Task[list[Any]]] = []
        starts: list[np.ndarray] = []
        t_wait = time.perf_counter()
        async with self._decoding:
            queued = time.perf_counter() - t_wait
            stream, hint = await loop.run_in_executor(self.pool, self._open, clip)
            it = iter(stream)
            try:
                while (batch := await loop.run_in_executor(self.pool, _next_locked, it, lock)) is not None:
                    win_starts, x = batch
                    starts.append(win_starts)
                    scored.append(asyncio.create_task(self._score(names, x)))
            except BaseException:
                for task in scored:
                    task.cancel()
                self.pool.submit(_close_locked, it, lock)   # stops ffmpeg once the running step returns
                raise
        t_net = time.perf_counter()
        results = await asyncio.gather(*scored)
        network = time.perf_counter() - t_net if results else 0.0
        timings = {"queue": queued, "decode": stream.decode_s, "features": stream.features_s, "network": network}
        if clip.fetch_s:
            timings = {"fetch": clip.fetch_s, **timings}
        analysis = pipeline.finish(
            stream, starts, {n: [r[i].tags for r in results] for i, n in enumerate(names)},
            {n: self.worker.labels(n) for n in names}, [r[0].embedding for r in results],
            [r[0].pooled for r in results] if keep_pooled else None, timings, t_total,
            start_s=clip.seek_s, offset_s=clip.offset_s, min_seconds=s.min_audio_seconds,
            silence_dbfs=s.silence_dbfs, path=clip.path)
        return analysis, hint or clip.hint

    async def _score(self, names: tuple[str, ...], x: np.ndarray) -> list[Any]:
        """One chunk's patches through each network (a task: cancelled with its request, quietly)."""
        return list(await asyncio.gather(*(self.worker.predict(n, x) for n in names)))

    def _open(self, clip: Clip) -> tuple[pipeline.PatchStream, str | None]:
        """(pool thread) Refuse audio over max_audio_seconds; cap what is analysed at max_clip_seconds."""
        s = self.settings
        probed = decode.probe_duration(clip.path)
        if probed is not None and probed > s.max_audio_seconds:
            raise errors.AudioTooLong(f"That audio is {_minutes(probed)} long; I take at most "
                                      f"{_minutes(s.max_audio_seconds)}. Send a shorter piece.",
                                      detail=f"{probed:.1f} s")
        if probed is not None and clip.seek_s > 0 and probed - clip.seek_s < s.min_audio_seconds:
            raise errors.TooShort(f"That audio is {_minutes(probed)} long: from {_clock(clip.seek_s)} there is "
                                  f"less than {s.min_audio_seconds:.0f} s left to hear.", detail=f"{probed:.1f} s")
        wanted = s.max_clip_seconds if clip.duration_s is None else min(clip.duration_s, s.max_clip_seconds)
        hint = None
        if probed is not None and clip.duration_s is None and probed - clip.seek_s > wanted + 1.0:
            hint = (f"I listened to {_minutes(wanted)} from {_clock(clip.seek_s)}. "
                    "To hear another part, send it with a start time (at).")
        stream = pipeline.PatchStream(clip.path, self.worker.params(self.worker.names[0]), hop_s=s.slice_hop_seconds,
                                      max_windows=self.worker.max_batch_size, start_s=clip.seek_s, duration_s=wanted,
                                      max_seconds=s.max_audio_seconds, decode_timeout_s=s.decode_timeout_s)
        return stream, hint

    def _done(self, job: int, kind: str, clip: Clip, a: pipeline.Analysis, timings: dict[str, float]) -> None:
        total = float(timings.get("total", 0.0))
        self._job_s = 0.8 * self._job_s + 0.2 * total
        now = time.monotonic()
        self._finished.append(now)
        while self._finished[0] < now - 30.0:
            self._finished.popleft()
        self.metrics.job(timings, a.n_slices)
        log.info("job %d %s host=%s audio=%.1fs slices=%d timings=%s", job, kind, clip.host, a.seconds, a.n_slices,
                 " ".join(f"{k}={v:.3f}" for k, v in timings.items()))

    async def close(self) -> None:
        await asyncio.to_thread(self.pool.shutdown, wait=True, cancel_futures=True)


def _next_locked(it: Iterator[Any], lock: threading.Lock) -> Any:
    with lock:
        return next(it, None)


def _close_locked(it: Iterator[Any], lock: threading.Lock) -> None:
    with lock:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def _clock(seconds: float) -> str:
    from classifier.sources.links import format_time

    return format_time(max(0.0, seconds))


def unavailable(message: str, retry_after_s: float = _NOT_READY_RETRY_S) -> errors.ClassifierUnavailable:
    exc = errors.ClassifierUnavailable(message)
    exc.retry_after_s = retry_after_s  # type: ignore[attr-defined]  # becomes a Retry-After header
    return exc
