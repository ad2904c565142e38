"""A stand-in at the Classifier protocol boundary, shared by both bots' tests: answers without a model.

`StubClassifier` is for tests about the front ends alone (refusals, floods, a classifier that is down,
rendering); `canned_verdict` / `canned_genre` are what the classifier would give, for rendering tests.
The end-to-end tests use the real classifier instead, and the two fixtures here, shared by every bot's tests
(import them to use them): `local`, the real classifier on the five procedural artists, and `media`, a
loopback media host serving 40 s of 'Iron Riff' for the link tests.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any, AsyncIterator, Iterator

import pytest

from classifier import errors
from classifier.model.verdict import GenreReport, TimelinePoint, Verdict
from classifier.model.voting import Candidate
from classifier.serve.api import ProgressCallback, Query
from classifier.serve.engine import Engine
from classifier.settings import Settings
from classifier.training import demo
from tests.fakes.media_host import MediaHost

__all__ = ["StubClassifier", "canned_verdict", "canned_genre", "down", "FIVE_ARTISTS", "local_fixture",
           "media_fixture"]

FIVE_ARTISTS = ("Deep Pulse", "Broken Glass", "Slow Tide", "Iron Riff", "Chip Tune")


def canned_verdict(source: str = "voice note", *, identified: bool = True, slices: int = 10,
                   start: float = 0.0, names: tuple[str, ...] = FIVE_ARTISTS) -> Verdict:
    """A Verdict as the classifier gives it: five artists, ten 3-s slices, a genre ranking."""
    scores = (0.62, 0.17, 0.1, 0.07, 0.04) if identified else (0.31, 0.27, 0.2, 0.12, 0.1)
    votes = (7, 2, 1, 0, 0) if identified else (3, 3, 2, 1, 1)
    artists = tuple(Candidate(n, s, v) for n, s, v in zip(names, scores, votes))
    order = [names[0]] * 3 + [names[1]] + [names[0]] * 2 + [names[2]] + [names[0]] * 2 + [names[1]]
    if not identified:
        order = [names[0], names[1], names[2], names[0], names[1], names[3], names[2], names[0], names[1], names[4]]
    timeline = tuple(TimelinePoint(start + 3.0 * i, order[i % len(order)]) for i in range(slices))
    return Verdict(source=source, seconds=3.0 * slices, slices=slices, artists=artists, confidence=scores[0],
                   verdict="identified" if identified else "unknown",
                   genres=(Candidate("house", 0.41, 6), Candidate("electronic", 0.3, 3), Candidate("dance", 0.12, 1)),
                   model_id="head-test-5a", model_artists=len(names), timings={"decode": 0.1, "network": 0.2},
                   vote_share=votes[0] / 10, start=start, timeline=timeline)


def canned_genre(source: str = "voice note", slices: int = 10) -> GenreReport:
    genres = (Candidate("house", 0.41, 6), Candidate("techno", 0.3, 3), Candidate("dance", 0.12, 1))
    order = ["house"] * 6 + ["techno"] * 3 + ["dance"]
    return GenreReport(source=source, seconds=3.0 * slices, slices=slices, genres=genres,
                       descriptors=(Candidate("beat", 0.5, 5), Candidate("electronic", 0.4, 5)),
                       timings={"decode": 0.1}, timeline=tuple(TimelinePoint(3.0 * i, order[i % 10])
                                                               for i in range(slices)))


class StubClassifier:
    """Implements the Classifier protocol without a model: answers `canned_verdict`, or raises `error`.

    `gate` (an asyncio.Event) holds every job until it is set, to test concurrency. `queries` records
    what the front end asked for.
    """

    def __init__(self, *, error: BaseException | None = None, gate: asyncio.Event | None = None) -> None:
        self.error = error
        self.gate = gate
        self.queries: list[Query] = []

    async def _work(self, query: Query, progress: ProgressCallback | None) -> None:
        self.queries.append(query)
        if progress is not None:
            await progress("analysing", 0, 10)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error

    async def identify(self, query: Query, progress: ProgressCallback | None = None) -> Verdict:
        await self._work(query, progress)
        return canned_verdict(query.display)

    async def genre(self, query: Query, progress: ProgressCallback | None = None) -> GenreReport:
        await self._work(query, progress)
        return canned_genre(query.display)

    async def about(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"backbones": ["msd_musicnn"], "model": {"id": "head-test-5a", "artists": list(FIVE_ARTISTS),
                                                        "created": "2025-01-01T00:00:00Z", "summary": {}}}

    async def aclose(self) -> None:
        return None


def down() -> StubClassifier:
    """A classifier whose service cannot be reached."""
    return StubClassifier(error=errors.ClassifierUnavailable(detail="connect: refused"))


# --- fixtures for the end-to-end bot tests (named apart, so that test parameters do not shadow them) ------------

@pytest.fixture(name="local")
async def local_fixture(trained5: Settings) -> AsyncIterator[Engine]:
    """The real classifier, in process, on the five procedural artists."""
    clf = Engine(trained5)
    yield clf
    await clf.aclose()


@pytest.fixture(scope="module", name="media")
def media_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaHost]:
    """A loopback media host serving 40 s of 'Iron Riff' as MP3."""
    d = tmp_path_factory.mktemp("media")
    wav = demo.write_wav(d / "iron-riff.wav", demo.render("Iron Riff", 40.0, seed=3))
    mp3 = d / "iron-riff.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), "-c:a", "libmp3lame",
                    "-b:a", "96k", str(mp3)], check=True)
    with MediaHost() as host:
        host.add("iron-riff.mp3", mp3)
        yield host
