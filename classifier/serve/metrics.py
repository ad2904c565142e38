"""The classifier service's metrics, in the Prometheus text format (`GET /metrics`).

Request latency by route, model batches (patches and requests per network call), per-job stage timings,
event-loop lag and a slices-per-second rate: enough to see where a slow answer spent its time.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque

__all__ = ["Metrics"]

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
