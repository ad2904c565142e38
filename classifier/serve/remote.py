"""RemoteClassifier: the `Classifier` protocol over HTTP to `spy serve` (chosen when CLASSIFIER_URL is set).

Files are uploaded as a raw body with an audio content type (`?at=&seconds=&name=`); links go as JSON
`{"url", "at", "seconds"}` and the service fetches them. The service's errors come back as the same
`classifier.errors` classes (by their code), so a front end cannot tell this from the in-process Engine.
429 and 503 answers that carry `Retry-After` are retried after that many seconds, within the call's
overall timeout (`classifier_timeout_s`); a service that cannot be reached is `ClassifierUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import aiohttp

from classifier import errors
from classifier.model.verdict import GenreReport, Verdict
from classifier.serve.api import ProgressCallback, Query
from classifier.settings import Settings

__all__ = ["RemoteClassifier"]

log = logging.getLogger(__name__)

_CONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)


def _content_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed and guessed.startswith(("audio/", "video/")):
        return guessed
    return "application/octet-stream"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form; an HTTP date is treated as 'soon')."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return 1.0


def _error_from(status: int, payload: Any) -> errors.SpyError:
    """The service's JSON error as the same classifier.errors class."""
    if isinstance(payload, Mapping) and isinstance(payload.get("error"), str):
        cls = errors.by_code(payload["error"])
        message = payload.get("message") if isinstance(payload.get("message"), str) else None
        detail = f"HTTP {status} from the classifier service"
        if issubclass(cls, errors.Busy):
            retry = payload.get("retry_after_s", 5.0)
            return cls(message, retry_after_s=float(retry) if isinstance(retry, (int, float)) else 5.0, detail=detail)
        return cls(message, detail=detail)
    return errors.ClassifierUnavailable(detail=f"HTTP {status} without an error body")


class RemoteClassifier:
    """The classifier service, called over HTTP.

    Parameters
    ----------
    settings : classifier_url, classifier_token, classifier_timeout_s
    attempts : tries per call (retries on 429/503 with Retry-After, and on connection failures)
    session : an aiohttp session to use (default: one of its own, opened on first use, closed by aclose)
    """

    def __init__(self, settings: Settings, *, attempts: int = 4, session: aiohttp.ClientSession | None = None) -> None:
        if not settings.classifier_url:
            raise ValueError("RemoteClassifier needs settings.classifier_url")
        self._base = settings.classifier_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {settings.classifier_token.get_secret_value()}"} if settings.classifier_token else {}
        self._timeout_s = settings.classifier_timeout_s
        self._attempts = max(1, attempts)
        self._session = session
        self._own_session = session is None

    def __repr__(self) -> str:   # never the token
        return f"RemoteClassifier({self._base!r})"

    # -- the protocol ---------------------------------------------------------------------------------------
    async def genre(self, query: Query, progress: ProgressCallback | None = None) -> GenreReport:
        return GenreReport.from_dict(await self._classify("genre", query, progress))

    async def identify(self, query: Query, progress: ProgressCallback | None = None) -> Verdict:
        return Verdict.from_dict(await self._classify("identify", query, progress))

    async def about(self) -> dict[str, Any]:
        return await self._call("GET", "/v1/about")

    async def start(self) -> "RemoteClassifier":
        """Nothing to load here: the service loads the model (its /readyz says when); the session opens on first use."""
        return self

    async def aclose(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> "RemoteClassifier":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- plumbing -------------------------------------------------------------------------------------------
    async def _classify(self, kind: str, query: Query, progress: ProgressCallback | None) -> dict[str, Any]:
        if progress is not None:
            await progress("analysing", 0, 0)
        if query.path is not None:
            path = Path(query.path)
            if not path.is_file():
                raise errors.MissingFile(f"I can't find the file {path.name!r}.", detail=str(path))
            params = {"name": query.display}
            if query.at is not None:
                params["at"] = repr(float(query.at))
            if query.duration_s is not None:
                params["seconds"] = repr(float(query.duration_s))
            result = await self._call("POST", f"/v1/{kind}", path=path, params=params)
        else:
            assert query.source is not None
            body: dict[str, Any] = {"url": query.source.display_url()}
            if query.at is not None:
                body["at"] = float(query.at)
            if query.duration_s is not None:
                body["seconds"] = float(query.duration_s)
            result = await self._call("POST", f"/v1/{kind}", json_body=body)
        if progress is not None:
            await progress("done", 1, 1)
        return result

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None:   # created here, inside the running loop, not in __init__
            self._session = aiohttp.ClientSession(raise_for_status=False)
            self._own_session = True
        return self._session

    @contextlib.asynccontextmanager
    async def _body(self, path: Path | None, json_body: dict[str, Any] | None) -> AsyncIterator[dict[str, Any]]:
        """Request keyword arguments for one attempt (a fresh file handle each time)."""
        if path is None:
            yield {"json": json_body} if json_body is not None else {}
            return
        with open(path, "rb") as f:
            yield {"data": f, "headers": {"Content-Type": _content_type(path)}}

    async def _call(self, method: str, route: str, *, path: Path | None = None, params: dict[str, str] | None = None,
                    json_body: dict[str, Any] | None = None) -> dict[str, Any]:
        session = await self._client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        url = self._base + route
        for attempt in range(1, self._attempts + 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with self._body(path, json_body) as kwargs:
                    headers = {**self._headers, **kwargs.pop("headers", {})}
                    async with session.request(method, url, params=params, headers=headers,
                                               timeout=aiohttp.ClientTimeout(total=remaining), **kwargs) as resp:
                        payload = await self._payload(resp)
                        if resp.status < 400:
                            if not isinstance(payload, dict):
                                raise errors.ClassifierUnavailable(detail=f"HTTP {resp.status} without a JSON object")
                            return payload
                        error = _error_from(resp.status, payload)
                        wait = _retry_after(resp.headers.get("Retry-After"))
            except TimeoutError as exc:   # first: aiohttp's timeouts are connection errors too; the budget is spent
                raise errors.ClassifierUnavailable("My listening service took too long. Try again in a moment.",
                                                   detail=f"{method} {route}: timeout") from exc
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                wait = _CONNECT_BACKOFF_S[min(attempt, len(_CONNECT_BACKOFF_S)) - 1]
                if attempt == self._attempts or loop.time() + wait >= deadline:
                    raise errors.ClassifierUnavailable(detail=f"{method} {route}: {exc!r}") from exc
                log.info("classifier service unreachable (%s); retrying in %.1f s", type(exc).__name__, wait)
                await asyncio.sleep(wait)
                continue
            retryable = resp.status in (429, 503) and wait is not None
            if not retryable or attempt == self._attempts or loop.time() + wait >= deadline:
                raise error
            log.info("classifier service answered %d %s; retrying in %.1f s", resp.status, error.code, wait)
            await asyncio.sleep(wait)
        raise errors.ClassifierUnavailable("My listening service took too long. Try again in a moment.",
                                           detail=f"{method} {route}: out of time after retries")

    @staticmethod
    async def _payload(resp: aiohttp.ClientResponse) -> Any:
        try:
            return await resp.json(content_type=None)
        except ValueError:
            return None
