"""A loopback stand-in for TensorFlow Serving's REST API that runs a real exported SavedModel.

    GET  /v1/models/<name>[/versions/<v>]            {"model_version_status": [{"version", "state", "status"}]}
    POST /v1/models/<name>[/versions/<v>]:predict    row ("instances") or columnar ("inputs") requests

Models are read from `<base>/<name>/<highest version>/` with `tf.saved_model.load`, as TF Serving's file-system
source would pick them, and predict calls the named signature for real. Errors answer `{"error": "..."}` with
TF Serving's codes (404 unknown model or version, 400 bad request or unknown signature). Every request is
recorded in `requests` for tests to assert on. `loading_s` keeps a model LOADING for that long after start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from aiohttp import web

__all__ = ["FakeTFServing", "Request", "serving_in_thread"]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    model: str
    version: int | None
    verb: str                 # "status" or "predict"
    signature: str | None
    format: str | None        # "inputs" (columnar) or "instances" (row)
    batch: int                # instances in a predict request


class FakeTFServing:
    """Serve every model folder under `base` on 127.0.0.1 (port 0 = any free one)."""

    def __init__(self, base: Path, *, loading_s: float = 0.0) -> None:
        self.base = Path(base)
        self.loading_s = loading_s
        self.requests: list[Request] = []
        self._models: dict[tuple[str, int], Any] = {}
        self._runner: web.AppRunner | None = None
        self._started = 0.0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def versions(self, name: str) -> list[int]:
        folder = self.base / name
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def _loaded(self, name: str, version: int) -> Any:
        import tensorflow as tf

        key = (name, version)
        if key not in self._models:
            self._models[key] = tf.saved_model.load(str(self.base / name / str(version)))
        return self._models[key]

    async def start(self) -> "FakeTFServing":
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/v1/models/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        # load what is there now, as TF Serving does at start
        for name in sorted(p.name for p in self.base.iterdir() if p.is_dir()):
            if self.versions(name):
                await asyncio.to_thread(self._loaded, name, self.versions(name)[-1])
        self._started = time.monotonic()
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeTFServing":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the API ------------------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        verb = "status"
        if tail.endswith(":predict"):
            tail, verb = tail[: -len(":predict")], "predict"
        parts = tail.split("/")
        name, version = parts[0], None
        if len(parts) == 3 and parts[1] == "versions" and parts[2].isdigit():
            version = int(parts[2])
        elif len(parts) != 1:
            return _error(404, f"Malformed request: {request.method} {request.path}")
        available = self.versions(name)
        if version is None and available:
            version = available[-1]
        if verb == "status" and request.method == "GET":
            self.requests.append(Request("GET", name, version, "status", None, None, 0))
            if version is None or version not in available:
                return _error(404, f"Could not find any versions of model {name}")
            state = "LOADING" if time.monotonic() - self._started < self.loading_s else "AVAILABLE"
            return web.json_response({"model_version_status": [
                {"version": str(version), "state": state, "status": {"error_code": "OK", "error_message": ""}}]})
        if verb != "predict" or request.method != "POST":
            return _error(404, f"Malformed request: {request.method} {request.path}")
        if version is None or version not in available:
            return _error(404, f"Servable not found for request: Latest({name})")
        if time.monotonic() - self._started < self.loading_s:
            return _error(503, f"Servable not found for request: Latest({name}) (loading)")
        try:
            body = json.loads(await request.read())
        except ValueError as exc:
            return _error(400, f"JSON Parse error: {exc}")
        signature_name = body.get("signature_name", "serving_default")
        model = await asyncio.to_thread(self._loaded, name, version)
        if signature_name not in model.signatures:
            return _error(400, f'Serving signature name: "{signature_name}" not found in signature def')
        fn = model.signatures[signature_name]
        input_names = sorted(fn.structured_input_signature[1])
        try:
            if "inputs" in body:
                fmt, inputs = "inputs", body["inputs"]
                if not isinstance(inputs, dict):
                    inputs = {input_names[0]: inputs}
            elif "instances" in body:
                fmt, rows = "instances", body["instances"]
                if rows and isinstance(rows[0], dict):
                    inputs = {k: [r[k] for r in rows] for k in input_names}
                else:
                    inputs = {input_names[0]: rows}
            else:
                return _error(400, 'Missing "inputs" or "instances" key')
            arrays = {k: np.asarray(inputs[k], dtype=np.float32) for k in input_names}
        except (KeyError, ValueError, TypeError) as exc:
            return _error(400, f"Failed to process input: {exc!r}")
        n = int(next(iter(arrays.values())).shape[0])
        self.requests.append(Request("POST", name, version, "predict", signature_name, fmt, n))
        try:
            out = await asyncio.to_thread(_call, fn, arrays)
        except Exception as exc:  # noqa: BLE001 - TF's own errors (bad shape, ...) as TF Serving answers them
            return _error(400, f"{type(exc).__name__}: {exc}")
        if fmt == "inputs":
            payload: dict[str, Any] = {"outputs": {k: v.tolist() for k, v in out.items()}}
        else:
            payload = {"predictions": [{k: v[i].tolist() for k, v in out.items()} for i in range(n)]}
        return web.Response(text=json.dumps(payload), content_type="application/json")


def _call(fn: Any, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    return {k: v.numpy() for k, v in fn(**{k: tf.constant(a) for k, a in arrays.items()}).items()}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@contextlib.contextmanager
def serving_in_thread(base: Path, **kwargs: Any) -> Iterator[FakeTFServing]:
    """Run a FakeTFServing on its own event loop in a thread, for tests that call a blocking client."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            holder["server"] = loop.run_until_complete(FakeTFServing(base, **kwargs).start())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            holder["error"] = exc
            loop.close()
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(holder["server"].close())
        loop.close()

    thread = threading.Thread(target=main, name="fake-tfserving", daemon=True)
    thread.start()
    ready.wait(120)
    if "error" in holder:
        raise holder["error"]
    try:
        yield holder["server"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
