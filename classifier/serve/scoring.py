"""One clip through the decode pool and the model worker's batches, into a `pipeline.Analysis`.

    pool thread:  probe + refuse (clips.checked) -> PatchStream: decode chunk -> windows -> log-mel patches
    event loop:   each chunk's patches -> ModelWorker.predict (one task per chunk, batched with other jobs)
    event loop:   progress("analysing", done, total) as chunks come back -> pipeline.finish

A job holds a decode slot only while it decodes; its patches go to the worker as soon as each chunk is
ready, so decoding the next chunk (or the next job) overlaps the network. Imported lazily by the engine:
it pulls in librosa, which a bot that only calls a remote classifier never needs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from classifier import pipeline
from classifier.audio import features
from classifier.model.backbone import BackboneOutput
from classifier.serve import clips
from classifier.serve.api import ProgressCallback
from classifier.serve.batcher import INTERACTIVE, ModelWorker
from classifier.settings import Settings

__all__ = ["Lane", "analyse", "warm_features"]

_PROGRESS_EVERY_S = 1.0     # a chat edit a second is plenty, and Telegram throttles faster ones anyway


@dataclass(frozen=True, slots=True)
class Lane:
    """Where a job's work queues: the shared decode pool and its slots, and its priority in the batches."""

    pool: Executor
    slots: asyncio.Semaphore
    priority: int = INTERACTIVE


def warm_features(worker: ModelWorker) -> None:
    """(pool thread) One feature call on silence: librosa's first call costs seconds (filter banks, numba)."""
    p = worker.params(worker.names[0])
    features.patches(np.zeros((1, (p.patch_frames - 1) * p.hop_length), np.float32), p)


async def analyse(clip: clips.Clip, names: tuple[str, ...], *, worker: ModelWorker, lane: Lane, settings: Settings,
                  keep_pooled: bool, progress: ProgressCallback | None = None) -> tuple[pipeline.Analysis, clips.Clip]:
    """Decode and featurise `clip` in the lane's pool, score it in the worker's batches, assemble the Analysis.

    Returns the analysis and the clip as checked (with its hint, when the file was cut).

    Raises
    ------
    everything `clips.checked` and `pipeline.finish` raise (bad, short, long or silent audio)
    """
    loop = asyncio.get_running_loop()
    t_total = time.perf_counter() - clip.fetch_s
    lock = threading.Lock()   # a stream's generator runs in one pool thread at a time
    report = _Progress(progress)
    scored: list[asyncio.Task[list[BackboneOutput]]] = []
    starts: list[np.ndarray] = []
    t_wait = time.perf_counter()
    try:
        async with lane.slots:
            queued = time.perf_counter() - t_wait
            stream, clip = await loop.run_in_executor(lane.pool, _open, clip, worker, names, settings)
            report.total = stream.expected
            it = iter(stream)
            try:
                while (batch := await loop.run_in_executor(lane.pool, _next_locked, it, lock)) is not None:
                    win_starts, x = batch
                    starts.append(win_starts)
                    scored.append(asyncio.create_task(_score(worker, names, x, lane.priority, report)))
            except BaseException:
                lane.pool.submit(_close_locked, it, lock)   # stops ffmpeg once the running step returns
                raise
        t_net = time.perf_counter()
        results = await asyncio.gather(*scored)
    except BaseException:
        for task in scored:          # a job gone (error, deadline, hang-up): its patches leave the queue
            task.cancel()
        if scored:                   # ... before the job ends, so nobody sees them queued after it
            await asyncio.wait(scored)
        raise
    network = time.perf_counter() - t_net if results else 0.0
    await report.finished()
    timings = {"queue": queued, "decode": stream.decode_s, "features": stream.features_s, "network": network}
    if clip.fetch_s:
        timings = {"fetch": clip.fetch_s, **timings}
    analysis = pipeline.finish(
        stream, starts, {n: [r[i].tags for r in results] for i, n in enumerate(names)},
        {n: worker.labels(n) for n in names}, [r[0].embedding for r in results],
        [r[0].pooled for r in results] if keep_pooled else None, timings, t_total,
        start_s=clip.seek_s, offset_s=clip.offset_s, min_seconds=settings.min_audio_seconds,
        silence_dbfs=settings.silence_dbfs, path=clip.path)
    return analysis, clip


async def _score(worker: ModelWorker, names: tuple[str, ...], x: np.ndarray, priority: int,
                 report: "_Progress") -> list[BackboneOutput]:
    """One chunk's patches through each network (a task: cancelled with its job, quietly)."""
    out = list(await asyncio.gather(*(worker.predict(n, x, priority=priority) for n in names)))
    await report.advance(int(x.shape[0]))
    return out


def _open(clip: clips.Clip, worker: ModelWorker, names: tuple[str, ...],
          settings: Settings) -> tuple[pipeline.PatchStream, clips.Clip]:
    """(pool thread) Check the clip against the limits, then open its patch stream."""
    clip = clips.checked(clip, settings)
    stream = pipeline.PatchStream(clip.path, worker.params(names[0]), hop_s=settings.slice_hop_seconds,
                                  max_windows=worker.max_batch_size, start_s=clip.seek_s, duration_s=clip.duration_s,
                                  max_seconds=settings.max_audio_seconds, decode_timeout_s=settings.decode_timeout_s)
    return stream, clip


def _next_locked(it: Iterator[Any], lock: threading.Lock) -> Any:
    with lock:
        return next(it, None)


def _close_locked(it: Iterator[Any], lock: threading.Lock) -> None:
    with lock:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class _Progress:
    """Slices done out of expected, reported at most once a second, and always once when all are done."""

    def __init__(self, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.total = 0
        self.done = 0
        self._at = -_PROGRESS_EVERY_S
        self._complete = False

    async def advance(self, n: int) -> None:
        self.done += n
        if self.progress is None:
            return
        total = max(self.total, self.done)
        now = time.monotonic()
        if self.done >= total or now - self._at >= _PROGRESS_EVERY_S:
            self._at = now
            self._complete = self.done >= total
            await self.progress("analysing", self.done, total)

    async def finished(self) -> None:
        """The last word is all slices done, also when the probe expected more than the decoder gave."""
        if self.progress is not None and self.done and not self._complete:
            self._complete = True
            await self.progress("analysing", self.done, self.done)
