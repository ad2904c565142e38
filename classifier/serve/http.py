"""The classifier as an HTTP service (`spy serve`): routes, auth, limits, backpressure, error -> HTTP.

    POST /v1/genre, /v1/identify   JSON {"url", "at"?, "seconds"?}, or the audio itself (raw body with an
                                   audio content type and ?at=&seconds=&name=, or multipart with a file part)
    GET  /v1/about                 the backbones and the active artist model
    GET  /healthz  /readyz  /metrics  /openapi.json

This module only speaks HTTP: auth, body limits, the request parsed into the engine's one input value
(`Query`: a link, or the uploaded body spooled to a temp file, with at/seconds/name), and the answer's
`to_dict()` rendered back. Everything else is the engine's (engine.py), the same object the CLI and the bots
run in-process: admission (max_queue_jobs; past it 429 + Retry-After) and the deadline (held while the body
uploads too), fetch, decode pool, batching, head, vote. Errors become `SpyError.to_dict()` with the class's
HTTP status, in one middleware.
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
from classifier.serve.api import Query
from classifier.serve.batcher import ModelWorker
from classifier.serve.engine import Engine, Kind
from classifier.serve.metrics import Metrics
from classifier.serve.openapi import openapi
from classifier.settings import Settings

__all__ = ["make_app", "serve", "check_bind", "is_loopback", "SETTINGS", "ENGINE"]

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
async def _request_query(request: web.Request, settings: Settings) -> AsyncIterator[Query]:
    """The audio a request names, as the engine's `Query`: its JSON link, or its body saved to a temporary
    file that is removed afterwards."""
    ctype = request.content_type
    if ctype == "application/json":
        from classifier.sources.links import find_source

        body = await _read_json(request)
        at = body.get("at")
        if at is not None and (isinstance(at, bool) or not isinstance(at, (str, int, float))):
            raise errors.BadRequest('"at" must be a time like 1:02:03 or a number of seconds.')
        seconds = _number(body.get("seconds"), "seconds")
        yield Query(source=find_source(body["url"], at=at if at != "" else None, extra_hosts=settings.fetch_extra_hosts),
                    duration_s=seconds)
        return
    with tempfile.TemporaryDirectory(prefix="spy-upload-") as tmp:
        dest = Path(tmp) / "audio"
        if ctype == "multipart/form-data":
            fields = await _read_multipart(request, dest, settings.max_body_bytes)
            at, seconds = _start(fields.get("at")), _number(fields.get("seconds"), "seconds")
        else:
            fields = {k: request.query[k] for k in ("at", "seconds", "name") if k in request.query}
            at, seconds = _start(fields.get("at")), _number(fields.get("seconds"), "seconds")  # before the body
            await _copy(functools.partial(request.content.read, _CHUNK), dest, settings.max_body_bytes)
        name = (fields.get("name") or "audio").strip()[:200] or "audio"
        yield Query(path=dest, at=at, duration_s=seconds, label=name)


# --- handlers ------------------------------------------------------------------------------------------------

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)


async def _classify(request: web.Request, kind: Kind) -> web.Response:
    engine = request.app[ENGINE]
    s = engine.settings
    engine.check_open()
    ctype = request.content_type
    if ctype not in ("application/json", "multipart/form-data") and not _is_audio_type(ctype):
        raise errors.UnsupportedMedia(detail=f"content type {ctype!r}")
    limit = _JSON_MAX_BYTES if ctype == "application/json" else s.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, f"Content-Length {request.content_length}")
    async with engine.admitted(kind) as job, _request_query(request, s) as query:
        answer = await engine.run(job, query)
    return web.json_response(answer.to_dict())


async def handle_genre(request: web.Request) -> web.Response:
    """The clip's genres and descriptors (`GenreReport.to_dict()`)."""
    return await _classify(request, "genre")


async def handle_identify(request: web.Request) -> web.Response:
    """The artists whose style the clip most resembles (`Verdict.to_dict()`)."""
    return await _classify(request, "identify")


async def handle_about(request: web.Request) -> web.Response:
    """The backbones and the active artist model."""
    engine = request.app[ENGINE]
    engine.check_open()
    return web.json_response(await engine.about())


async def handle_healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "ok"})


async def handle_readyz(request: web.Request) -> web.Response:
    """Ready: the model is loaded and warm, and the service is not shutting down."""
    engine = request.app[ENGINE]
    engine.check_open()
    return web.json_response({"status": "ready", "models": list(engine.worker.names)})


async def handle_metrics(request: web.Request) -> web.Response:
    """Prometheus text format."""
    body, content_type = request.app[ENGINE].metrics.render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"})


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
    request.app[ENGINE].metrics.request(route, request.method, response.status, time.perf_counter() - t0)
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
    engine = app[ENGINE]
    loading = asyncio.create_task(engine.start(), name="spy-model-load")
    loading.add_done_callback(_report_load)
    lag = asyncio.create_task(_watch_lag(engine.metrics), name="spy-loop-lag")
    yield
    lag.cancel()
    # aiohttp has stopped listening and waited for the requests in flight; now the worker and pool go
    await engine.aclose()
    with contextlib.suppress(BaseException):
        await loading
    with contextlib.suppress(asyncio.CancelledError):
        await lag


def _report_load(task: asyncio.Task[Engine]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("the model failed to load, so /readyz stays 503: %r", exc)


async def _drain(app: web.Application) -> None:
    app[ENGINE].drain()


def make_app(settings: Settings, *, worker: ModelWorker | None = None, engine: Engine | None = None) -> web.Application:
    """The service's aiohttp application around one `Engine` (it loads the model when the app starts).

    worker : the model worker for a new engine (tests pass one with a stand-in network)
    engine : an engine to serve (default: a new one that answers 503 until it is ready)
    """
    if engine is None:
        engine = Engine(settings, worker=worker, auto_start=False)
    # What /metrics exports beside the engine's counters; the autoscaler (deploy/classifier-hpa.yaml) scales
    # replicas on spy_queue_jobs against spy_queue_jobs_limit.
    m = engine.metrics
    m.gauge("spy_ready", "1 when the model is loaded and warm.", lambda: float(engine.ready))
    m.gauge("spy_queue_jobs", "Jobs held (waiting or running).", lambda: float(engine.active))
    m.gauge("spy_queue_jobs_limit", "max_queue_jobs.", lambda: float(engine.settings.max_queue_jobs))
    m.gauge("spy_queue_patches", "Patches waiting for a network batch.", engine.worker.queued_patches)
    app = web.Application(middlewares=[error_middleware, auth_middleware(settings.classifier_token.get_secret_value())],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[ENGINE] = engine
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
    from classifier.audio import features

    features.limit_blas_threads()  # jobs run in parallel threads: BLAS inside one job gets one thread
    log.info("classifier service on http://%s:%d (auth: %s; batches <= %d patches, queue <= %d jobs)", host, port,
             "bearer token" if settings.classifier_token else "none", settings.max_batch_size, settings.max_queue_jobs)
    # handler_cancellation: a client that hangs up takes its patches out of the batch queue with it
    web.run_app(make_app(settings), host=host, port=port, print=None, handler_cancellation=True,
                shutdown_timeout=settings.request_deadline_s + 5.0)
