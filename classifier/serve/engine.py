"""The one job engine: a `Query` -> fetch -> decode pool -> batched network -> head or genre vote -> the answer.

    identify(query) / genre(query)       the `Classifier` protocol: the CLI and the bots call it in-process
    http.py routes -> admitted(kind) + run(job, query)      `spy serve` calls the very same two steps

    admitted(kind)   a place among max_queue_jobs (else Busy + retry_after_s), for request_deadline_s at most
    run(job, query)  identify: the active head (NoModel) -> the clip (clips.py: a link fetched by
                     sources.fetch, a file cut to max_clip_seconds) -> scoring.analyse (decode pool of
                     max_concurrent_decodes threads, patches batched in the ONE ModelWorker with every other
                     job's) -> pipeline.verdict in the model thread / pipeline.genre_report
                     -> progress "done", one INFO line, metrics

Because the in-process default and the service run this same object, they answer alike by construction
(tests/test_parity.py checks it end to end).

What comes next, and where it plugs in (not built yet):

- /tracklist, a job over a whole DJ set: its own `scoring.Lane` (a one-thread decode pool and a semaphore of
  its own, so short jobs never queue behind hours of decoding) with priority `batcher.BULK`, so its patches
  only fill the room interactive patches leave in each batch; its own admission count beside max_queue_jobs
  (a setting such as max_tracklist_jobs) and no request deadline; progress comes from the same callback.
- Known-track fingerprint matching before the style vote: a `Stage` (the `stages` argument). Each stage gets
  the clip in a decode-pool thread while the network scores it, and what it returns is merged into the
  verdict's `extra` (a matcher returns {"match": ...}); `Verdict.to_dict` has to render `extra["match"]`
  for it to reach the JSON (model/verdict.py, not this layer).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Mapping, Sequence

from classifier import errors
from classifier.model.heads import Head
from classifier.model.verdict import GenreReport, Verdict
from classifier.serve import clips, tfserving
from classifier.serve.api import ProgressCallback, Query
from classifier.serve.batcher import INTERACTIVE, ModelWorker
from classifier.serve.metrics import Metrics
from classifier.settings import Settings
from classifier.store import registry

if TYPE_CHECKING:  # pragma: no cover
    from classifier.pipeline import Analysis
    from classifier.sources.fetch import Fetcher

__all__ = ["Engine", "Job", "Kind", "Stage", "unavailable"]

log = logging.getLogger(__name__)

Kind = Literal["identify", "genre"]

Stage = Callable[[clips.Clip], Mapping[str, Any]]
"""stage(clip) -> fields for `Verdict.extra`: a step of an identify job beside the network, before the vote.
Blocking; it runs in a decode-pool thread while the clip is scored and may read `clip.path` from `clip.seek_s`
for `clip.duration_s`. A refusal of the clip by the analysis wins over whatever a stage raises."""

_NOT_READY_RETRY_S = 5.0
_RATE_WINDOW_S = 30.0        # Retry-After is estimated from the jobs finished in this window


@dataclass(frozen=True, slots=True)
class Job:
    """One admitted job: its number (in the log line), what it answers, and its batch priority."""

    id: int
    kind: Kind
    priority: int = INTERACTIVE


class Engine:
    """The classifier: admission, the decode pool, the one model worker, the answers.

    Parameters
    ----------
    settings : the limits (max_queue_jobs, max_clip_seconds, ...), the database with the active head
    worker : the model worker (default: both musicnn backbones, or TF Serving with settings.tfserving_url)
    metrics : where to count (default: a fresh registry of this engine's own)
    auto_start : load the networks on the first call (in-process); the service starts the engine itself and
        answers 503 until it is ready, so it passes False
    stages : steps of every identify job before the vote (see `Stage`), e.g. known-track matching
    """

    def __init__(self, settings: Settings, *, worker: ModelWorker | None = None, metrics: Metrics | None = None,
                 genre_models: Sequence[str] = ("msd_musicnn", "mtt_musicnn"), auto_start: bool = True,
                 stages: Sequence[Stage] = ()) -> None:
        self.settings = settings
        self.stages = tuple(stages)
        self.metrics = metrics if metrics is not None else Metrics()
        self.worker = worker if worker is not None else _default_worker(settings, genre_models)
        if self.worker.on_batch is None:
            self.worker.on_batch = self.metrics.batch
        if self.worker.may_fill is None:
            # Waiting for a batch to fill pays only if another job can add to it; a lone job goes at once.
            self.worker.may_fill = lambda: self.active > 1
        self.auto_start = auto_start
        self.slots = max(1, settings.max_concurrent_decodes)
        self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="spy-decode")
        self._decoding = asyncio.Semaphore(self.slots)
        self.active = 0
        self.draining = False
        self._ids = itertools.count(1)
        self._job_s = 1.0                       # moving average of a job's wall time, for Retry-After
        self._finished: deque[float] = deque()  # when recent jobs finished, for Retry-After
        self._fetcher: Fetcher | None = None
        self._fetch_tools: dict[str, Any] | None = None   # what about() says of yt-dlp and its JS runtime
        self._warm = False
        self._starting: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"Engine({', '.join(self.worker.names)}, ready={self.ready}, jobs={self.active})"

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """The networks are loaded and warm."""
        return self.worker.ready and self._warm

    async def start(self) -> "Engine":
        """Load and warm the networks, then the feature path; concurrent callers share one start."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)
        return self

    async def _start(self) -> None:
        # scoring imports librosa, which a bot that only calls a remote classifier never loads
        from classifier.serve import scoring

        await self.worker.start()
        await asyncio.get_running_loop().run_in_executor(self._pool, scoring.warm_features, self.worker)
        self._warm = True

    def drain(self) -> None:
        """Refuse new jobs from now on (the jobs held go on)."""
        self.draining = True
        log.info("shutting down: refusing new jobs, finishing %d in flight", self.active)

    async def aclose(self) -> None:
        """Stop taking jobs, finish what the worker holds, stop its thread and the decode pool."""
        self.draining = True
        await self.worker.close()
        if self._starting is not None:
            with contextlib.suppress(BaseException):
                await self._starting
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    async def __aenter__(self) -> "Engine":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def check_open(self) -> None:
        """ClassifierUnavailable (503 with Retry-After) while the model loads and while shutting down."""
        if self.draining:
            raise unavailable("The listening service is restarting. Try again in a moment.")
        if not self.ready:
            raise unavailable("The listening service is starting up. Try again in a moment.")

    async def _open(self) -> None:
        if not self.ready and self.auto_start and not self.draining:
            await self.start()
        self.check_open()

    # -- the Classifier protocol -------------------------------------------------------------------------
    async def identify(self, query: Query, progress: ProgressCallback | None = None) -> Verdict:
        """The enrolled artists whose style the clip most resembles."""
        async with self.admitted("identify") as job:
            answer = await self.run(job, query, progress)
        assert isinstance(answer, Verdict)
        return answer

    async def genre(self, query: Query, progress: ProgressCallback | None = None) -> GenreReport:
        """The clip's genres and descriptors."""
        async with self.admitted("genre") as job:
            answer = await self.run(job, query, progress)
        assert isinstance(answer, GenreReport)
        return answer

    async def about(self) -> dict[str, Any]:
        """The backbones, the active artist model (None before `spy train`) and the fetch tools (yt-dlp's
        version, YouTube's JavaScript runtime: `sources.jsruntime.FetchTools.to_dict()`)."""
        await self._open()
        try:
            head = await self.head()
        except errors.NoModel:
            model = None
        else:
            model = {"id": head.id, "artists": list(head.labels), "created": head.created, "summary": head.summary}
        if self._fetch_tools is None:     # a subprocess (the JS runtime's --version): once, off the loop
            from classifier.sources import jsruntime

            tools = await asyncio.to_thread(jsruntime.about, self.settings.js_runtime_path)
            self._fetch_tools = tools.to_dict()
        return {"backbones": list(self.worker.names), "model": model, "fetch": self._fetch_tools}

    # -- admission ---------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def admitted(self, kind: Kind) -> AsyncIterator[Job]:
        """A place for one job (`errors.Busy` when max_queue_jobs are held) for at most request_deadline_s
        (`errors.DeadlineExceeded`); the HTTP layer reads the request's body inside it, so uploads count."""
        await self._open()
        s = self.settings
        with self.admit(kind) as job:
            deadline = asyncio.timeout(s.request_deadline_s)
            try:
                async with deadline:
                    yield job
            except TimeoutError:
                if deadline.expired():
                    log.info("job %d %s refused: deadline (ran past %g s)", job.id, kind, s.request_deadline_s)
                    raise errors.DeadlineExceeded(detail=f"job {job.id} ran past {s.request_deadline_s} s") from None
                raise

    @contextlib.contextmanager
    def admit(self, kind: Kind = "identify") -> Iterator[Job]:
        """Hold one of max_queue_jobs places, or refuse with Busy (429) at once."""
        if self.active >= self.settings.max_queue_jobs:
            raise errors.Busy(retry_after_s=self.retry_after(), detail=f"{self.active} jobs held")
        self.active += 1
        try:
            yield Job(next(self._ids), kind)
        finally:
            self.active -= 1

    def retry_after(self) -> float:
        """Seconds for the jobs held now to drain at the recent completion rate (1 to 60)."""
        now = time.monotonic()
        while self._finished and self._finished[0] < now - _RATE_WINDOW_S:
            self._finished.popleft()
        if len(self._finished) >= 2:
            rate = len(self._finished) / max(1.0, now - self._finished[0])
        else:
            rate = self.slots / max(self._job_s, 0.1)
        return float(min(60, max(1, math.ceil(self.active / rate))))

    # -- one job -----------------------------------------------------------------------------------------
    async def run(self, job: Job, query: Query, progress: ProgressCallback | None = None) -> Verdict | GenreReport:
        """Answer one admitted job: the head, the clip, its analysis, then the vote."""
        # librosa: see _start
        from classifier import pipeline
        from classifier.serve import scoring

        s = self.settings
        host = query.source.host if query.source is not None else "file"
        try:
            head = await self.head() if job.kind == "identify" else None
            names = (head.backbone,) if head is not None else self.worker.names
            lane = scoring.Lane(self._pool, self._decoding, job.priority)
            async with self._clip(query, progress) as clip:
                scored = scoring.analyse(clip, names, worker=self.worker, lane=lane, settings=s, progress=progress,
                                         keep_pooled=head is not None and head.config.feature == "pooled")
                (analysis, clip), extra = await self._beside(scored, clip, self.stages if head is not None else ())
            if head is not None:
                answer: Verdict | GenreReport = await self.worker.call(
                    functools.partial(pipeline.verdict, head, analysis, clip.display, clip.hint))
                if extra:
                    answer = replace(answer, extra={**answer.extra, **extra})
            else:
                answer = pipeline.genre_report(analysis, clip.display, clip.hint)
        except errors.SpyError as exc:
            log.info("job %d %s host=%s refused: %s (%s)", job.id, job.kind, host, exc.code, exc.detail or "")
            raise
        self._done(job, host, analysis.seconds, analysis.n_slices, dict(answer.timings))
        if progress is not None:
            await progress("done", 1, 1)   # the last await: a front end may close its status right after
        return answer

    async def _beside(self, scored: Awaitable[tuple[Analysis, clips.Clip]], clip: clips.Clip,
                      stages: Sequence[Stage]) -> tuple[tuple[Analysis, clips.Clip], dict[str, Any]]:
        """Await the clip's analysis with the stages running beside it in the pool; the analysis' error first."""
        if not stages:
            return await scored, {}
        loop = asyncio.get_running_loop()
        done = await asyncio.gather(scored, *(loop.run_in_executor(self._pool, stage, clip) for stage in stages),
                                    return_exceptions=True)
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        extra: dict[str, Any] = {}
        for fields in done[1:]:
            extra.update(fields)          # type: ignore[arg-type]  # not an exception: raised above
        return done[0], extra             # type: ignore[return-value]

    async def head(self) -> Head:
        """The active artist head (loaded in the model thread, where TensorFlow lives), or NoModel."""
        head = await self.worker.call(registry.current_head, self.settings.database)
        if head is None:
            raise errors.NoModel()
        if head.backbone not in self.worker.names:
            raise errors.NoModel(detail=f"head {head.id} needs {head.backbone}, not loaded here")
        return head

    @property
    def fetcher(self) -> "Fetcher":
        if self._fetcher is None:
            # yt-dlp is a heavy import; only link jobs need it
            from classifier.sources.fetch import Fetcher

            self._fetcher = Fetcher(self.settings)
        return self._fetcher

    @contextlib.asynccontextmanager
    async def _clip(self, query: Query, progress: ProgressCallback | None) -> AsyncIterator[clips.Clip]:
        """The clip of a query; a fetched window's folder is removed afterwards."""
        if query.path is not None:
            yield clips.from_file(query, self.settings)
            return
        if progress is not None:
            await progress("fetching", 0, 0)
        t0 = time.perf_counter()
        async with self.fetcher.window(clips.source_of(query), window_s=clips.fetch_seconds(query, self.settings)) as f:
            yield clips.from_fetched(query, f, self.settings, fetch_s=time.perf_counter() - t0)

    def _done(self, job: Job, host: str, seconds: float, slices: int, timings: dict[str, float]) -> None:
        total = float(timings.get("total", 0.0))
        self._job_s = 0.8 * self._job_s + 0.2 * total
        now = time.monotonic()
        self._finished.append(now)
        while self._finished[0] < now - _RATE_WINDOW_S:
            self._finished.popleft()
        self.metrics.job(timings, slices)
        log.info("job %d %s host=%s audio=%.1fs slices=%d timings=%s", job.id, job.kind, host, seconds, slices,
                 " ".join(f"{k}={v:.3f}" for k, v in timings.items()))


def _default_worker(settings: Settings, names: Sequence[str]) -> ModelWorker:
    # With SPY_TFSERVING_URL the network runs in TensorFlow Serving (`spy export`); batching stays ours.
    remote = ({"loader": tfserving.loader(settings.tfserving_url, timeout_s=settings.tfserving_timeout_s)}
              if settings.tfserving_url else {})
    return ModelWorker(names, max_batch_size=settings.max_batch_size, max_batch_wait_ms=settings.max_batch_wait_ms,
                       network_batch_size=min(settings.batch_size, settings.max_batch_size), **remote)


def unavailable(message: str, retry_after_s: float = _NOT_READY_RETRY_S) -> errors.ClassifierUnavailable:
    exc = errors.ClassifierUnavailable(message)
    exc.retry_after_s = retry_after_s  # type: ignore[attr-defined]  # becomes a Retry-After header
    return exc
