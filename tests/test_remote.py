"""RemoteClassifier: the Classifier protocol over HTTP, against the real service app and a scripted stand-in."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
import yt_dlp.version

from classifier import errors
from classifier.model.verdict import GenreReport, Verdict
from classifier.serve import http as service
from classifier.serve.api import Classifier, Query
from classifier.serve.client import make_classifier
from classifier.serve.remote import RemoteClassifier
from classifier.settings import Settings
from classifier.sources.links import Source
from tests.test_service import TOKEN, WAV, fake_worker, running, service_settings

VIDEO = Source("youtube", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", None)


def remote_settings(client: TestClient | TestServer, **changes: Any) -> Settings:
    server = client.server if isinstance(client, TestClient) else client
    return Settings(classifier_url=str(server.make_url("/")), classifier_token=TOKEN,
                    classifier_timeout_s=30.0).replace(**changes)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[TestClient]:
    """The service app (stand-in network) on 127.0.0.1."""
    async with running(service.make_app(service_settings(tmp_path), worker=fake_worker())) as c:
        yield c


# --- against the real service app ------------------------------------------------------------------------------

async def test_genre_of_a_file_is_what_the_service_answers(served: TestClient, audio_dir: Path) -> None:
    seen: list[tuple[str, int, int]] = []

    async def progress(stage: str, done: int, total: int) -> None:
        seen.append((stage, done, total))

    async with RemoteClassifier(remote_settings(served)) as remote:
        assert isinstance(remote, Classifier)
        report = await remote.genre(Query(path=audio_dir / "loop.wav", at=4.0, duration_s=9.0), progress)
    assert isinstance(report, GenreReport)
    assert report.source == "loop.wav" and report.start == 4.0 and report.slices == 3
    assert seen == [("analysing", 0, 0), ("done", 1, 1)]
    direct = await served.post("/v1/genre", data=(audio_dir / "loop.wav").read_bytes(), headers=WAV,
                               params={"name": "loop.wav", "at": "4", "seconds": "9"})
    expected = await direct.json()
    got = report.to_dict()
    assert {k: v for k, v in got.items() if k != "timings"} == {k: v for k, v in expected.items() if k != "timings"}


@pytest.mark.parametrize("make_query, error, code", [
    (lambda d: Query(path=d / "song.mp3"), errors.Undecodable, "undecodable"),
    (lambda d: Query(path=d / "short.wav"), errors.TooShort, "too_short"),
    (lambda d: Query(source=Source("extra", "https://example.org/set.mp3", None)), errors.NotAllowed, "not_allowed"),
    (lambda d: Query(path=d / "voice.ogg", label="x"), errors.NoModel, "no_model"),         # identify, no head
])
async def test_service_errors_come_back_as_the_same_classes(served: TestClient, audio_dir: Path,
                                                            make_query: Callable[[Path], Query],
                                                            error: type[errors.SpyError], code: str) -> None:
    async with RemoteClassifier(remote_settings(served)) as remote:
        call = remote.identify if error is errors.NoModel else remote.genre
        with pytest.raises(error) as info:
            await call(make_query(audio_dir))
    assert type(info.value) is error and info.value.code == code and info.value.user_message


async def test_a_wrong_token_is_unauthorized(served: TestClient, audio_dir: Path) -> None:
    async with RemoteClassifier(remote_settings(served, classifier_token="nope")) as remote:
        with pytest.raises(errors.Unauthorized):
            await remote.genre(Query(path=audio_dir / "loop.wav"))


async def test_about_and_a_missing_file(served: TestClient, tmp_path: Path) -> None:
    async with RemoteClassifier(remote_settings(served)) as remote:
        about = await remote.about()
        assert (about["backbones"], about["model"]) == (["msd_musicnn", "mtt_musicnn"], None)
        assert about["fetch"]["ytdlp_version"] == yt_dlp.version.__version__
        with pytest.raises(errors.MissingFile):
            await remote.genre(Query(path=tmp_path / "gone.mp3"))


def test_classifier_url_chooses_the_remote_and_its_repr_hides_the_token() -> None:
    clf = make_classifier(Settings(classifier_url="http://127.0.0.1:9/", classifier_token=TOKEN))
    assert isinstance(clf, RemoteClassifier) and TOKEN not in repr(clf)


# --- against a scripted stand-in: what is sent, retries, timeouts ---------------------------------------------------

class Script:
    """A stand-in service that answers from a list of (status, json, headers) and records what it received."""

    def __init__(self, answers: list[tuple[int, Any, dict[str, str]]], delay_s: float = 0.0) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers),
                              "body": body})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status, payload, headers = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return web.json_response(payload, status=status, headers=headers)


GENRE = GenreReport("x", 30.0, 10, (), (), {"total": 1.0}).to_dict()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Any]]:
    servers: list[TestServer] = []

    async def start(script: Script) -> TestServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", script.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def test_an_upload_is_a_raw_audio_body_with_the_token(scripted: Callable[..., Any], audio_dir: Path) -> None:
    script = Script([(200, GENRE, {})])
    async with RemoteClassifier(remote_settings(await scripted(script))) as remote:
        await remote.genre(Query(path=audio_dir / "voice.ogg", at=62.5, duration_s=10.0, label="voice note"))
    [req] = script.requests
    assert req["path"] == "/v1/genre" and req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert req["headers"]["Content-Type"].startswith("audio/")
    assert req["query"] == {"at": "62.5", "seconds": "10.0", "name": "voice note"}
    assert req["body"] == (audio_dir / "voice.ogg").read_bytes()


async def test_a_link_is_sent_as_json(scripted: Callable[..., Any]) -> None:
    verdict = Verdict("x", 30.0, 10, (), 0.0, "unknown", (), "head-1", 3, {}).to_dict()
    script = Script([(200, verdict, {})])
    async with RemoteClassifier(remote_settings(await scripted(script))) as remote:
        v = await remote.identify(Query(source=VIDEO.with_start(3723.0), at=62.0, duration_s=20.0))
    assert v.model_id == "head-1"
    [req] = script.requests
    assert req["path"] == "/v1/identify" and req["headers"]["Content-Type"].startswith("application/json")
    assert json.loads(req["body"]) == {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=3723s", "at": 62.0,
                                       "seconds": 20.0}


async def test_429_and_503_with_retry_after_are_retried(scripted: Callable[..., Any], audio_dir: Path) -> None:
    busy = errors.Busy(retry_after_s=0).to_dict()
    starting = errors.ClassifierUnavailable().to_dict()
    script = Script([(429, busy, {"Retry-After": "0"}), (503, starting, {"Retry-After": "0"}), (200, GENRE, {})])
    async with RemoteClassifier(remote_settings(await scripted(script))) as remote:
        report = await remote.genre(Query(path=audio_dir / "loop.wav"))
    assert report.slices == 10 and len(script.requests) == 3


async def test_a_503_without_retry_after_is_not_retried(scripted: Callable[..., Any], audio_dir: Path) -> None:
    script = Script([(503, errors.NoModel().to_dict(), {}), (200, GENRE, {})])
    async with RemoteClassifier(remote_settings(await scripted(script))) as remote:
        with pytest.raises(errors.NoModel):
            await remote.identify(Query(path=audio_dir / "loop.wav"))
    assert len(script.requests) == 1


async def test_busy_after_every_attempt_is_raised_as_busy(scripted: Callable[..., Any], audio_dir: Path) -> None:
    script = Script([(429, errors.Busy(retry_after_s=7).to_dict(), {"Retry-After": "0"})])
    async with RemoteClassifier(remote_settings(await scripted(script)), attempts=3) as remote:
        with pytest.raises(errors.Busy) as info:
            await remote.genre(Query(path=audio_dir / "loop.wav"))
    assert info.value.retry_after_s == 7 and len(script.requests) == 3


async def test_a_retry_after_past_the_timeout_is_not_waited_for(scripted: Callable[..., Any], audio_dir: Path) -> None:
    script = Script([(429, errors.Busy(retry_after_s=60).to_dict(), {"Retry-After": "60"})])
    server = await scripted(script)
    async with RemoteClassifier(remote_settings(server, classifier_timeout_s=5.0)) as remote:
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(errors.Busy):
            await remote.genre(Query(path=audio_dir / "loop.wav"))
    assert asyncio.get_running_loop().time() - t0 < 2 and len(script.requests) == 1


async def test_a_service_that_is_not_there_is_classifier_unavailable(audio_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nothing listens there
    settings = Settings(classifier_url=f"http://127.0.0.1:{port}", classifier_timeout_s=0.4)
    async with RemoteClassifier(settings) as remote:
        with pytest.raises(errors.ClassifierUnavailable):
            await remote.genre(Query(path=audio_dir / "loop.wav"))


async def test_a_slow_service_times_out_as_classifier_unavailable(scripted: Callable[..., Any], audio_dir: Path) -> None:
    script = Script([(200, GENRE, {})], delay_s=2.0)
    async with RemoteClassifier(remote_settings(await scripted(script), classifier_timeout_s=0.3)) as remote:
        with pytest.raises(errors.ClassifierUnavailable, match="took too long"):
            await remote.genre(Query(path=audio_dir / "loop.wav"))


async def test_an_error_without_a_json_body_is_classifier_unavailable(scripted: Callable[..., Any],
                                                                      audio_dir: Path) -> None:
    script = Script([(502, None, {})])
    async with RemoteClassifier(remote_settings(await scripted(script))) as remote:
        with pytest.raises(errors.ClassifierUnavailable):
            await remote.genre(Query(path=audio_dir / "loop.wav"))


# --- the real network, end to end ------------------------------------------------------------------------------------

@pytest.mark.slow
async def test_remote_identify_against_the_real_service(trained: Settings, demo_lib: dict[str, list[Path]]) -> None:
    clip = demo_lib["Iron Riff"][0].parent.parent / "heldout" / "iron-riff.wav"
    async with running(service.make_app(trained.replace(classifier_token=TOKEN))) as client:
        async with RemoteClassifier(remote_settings(client)) as remote:
            verdict = await remote.identify(Query(path=clip, label="held-out"))
            report = await remote.genre(Query(path=clip))
            about = await remote.about()
    assert verdict.source == "held-out" and verdict.artists[0].label == "Iron Riff"
    assert verdict.model_id == about["model"]["id"]
    assert report.slices == verdict.slices == 5 and report.genres
