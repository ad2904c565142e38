"""LocalClassifier: the Classifier protocol in this process (the embedded default), the network in one thread."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from classifier import errors
from classifier.model.verdict import GenreReport, Verdict
from classifier.serve.api import ProgressCallback, Query
from classifier.settings import Settings
from classifier.store import registry

if TYPE_CHECKING:  # pragma: no cover
    from classifier import pipeline

__all__ = ["LocalClassifier"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Audio:
    path: Path                # local file to decode
    seek_s: float             # where in that file to start
    duration_s: float | None  # how much of it (None: to the end)
    offset_s: float           # where the analysed audio starts in the user's source (for timelines)
    hint: str | None          # a sentence for the user from the fetcher


class LocalClassifier:
    """In-process classifier. TensorFlow lives in one dedicated worker thread: the model is loaded
    once there and every decode/feature/network job runs there, so the event loop never blocks."""

    def __init__(self, settings: Settings, *, genre_models: tuple[str, ...] = ("msd_musicnn", "mtt_musicnn")) -> None:
        self.settings = settings
        self.genre_models = genre_models
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spy-model")
        self._fetcher: Any = None
        self._ready = False

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> "LocalClassifier":
        """Load the networks (and warm them up) before the first request."""
        await self._run(self._load)
        self._ready = True
        return self

    @property
    def ready(self) -> bool:
        return self._ready

    async def aclose(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    async def __aenter__(self) -> "LocalClassifier":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the API ---------------------------------------------------------------------------------------
    async def genre(self, query: Query, progress: ProgressCallback | None = None) -> GenreReport:
        async with self._audio(query, progress) as audio:
            a = await self._run(self._analyse, self.genre_models, audio, self._thread_progress(progress))
            from classifier import (
                pipeline,  # TensorFlow: not imported by a bot that calls a remote classifier
            )

            return pipeline.genre_report(a, query.display, audio.hint)

    async def identify(self, query: Query, progress: ProgressCallback | None = None) -> Verdict:

        head = await self._run(registry.current_head, self.settings.database)
        if head is None:
            raise errors.NoModel()
        async with self._audio(query, progress) as audio:
            a = await self._run(self._analyse, self.genre_models[:1], audio, self._thread_progress(progress), True)
            from classifier import pipeline

            return await self._run(pipeline.verdict, head, a, query.display, audio.hint)

    async def about(self) -> dict[str, Any]:

        head = await self._run(registry.current_head, self.settings.database)
        return {
            "backbones": list(self.genre_models),
            "model": None if head is None else {"id": head.id, "artists": list(head.labels),
                                                "created": head.created, "summary": head.summary},
        }

    # -- plumbing ----------------------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(fn, *args))

    def _thread_progress(self, progress: ProgressCallback | None) -> "pipeline.Progress | None":
        """Adapt an async progress callback for the worker thread (thread-safe, rate-limited)."""
        if progress is None:
            return None
        loop = asyncio.get_running_loop()
        last = [0.0]

        def cb(done: int, total: int) -> None:
            now = time.monotonic()
            if now - last[0] < 1.0 and done < total:
                return
            last[0] = now
            asyncio.run_coroutine_threadsafe(progress("analysing", done, total), loop)

        return cb

    @contextlib.asynccontextmanager
    async def _audio(self, query: Query, progress: ProgressCallback | None) -> AsyncIterator["_Audio"]:
        """The local audio for a query; a fetched file is removed afterwards."""
        if query.path is not None:
            at = float(query.at or 0.0)
            yield _Audio(Path(query.path), at, query.duration_s, at, None)
            return
        from classifier.sources.fetch import Fetcher

        if self._fetcher is None:
            self._fetcher = Fetcher(self.settings)
        source = query.source if query.at is None else query.source.with_start(query.at)  # type: ignore[union-attr]
        if progress is not None:
            await progress("fetching", 0, 0)
        async with self._fetcher.window(source, window_s=query.duration_s) as fetched:
            # The fetched file holds just the window; timeline positions stay relative to the source.
            yield _Audio(fetched.path, 0.0, None, fetched.start_s, fetched.hint)

    def _load(self) -> list[Any]:
        from classifier.model.backbone import Backbone

        bbs = [Backbone.load(name) for name in self.genre_models]
        for bb in bbs:  # one warm-up call so the first user does not pay for graph tracing
            import numpy as np

            bb.predict(np.zeros((1, bb.params.patch_frames, bb.params.n_mels), dtype=np.float32),
                       batch_size=self.settings.batch_size)
        return bbs

    def _analyse(self, names: tuple[str, ...], audio: "_Audio", cb: "pipeline.Progress | None",
                 keep_pooled: bool = False) -> "pipeline.Analysis":
        from classifier import pipeline
        from classifier.model.backbone import Backbone

        s = self.settings
        return pipeline.analyse(
            audio.path, [Backbone.load(n) for n in names], hop_s=s.slice_hop_seconds, batch_size=s.batch_size,
            start_s=audio.seek_s, duration_s=audio.duration_s, offset_s=audio.offset_s,
            max_seconds=s.max_audio_seconds, min_seconds=s.min_audio_seconds, silence_dbfs=s.silence_dbfs,
            decode_timeout_s=s.decode_timeout_s, keep_pooled=keep_pooled, progress=cb)
