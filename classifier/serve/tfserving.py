"""A backbone served by TensorFlow Serving: `predict` sends log-mel patches to its REST predict API.

    TFServingBackbone("http://tfs:8501", "msd_musicnn").predict(patches, batch_size)   as Backbone.predict
        POST /v1/models/msd_musicnn[/versions/N]:predict
             {"signature_name": "serving_default", "inputs": {"log_mel": [[[...187 x 96...]], ...]}}
        <-   {"outputs": {"tags": [[...50]], "embedding": [[...200]], "pooled": [[...1506]]}}

The model is one `spy export` wrote (`classifier/training/export.py` documents the signature). The service's model
worker gets these instead of in-process networks when TF Serving is configured (`loader`), so requests are
still batched across users here, and TF Serving can batch again across service replicas.

Blocking by design: the engine's one model thread (in `spy serve` or in-process) calls it. One keep-alive
connection per instance, guarded by a lock. Every failure is `ClassifierUnavailable` (HTTP 503 to the caller).

Why floats as text with 9 significant digits: that is the shortest decimal form that gives every float32 back
bit for bit, and formatting rows with one %-template is about 4x faster than `json.dumps(x.tolist())`. Even so,
JSON costs: 64 patches are ~13 MB of text. The REST API is what every TF Serving build has; its gRPC API
(binary tensors) is the faster path if encoding ever shows up in the service's `network` stage timings.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
import weakref
from typing import Any, Callable

import numpy as np

from classifier import errors
from classifier.model.backbone import (
    BackboneOutput,
    BackboneParams,
    load_labels,
    load_params,
)
from classifier.training.export import INPUT, OUTPUTS, SIGNATURE

__all__ = ["TFServingBackbone", "loader", "encode_request", "decode_outputs"]

log = logging.getLogger(__name__)

_WIDTHS = {"tags": 50, "embedding": 200, "pooled": 1506}
_NON_FINITE = re.compile(r"nan|inf")
_JSON_SPECIAL = {"nan": "NaN", "inf": "Infinity"}    # TF Serving's (and Python's) spelling; "-inf" -> "-Infinity"


def encode_request(patches: np.ndarray, signature: str = SIGNATURE) -> bytes:
    """The predict request body for patches [shape=(n, frames, mels), float32], in the columnar format."""
    x = np.asarray(patches, dtype=np.float32)
    n, frames, mels = x.shape
    row = "[" + ",".join(["%.9g"] * mels) + "]"
    rows = [row % tuple(r) for r in x.reshape(n * frames, mels).tolist()]
    text = "[" + ",".join("[" + ",".join(rows[i:i + frames]) + "]" for i in range(0, len(rows), frames)) + "]"
    if not np.isfinite(x).all():
        text = _NON_FINITE.sub(lambda m: _JSON_SPECIAL[m.group(0)], text)
    return (f'{{"signature_name":{json.dumps(signature)},"inputs":{{{json.dumps(INPUT)}:' + text + "}}").encode()


def decode_outputs(payload: Any, n: int, names: tuple[str, ...] = OUTPUTS) -> dict[str, np.ndarray]:
    """`{"outputs": {name: nested lists}}` -> float32 arrays, each checked to be (n, width)."""
    outputs = payload.get("outputs") if isinstance(payload, dict) else None
    if not isinstance(outputs, dict):
        raise ValueError(f"expected a JSON object with named 'outputs', got {str(payload)[:200]!r}")
    arrays = {}
    for name in names:
        if name not in outputs:
            raise ValueError(f"the answer has no output {name!r} (has {sorted(outputs)})")
        a = np.asarray(outputs[name], dtype=np.float32)
        width = _WIDTHS.get(name)
        if a.ndim != 2 or a.shape[0] != n or (width is not None and a.shape[1] != width):
            raise ValueError(f"output {name!r} has shape {a.shape}, expected ({n}, {width or 'k'})")
        arrays[name] = a
    return arrays


class TFServingBackbone:
    """One model on a TensorFlow Serving server, with the same `predict` as `Backbone`.

    Parameters
    ----------
    url : the server's REST address, e.g. ``http://tfserving:8501`` (a path prefix is kept)
    name : the model name there, which is also the backbone's name (`models/<name>/` gives params and labels)
    signature : the SavedModel signature to call (`serving_default`: tags, embedding, pooled)
    version : pin a model version (default: whichever version the server serves)
    timeout_s : socket timeout for one request

    Attributes
    ----------
    name, params, labels : as `Backbone`, so `pipeline.analyse` and the service's worker take it unchanged
    """

    def __init__(self, url: str, name: str, *, signature: str = SIGNATURE, version: int | None = None,
                 timeout_s: float = 30.0, params: BackboneParams | None = None,
                 labels: tuple[str, ...] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a TF Serving URL looks like http://host:8501, not {url!r}")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.name = name
        self.params = params or load_params(name)
        self.labels = labels or load_labels(name)
        self.signature = signature
        self.version = version
        self.timeout_s = timeout_s
        self._conns: list[http.client.HTTPConnection] = []     # the keep-alive connection, when open
        self._lock = threading.Lock()
        # The service's model worker drops its networks without closing them: close the socket with the object.
        weakref.finalize(self, _close_all, self._conns)

    def __repr__(self) -> str:
        return f"TFServingBackbone({self.url!r}, {self.name!r}, signature={self.signature!r})"

    @property
    def model_path(self) -> str:
        """The REST path of the model (or the pinned version)."""
        path = f"{self._prefix}/v1/models/{urllib.parse.quote(self.name)}"
        return path + (f"/versions/{self.version}" if self.version is not None else "")

    # -- the Backbone contract -------------------------------------------------------------------------
    def predict(self, patches: np.ndarray, batch_size: int = 32) -> BackboneOutput:
        """Run the served network over log-mel patches, `batch_size` patches per request.

        Parameters
        ----------
        patches : np.ndarray [shape=(n, 187, 96), dtype=float32]; n may be 0 (no request is sent)
        batch_size : most patches per predict request (the server may batch requests again)

        Returns
        -------
        BackboneOutput with tags (n, 50), embedding (n, 200), pooled (n, 1506), all float32.

        Raises
        ------
        ValueError for patches of the wrong shape; ClassifierUnavailable when the server fails.
        """
        p = self.params
        x = np.asarray(patches, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (p.patch_frames, p.n_mels):
            raise ValueError(f"patches must be (n, {p.patch_frames}, {p.n_mels}), got {x.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = x.shape[0]
        out = BackboneOutput(*(np.empty((n, _WIDTHS[k]), np.float32) for k in OUTPUTS))
        for start in range(0, n, batch_size):
            batch = x[start:start + batch_size]
            arrays = self._predict_batch(batch)
            stop = start + len(batch)
            out.tags[start:stop] = arrays["tags"]
            out.embedding[start:stop] = arrays["embedding"]
            out.pooled[start:stop] = arrays["pooled"]
        return out

    def _predict_batch(self, x: np.ndarray) -> dict[str, np.ndarray]:
        status, payload = self._request("POST", self.model_path + ":predict", encode_request(x, self.signature))
        if status != 200:
            raise errors.ClassifierUnavailable(detail=f"TF Serving {self.name}: HTTP {status}: {_error_text(payload)}")
        try:
            return decode_outputs(payload, int(x.shape[0]))
        except ValueError as exc:
            raise errors.ClassifierUnavailable(detail=f"TF Serving {self.name}: {exc}") from exc

    # -- the model's state on the server ----------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """`model_version_status` from `GET /v1/models/<name>`: [{"version", "state", "status"}, ...]."""
        code, payload = self._request("GET", self.model_path, None)
        if code != 200:
            raise errors.ClassifierUnavailable(detail=f"TF Serving {self.name}: HTTP {code}: {_error_text(payload)}")
        versions = payload.get("model_version_status") if isinstance(payload, dict) else None
        if not isinstance(versions, list):
            raise errors.ClassifierUnavailable(detail=f"TF Serving {self.name}: no model_version_status")
        return versions

    def wait_available(self, timeout_s: float = 300.0, poll_s: float = 1.0) -> None:
        """Block until a version of the model is AVAILABLE (TF Serving loads models in the background)."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while True:
            try:
                states = self.status()
                if any(v.get("state") == "AVAILABLE" for v in states):
                    return
                last = ", ".join(f"v{v.get('version')} {v.get('state')}" for v in states) or "no versions"
            except errors.ClassifierUnavailable as exc:
                last = exc.detail or str(exc)
            if time.monotonic() + poll_s > deadline:
                raise errors.ClassifierUnavailable(
                    detail=f"TF Serving at {self.url} has no AVAILABLE version of {self.name} after {timeout_s:g} s "
                           f"({last})")
            log.info("waiting for TF Serving to load %s (%s)", self.name, last)
            time.sleep(poll_s)

    def close(self) -> None:
        """Close the keep-alive connection (a later call opens a new one)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> "TFServingBackbone":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP -----------------------------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        if not self._conns:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conns.append(cls(self._host, self._port, timeout=self.timeout_s))
        return self._conns[0]

    def _request(self, method: str, path: str, body: bytes | None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        with self._lock:
            for attempt in (1, 2):
                reused = bool(self._conns)
                conn = self._connection()
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if resp.will_close:
                        self._drop()
                    break
                except (TimeoutError, socket.timeout) as exc:
                    self._drop()
                    raise errors.ClassifierUnavailable(
                        detail=f"TF Serving {method} {path}: no answer in {self.timeout_s:g} s") from exc
                except (OSError, http.client.HTTPException) as exc:
                    self._drop()
                    # a keep-alive connection the server closed while idle: one fresh try
                    if reused and attempt == 1:
                        continue
                    raise errors.ClassifierUnavailable(detail=f"TF Serving {method} {path}: {exc!r}") from exc
        try:
            payload = json.loads(data) if data else None
        except ValueError:
            payload = data[:200].decode("utf-8", "replace")
        return resp.status, payload

    def _drop(self) -> None:
        _close_all(self._conns)


def _close_all(conns: list[http.client.HTTPConnection]) -> None:
    while conns:
        conns.pop().close()


def _error_text(payload: Any) -> str:
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])[:300]
    return str(payload)[:300]


def loader(url: str, *, timeout_s: float = 30.0, wait_s: float = 300.0,
           signature: str = SIGNATURE) -> Callable[[str], TFServingBackbone]:
    """A `ModelWorker` loader: backbone name -> the same model on TF Serving, once it is AVAILABLE.

    The worker calls it in its own thread at start and then warms the model up with one predict, so the
    service's /readyz turns 200 only when TF Serving answers for every backbone the service uses.
    """

    def load(name: str) -> TFServingBackbone:
        backbone = TFServingBackbone(url, name, signature=signature, timeout_s=timeout_s)
        backbone.wait_available(wait_s)
        log.info("using %s on TF Serving at %s", name, url)
        return backbone

    return load
