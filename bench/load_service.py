"""Load test: N concurrent clients x M requests of 30-s clips against `spy serve` on loopback.

    .venv/bin/python bench/load_service.py [--clients 16] [--requests 4] [--single 8] [--route genre]
                                           [--soak-seconds 0] [--overload 0] [--max-seconds 900]

Starts `spy serve` on 127.0.0.1 (a free port, a random token, a temporary data dir) unless `--url` names
one already running (loopback only). Phases, each bounded in count and in time:

    single   one client, requests one at a time (the baseline)
    N        --clients clients, --requests each, all at once (the batching case)
    soak     --clients clients for --soak-seconds, sampling the server's RSS (memory must stay flat)
    overload --overload clients at once, two requests each (429 must appear only past max_queue_jobs)

Prints throughput, p50/p95/p99 latency, responses by status, the server's event-loop lag (from its
/metrics histogram, per phase), batch sizes, the server's peak RSS, and the server's CPU seconds per answer
(process + reaped ffmpeg/ffprobe children), which a neighbour's load on a shared CPU does not distort.
The clips are generated with classifier.demo (nothing is downloaded).

What batching buys where. On a CPU, musicnn costs about the same per patch in a batch of 1 as in a batch
of 64 (~15 ms on this host's cores), so gathering patches saves little network time; concurrency pays by
overlapping one job's decode (ffmpeg, another core) with another's network, and so needs idle cores. On
a GPU a small batch is launch- and dispatch-bound: a call on 64 patches takes about as long as one on
10, so one batch gathered from six requests does six requests' network work in one call, and throughput
grows with the batch until the GPU is busy. Then decode and features on the CPU become the limit
(about a quarter of a CPU-second per 30-s clip here), so a GPU host wants max_concurrent_decodes near its core count
and a larger batch_size (patches per network call) and max_batch_size.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from classifier.serve.http import is_loopback  # noqa: E402
from classifier.training import demo  # noqa: E402

STYLES = ("Deep Pulse", "Iron Riff", "Slow Tide", "Broken Glass")


@dataclass
class Phase:
    name: str
    clients: int
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    lag: dict[str, float] = field(default_factory=dict)
    batches: dict[str, float] = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    network_busy: float = float("nan")
    cpu_s: float = float("nan")
    rss_mb: list[tuple[float, float]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s if self.wall_s else 0.0


# --- the server -------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workdir: Path, token: str, env_extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {**os.environ, "CLASSIFIER_TOKEN": token, "SPY_DATA_DIR": str(workdir / "data"), "SPY_LOG_LEVEL": "WARNING",
           "TF_CPP_MIN_LOG_LEVEL": "2", **env_extra}
    log_path = workdir / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "spy", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))  # noqa: SIM115
    return proc, f"http://127.0.0.1:{port}", log_path


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes] | None,
                     timeout_s: float = 240.0) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"spy serve exited with {proc.returncode}")
        try:
            async with session.get(url + "/readyz") as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.25)
    raise SystemExit("spy serve did not get ready in time")


def cpu_s(pid: int | None) -> float:
    """CPU seconds of the server and its reaped children (ffmpeg, ffprobe): a neighbour-proof cost measure."""
    if not pid:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else None


async def sample_rss(pid: int, out: list[tuple[float, float]], every_s: float = 0.5) -> None:
    t0 = time.monotonic()
    while True:
        v = rss_mb(pid)
        if v is not None:
            out.append((time.monotonic() - t0, v))
        await asyncio.sleep(every_s)


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def lag_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """p50/p99 (bucket upper bounds) and mean of the event-loop lag observed between two scrapes."""
    buckets = sorted(
        (float(m.group(1)) if m.group(1) != "+Inf" else float("inf"), after[k] - before.get(k, 0.0))
        for k in after if (m := re.fullmatch(r'spy_event_loop_lag_seconds_bucket\{le="([^"]+)"\}', k)))
    total = buckets[-1][1] if buckets else 0.0
    out = {"ticks": total}
    for q in (0.5, 0.99):
        out[f"p{int(q * 100)}"] = next((le for le, c in buckets if c >= q * total), float("nan"))
    s = after.get("spy_event_loop_lag_seconds_sum", 0) - before.get("spy_event_loop_lag_seconds_sum", 0)
    out["mean"] = s / total if total else float("nan")
    out["max_ever"] = after.get("spy_event_loop_lag_max_seconds", float("nan"))
    return out


def stage_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean seconds per job in each stage between two scrapes (from spy_stage_seconds)."""
    out = {}
    for k in after:
        m = re.fullmatch(r'spy_stage_seconds_count\{stage="([^"]+)"\}', k)
        if m:
            n = after[k] - before.get(k, 0.0)
            key = f'spy_stage_seconds_sum{{stage="{m.group(1)}"}}'
            out[m.group(1)] = (after[key] - before.get(key, 0.0)) / n if n else float("nan")
    return out


def batch_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    out = {}
    for k in after:
        m = re.fullmatch(r'spy_batch_patches_count\{model="([^"]+)"\}', k)
        if m:
            n = after[k] - before.get(k, 0.0)
            s = after[f'spy_batch_patches_sum{{model="{m.group(1)}"}}'] - before.get(f'spy_batch_patches_sum{{model="{m.group(1)}"}}', 0.0)
            out[m.group(1)] = s / n if n else float("nan")
    return out


# --- the clients ------------------------------------------------------------------------------------------------

async def one_request(session: aiohttp.ClientSession, url: str, token: str, clip: bytes, phase: Phase) -> None:
    t0 = time.perf_counter()
    try:
        async with session.post(url, data=io.BytesIO(clip), params={"name": "bench.wav"},
                                headers={"Authorization": f"Bearer {token}", "Content-Type": "audio/wav"}) as r:
            await r.read()
            status = r.status
    except aiohttp.ClientError as exc:
        status = f"error:{type(exc).__name__}"   # type: ignore[assignment]
    phase.statuses[status] += 1
    if status == 200:
        phase.latencies.append(time.perf_counter() - t0)


async def run_phase(phase: Phase, session: aiohttp.ClientSession, base: str, token: str, route: str,
                    clips: list[bytes], *, requests: int | None, until: float) -> None:
    """`phase.clients` clients; each sends `requests` requests (or keeps going until `until`), one at a time."""
    url = f"{base}/v1/{route}"
    t0 = time.monotonic()

    async def client(i: int) -> None:
        k = 0
        while (requests is None or k < requests) and time.monotonic() < until:
            await one_request(session, url, token, clips[(i + k) % len(clips)], phase)
            k += 1

    await asyncio.gather(*(client(i) for i in range(phase.clients)))
    phase.wall_s = time.monotonic() - t0


async def measured(phase: Phase, session: aiohttp.ClientSession, base: str, pid: int | None, **kw: object) -> Phase:
    before = await scrape(session, base)
    cpu0 = cpu_s(pid)
    sampler = asyncio.create_task(sample_rss(pid, phase.rss_mb)) if pid else None
    try:
        await run_phase(phase, session, base, **kw)  # type: ignore[arg-type]
    finally:
        if sampler:
            sampler.cancel()
    after = await scrape(session, base)
    phase.cpu_s = cpu_s(pid) - cpu0
    phase.lag = lag_summary(before, after)
    phase.batches = batch_summary(before, after)
    phase.stages = stage_summary(before, after)
    busy = sum(after[k] - before.get(k, 0.0) for k in after if k.startswith("spy_network_seconds_total"))
    phase.network_busy = busy / phase.wall_s if phase.wall_s else float("nan")
    return phase


def report(phase: Phase) -> str:
    lat = np.array(phase.latencies) if phase.latencies else np.array([np.nan])
    p50, p95, p99 = (np.percentile(lat, q) for q in (50, 95, 99))
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(phase.statuses.items(), key=lambda kv: str(kv[0])))
    lag = phase.lag
    batches = ", ".join(f"{m} {v:.1f}" for m, v in phase.batches.items())
    rss = f"{max(v for _, v in phase.rss_mb):.0f} MB peak" if phase.rss_mb else "n/a"
    return (f"{phase.name:<10} clients {phase.clients:>3}  requests {sum(phase.statuses.values()):>4}  "
            f"wall {phase.wall_s:6.1f} s  throughput {phase.throughput:5.2f} req/s  "
            f"latency p50 {p50:5.2f} p95 {p95:5.2f} p99 {p99:5.2f} s\n"
            f"{'':<10} status {{{statuses}}}  loop lag p50 <= {lag.get('p50', float('nan')) * 1000:.1f} ms, "
            f"p99 <= {lag.get('p99', float('nan')) * 1000:.1f} ms, mean {lag.get('mean', float('nan')) * 1000:.1f} ms  "
            f"mean batch [{batches}] patches  server RSS {rss}\n"
            f"{'':<10} per job: " + ", ".join(f"{k} {v:.2f}" for k, v in phase.stages.items() if k != "vote")
            + f" s; network busy {100 * phase.network_busy:.0f}% of the wall; server CPU "
            f"{phase.cpu_s / max(1, phase.ok):.2f} s per answer ({phase.cpu_s / phase.wall_s:.2f} cores)")


def soak_trend(samples: list[tuple[float, float]]) -> str:
    if len(samples) < 8:
        return "too few samples"
    t = np.array([s[0] for s in samples])
    v = np.array([s[1] for s in samples])
    q = max(2, len(v) // 4)
    slope = np.polyfit(t[q:], v[q:], 1)[0] * 60   # after the first quarter (warm-up of allocator pools)
    return (f"RSS first quarter median {np.median(v[:q]):.0f} MB, last quarter median {np.median(v[-q:]):.0f} MB, "
            f"max {v.max():.0f} MB; trend after warm-up {slope:+.1f} MB/min over {t[-1] - t[q]:.0f} s")


async def main_async(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.max_seconds
    workdir = Path(tempfile.mkdtemp(prefix="spy-load-"))
    clip_paths = [demo.write_wav(workdir / f"clip{i}.wav", demo.render(s, 30.0, seed=i)) for i, s in enumerate(STYLES)]
    clips = [p.read_bytes() for p in clip_paths]
    proc = None
    if args.url:
        host = urlsplit(args.url).hostname or ""
        if not is_loopback(host):
            raise SystemExit("this bench only talks to loopback addresses")
        base, token = args.url.rstrip("/"), args.token or os.environ.get("CLASSIFIER_TOKEN", "")
    else:
        token = secrets.token_urlsafe(24)
        env = {**dict(kv.split("=", 1) for kv in args.server_env), "SPY_MAX_QUEUE_JOBS": str(args.max_queue_jobs), "SPY_MAX_BATCH_SIZE": str(args.max_batch_size),
               "SPY_MAX_CONCURRENT_DECODES": str(args.decodes), "SPY_MAX_BATCH_WAIT_MS": str(args.wait_ms),
               "SPY_BATCH_SIZE": str(args.network_batch)}
        proc, base, log_path = start_server(workdir, token, env)
        print(f"spy serve pid {proc.pid} on {base} (log {log_path}, removed at the end unless --keep); queue <= {args.max_queue_jobs} jobs, "
              f"batches <= {args.max_batch_size} in network calls of {args.network_batch}, {args.decodes} decode threads, wait {args.wait_ms} ms")
    pid = proc.pid if proc else args.pid
    phases: list[Phase] = []
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=300)
    try:
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            ready_s = await wait_ready(session, base, proc)
            print(f"ready after {ready_s:.1f} s; RSS {rss_mb(pid) if pid else float('nan'):.0f} MB; "
                  f"{args.route} on 30-s WAV clips (1.3 MB each)")
            warm = Phase("warm-up", 1)
            await run_phase(warm, session, base, token, args.route, clips, requests=2, until=deadline)
            kw = dict(token=token, route=args.route, clips=clips, until=deadline)
            # single and concurrent phases alternate, so a neighbour's load on a shared CPU hits both alike
            for _ in range(args.rounds):
                phases.append(await measured(Phase("single", 1), session, base, pid, requests=args.single, **kw))
                print(report(phases[-1]), flush=True)
                phases.append(await measured(Phase(f"x{args.clients}", args.clients), session, base, pid,
                                             requests=args.requests, **kw))
                print(report(phases[-1]), flush=True)
            if args.soak_seconds > 0:
                kw_soak = {**kw, "until": min(deadline, time.monotonic() + args.soak_seconds)}
                phases.append(await measured(Phase("soak", args.clients), session, base, pid, requests=None, **kw_soak))
                print(report(phases[-1]))
                print(f"{'':<10} {soak_trend(phases[-1].rss_mb)}", flush=True)
            if args.overload > 0:
                phases.append(await measured(Phase("overload", args.overload), session, base, pid, requests=2, **kw))
                print(report(phases[-1]), flush=True)
    finally:
        if proc is not None:
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=60)
                print(f"spy serve stopped on SIGTERM in {time.monotonic() - t0:.1f} s (exit {code})")
            except subprocess.TimeoutExpired:
                proc.kill()
                print("spy serve did not stop within 60 s of SIGTERM; killed")
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    singles = [p for p in phases if p.name == "single" and p.ok]
    manys = [p for p in phases if p.name.startswith("x") and p.ok]
    if singles and manys:
        one = sum(p.ok for p in singles) / sum(p.wall_s for p in singles)
        many = sum(p.ok for p in manys) / sum(p.wall_s for p in manys)
        per_round = ", ".join(f"{m.throughput / s.throughput:.2f}x" for s, m in zip(singles, manys))
        cpu1 = sum(p.cpu_s for p in singles) / sum(p.ok for p in singles)
        cpun = sum(p.cpu_s for p in manys) / sum(p.ok for p in manys)
        print(f"\nserver CPU per answer: {cpu1:.2f} s one at a time, {cpun:.2f} s with {args.clients} clients")
        print(f"speed-up with {args.clients} concurrent clients: {many / one:.2f}x ({many:.2f} vs {one:.2f} req/s; "
              f"per round {per_round})")
    fives = sum(v for p in phases for k, v in p.statuses.items() if isinstance(k, int) and k >= 500)
    others = sum(v for p in phases for k, v in p.statuses.items() if not isinstance(k, int))
    busy = {p.name: p.statuses.get(429, 0) for p in phases}
    print(f"5xx: {fives}; connection errors: {others}; 429 by phase: {busy}")
    return 1 if fives or others else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=4, help="requests per client in the concurrent phase")
    p.add_argument("--single", type=int, default=8, help="requests in the one-at-a-time phase")
    p.add_argument("--rounds", type=int, default=1, help="alternate the single and concurrent phases this often")
    p.add_argument("--route", choices=["genre", "identify"], default="genre")
    p.add_argument("--soak-seconds", type=float, default=0.0)
    p.add_argument("--overload", type=int, default=0, help="clients in the overload phase (0: skip)")
    p.add_argument("--max-seconds", type=float, default=900.0, help="stop issuing requests after this long")
    p.add_argument("--max-queue-jobs", type=int, default=32)
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--network-batch", type=int, default=32, help="batch_size: patches per network call")
    p.add_argument("--decodes", type=int, default=2, help="max_concurrent_decodes")
    p.add_argument("--wait-ms", type=float, default=10.0, help="max_batch_wait_ms")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the started server (e.g. TF_NUM_INTRAOP_THREADS=1)")
    p.add_argument("--url", help="an already running service on loopback (default: start one)")
    p.add_argument("--token", help="its token (default: $CLASSIFIER_TOKEN)")
    p.add_argument("--pid", type=int, help="its process id, for RSS")
    p.add_argument("--keep", action="store_true", help="keep the clips, the data dir and the server log")
    return asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
