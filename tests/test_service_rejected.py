"""Rejected input for the classifier service: each bad request, its HTTP status, error code and message."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from classifier import errors
from classifier.serve import http as service
from classifier.serve.batcher import ModelWorker
from tests.test_service import (
    AUTH,
    TOKEN,
    WAV,
    FakeNet,
    fake_worker,
    running,
    scraped,
    service_settings,
)


async def expect(resp: Any, status: int, code: str, says: str = "") -> dict[str, Any]:
    body = await resp.json()
    assert resp.status == status, body
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]
    assert says in body["message"]
    return body


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    settings = service_settings(tmp_path, max_body_bytes=1_500_000, max_audio_seconds=15.0)
    async with running(service.make_app(settings, worker=fake_worker())) as c:
        yield c


# --- auth ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
], ids=["missing", "wrong", "longer", "basic", "no-scheme", "empty"])
async def test_a_missing_or_wrong_token_is_401(client: TestClient, headers: dict[str, str],
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for route in ("/v1/genre", "/v1/identify"):
        resp = await client.post(route, json={"url": "https://youtu.be/dQw4w9WgXcQ"}, headers=headers)
        await expect(resp, 401, "unauthorized", "token")
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    await expect(await client.get("/v1/about", headers=headers), 401, "unauthorized")
    assert TOKEN not in caplog.text


async def test_probes_stay_open_without_a_token(client: TestClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert (await client.get(path)).status == 200


def test_no_token_means_loopback_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    open_settings = service_settings(tmp_path, classifier_token="")
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        with pytest.raises(errors.SpyError, match="CLASSIFIER_TOKEN"):
            service.check_bind(open_settings, host)
    assert "refusing to serve on 0.0.0.0 without CLASSIFIER_TOKEN" in caplog.text
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        service.check_bind(open_settings, host)
    assert "WITHOUT auth" in caplog.text
    service.check_bind(service_settings(tmp_path), "0.0.0.0")     # a token: anywhere


# --- malformed requests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, says", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", '"url"'),
    (b'{"url": 42}', '"url"'),
    (b'{"url": "  "}', '"url"'),
    (b'{"url": "https://youtu.be/dQw4w9WgXcQ", "at": [1]}', '"at"'),
    (b'{"url": "https://youtu.be/dQw4w9WgXcQ", "seconds": -3}', '"seconds"'),
    (b'{"url": "https://youtu.be/dQw4w9WgXcQ", "seconds": "a while"}', '"seconds"'),
    (b"\xff\xfe\x00", "not valid JSON"),
], ids=["broken", "array", "no-url", "url-number", "url-blank", "at-list", "seconds-negative", "seconds-text",
        "not-utf8"])
async def test_bad_json_is_400(client: TestClient, body: bytes, says: str) -> None:
    resp = await client.post("/v1/genre", data=body, headers={**AUTH, "Content-Type": "application/json"})
    await expect(resp, 400, "bad_request", says)


@pytest.mark.parametrize("ctype", ["text/plain", "application/pdf", "application/x-www-form-urlencoded", "image/png"])
async def test_a_wrong_content_type_is_415(client: TestClient, audio_dir: Path, ctype: str) -> None:
    resp = await client.post("/v1/genre", data=(audio_dir / "loop.mp3").read_bytes(),
                             headers={**AUTH, "Content-Type": ctype})
    await expect(resp, 415, "unsupported_media", "audio")


async def test_a_body_over_the_limit_is_413(client: TestClient) -> None:
    resp = await client.post("/v1/genre", data=io.BytesIO(b"\0" * 1_600_000), headers=WAV)          # Content-Length says so
    await expect(resp, 413, "body_too_large", "larger than I accept (1.5 MB)")


async def test_a_chunked_body_over_the_limit_is_413_while_streaming(client: TestClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(30):
            yield b"\0" * 64_000

    resp = await client.post("/v1/genre", data=chunks(), headers=WAV)                  # no Content-Length
    await expect(resp, 413, "body_too_large")


async def test_a_huge_link_request_is_413(client: TestClient) -> None:
    resp = await client.post("/v1/genre", json={"url": "https://youtu.be/dQw4w9WgXcQ", "pad": "x" * 70_000},
                             headers=AUTH)
    await expect(resp, 413, "body_too_large")


@pytest.mark.parametrize("params, code, says", [
    ({"at": "soon"}, "bad_time", "could not read the time"),
    ({"seconds": "0"}, "bad_request", '"seconds"'),
    ({"seconds": "nan"}, "bad_request", '"seconds"'),
])
async def test_bad_upload_parameters_are_400(client: TestClient, audio_dir: Path, params: dict[str, str],
                                             code: str, says: str) -> None:
    resp = await client.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV, params=params)
    await expect(resp, 400, code, says)


async def test_a_multipart_body_without_a_file_is_400(client: TestClient) -> None:
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("at", "0:05")
    form.add_field("note", "hello")
    form.add_field("x", "bytes", content_type="application/octet-stream")      # no filename, wrong name
    resp = await client.post("/v1/genre", data=form, headers=AUTH)
    await expect(resp, 400, "bad_request", "file part")


async def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    await expect(await client.get("/v1/nothing", headers=AUTH), 404, "not_found")
    resp = await client.get("/v1/genre", headers=AUTH)
    assert resp.status == 405 and (await resp.json())["error"] == "bad_request"


# --- bad audio -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, ctype, status, code, says", [
    ("song.mp3", "audio/mpeg", 422, "undecodable", "does not contain audio"),       # a PDF named .mp3
    ("empty.mp3", "audio/mpeg", 422, "undecodable", "empty"),
    ("short.wav", "audio/wav", 422, "too_short", "at least 3 seconds"),
    ("silence.wav", "audio/wav", 422, "silent", "silent"),
    ("loop.wav", "audio/wav", 422, "audio_too_long", "at most 15 s"),                # 20 s > max_audio_seconds
], ids=["pdf", "empty", "short", "silence", "too-long"])
async def test_unusable_audio_is_422(client: TestClient, audio_dir: Path, name: str, ctype: str, status: int,
                                     code: str, says: str) -> None:
    resp = await client.post("/v1/genre", data=(audio_dir / name).read_bytes(), headers={**AUTH, "Content-Type": ctype})
    await expect(resp, status, code, says)


async def test_a_start_near_the_end_is_too_short(client: TestClient, audio_dir: Path) -> None:
    resp = await client.post("/v1/genre", data=(audio_dir / "tone.wav").read_bytes(), headers=WAV, params={"at": "0:07"})
    await expect(resp, 422, "too_short", "That audio is 8 s long: from 0:07 there is less than 3 s left to hear.")


@pytest.mark.parametrize("at", ["0:08", "1:00:00"])
async def test_a_start_past_the_end_gives_the_length(client: TestClient, audio_dir: Path, at: str) -> None:
    resp = await client.post("/v1/genre", data=(audio_dir / "tone.wav").read_bytes(), headers=WAV, params={"at": at})
    body = await expect(resp, 400, "bad_source")
    assert body["message"] == f"That file is 0:08 long: there is nothing at {at}."


async def test_identify_without_a_trained_model_is_503_no_model(client: TestClient, audio_dir: Path) -> None:
    resp = await client.post("/v1/identify", data=(audio_dir / "voice.ogg").read_bytes(),
                             headers={**AUTH, "Content-Type": "audio/ogg"})
    await expect(resp, 503, "no_model", "spy enrol")
    assert "Retry-After" not in resp.headers                        # retrying will not help


# --- links -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, status, code", [
    ("https://vimeo.com/12345", 400, "not_allowed"),
    ("http://127.0.0.1:8765/set.mp3", 400, "not_allowed"),              # loopback is not on the allowlist
    ("http://169.254.169.254/latest/meta-data/", 400, "not_allowed"),
    ("https://www.youtube.com/playlist?list=PL0123456789", 400, "playlist"),
    ("just some words", 400, "bad_source"),
])
async def test_links_off_the_allowlist_are_refused_before_any_fetch(client: TestClient, url: str, status: int,
                                                                     code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from classifier.sources import fetch

    def no_fetch(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("fetched a refused link")

    monkeypatch.setattr(fetch, "fetch_window", no_fetch)
    await expect(await client.post("/v1/genre", json={"url": url}, headers=AUTH), status, code)


async def test_a_bad_time_on_a_link_is_400(client: TestClient) -> None:
    resp = await client.post("/v1/genre", json={"url": "https://youtu.be/dQw4w9WgXcQ", "at": "yesterday"}, headers=AUTH)
    await expect(resp, 400, "bad_time", "could not read the time")


# --- backpressure, deadline, readiness ------------------------------------------------------------------------------

async def test_a_full_queue_is_429_with_retry_after(tmp_path: Path, audio_dir: Path) -> None:
    app = service.make_app(service_settings(tmp_path, max_queue_jobs=2), worker=fake_worker())
    async with running(app) as client:
        engine = app[service.ENGINE]
        with engine.admit(), engine.admit():                    # two jobs held: the queue is full
            resp = await client.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV)
            body = await expect(resp, 429, "busy", "busy")
            assert int(resp.headers["Retry-After"]) >= 1 and body["retry_after_s"] >= 1
            metrics = await (await client.get("/metrics")).text()
            assert scraped(metrics)["spy_queue_jobs", ()] == 2
        resp = await client.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV)
        assert resp.status == 200                               # a place is free again


async def test_only_requests_past_the_queue_bound_get_429(tmp_path: Path, audio_dir: Path) -> None:
    gate = threading.Event()
    net = FakeNet(gate=gate)
    gate.set()
    app = service.make_app(service_settings(tmp_path, max_queue_jobs=3), worker=fake_worker(net))
    async with running(app) as client:
        gate.clear()
        body = (audio_dir / "loop.wav").read_bytes()
        held = [asyncio.ensure_future(client.post("/v1/genre", data=body, headers=WAV)) for _ in range(3)]
        while app[service.ENGINE].active < 3:
            await asyncio.sleep(0.01)
        extra = await asyncio.gather(*(client.post("/v1/genre", data=body, headers=WAV) for _ in range(4)))
        assert [r.status for r in extra] == [429] * 4
        gate.set()
        assert [r.status for r in await asyncio.gather(*held)] == [200] * 3


async def test_a_job_past_its_deadline_is_504(tmp_path: Path, audio_dir: Path) -> None:
    net = FakeNet(delay_s=0.5)
    app = service.make_app(service_settings(tmp_path, request_deadline_s=0.3), worker=fake_worker(net))
    async with running(app) as client:
        resp = await client.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV)
        await expect(resp, 504, "deadline", "longer than I allow")
        assert app[service.ENGINE].active == 0


async def test_requests_before_the_model_is_ready_are_503_with_retry_after(tmp_path: Path, audio_dir: Path) -> None:
    from aiohttp.test_utils import TestServer

    loaded = threading.Event()
    net = FakeNet()

    def slow_loader(name: str) -> FakeNet:
        loaded.wait(10)
        return net

    worker = ModelWorker(("msd_musicnn", "mtt_musicnn"), loader=slow_loader)   # a model slow to load
    async with TestClient(TestServer(service.make_app(service_settings(tmp_path), worker=worker),
                                     host="127.0.0.1")) as client:
        try:
            assert (await client.get("/healthz")).status == 200
            resp = await client.get("/readyz")
            await expect(resp, 503, "classifier_down", "starting up")
            assert resp.headers["Retry-After"] == "5"
            resp = await client.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV)
            await expect(resp, 503, "classifier_down")
            assert "Retry-After" in resp.headers
        finally:
            loaded.set()
