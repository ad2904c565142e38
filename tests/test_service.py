"""The engine and the service: the model worker's batching, the engine in-process (progress, admission,
deadline, its log line), the HTTP API's happy paths, metrics, shutdown, and the real network.

Most tests run the real engine and app (routes, middleware, decode pool, batcher) with a stand-in network,
so they take milliseconds; the ones marked slow load the real musicnn backbones and the trained demo head.
tests/test_parity.py checks that in-process and served answers are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from classifier import errors
from classifier.model.backbone import BackboneOutput
from classifier.model.verdict import GenreReport, Verdict
from classifier.serve import http as service
from classifier.serve.api import Query
from classifier.serve.batcher import BULK, ModelWorker
from classifier.serve.engine import Engine
from classifier.settings import Settings
from tests.fakes import media_host as _media
from tests.fakes import refusing_proxy as _proxy
from tests.fakes.media_host import MediaHost
from tests.fakes.refusing_proxy import RefusingProxy

# the loopback stand-ins' fixtures, bound here so pytest finds them (assigned, not imported: no shadowing)
media_dir, media_files, media_host, refusing_proxy = _media.media_dir, _media.media_files, _media.media_host, \
    _proxy.refusing_proxy

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAV = {**AUTH, "Content-Type": "audio/wav"}


# --- a stand-in network and a running app (shared with the other service test files) -------------------------

class FakeNet:
    """Deterministic per-patch outputs (they depend on each patch, so a mixed-up scatter shows), batch log."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay_s = delay_s
        self.gate = gate
        self.batches: list[int] = []
        self.seen: list[np.ndarray] = []      # every batch's patches, in order
        self.running = threading.Event()

    def predict(self, patches: np.ndarray, batch_size: int = 32) -> BackboneOutput:
        self.running.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(int(patches.shape[0]))
        self.seen.append(patches.copy())
        if self.delay_s:
            time.sleep(self.delay_s)
        return fake_outputs(patches)


def fake_outputs(patches: np.ndarray) -> BackboneOutput:
    m = patches.mean(axis=(1, 2)).astype(np.float32)[:, None]
    ramp = np.linspace(0.05, 0.95, 50, dtype=np.float32)[None, :]
    tags = np.clip(ramp + 0.01 * np.sin(m * 7 + np.arange(50)), 0, 1).astype(np.float32)
    emb = np.repeat(m, 200, axis=1) + np.arange(200, dtype=np.float32)
    pooled = np.repeat(m, 1506, axis=1)
    return BackboneOutput(tags, emb, pooled)


def fake_worker(net: FakeNet | None = None, names: tuple[str, ...] = ("msd_musicnn", "mtt_musicnn"),
                **kwargs: Any) -> ModelWorker:
    net = net or FakeNet()
    return ModelWorker(names, loader=lambda name: net, **kwargs)


def scraped(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics text -> {(sample name, sorted labels): value}, read by prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for family in text_string_to_metric_families(text) for smp in family.samples}


def service_settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", classifier_token=TOKEN, batch_size=16).replace(**changes)


async def wait_ready(client: TestClient, timeout_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() - t0 < timeout_s, "the service did not get ready"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[TestClient]:
    """The app on 127.0.0.1 behind aiohttp's test client, ready."""
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        await wait_ready(client)
        yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with running(service.make_app(service_settings(tmp_path), worker=fake_worker())) as c:
        yield c


# --- the model worker -------------------------------------------------------------------------------------------

def _patches(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 187, 96), dtype=np.float32)


async def test_worker_gathers_concurrent_requests_into_one_batch_and_scatters_back() -> None:
    net = FakeNet(delay_s=0.01)
    worker = fake_worker(net, names=("msd_musicnn",), max_batch_size=64, max_batch_wait_ms=50)
    await worker.start()
    net.batches.clear()   # the warm-up call
    try:
        inputs = [_patches(5, seed) for seed in range(8)]
        outs = await asyncio.gather(*(worker.predict("msd_musicnn", x) for x in inputs))
    finally:
        await worker.close()
    assert net.batches == [40]
    for x, out in zip(inputs, outs):
        want = fake_outputs(x)
        np.testing.assert_array_equal(out.tags, want.tags)
        np.testing.assert_array_equal(out.embedding, want.embedding)
        np.testing.assert_array_equal(out.pooled, want.pooled)


async def test_a_request_larger_than_a_batch_is_split_and_reassembled() -> None:
    net = FakeNet()
    worker = fake_worker(net, names=("msd_musicnn",), max_batch_size=16, max_batch_wait_ms=1)
    await worker.start()
    net.batches.clear()
    try:
        x = _patches(40, 1)
        out = await worker.predict("msd_musicnn", x)
    finally:
        await worker.close()
    assert net.batches == [16, 16, 8]
    np.testing.assert_array_equal(out.embedding, fake_outputs(x).embedding)


async def test_a_cancelled_request_leaves_the_queue() -> None:
    gate = threading.Event()
    net = FakeNet(gate=gate)
    worker = fake_worker(net, names=("msd_musicnn",), max_batch_size=8, max_batch_wait_ms=0)
    gate.set()
    await worker.start()
    gate.clear()
    net.batches.clear()
    net.running.clear()
    try:
        first = asyncio.ensure_future(worker.predict("msd_musicnn", _patches(3, 0)))
        await asyncio.to_thread(net.running.wait, 5)          # the worker is inside the first batch
        second = asyncio.ensure_future(worker.predict("msd_musicnn", _patches(5, 1)))
        await asyncio.sleep(0.01)
        assert worker.queued_patches() == 5
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        assert worker.queued_patches() == 0
        gate.set()
        await first
    finally:
        gate.set()
        await worker.close()
    assert net.batches == [3]


async def test_calls_run_in_the_model_thread_and_the_loop_stays_free() -> None:
    net = FakeNet(delay_s=0.2)
    worker = fake_worker(net, names=("msd_musicnn",))
    await worker.start()
    try:
        assert await worker.call(lambda: threading.current_thread().name) == "spy-model"
        loop = asyncio.get_running_loop()
        work = asyncio.ensure_future(worker.predict("msd_musicnn", _patches(4, 2)))
        worst = 0.0
        while not work.done():
            t = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - t - 0.01)
        await work
    finally:
        await worker.close()
    assert worst < 0.1


async def test_interactive_patches_go_before_queued_bulk_patches() -> None:
    gate = threading.Event()
    net = FakeNet(gate=gate)
    worker = fake_worker(net, names=("msd_musicnn",), max_batch_size=8, max_batch_wait_ms=0)
    gate.set()
    await worker.start()
    gate.clear()
    net.batches.clear()
    net.seen.clear()
    net.running.clear()
    long_set, short = _patches(24, 0), _patches(4, 1)
    try:
        bulk = asyncio.ensure_future(worker.predict("msd_musicnn", long_set, priority=BULK))
        await asyncio.to_thread(net.running.wait, 5)          # the first 8 bulk patches are in the network
        interactive = asyncio.ensure_future(worker.predict("msd_musicnn", short))
        while worker.queued_patches() < 16 + 4:
            await asyncio.sleep(0.005)
        gate.set()
        out, long_out = await interactive, await bulk
    finally:
        gate.set()
        await worker.close()
    assert net.batches == [8, 8, 8, 4]
    # the short request took the next batch's front; the set's patches filled the room it left
    np.testing.assert_array_equal(net.seen[1][:4], short)
    np.testing.assert_array_equal(net.seen[1][4:], long_set[8:12])
    np.testing.assert_array_equal(out.tags, fake_outputs(short).tags)
    np.testing.assert_array_equal(long_out.embedding, fake_outputs(long_set).embedding)


async def test_a_lone_request_does_not_wait_for_a_batch_nobody_else_can_fill() -> None:
    others = [False]
    worker = fake_worker(names=("msd_musicnn",), max_batch_wait_ms=2000, may_fill=lambda: others[0])
    await worker.start()
    try:
        t0 = time.monotonic()
        await worker.predict("msd_musicnn", _patches(3, 0))
        alone = time.monotonic() - t0
        others[0] = True
        t0 = time.monotonic()
        await worker.predict("msd_musicnn", _patches(3, 1))
        waited = time.monotonic() - t0
    finally:
        await worker.close()
    assert alone < 1.0 <= waited          # 2 s of max_batch_wait_ms: skipped alone, served with others about


async def test_a_closed_worker_refuses_work() -> None:
    worker = fake_worker(names=("msd_musicnn",))
    await worker.start()
    await worker.close()
    assert not worker.ready
    with pytest.raises(errors.ClassifierUnavailable):
        await worker.predict("msd_musicnn", _patches(1, 0))


# --- the engine in-process (what the CLI and the bots hold) with the stand-in network -----------------------------

async def test_the_engine_starts_on_first_use_reports_progress_and_logs_one_line(
        tmp_path: Path, audio_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="classifier.serve.engine")
    seen: list[tuple[str, int, int]] = []

    async def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))

    engine = Engine(service_settings(tmp_path), worker=fake_worker())
    try:
        assert not engine.ready
        report = await engine.genre(Query(path=audio_dir / "loop.wav"), progress)
        assert engine.ready and engine.active == 0
    finally:
        await engine.aclose()
    assert report.source == "loop.wav" and report.slices == 7 and report.hint is None
    analysing = [(done, total) for stage, done, total in seen if stage == "analysing"]
    assert [stage for stage, _, _ in seen] == ["analysing"] * len(analysing) + ["done"] and seen[-1] == ("done", 1, 1)
    assert analysing[-1] == (7, 7) and [d for d, _ in analysing] == sorted(d for d, _ in analysing)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job ")]
    assert len(lines) == 1, lines
    assert re.fullmatch(r"job 1 genre host=file audio=20\.0s slices=7 timings=queue=\S+ decode=\S+ features=\S+ "
                        r"network=\S+ total=\S+ vote=\S+", lines[0]), lines[0]


async def test_the_engine_refuses_past_max_queue_jobs_and_past_its_deadline(tmp_path: Path, audio_dir: Path) -> None:
    clip = Query(path=audio_dir / "loop.wav")
    async with Engine(service_settings(tmp_path, max_queue_jobs=1), worker=fake_worker()) as engine:
        with engine.admit():
            with pytest.raises(errors.Busy) as busy:
                await engine.genre(clip)
        assert 1 <= busy.value.retry_after_s <= 60
        assert (await engine.genre(clip)).slices == 7            # the place is free again
    with pytest.raises(errors.ClassifierUnavailable, match="restarting"):
        await engine.genre(clip)                                  # closed: refuses, and loads nothing again
    async with Engine(service_settings(tmp_path, request_deadline_s=0.3), worker=fake_worker(FakeNet(0.5))) as slow:
        with pytest.raises(errors.DeadlineExceeded):
            await slow.genre(clip)
        assert slow.active == 0 and slow.worker.queued_patches() == 0


async def test_a_refused_job_is_logged_with_its_code(tmp_path: Path, audio_dir: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="classifier.serve.engine")
    async with Engine(service_settings(tmp_path), worker=fake_worker()) as engine:
        with pytest.raises(errors.Silent):
            await engine.genre(Query(path=audio_dir / "silence.wav"))
        with pytest.raises(errors.NoModel):
            await engine.identify(Query(path=audio_dir / "loop.wav"))
        about = await engine.about()
        assert (about["backbones"], about["model"]) == (["msd_musicnn", "mtt_musicnn"], None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("job ")]
    assert lines == ["job 1 genre host=file refused: silent (rms -inf dBFS)", "job 2 identify host=file refused: no_model ()"]


async def test_each_app_counts_only_its_own_jobs(tmp_path: Path, audio_dir: Path) -> None:
    apps = [service.make_app(service_settings(tmp_path / str(i)), worker=fake_worker()) for i in range(2)]
    async with running(apps[0]) as first, running(apps[1]) as second:
        assert (await first.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV)).status == 200
        one = scraped(await (await first.get("/metrics")).text())
        two = scraped(await (await second.get("/metrics")).text())
    assert one["spy_slices_total", ()] == 7 and two["spy_slices_total", ()] == 0


@pytest.mark.slow
async def test_stages_run_beside_the_network_and_add_to_the_verdict(trained: Settings, audio_dir: Path) -> None:
    seen: list[tuple[str, str, float, float]] = []

    def matcher(clip: Any) -> dict[str, Any]:
        seen.append((threading.current_thread().name, clip.path.name, clip.seek_s, clip.duration_s))
        return {"match": {"title": "A known track"}}

    def broken(clip: Any) -> dict[str, Any]:
        raise RuntimeError("a stage that fails on silence")

    async with Engine(trained, worker=fake_worker(), stages=[matcher]) as engine:
        verdict = await engine.identify(Query(path=audio_dir / "loop.wav", at=2.0))
        report = await engine.genre(Query(path=audio_dir / "loop.wav"))
    assert verdict.extra == {"match": {"title": "A known track"}} and verdict.slices == 6 and report.slices == 7
    assert len(seen) == 1 and seen[0][0].startswith("spy-decode") and seen[0][1:] == ("loop.wav", 2.0, 120.0)
    async with Engine(trained, worker=fake_worker(), stages=[broken]) as engine:
        with pytest.raises(errors.Silent):                     # the clip's own refusal, not the stage's error
            await engine.identify(Query(path=audio_dir / "silence.wav"))


# --- the API with the stand-in network ------------------------------------------------------------------------

async def test_probes_and_the_api_description(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["models"] == ["msd_musicnn", "mtt_musicnn"]
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/genre", "/v1/identify", "/healthz", "/readyz", "/metrics"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


async def test_genre_of_an_uploaded_file_has_the_cli_shape(client: TestClient, audio_dir: Path) -> None:
    resp = await client.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV,
                             params={"name": "loop.wav"})
    assert resp.status == 200, await resp.text()
    d = await resp.json()
    assert d["source"] == "loop.wav" and d["start"] == 0.0 and d["hint"] is None
    assert d["slices"] == 7 and abs(d["seconds"] - 20.0) < 0.05             # 6 regular windows + the tail
    assert len(d["timeline"]) == 7 and {g["label"] for g in d["genres"]}
    assert set(d["timings"]) >= {"queue", "decode", "features", "network", "total"}
    assert GenreReport.from_dict(d).to_dict() == d                          # exactly the stable shape


async def test_multipart_upload_with_a_start_and_a_length(client: TestClient, audio_dir: Path) -> None:
    form = aiohttp.FormData()
    form.add_field("at", "0:05")
    form.add_field("seconds", "9")
    form.add_field("file", (audio_dir / "voice.ogg").read_bytes(), filename="voice.ogg", content_type="audio/ogg")
    resp = await client.post("/v1/genre", data=form, headers=AUTH)
    assert resp.status == 200, await resp.text()
    d = await resp.json()
    assert d["start"] == 5.0 and abs(d["seconds"] - 9.0) < 0.05 and d["slices"] == 3
    assert d["timeline"][0]["t"] == 5.0


async def test_long_uploads_are_cut_to_max_clip_seconds_with_a_hint(tmp_path: Path, audio_dir: Path) -> None:
    app = service.make_app(service_settings(tmp_path, max_clip_seconds=9.0), worker=fake_worker())
    async with running(app) as client:
        resp = await client.post("/v1/genre", data=(audio_dir / "loop.mp3").read_bytes(),
                                 headers={**AUTH, "Content-Type": "audio/mpeg"})
        d = await resp.json()
    assert resp.status == 200 and abs(d["seconds"] - 9.0) < 0.05
    assert d["hint"] and "0:00" in d["hint"]


async def test_metrics_count_requests_batches_and_stages(client: TestClient, audio_dir: Path) -> None:
    body = (audio_dir / "loop.wav").read_bytes()
    await asyncio.gather(*(client.post("/v1/genre", data=body, headers=WAV) for _ in range(3)))
    await client.post("/v1/genre", data=body, headers={"Content-Type": "audio/wav"})   # 401
    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")   # what Prometheus 2 reads
    text = await resp.text()
    got = scraped(text)
    assert got["spy_requests_total", (("method", "POST"), ("route", "/v1/genre"), ("status", "200"))] == 3
    assert got["spy_requests_total", (("method", "POST"), ("route", "/v1/genre"), ("status", "401"))] == 1
    assert got["spy_network_patches_total", (("model", "msd_musicnn"),)] == 21          # 3 x 7 slices
    assert got["spy_stage_seconds_count", (("stage", "network"),)] == 3
    assert got["spy_batch_patches_count", (("model", "mtt_musicnn"),)] >= 1
    assert got["spy_queue_jobs", ()] == 0 and got["spy_queue_jobs_limit", ()] == 32 and got["spy_ready", ()] == 1
    assert got["spy_slices_total", ()] == 21 and got["spy_slices_per_second", ()] > 0
    assert got["spy_event_loop_lag_seconds_bucket", (("le", "+Inf"),)] >= 1
    assert TOKEN not in text


async def test_a_client_that_hangs_up_takes_its_job_out_of_the_queue(tmp_path: Path, audio_dir: Path) -> None:
    gate = threading.Event()
    net = FakeNet(gate=gate)
    gate.set()
    worker = fake_worker(net, max_batch_size=4)
    app = service.make_app(service_settings(tmp_path), worker=worker)
    async with running(app) as client:
        gate.clear()
        net.running.clear()
        post = asyncio.ensure_future(client.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV,
                                                 timeout=aiohttp.ClientTimeout(total=3)))
        await asyncio.to_thread(net.running.wait, 10)           # one batch of 4 in the network...
        for _ in range(250):
            if worker.queued_patches() == 2 * 7 - 4:            # ...and the rest of both networks' patches queued
                break
            await asyncio.sleep(0.02)
        assert worker.queued_patches() == 2 * 7 - 4
        with pytest.raises(TimeoutError):
            await post                                          # the client gives up and hangs up
        for _ in range(100):
            if app[service.ENGINE].active == 0:
                break
            await asyncio.sleep(0.02)
        assert app[service.ENGINE].active == 0 and worker.queued_patches() == 0
        gate.set()


async def test_shutdown_finishes_the_job_in_flight_then_refuses(tmp_path: Path, audio_dir: Path) -> None:
    gate = threading.Event()
    net = FakeNet(gate=gate)
    gate.set()
    server = TestServer(service.make_app(service_settings(tmp_path), worker=fake_worker(net)), host="127.0.0.1")
    client = TestClient(server)
    await client.start_server()
    try:
        await wait_ready(client)
        gate.clear()
        net.running.clear()
        job = asyncio.ensure_future(client.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV))
        await asyncio.to_thread(net.running.wait, 10)          # the job is in the network
        url = str(server.make_url("/healthz"))
        closing = asyncio.ensure_future(server.close())
        await asyncio.sleep(0.2)
        assert not closing.done()                               # waiting for the job...
        async with aiohttp.ClientSession() as fresh:            # ...and no longer listening
            with pytest.raises(aiohttp.ClientConnectionError):
                await fresh.get(url)
        gate.set()
        resp = await job
        assert resp.status == 200 and (await resp.json())["slices"] == 7
        await closing
    finally:
        gate.set()
        await client.close()


# --- links through the fetching module (loopback media host on the allowlist) ----------------------------------

@pytest.mark.slow
async def test_genre_of_a_link_is_fetched_through_the_allowlist(tmp_path: Path, media_host: MediaHost,
                                                               refusing_proxy: RefusingProxy) -> None:
    settings = service_settings(tmp_path, fetch_extra_hosts=(media_host.hostport,), fetch_proxy_url=refusing_proxy.url,
                                fetch_timeout_s=30.0)
    async with running(service.make_app(settings, worker=fake_worker())) as client:
        resp = await client.post("/v1/genre", json={"url": media_host.url("tone.mp3"), "at": "0:30", "seconds": 9},
                                 headers=AUTH)
        d = await resp.json()
    assert resp.status == 200, d
    assert d["start"] == 30.0 and abs(d["seconds"] - 9.0) < 0.2 and d["slices"] == 3
    assert "fetch" in d["timings"]


@pytest.mark.slow
async def test_the_engine_in_process_fetches_a_link_with_progress(tmp_path: Path, media_host: MediaHost,
                                                                  refusing_proxy: RefusingProxy) -> None:
    from classifier.sources.links import find_source

    settings = service_settings(tmp_path, fetch_extra_hosts=(media_host.hostport,), fetch_proxy_url=refusing_proxy.url,
                                fetch_timeout_s=30.0, fetch_window_seconds=9.0)
    seen: list[tuple[str, int, int]] = []

    async def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))

    async with Engine(settings, worker=fake_worker()) as engine:
        source = find_source(media_host.url("tone.mp3"), at="1:00", extra_hosts=settings.fetch_extra_hosts)
        report = await engine.genre(Query(source=source), progress)
    assert report.start == 60.0 and report.slices == 3 and "fetch" in report.timings
    assert seen == [("fetching", 0, 0), ("analysing", 3, 3), ("done", 1, 1)]


# --- the real network ---------------------------------------------------------------------------------------------

@pytest.mark.slow
async def test_identify_with_the_trained_head(trained: Settings, demo_lib: dict[str, list[Path]]) -> None:
    settings = trained.replace(classifier_token=TOKEN)
    clip = demo_lib["Deep Pulse"][0].parent.parent / "heldout" / "deep-pulse.wav"
    async with running(service.make_app(settings)) as client:
        resp = await client.post("/v1/identify", data=clip.read_bytes(), headers=WAV, params={"name": "held-out"})
        served = await resp.json()
        about = await (await client.get("/v1/about", headers=AUTH)).json()
    assert resp.status == 200, served
    v = Verdict.from_dict(served)
    assert v.to_dict() == served
    assert v.source == "held-out" and v.artists[0].label == "Deep Pulse"
    assert about["model"]["id"] == v.model_id and set(about["model"]["artists"]) == set(demo_lib)
