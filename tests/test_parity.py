"""One engine, two ways in: the same queries in-process and through a real `spy serve` app answer alike.

The in-process side is `Engine` (what `make_classifier` returns without CLASSIFIER_URL: the CLI and the
bots); the served side is `RemoteClassifier` (the real HTTP client) against the real aiohttp app on
127.0.0.1, which runs its own `Engine`. Both load the real musicnn network and the trained demo head.
Each answer is compared as the JSON the service sends (`to_dict()`), timings aside, and each refusal by
its class, code and sentence. Everything is compared exactly except the scores, which may differ by one
unit in their last (4th) decimal: a job's patches reach the network in chunks, and when two chunks arrive
together they share a network call. oneDNN picks its kernel per batch size and so sums in another order,
which moves an output by about 1e-7 (measured here: up to 1.6e-7 on a tag probability, for 16 patches
split 1 + 15 against one call of 16; tests/float32.py gives the reasoning); rounded to 4 decimals, such a
move crosses a rounding boundary now and then. Labels, votes, order, slices, times and hints are exact,
and so is every other number.

Links come from the loopback media host (an operator-added host, `fetch_extra_hosts`); YouTube cannot
exist here, so the private video is yt-dlp's own DownloadError raised where yt-dlp would ask YouTube.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import yt_dlp
import yt_dlp.utils

from classifier import errors
from classifier.serve import http as service
from classifier.serve.api import Classifier, Query
from classifier.serve.client import make_classifier
from classifier.serve.engine import Engine
from classifier.serve.remote import RemoteClassifier
from classifier.settings import Settings
from classifier.sources.links import Source, find_source
from tests.fakes import media_host as _media
from tests.fakes import refusing_proxy as _proxy
from tests.fakes.media_host import MediaHost, audio_page
from tests.fakes.refusing_proxy import RefusingProxy
from tests.test_service import TOKEN, running

# the loopback stand-ins' fixtures, bound here so pytest finds them (assigned, not imported: no shadowing)
media_dir, media_files, media_host, refusing_proxy = _media.media_dir, _media.media_files, _media.media_host, \
    _proxy.refusing_proxy

pytestmark = pytest.mark.slow

PRIVATE = "https://www.youtube.com/watch?v=PrivateVid0"


@pytest.fixture
async def both(trained: Settings, media_host: MediaHost, refusing_proxy: RefusingProxy,
               monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Settings, Classifier, Classifier]]:
    """(settings, the in-process engine, the remote client of a served engine), on the same settings."""
    settings = trained.replace(max_clip_seconds=16.0, max_audio_seconds=60.0, fetch_window_seconds=9.0,
                               fetch_extra_hosts=(media_host.hostport,), fetch_proxy_url=refusing_proxy.url,
                               fetch_timeout_s=30.0)
    real = yt_dlp.YoutubeDL.extract_info

    def youtube_says_private(self: yt_dlp.YoutubeDL, url: str, *args: Any, **kwargs: Any) -> Any:
        if "youtube.com" in url:
            raise yt_dlp.utils.DownloadError("ERROR: [youtube] PrivateVid0: Private video. Sign in if you've been "
                                             "granted access to this video.")
        return real(self, url, *args, **kwargs)

    monkeypatch.setattr(yt_dlp.YoutubeDL, "extract_info", youtube_says_private)
    local = make_classifier(settings)
    assert isinstance(local, Engine)
    async with running(service.make_app(settings.replace(classifier_token=TOKEN))) as client:
        remote = RemoteClassifier(settings.replace(classifier_url=str(client.server.make_url("/")),
                                                   classifier_token=TOKEN, classifier_timeout_s=120.0), attempts=1)
        try:
            yield settings, local, remote
        finally:
            await remote.aclose()
            await local.aclose()


async def _outcome(classifier: Classifier, kind: str, query: Query) -> tuple[str, Any]:
    """("answer", its JSON without timings) or ("error", (class, code, sentence))."""
    try:
        answer = await (classifier.identify(query) if kind == "identify" else classifier.genre(query))
    except errors.SpyError as exc:
        return "error", (type(exc).__name__, exc.code, exc.user_message)
    d = answer.to_dict()
    del d["timings"]
    return "answer", d


_ROUNDING = 1e-4 + 1e-9     # one unit in the 4th decimal (scores and confidence are rounded to 4)
_SCORES = ("score", "confidence")


def _alike(a: Any, b: Any, key: str = "") -> bool:
    """Equal JSON, except scores that may differ by one unit of their rounding (see the module docstring)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_alike(a[k], b[k], k) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_alike(x, y, key) for x, y in zip(a, b))
    if key in _SCORES and isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= _ROUNDING
    return type(a) is type(b) and a == b


async def _same(both: tuple[Settings, Classifier, Classifier], kind: str, query: Query) -> tuple[str, Any]:
    _, local, remote = both
    here = await _outcome(local, kind, query)
    there = await _outcome(remote, kind, query)
    assert _alike(here, there), f"{kind} {query}: in-process {here!r} != served {there!r}"
    return here


def test_alike_is_exact_but_for_the_last_rounded_digit() -> None:
    assert _alike({"a": [{"score": 0.1234, "name": "x", "votes": 3}]}, {"a": [{"score": 0.1235, "name": "x", "votes": 3}]})
    assert _alike({"confidence": 0.5, "start": 4.0}, {"confidence": 0.5001, "start": 4.0})
    assert not _alike({"a": [{"score": 0.1234}]}, {"a": [{"score": 0.1236}]})
    assert not _alike({"start": 4.0}, {"start": 4.0001}) and not _alike({"seconds": 16.0}, {"seconds": 16.001})
    assert not _alike({"a": [{"score": 0.1, "name": "x"}]}, {"a": [{"score": 0.1, "name": "y"}]})
    assert not _alike({"n": 3}, {"n": 4}) and not _alike({"n": 3}, {"n": 3.0}) and not _alike({"a": 1}, {"b": 1})
    assert not _alike([1, 2], [1, 2, 3]) and not _alike(("error", ("X", "c", "m")), ("error", ("X", "c", "n")))


# --- answers --------------------------------------------------------------------------------------------------

def _heldout(demo_lib: dict[str, list[Path]], slug: str) -> Path:
    return demo_lib["Deep Pulse"][0].parent.parent / "heldout" / f"{slug}.wav"


@pytest.mark.parametrize("kind", ["identify", "genre"])
async def test_a_short_clip(both: tuple[Settings, Classifier, Classifier], demo_lib: dict[str, list[Path]],
                            kind: str) -> None:
    outcome, d = await _same(both, kind, Query(path=_heldout(demo_lib, "deep-pulse"), label="held-out"))
    assert outcome == "answer" and d["source"] == "held-out" and d["slices"] == 5 and d["hint"] is None
    if kind == "identify":
        assert d["artists"][0]["name"] == "Deep Pulse"


@pytest.mark.parametrize("kind", ["identify", "genre"])
async def test_a_file_longer_than_max_clip_seconds_is_cut_with_a_hint(both: tuple[Settings, Classifier, Classifier],
                                                                     audio_dir: Path, kind: str) -> None:
    outcome, d = await _same(both, kind, Query(path=audio_dir / "loop.wav"))             # 20 s > 16 s
    assert outcome == "answer" and abs(d["seconds"] - 16.0) < 0.05
    assert d["hint"] == "I listened to 16 s from 0:00. To hear another part, send it with a start time (at)."


async def test_a_length_asked_for_is_capped_without_a_hint(both: tuple[Settings, Classifier, Classifier],
                                                           audio_dir: Path) -> None:
    outcome, d = await _same(both, "identify", Query(path=audio_dir / "loop.wav", duration_s=60.0))
    assert outcome == "answer" and abs(d["seconds"] - 16.0) < 0.05 and d["hint"] is None


async def test_a_part_of_a_file(both: tuple[Settings, Classifier, Classifier], audio_dir: Path) -> None:
    outcome, d = await _same(both, "genre", Query(path=audio_dir / "loop.mp3", at=4.0, duration_s=9.0))
    assert outcome == "answer" and d["start"] == 4.0 and d["slices"] == 3


@pytest.mark.parametrize("kind", ["identify", "genre"])
async def test_a_link_with_a_time(both: tuple[Settings, Classifier, Classifier], media_host: MediaHost,
                                  kind: str) -> None:
    settings = both[0]
    source = find_source(media_host.url("tone.mp3"), at="0:30", extra_hosts=settings.fetch_extra_hosts)
    outcome, d = await _same(both, kind, Query(source=source))
    assert outcome == "answer", d
    assert d["start"] == 30.0 and abs(d["seconds"] - 9.0) < 0.2 and d["slices"] == 3
    assert d["source"] == media_host.url("tone.mp3") + "#t=0:30"


async def test_about(both: tuple[Settings, Classifier, Classifier]) -> None:
    _, local, remote = both
    here, there = await local.about(), await remote.about()
    assert here == there and here["model"] is not None and len(here["model"]["artists"]) == 3
    # what fetching links needs, as the process that fetches sees it (setup installs both: `spy about` checks)
    assert here["fetch"]["ytdlp_version"] and here["fetch"]["runtime_ok"] is True


# --- refusals -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, at, code, says", [
    ("empty.mp3", None, "undecodable", "That file is empty."),
    ("song.mp3", None, "undecodable", "does not contain audio I can read"),          # a PDF named .mp3
    ("silence.wav", None, "silent", "silent"),
    ("short.wav", None, "too_short", "That clip is 0.5 s long: send me at least 3 seconds of music."),
    ("corrupt.mp3", None, None, None),                   # whatever the decoder makes of it, both ways alike
    ("tone.wav", 7.0, "too_short", "That audio is 8 s long: from 0:07 there is less than 3 s left to hear."),
    ("tone.wav", 3600.0, "bad_source", "That file is 0:08 long: there is nothing at 1:00:00."),
], ids=["empty", "pdf", "silence", "short", "corrupt", "start-near-the-end", "start-past-the-end"])
@pytest.mark.parametrize("kind", ["identify", "genre"])
async def test_bad_files(both: tuple[Settings, Classifier, Classifier], audio_dir: Path, kind: str, name: str,
                         at: float | None, code: str | None, says: str | None) -> None:
    outcome, got = await _same(both, kind, Query(path=audio_dir / name, at=at))
    if code is not None:
        assert outcome == "error" and got[1] == code and says in got[2], got


async def test_audio_longer_than_max_audio_seconds(both: tuple[Settings, Classifier, Classifier],
                                                   media_files: dict[str, Path]) -> None:
    outcome, got = await _same(both, "identify", Query(path=media_files["mp3"]))       # 180 s > 60 s
    assert outcome == "error" and got[1:] == ("audio_too_long",
                                              "That audio is 3 min long; I take at most 60 s. Send a shorter piece.")


def _link(settings: Settings, media_host: MediaHost, page: str, at: float | None) -> Source:
    return find_source(media_host.url(page), at=at, extra_hosts=settings.fetch_extra_hosts)


@pytest.mark.parametrize("make, code, says", [
    (lambda s, host: _link(s, host, "gone.mp3", None), "removed", "That track is gone"),
    (lambda s, host: _link(s, host, "track.html", 300.0), "bad_source",
     "That link asks for 5:00, but the recording is only 3:00 long."),
    (lambda s, host: Source("extra", "https://vimeo.com/12345", None), "not_allowed", "I only fetch audio"),
    (lambda s, host: Source("youtube", PRIVATE, None), "private", "That track is private"),
], ids=["removed", "past-the-end", "unknown-host", "private"])
async def test_bad_links(both: tuple[Settings, Classifier, Classifier], media_host: MediaHost,
                         make: Callable[[Settings, MediaHost], Source], code: str, says: str) -> None:
    media_host.add("track.html", audio_page(media_host.url("tone.mp3"), 180))
    outcome, got = await _same(both, "identify", Query(source=make(both[0], media_host)))
    assert outcome == "error" and got[1] == code and says in got[2], got
