"""The classifier as an HTTP service (`spy serve`): routes, auth, limits, backpressure, error -> HTTP.

    POST /v1/genre, /v1/identify   JSON {"url", "at"?, "seconds"?}, or the audio itself (raw body with an
                                   audio content type and ?at=&seconds=&name=, or multipart with a file part)
    GET  /v1/about                 the backbones and the active artist model
    GET  /healthz  /readyz  /metrics  /openapi.json

One request: auth -> admission (at most max_queue_jobs jobs held; past it 429 + Retry-After) -> the body to
a temp file, or the link fetched by fetch.py -> decode and features in a bounded thread pool -> patches to
the one model worker (batcher.py), which batches them with every other request's -> finish -> the JSON the
CLI prints. Errors become `SpyError.to_dict()` with the class's HTTP status, in one middleware.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import hmac
import ipaddress
import itertools
import json
import logging
import math
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import numpy as np
from aiohttp import BodyPartReader, web

from . import artists, decode, errors, features, pipeline, tfserving
from .batcher import ModelWorker
from .client import genre_report
from .settings import Settings

__all__ = ["make_app", "serve", "check_bind", "is_loopback", "Metrics", "Jobs", "Clip",
           "SETTINGS", "WORKER", "JOBS", "METRICS"]

log = logging.getLogger(__name__)

_JSON_MAX_BYTES = 64 * 1024      # a link request is a few hundred bytes
_FIELD_MAX_BYTES = 256           # multipart text fields (at, seconds, name)
_CHUNK = 64 * 1024
_RAW_TYPES = ("application/octet-stream", "application/ogg")
_NOT_READY_RETRY_S = 5.0


# --- metrics (Prometheus text format) --------------------------------------------------------------------

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_PATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _labels(**kv: str) -> str:
    if not kv:
        return ""
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in kv.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class _Histogram:
    def __init__(self, name: str, doc: str, buckets: tuple[float, ...], label: str | None = None) -> None:
        self.name, self.doc, self.buckets, self.label = name, doc, buckets, label
        self._series: dict[str, tuple[list[int], list[float]]] = {}   # label -> (bucket counts, [sum, count])

    def observe(self, value: float, label: str = "") -> None:
        counts, total = self._series.setdefault(label, ([0] * (len(self.buckets) + 1), [0.0, 0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value
        total[1] += 1

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.doc}", f"# TYPE {self.name} histogram"]
        for label, (counts, (s, n)) in sorted(self._series.items()):
            extra = {self.label: label} if self.label else {}
            cum = 0
            for le, c in zip([*map(str, self.buckets), "+Inf"], counts):
                cum += c
                out.append(f"{self.name}_bucket{_labels(**extra, le=le)} {cum}")
            out.append(f"{self.name}_sum{_labels(**extra)} {s:.6f}")
            out.append(f"{self.name}_count{_labels(**extra)} {int(n)}")
        return out


class Metrics:
    """Counters and histograms for /metrics; safe to update from the model thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.request_seconds = _Histogram("spy_request_seconds", "Request latency by route.", _SECONDS, "route")
        self.stage_seconds = _Histogram("spy_stage_seconds", "Job time per stage (queue, fetch, decode, "
                                        "features, network, total).", _SECONDS, "stage")
        self.batch_patches = _Histogram("spy_batch_patches", "Patches per network batch, by model.", _PATCHES, "model")
        self.batch_requests = _Histogram("spy_batch_requests", "Requests sharing one network batch.", _PATCHES)
        self.loop_lag = _Histogram("spy_event_loop_lag_seconds", "How late a 50-ms timer on the event loop fires.", _LAG)
        self.loop_lag_max = 0.0
        self.network_patches: dict[str, int] = {}
        self.network_seconds: dict[str, float] = {}
        self.slices = 0
        self._recent: deque[tuple[float, int]] = deque()   # (monotonic, slices) of jobs in the last 10 s

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (route, method, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            self.request_seconds.observe(seconds, route)

    def batch(self, model: str, patches: int, requests: int, seconds: float) -> None:
        with self._lock:
            self.batch_patches.observe(patches, model)
            self.batch_requests.observe(requests)
            self.network_patches[model] = self.network_patches.get(model, 0) + patches
            self.network_seconds[model] = self.network_seconds.get(model, 0.0) + seconds

    def job(self, timings: dict[str, float], slices: int) -> None:
        with self._lock:
            for stage, seconds in timings.items():
                self.stage_seconds.observe(seconds, stage)
            self.slices += slices
            self._recent.append((time.monotonic(), slices))

    def lag(self, seconds: float) -> None:
        with self._lock:
            self.loop_lag.observe(seconds)
            self.loop_lag_max = max(self.loop_lag_max, seconds)

    def slices_per_second(self, window_s: float = 10.0) -> float:
        with self._lock:
            now = time.monotonic()
            while self._recent and self._recent[0][0] < now - window_s:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / window_s

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        sps = self.slices_per_second()
        with self._lock:
            out = ["# HELP spy_requests_total Requests by route, method and status.", "# TYPE spy_requests_total counter"]
            out += [f"spy_requests_total{_labels(route=r, method=m, status=str(s))} {n}"
                    for (r, m, s), n in sorted(self.requests.items())]
            for h in (self.request_seconds, self.stage_seconds, self.batch_patches, self.batch_requests, self.loop_lag):
                out += h.render()
            out += ["# HELP spy_network_patches_total Patches through the network, by model.",
                    "# TYPE spy_network_patches_total counter"]
            out += [f"spy_network_patches_total{_labels(model=m)} {n}" for m, n in sorted(self.network_patches.items())]
            out += ["# HELP spy_network_seconds_total Seconds the network ran, by model.",
                    "# TYPE spy_network_seconds_total counter"]
            out += [f"spy_network_seconds_total{_labels(model=m)} {v:.6f}" for m, v in sorted(self.network_seconds.items())]
            out += ["# HELP spy_slices_total Audio slices analysed.", "# TYPE spy_slices_total counter",
                    f"spy_slices_total {self.slices}"]
            gauges = {**gauges,
                      "spy_slices_per_second": ("Slices analysed per second over the last 10 s.", sps),
                      "spy_event_loop_lag_max_seconds": ("Largest event-loop lag seen.", self.loop_lag_max)}
        for name, (doc, value) in gauges.items():
            out += [f"# HELP {name} {doc}", f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(out) + "\n"


# --- jobs: admission, the decode pool, the path from a clip to an answer -----------------------------------

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
            raise _unavailable("The listening service is restarting. Try again in a moment.")
        if not self.ready:
            raise _unavailable("The listening service is starting up. Try again in a moment.")

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
            from .fetch import Fetcher  # yt-dlp is a heavy import; only link requests need it

            self._fetcher = Fetcher(self.settings)
        return self._fetcher

    async def genre(self, job: int, clip: Clip) -> dict[str, object]:
        analysis, hint = await self.analyse(clip, self.worker.names, keep_pooled=False)
        report = genre_report(analysis, clip.display, hint)
        self._done(job, "genre", clip, analysis, dict(report.timings))
        return report.to_dict()

    async def head(self) -> artists.Head:
        """The active artist head (loaded in the model thread), or NoModel."""
        head = await self.worker.call(artists.current_head, self.settings)
        if head is None:
            raise errors.NoModel()
        if head.backbone not in self.worker.names:
            raise errors.NoModel(detail=f"head {head.id} needs {head.backbone}, not loaded here")
        return head

    async def identify(self, job: int, clip: Clip, head: artists.Head) -> dict[str, object]:
        analysis, hint = await self.analyse(clip, (head.backbone,), keep_pooled=head.config.feature == "pooled")
        verdict = await self.worker.call(functools.partial(artists.verdict, head, analysis, clip.display, hint))
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
    from .sources import format_time

    return format_time(max(0.0, seconds))


def _unavailable(message: str, retry_after_s: float = _NOT_READY_RETRY_S) -> errors.ClassifierUnavailable:
    exc = errors.ClassifierUnavailable(message)
    exc.retry_after_s = retry_after_s  # type: ignore[attr-defined]  # becomes a Retry-After header
    return exc


# --- reading requests ---------------------------------------------------------------------------------------

def _number(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        x = float(value)
    except (TypeError, ValueError):
        raise errors.BadRequest(f'"{name}" must be a number of seconds.') from None
    if not math.isfinite(x) or x <= 0:
        raise errors.BadRequest(f'"{name}" must be a positive number of seconds.')
    return x


def _start(value: Any) -> float | None:
    if value is None or value == "":
        return None
    from .sources import parse_time

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise errors.BadRequest('"at" must be a time like 1:02:03 or a number of seconds.')
    return parse_time(value)


def _too_large(limit: int, detail: str) -> errors.BodyTooLarge:
    size = f"{limit / 1e6:.0f} MB" if limit >= 10e6 else f"{limit / 1e6:.1f} MB" if limit >= 1e6 else f"{limit // 1000} kB"
    return errors.BodyTooLarge(f"That file is larger than I accept ({size}). Send a shorter piece.", detail=detail)


async def _copy(read: Callable[[], Awaitable[bytes]], dest: Path, limit: int) -> int:
    """Stream a body to `dest`, refusing it past `limit` bytes (whatever Content-Length claimed)."""
    n = 0
    with open(dest, "wb") as f:
        while chunk := await read():
            n += len(chunk)
            if n > limit:
                raise _too_large(limit, f"> {limit} bytes")
            f.write(chunk)  # page-cache writes of 64 KiB: microseconds, not worth a thread hop
    return n


async def _read_json(request: web.Request) -> dict[str, Any]:
    raw = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        raw += chunk
        if len(raw) > _JSON_MAX_BYTES:
            raise _too_large(_JSON_MAX_BYTES, "JSON body")
    try:
        body = json.loads(bytes(raw))
    except ValueError:
        raise errors.BadRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise errors.BadRequest('Send a JSON object like {"url": "https://youtu.be/...", "at": "1:02:03"}.')
    if not isinstance(body.get("url"), str) or not body["url"].strip():
        raise errors.BadRequest('The JSON needs a "url" string.')
    return body


async def _read_multipart(request: web.Request, dest: Path, limit: int) -> dict[str, str]:
    """Save the one file part to `dest`; return the small text fields (at, seconds, name)."""
    fields: dict[str, str] = {}
    got_file = False
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise errors.BadRequest("Nested multipart bodies are not supported.")
            if part.filename is not None or part.name in ("file", "audio"):
                if got_file:
                    raise errors.BadRequest("Send one file per request.")
                await _copy(functools.partial(part.read_chunk, _CHUNK), dest, limit)
                got_file = True
            elif part.name in ("at", "seconds", "name"):
                value = bytearray()
                while chunk := await part.read_chunk(_CHUNK):
                    value += chunk
                    if len(value) > _FIELD_MAX_BYTES:
                        raise errors.BadRequest(f'The "{part.name}" field is too long.')
                fields[part.name] = value.decode("utf-8", "replace")
            else:
                await part.release()
    except (ValueError, AssertionError, RuntimeError) as exc:   # aiohttp's own complaints about the framing
        raise errors.BadRequest("That multipart body is malformed.", detail=repr(exc)) from exc
    if not got_file:
        raise errors.BadRequest('The multipart body has no file part (name it "file").')
    return fields


def _is_audio_type(ctype: str) -> bool:
    return ctype.startswith(("audio/", "video/")) or ctype in _RAW_TYPES


@contextlib.asynccontextmanager
async def _request_clip(request: web.Request, jobs: Jobs) -> AsyncIterator[Clip]:
    """The audio a request names: its JSON link fetched, or its body saved; temporary files removed after."""
    s = jobs.settings
    ctype = request.content_type
    if ctype == "application/json":
        from .sources import find_source

        body = await _read_json(request)
        at = body.get("at")
        if at is not None and (isinstance(at, bool) or not isinstance(at, (str, int, float))):
            raise errors.BadRequest('"at" must be a time like 1:02:03 or a number of seconds.')
        seconds = _number(body.get("seconds"), "seconds")
        source = find_source(body["url"], at=at if at != "" else None, extra_hosts=s.fetch_extra_hosts)
        window = min(seconds or s.fetch_window_seconds, s.max_clip_seconds)
        t0 = time.perf_counter()
        async with jobs.fetcher.window(source, window_s=window) as fetched:
            # the fetched file holds just the window; timeline positions stay relative to the source
            yield Clip(fetched.path, 0.0, None, fetched.start_s, fetched.hint, source.display_url(), source.host,
                       fetch_s=time.perf_counter() - t0)
        return
    with tempfile.TemporaryDirectory(prefix="spy-upload-") as tmp:
        dest = Path(tmp) / "audio"
        if ctype == "multipart/form-data":
            fields = await _read_multipart(request, dest, s.max_body_bytes)
            at, seconds = _start(fields.get("at")), _number(fields.get("seconds"), "seconds")
        else:
            fields = {k: request.query[k] for k in ("at", "seconds", "name") if k in request.query}
            at, seconds = _start(fields.get("at")), _number(fields.get("seconds"), "seconds")  # before the body
            await _copy(functools.partial(request.content.read, _CHUNK), dest, s.max_body_bytes)
        name = (fields.get("name") or "audio").strip()[:200] or "audio"
        yield Clip(dest, at or 0.0, seconds, at or 0.0, None, name, "upload")


# --- handlers ------------------------------------------------------------------------------------------------

SETTINGS = web.AppKey("settings", Settings)
WORKER = web.AppKey("worker", ModelWorker)
JOBS = web.AppKey("jobs", Jobs)
METRICS = web.AppKey("metrics", Metrics)


async def _classify(request: web.Request, kind: str) -> web.Response:
    jobs = request.app[JOBS]
    s = jobs.settings
    jobs.check_open()
    ctype = request.content_type
    if ctype not in ("application/json", "multipart/form-data") and not _is_audio_type(ctype):
        raise errors.UnsupportedMedia(detail=f"content type {ctype!r}")
    limit = _JSON_MAX_BYTES if ctype == "application/json" else s.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, f"Content-Length {request.content_length}")
    with jobs.admit() as job:
        deadline = asyncio.timeout(s.request_deadline_s)
        try:
            async with deadline:
                head = await jobs.head() if kind == "identify" else None
                async with _request_clip(request, jobs) as clip:
                    result = await (jobs.identify(job, clip, head) if head is not None else jobs.genre(job, clip))
        except TimeoutError:
            if deadline.expired():
                raise errors.DeadlineExceeded(detail=f"job {job} ran past {s.request_deadline_s} s") from None
            raise
    return web.json_response(result)


async def handle_genre(request: web.Request) -> web.Response:
    """The clip's genres and descriptors (`GenreReport.to_dict()`)."""
    return await _classify(request, "genre")


async def handle_identify(request: web.Request) -> web.Response:
    """The artists whose style the clip most resembles (`Verdict.to_dict()`)."""
    return await _classify(request, "identify")


async def handle_about(request: web.Request) -> web.Response:
    """The backbones and the active artist model."""
    jobs = request.app[JOBS]
    jobs.check_open()
    try:
        head = await jobs.head()
    except errors.NoModel:
        model = None
    else:
        model = {"id": head.id, "artists": list(head.labels), "created": head.created, "summary": head.summary}
    return web.json_response({"backbones": list(jobs.worker.names), "model": model})


async def handle_healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    """Ready: the model is loaded and warm, and the service is not shutting down."""
    request.app[JOBS].check_open()
    return web.json_response({"status": "ready", "models": list(request.app[WORKER].names)})


async def handle_metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    jobs, worker = request.app[JOBS], request.app[WORKER]
    gauges = {
        "spy_ready": ("1 when the model is loaded and warm.", float(jobs.ready)),
        "spy_queue_jobs": ("Jobs held (waiting or running).", float(jobs.active)),
        "spy_queue_jobs_limit": ("max_queue_jobs.", float(jobs.settings.max_queue_jobs)),
        "spy_queue_patches": ("Patches waiting for a network batch.", float(worker.queued_patches())),
    }
    return web.Response(text=request.app[METRICS].render(gauges), content_type="text/plain",
                        headers={"X-Content-Type-Options": "nosniff"})


async def handle_openapi(request: web.Request) -> web.Response:
    """This API, described."""
    return web.json_response(openapi(request.app[SETTINGS]))


@web.middleware
async def error_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """The one boundary: SpyError -> its status and JSON; anything else logged once, then a 500."""
    t0 = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        response = await handler(request)
    except errors.SpyError as exc:
        # expected states (no model yet, starting up) are not warnings; a failing fetch or a deadline is
        quiet = exc.http_status < 500 or isinstance(exc, (errors.NoModel, errors.ClassifierUnavailable))
        level = logging.INFO if quiet else logging.WARNING
        log.log(level, "%s %s -> %d %s (%s)", request.method, route, exc.http_status, exc.code, exc.detail or "")
        response = error_response(exc)
    except web.HTTPException as exc:   # the router's 404 and 405
        response = web.json_response({"error": "not_found" if exc.status == 404 else "bad_request",
                                      "message": exc.reason}, status=exc.status)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, route)
        response = error_response(errors.SpyError())
    request.app[METRICS].request(route, request.method, response.status, time.perf_counter() - t0)
    return response


def error_response(exc: errors.SpyError) -> web.Response:
    headers = {}
    retry = getattr(exc, "retry_after_s", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return web.json_response(exc.to_dict(), status=exc.http_status, headers=headers)


def auth_middleware(token: str) -> Any:
    """Bearer auth on /v1/ (probes, metrics and the API description stay open), compared in constant time."""
    expected = token.encode()

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if expected and request.path.startswith("/v1/"):
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            ok = hmac.compare_digest(given.strip().encode(), expected)
            if scheme.lower() != "bearer" or not ok:
                raise errors.Unauthorized(detail="missing token" if not given else "wrong token")
        return await handler(request)

    return check


# --- the app ---------------------------------------------------------------------------------------------------

async def _watch_lag(metrics: Metrics, interval_s: float = 0.05) -> None:
    """Measure how late the event loop wakes a timer: anything blocking the loop shows up here."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(interval_s)
        metrics.lag(max(0.0, loop.time() - t - interval_s))


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    """Load the model in the background (/readyz says when), measure loop lag; on exit stop both cleanly."""
    worker, jobs = app[WORKER], app[JOBS]
    loading = asyncio.create_task(jobs.start(), name="spy-model-load")
    loading.add_done_callback(_report_load)
    lag = asyncio.create_task(_watch_lag(app[METRICS]), name="spy-loop-lag")
    yield
    lag.cancel()
    # aiohttp has stopped listening and waited for the requests in flight; now the worker and pool go
    await worker.close()
    with contextlib.suppress(BaseException):
        await loading
    await jobs.close()
    with contextlib.suppress(asyncio.CancelledError):
        await lag


def _report_load(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("the model failed to load, so /readyz stays 503: %r", exc)


async def _drain(app: web.Application) -> None:
    app[JOBS].draining = True
    log.info("shutting down: refusing new jobs, finishing %d in flight", app[JOBS].active)


def make_app(settings: Settings, *, worker: ModelWorker | None = None) -> web.Application:
    """The service's aiohttp application (the model loads when the app starts)."""
    metrics = Metrics()
    if worker is None:
        # With SPY_TFSERVING_URL the network runs in TensorFlow Serving (`spy export`); batching stays ours.
        remote = ({"loader": tfserving.loader(settings.tfserving_url, timeout_s=settings.tfserving_timeout_s)}
                  if settings.tfserving_url else {})
        worker = ModelWorker(max_batch_size=settings.max_batch_size, max_batch_wait_ms=settings.max_batch_wait_ms,
                             network_batch_size=min(settings.batch_size, settings.max_batch_size), **remote)
    if worker.on_batch is None:
        worker.on_batch = metrics.batch
    app = web.Application(middlewares=[error_middleware, auth_middleware(settings.classifier_token)],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[WORKER] = worker
    app[METRICS] = metrics
    app[JOBS] = Jobs(settings, worker, metrics)
    app.router.add_post("/v1/genre", handle_genre)
    app.router.add_post("/v1/identify", handle_identify)
    app.router.add_get("/v1/about", handle_about)
    app.router.add_get("/healthz", handle_healthz)
    app.router.add_get("/readyz", handle_readyz)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/openapi.json", handle_openapi)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_drain)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, host: str) -> None:
    """Without CLASSIFIER_TOKEN the service binds to loopback only; anything else is refused."""
    if settings.classifier_token:
        return
    if is_loopback(host):
        log.warning("CLASSIFIER_TOKEN is empty: serving WITHOUT auth, on loopback (%s) only", host)
        return
    log.error("refusing to serve on %s without CLASSIFIER_TOKEN: set it, or bind to 127.0.0.1", host)
    raise errors.SpyError(f"Refusing to serve on {host} without a token. Set CLASSIFIER_TOKEN (the bots send the "
                          "same value), or bind to 127.0.0.1.")


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the service until SIGINT/SIGTERM; then stop listening, finish the jobs in flight, exit."""
    host = host or settings.serve_host
    port = settings.serve_port if port is None else port
    check_bind(settings, host)
    features.limit_blas_threads()  # jobs run in parallel threads: BLAS inside one job gets one thread
    log.info("classifier service on http://%s:%d (auth: %s; batches <= %d patches, queue <= %d jobs)", host, port,
             "bearer token" if settings.classifier_token else "none", settings.max_batch_size, settings.max_queue_jobs)
    # handler_cancellation: a client that hangs up takes its patches out of the batch queue with it
    web.run_app(make_app(settings), host=host, port=port, print=None, handler_cancellation=True,
                shutdown_timeout=settings.request_deadline_s + 5.0)


# --- the API, described ---------------------------------------------------------------------------------------

def openapi(settings: Settings) -> dict[str, Any]:
    err = {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    audio_body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Link"}},
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
            "video/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary"}, "at": {"type": "string"},
                "seconds": {"type": "number"}, "name": {"type": "string"}}}},
        },
    }
    params = [
        {"name": "at", "in": "query", "schema": {"type": "string"}, "description": "start, e.g. 1:02:03 (uploads)"},
        {"name": "seconds", "in": "query", "schema": {"type": "number"},
         "description": f"how much to analyse (at most max_clip_seconds = {settings.max_clip_seconds:g})"},
        {"name": "name", "in": "query", "schema": {"type": "string"}, "description": "shown as the answer's source"},
    ]
    errors_doc = {str(code): err for code in (400, 401, 413, 415, 422, 429, 502, 503, 504)}

    def post(summary: str, schema: str) -> dict[str, Any]:
        return {"post": {"summary": summary, "security": [{"bearer": []}], "parameters": params,
                         "requestBody": audio_body,
                         "responses": {"200": {"description": "OK", "content": {"application/json": {
                             "schema": {"$ref": f"#/components/schemas/{schema}"}}}}, **errors_doc}}}

    def probe(summary: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "responses": {"200": {"description": "OK"}, "503": err}}}

    cand = {"type": "object", "properties": {"score": {"type": "number"}, "votes": {"type": "integer"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Deep House Spy classifier", "version": "1",
                 "description": "Who made this track? Genres and artist style for a clip. Send a YouTube/SoundCloud "
                                "link as JSON or the audio itself. Errors: {\"error\": code, \"message\": text}; "
                                f"bodies up to {settings.max_body_bytes} bytes; 429 with Retry-After when the "
                                f"queue ({settings.max_queue_jobs} jobs) is full."},
        "paths": {
            "/v1/genre": post("Genres and descriptors of a clip", "GenreReport"),
            "/v1/identify": post("The enrolled artists whose style the clip most resembles", "Verdict"),
            "/v1/about": {"get": {"summary": "Backbones and the active artist model", "security": [{"bearer": []}],
                                  "responses": {"200": {"description": "OK"}, "401": err}}},
            "/healthz": probe("Alive"),
            "/readyz": probe("Model loaded and warm"),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OK"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Link": {"type": "object", "required": ["url"], "properties": {
                    "url": {"type": "string"}, "at": {"type": ["string", "number"]}, "seconds": {"type": "number"}}},
                "Error": {"type": "object", "required": ["error", "message"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"}, "retry_after_s": {"type": "number"}}},
                "GenreReport": {"type": "object", "required": ["source", "seconds", "slices", "genres", "descriptors"],
                                "properties": {"source": {"type": "string"}, "start": {"type": "number"},
                                               "seconds": {"type": "number"}, "slices": {"type": "integer"},
                                               "genres": {"type": "array", "items": cand},
                                               "descriptors": {"type": "array", "items": cand},
                                               "timings": {"type": "object"}, "hint": {"type": ["string", "null"]},
                                               "timeline": {"type": "array"}}},
                "Verdict": {"type": "object", "required": ["source", "artists", "verdict", "confidence", "model"],
                            "properties": {"source": {"type": "string"}, "seconds": {"type": "number"},
                                           "slices": {"type": "integer"}, "artists": {"type": "array", "items": cand},
                                           "confidence": {"type": "number"}, "vote_share": {"type": "number"},
                                           "verdict": {"enum": ["identified", "unknown"]},
                                           "genres": {"type": "array", "items": cand}, "model": {"type": "object"},
                                           "timings": {"type": "object"}, "hint": {"type": ["string", "null"]},
                                           "timeline": {"type": "array"}}},
            },
        },
    }
