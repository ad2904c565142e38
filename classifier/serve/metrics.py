"""The engine's metrics through prometheus-client, in one `CollectorRegistry` per engine (`GET /metrics`).

Request latency by route, model batches (patches and requests per network call), per-job stage timings,
event-loop lag, the queue gauges (the HPA in deploy/classifier-hpa.yaml scales on `spy_queue_jobs`) and a
slices-per-second rate: enough to see where a slow answer spent its time. The names and labels are the
ones the hand-written exporter had, so dashboards keep working. A registry per engine, not the library's
global one, because tests run several apps in one process and each must count only its own requests.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

__all__ = ["Metrics"]

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_PATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_LAG = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_RATE_WINDOW_S = 10.0


class Metrics:
    """Counters, histograms and gauges of one engine; every method is safe to call from any thread.

    Parameters
    ----------
    registry : where the metrics live (default: a fresh one, so two engines in a process never mix)
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter("spy_requests", "Requests by route, method and status.",
                                 ("route", "method", "status"), registry=r)
        self._request_seconds = Histogram("spy_request_seconds", "Request latency by route.", ("route",),
                                          buckets=_SECONDS, registry=r)
        self._stage_seconds = Histogram("spy_stage_seconds", "Job time per stage (queue, fetch, decode, features, "
                                        "network, total).", ("stage",), buckets=_SECONDS, registry=r)
        self._batch_patches = Histogram("spy_batch_patches", "Patches per network batch, by model.", ("model",),
                                        buckets=_PATCHES, registry=r)
        self._batch_requests = Histogram("spy_batch_requests", "Requests sharing one network batch.",
                                         buckets=_PATCHES, registry=r)
        self._loop_lag = Histogram("spy_event_loop_lag_seconds", "How late a 50-ms timer on the event loop fires.",
                                   buckets=_LAG, registry=r)
        self._network_patches = Counter("spy_network_patches", "Patches through the network, by model.", ("model",),
                                        registry=r)
        self._network_seconds = Counter("spy_network_seconds", "Seconds the network ran, by model.", ("model",),
                                        registry=r)
        self._slices = Counter("spy_slices", "Audio slices analysed.", registry=r)
        self._lag_max = Gauge("spy_event_loop_lag_max_seconds", "Largest event-loop lag seen.", registry=r)
        Gauge("spy_slices_per_second", f"Slices analysed per second over the last {_RATE_WINDOW_S:.0f} s.",
              registry=r).set_function(self.slices_per_second)
        self._lock = threading.Lock()
        self._lag_max_s = 0.0
        self._recent: deque[tuple[float, int]] = deque()   # (monotonic, slices) of jobs in the rate window

    # -- what the engine and the HTTP layer report ---------------------------------------------------------
    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self._requests.labels(route, method, str(status)).inc()
        self._request_seconds.labels(route).observe(seconds)

    def batch(self, model: str, patches: int, requests: int, seconds: float) -> None:
        """The model worker's `on_batch` hook (called in its thread)."""
        self._batch_patches.labels(model).observe(patches)
        self._batch_requests.observe(requests)
        self._network_patches.labels(model).inc(patches)
        self._network_seconds.labels(model).inc(seconds)

    def job(self, timings: dict[str, float], slices: int) -> None:
        for stage, seconds in timings.items():
            self._stage_seconds.labels(stage).observe(seconds)
        self._slices.inc(slices)
        with self._lock:
            self._recent.append((time.monotonic(), slices))

    def lag(self, seconds: float) -> None:
        self._loop_lag.observe(seconds)
        with self._lock:
            if seconds > self._lag_max_s:
                self._lag_max_s = seconds
                self._lag_max.set(seconds)

    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read when /metrics is scraped (queue depth, readiness)."""
        Gauge(name, doc, registry=self.registry).set_function(read)

    # -- reading ---------------------------------------------------------------------------------------------
    def slices_per_second(self) -> float:
        with self._lock:
            now = time.monotonic()
            while self._recent and self._recent[0][0] < now - _RATE_WINDOW_S:
                self._recent.popleft()
            return sum(n for _, n in self._recent) / _RATE_WINDOW_S

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """Everything, in the format the scraper's Accept header asks for: (body, content type).

        The classic text format 0.0.4 unless the scraper asks for a newer one (OpenMetrics, text 1.0.0).
        """
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
