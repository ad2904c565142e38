"""The model worker: one thread owns the networks and runs large batches gathered from every waiting request.

    request A: predict("msd_musicnn", 10 patches) ─┐
    request B: predict("msd_musicnn", 40 patches) ─┼─> [ one batch of <= max_batch_size patches ] -> scatter back
    request C: predict("msd_musicnn", 25 patches) ─┘

Why one thread: TensorFlow is fastest given one large batch at a time (on a GPU, a batch of 64 patches
costs about what one costs), and one owner means the model is loaded once and never raced. Why wait
`max_batch_wait_ms`: a lone request pays a few milliseconds, and a burst shares one network call. While a
batch runs, newer patches queue up; the next batch takes them at once, so under load nobody waits for the
timer. A request's patches may be split across batches; its result is complete when every patch is back.

Priorities: each request carries one (`INTERACTIVE` = 0 by default, `BULK` = 1). A batch takes the most
urgent waiting patches first and fills what room is left with less urgent ones, so a long job (a whole DJ
set analysed for a tracklist) that queues thousands of patches never holds a short identify back by more
than the one batch already in the network.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from classifier import errors
from classifier.model.backbone import (
    BackboneOutput,
    BackboneParams,
    load_labels,
    load_params,
)

__all__ = ["ModelWorker", "Network", "BatchHook", "INTERACTIVE", "BULK"]

log = logging.getLogger(__name__)

INTERACTIVE = 0
"""A person waits for the answer (identify, genre): its patches go first."""
BULK = 1
"""Long work nobody waits on batch by batch (a tracklist): it takes the room interactive patches leave."""


class Network(Protocol):
    """What the worker needs of a backbone (tests pass a stand-in)."""

    def predict(self, patches: np.ndarray, batch_size: int = 32) -> BackboneOutput: ...


BatchHook = Callable[[str, int, int, float], None]
"""on_batch(model, patches, requests, seconds): called in the worker thread after each batch."""


def _load_backbone(name: str) -> Network:
    from classifier.model.backbone import Backbone

    return Backbone.load(name)


@dataclass(eq=False)
class _Item:
    """One request's patches for one model, filled in place as batches complete."""

    model: str
    patches: np.ndarray            # (n, frames, mels) float32
    out: BackboneOutput | None     # allocated from the first batch's output widths
    future: "asyncio.Future[BackboneOutput]"
    loop: asyncio.AbstractEventLoop
    enqueued: float
    priority: int = INTERACTIVE
    taken: int = 0                 # patches already put into a batch
    done: int = 0                  # patches whose outputs are written
    cancelled: bool = False

    @property
    def n(self) -> int:
        return int(self.patches.shape[0])


@dataclass(eq=False)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: "asyncio.Future[Any]"
    loop: asyncio.AbstractEventLoop
    cancelled: bool = field(default=False)


def _settle(loop: asyncio.AbstractEventLoop, fut: "asyncio.Future[Any]", result: Any = None,
            exc: BaseException | None = None) -> None:
    """Resolve an event-loop future from the worker thread (a cancelled one, or a closed loop, is let be)."""

    def apply() -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    try:
        loop.call_soon_threadsafe(apply)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


class ModelWorker:
    """The networks, in one dedicated thread, fed large batches from many requests.

    Parameters
    ----------
    names : the backbones to load (all must share DSP params for a request to use several)
    max_batch_size : most patches gathered into one batch (from any number of requests)
    max_batch_wait_ms : how long the oldest waiting patch may wait for the batch to fill
    may_fill : whether anyone else could add patches now (the engine: another job is in flight); when it
        says no, a batch runs at once instead of waiting for patches that cannot come. Default: always wait.
    network_batch_size : patches per network call within a batch (default: max_batch_size). On a CPU the
        cost per patch is flat in the batch size while activation memory grows with it (chunks of 16: 1.2 GB
        RSS; one call of 64: 2.3 GB, both backbones), so CPU hosts keep this small; GPU hosts raise it.
    on_batch : optional metrics hook, see `BatchHook`
    loader : name -> network; the real backbone by default, a stand-in in tests
    """

    def __init__(self, names: Sequence[str] = ("msd_musicnn", "mtt_musicnn"), *, max_batch_size: int = 64,
                 max_batch_wait_ms: float = 10.0, network_batch_size: int | None = None,
                 on_batch: BatchHook | None = None, loader: Callable[[str], Network] = _load_backbone,
                 may_fill: Callable[[], bool] | None = None) -> None:
        if max_batch_size < 1 or (network_batch_size is not None and network_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
        self.names = tuple(names)
        self.max_batch_size = max_batch_size
        self.network_batch_size = network_batch_size or max_batch_size
        self.max_wait_s = max(0.0, max_batch_wait_ms / 1000.0)
        self._params = {n: load_params(n) for n in self.names}
        self._labels = {n: load_labels(n) for n in self.names}
        self.on_batch = on_batch     # set by the engine to its metrics before start()
        self.may_fill = may_fill     # set by the engine before start()
        self._loader = loader
        self._nets: dict[str, Network] = {}
        self._cond = threading.Condition()
        self._items: deque[_Item] = deque()
        self._calls: deque[_Call] = deque()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # -- what requests ask ------------------------------------------------------------------------------
    def params(self, name: str) -> BackboneParams:
        return self._params[name]

    def labels(self, name: str) -> tuple[str, ...]:
        return self._labels[name]

    @property
    def ready(self) -> bool:
        """The networks are loaded and warm."""
        return self._ready.is_set() and not self._closing

    def queued_patches(self) -> int:
        """Patches waiting for a batch (for the queue-depth gauge)."""
        with self._cond:
            return sum(it.n - it.taken for it in self._items if not it.cancelled)

    async def predict(self, model: str, patches: np.ndarray, *, priority: int = INTERACTIVE) -> BackboneOutput:
        """Run `model` over `patches` [shape=(n, frames, mels), float32] in the next batches; n may be 0.

        priority : lower goes first (`INTERACTIVE`, `BULK`); within a priority, first come first served.
        """
        if model not in self._params:
            raise ValueError(f"this worker does not load {model!r}")
        x = np.asarray(patches, dtype=np.float32)
        if x.shape[0] == 0:
            return BackboneOutput(np.zeros((0, 50), np.float32), np.zeros((0, 200), np.float32),
                                  np.zeros((0, 1506), np.float32))
        loop = asyncio.get_running_loop()
        item = _Item(model, x, None, loop.create_future(), loop, time.monotonic(), priority)
        self._enqueue(item, self._items)
        return await self._wait(item)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` in the model thread between batches (the artist head: TensorFlow stays in one place)."""
        loop = asyncio.get_running_loop()
        call = _Call(fn, args, loop.create_future(), loop)
        self._enqueue(call, self._calls)
        return await self._wait(call)

    def _enqueue(self, job: Any, queue: deque[Any]) -> None:
        with self._cond:
            if self._closing or self._thread is None:
                raise errors.ClassifierUnavailable(detail="model worker is not running")
            queue.append(job)
            self._cond.notify()

    async def _wait(self, job: _Item | _Call) -> Any:
        try:
            return await job.future
        except asyncio.CancelledError:
            with self._cond:  # a request gone (deadline, disconnect): its patches leave the queue
                job.cancelled = True
                self._cond.notify()
            raise

    # -- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the thread, load and warm the networks there; returns when they are ready."""
        if self._thread is not None:
            raise RuntimeError("the model worker is already started")
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._main, args=(loop, started), name="spy-model", daemon=True)
        self._thread.start()
        await started

    async def close(self) -> None:
        """Finish what is queued, then stop the thread (callers stop submitting first)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join)

    # -- the thread ---------------------------------------------------------------------------------------
    def _main(self, loop: asyncio.AbstractEventLoop, started: "asyncio.Future[None]") -> None:
        try:
            t0 = time.perf_counter()
            for name in self.names:
                net = self._loader(name)
                p = self._params[name]
                # one warm-up call so the first user does not pay for graph tracing
                net.predict(np.zeros((1, p.patch_frames, p.n_mels), np.float32), batch_size=self.network_batch_size)
                self._nets[name] = net
            log.info("model worker ready: %s in %.1f s (batches of <= %d patches in calls of %d, wait %.0f ms)",
                     ", ".join(self.names), time.perf_counter() - t0, self.max_batch_size, self.network_batch_size,
                     1000 * self.max_wait_s)
        except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller, which logs it once
            with self._cond:
                self._closing = True
            self._fail_all(errors.ClassifierUnavailable(detail=f"model load failed: {exc!r}"))
            _settle(loop, started, exc=exc)
            return
        self._ready.set()
        _settle(loop, started)
        while True:
            with self._cond:
                work = self._next_work()
            if work is None:
                break
            if isinstance(work, _Call):
                self._run_call(work)
            else:
                self._run_batch(*work)
        self._fail_all(errors.ClassifierUnavailable(detail="model worker stopped"))

    def _next_work(self) -> _Call | tuple[str, list[tuple[_Item, int, int]]] | None:
        """Under the lock: the next call, or the next batch once it is full or its oldest patch waited enough."""
        while True:
            self._purge()
            if self._calls:
                return self._calls.popleft()
            if not self._items:
                if self._closing:
                    return None
                self._cond.wait()
                continue
            head = min(self._items, key=lambda it: it.priority)    # the oldest of the most urgent
            wait = head.enqueued + self.max_wait_s - time.monotonic()
            if wait > 0 and not self._closing and self._queued(head.model) < self.max_batch_size \
                    and (self.may_fill is None or self.may_fill()):
                self._cond.wait(wait)
                continue
            return head.model, self._take(head.model)

    def _purge(self) -> None:
        for queue in (self._items, self._calls):
            if any(job.cancelled for job in queue):
                kept = [job for job in queue if not job.cancelled]
                queue.clear()
                queue.extend(kept)

    def _queued(self, model: str) -> int:
        return sum(it.n - it.taken for it in self._items if it.model == model)

    def _take(self, model: str) -> list[tuple[_Item, int, int]]:
        """Up to max_batch_size patches of `model`, most urgent then oldest first; a request may be split."""
        room = self.max_batch_size
        batch: list[tuple[_Item, int, int]] = []
        for it in sorted(self._items, key=lambda it: it.priority):     # stable: FIFO within a priority
            if it.model != model:
                continue
            k = min(room, it.n - it.taken)
            batch.append((it, it.taken, it.taken + k))
            it.taken += k
            if it.taken == it.n:
                self._items.remove(it)
            room -= k
            if room == 0:
                break
        return batch

    def _run_batch(self, model: str, batch: list[tuple[_Item, int, int]]) -> None:
        parts = [it.patches[lo:hi] for it, lo, hi in batch]
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        t0 = time.perf_counter()
        try:
            out = self._nets[model].predict(x, batch_size=self.network_batch_size)
        except Exception as exc:  # noqa: BLE001 - handed to each waiting request; the service logs it once
            for it, _, _ in batch:
                _settle(it.loop, it.future, exc=exc)
            return
        dt = time.perf_counter() - t0
        off = 0
        for it, lo, hi in batch:
            k = hi - lo
            if it.out is None:
                it.out = BackboneOutput(*(np.empty((it.n, a.shape[1]), np.float32)
                                          for a in (out.tags, out.embedding, out.pooled)))
            it.out.tags[lo:hi] = out.tags[off:off + k]
            it.out.embedding[lo:hi] = out.embedding[off:off + k]
            it.out.pooled[lo:hi] = out.pooled[off:off + k]
            off += k
            it.done += k
            if it.done == it.n:
                _settle(it.loop, it.future, it.out)
        if self.on_batch is not None:
            self.on_batch(model, int(x.shape[0]), len(batch), dt)

    def _run_call(self, call: _Call) -> None:
        try:
            result = call.fn(*call.args)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's task
            _settle(call.loop, call.future, exc=exc)
        else:
            _settle(call.loop, call.future, result)

    def _fail_all(self, exc: errors.SpyError) -> None:
        with self._cond:
            jobs: list[_Item | _Call] = [*self._items, *self._calls]
            self._items.clear()
            self._calls.clear()
        for job in jobs:
            _settle(job.loop, job.future, exc=exc)
