"""The Classifier protocol every front end talks to, and the values it takes.

    Classifier (Protocol)
    ├── Engine             (serve/engine.py) the embedded default: the network runs in this process;
    │                      `spy serve` runs the same engine behind its HTTP routes
    └── RemoteClassifier   (serve/remote.py) the same calls over HTTP to `spy serve`

A front end does three things: build a `Query`, `await classifier.identify(query)` (or `genre`), and
render the answer with `bot.replies`. It never knows which implementation it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol, runtime_checkable

from classifier.model.verdict import GenreReport, Verdict
from classifier.sources.links import Source

__all__ = ["Query", "ProgressCallback", "Classifier"]

ProgressCallback = Callable[[str, int, int], Awaitable[None]]
"""await progress(stage, done, total): stage is "fetching", "analysing" or "done"."""


@dataclass(frozen=True, slots=True)
class Query:
    """What to listen to: a link (`source`) or a local file (`path`), optionally from `at` seconds.

    duration_s: how much to analyse from the start point, at most max_clip_seconds (None: the fetch
    window, fetch_window_seconds, for links; max_clip_seconds for files, with a hint when the file is cut).
    """

    source: "Source | None" = None
    path: Path | None = None
    at: float | None = None
    duration_s: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if (self.source is None) == (self.path is None):
            raise ValueError("a Query needs exactly one of source or path")

    @property
    def display(self) -> str:
        if self.source is not None:
            src = self.source if self.at is None else self.source.with_start(self.at)
            return src.display_url()
        return self.label or (self.path.name if self.path else "audio")


@runtime_checkable
class Classifier(Protocol):
    async def start(self) -> "Classifier":
        """Be ready before the first user waits: the in-process engine loads its networks; a client has nothing to do."""
        ...

    async def genre(self, query: Query, progress: ProgressCallback | None = None) -> GenreReport: ...
    async def identify(self, query: Query, progress: ProgressCallback | None = None) -> Verdict: ...
    async def about(self) -> dict[str, Any]: ...
    async def aclose(self) -> None: ...
