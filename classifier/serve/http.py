"""The classifier as an HTTP service (`spy serve`): routes, auth, limits, backpressure, error -> HTTP.

    POST /v1/genre, /v1/identify   JSON {"url", "at"?, "seconds"?}, or the audio itself (raw body with an
                                   audio content type and ?at=&seconds=&name=, or multipart with a file part)
    GET  /v1/about                 the backbones and the active artist model
    GET  /healthz  /readyz  /metrics  /openapi.json

One request: auth -> admission (at most max_queue_jobs jobs held; past it 429 + Retry-After) -> the body
to a temp file, or the link fetched by fetch.py -> decode and features in a bounded thread pool (jobs.py)
-> patches to the one model worker (batcher.py), which batches them with every other request's -> finish
-> the JSON the CLI prints. Errors become `SpyError.to_dict()` with the class's HTTP status, in one middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import ipaddress
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import BodyPartReader, web

from classifier import errors
from classifier.audio import features
from classifier.serve import tfserving
from classifier.serve.batcher import ModelWorker
from classifier.serve.jobs import Clip, Jobs
from classifier.serve.metrics import Metrics
from classifier.settings import Settings

__all__ = ["make_app", "serve", "check_bind", "is_loopback", "SETTINGS", "WORKER", "JOBS", "METRICS"]

log = logging.getLogger(__name__)

_JSON_MAX_BYTES = 64 * 1024      # a link request is a few hundred bytes
_FIELD_MAX_BYTES = 256           # multipart text fields (at, seconds, name)
_CHUNK = 64 * 1024
_RAW_TYPES = ("application/octet-stream", "application/ogg")


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
    from classifier.sources.links import parse_time

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
        from classifier.sources.links import find_source

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
    app = web.Application(middlewares=[error_middleware, auth_middleware(settings.classifier_token.get_secret_value())],
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
