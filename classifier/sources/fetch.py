"""yt-dlp, configured for untrusted links: fetch only a Source's audio window into a folder.

Every connection yt-dlp and ffmpeg open goes through `Egress` (egress.py), a loopback proxy that lives for one job.
That is where the rules are enforced, because it is the one place that sees all traffic, including redirects
yt-dlp and ffmpeg follow by themselves and the ffmpeg subprocess that yt-dlp runs for section downloads
(which reports no progress, so a progress hook alone could not cap its bytes):

    yt-dlp (extractor pages, APIs) --+
                                     +--> Egress: host allowlist, byte cap, bytes counted --> site
    ffmpeg (-ss ... -t ..., ranges) -+        (or settings.fetch_proxy_url, for platform hosts)

(A little over 400 lines: one yt-dlp job, its limits, its files and the async front that runs it are one idea;
window planning and share-link redirects live in windows.py and redirects.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import math
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import yt_dlp
import yt_dlp.utils

from classifier import errors
from classifier.settings import Settings
from classifier.sources.egress import Egress
from classifier.sources.jsruntime import ydl_js_options
from classifier.sources.platforms import (
    SOUNDCLOUD_HOSTS,
    SOUNDCLOUD_SHORT_HOST,
    YOUTUBE_HOSTS,
    Source,
    egress_allowed,
    is_allowed_url,
)
from classifier.sources.redirects import resolve_redirects, resolve_share_link
from classifier.sources.timecodes import format_time
from classifier.sources.windows import LONG_SET_S, choose_window, spread_windows

__all__ = ["Fetched", "fetch_window", "fetch_spread", "Fetcher", "ydl_options", "base_options", "classify_error",
           "YdlLog", "proxy_address", "open_egress",
           # re-exported from windows.py and redirects.py, where they moved
           "choose_window", "spread_windows", "LONG_SET_S", "resolve_redirects"]

log = logging.getLogger(__name__)

_GRACE_S = 5.0            # how long an abandoned job's thread gets to stop before its folder is removed anyway
# yt-dlp extractors per platform: YouTube's clip links have their own (it finds the clip's video and span).
_EXTRACTORS = {"youtube": ["youtube", "youtube:clip"], "soundcloud": ["soundcloud"], "extra": ["generic"]}


@dataclass(frozen=True, slots=True)
class Fetched:
    """The audio window of one link, downloaded."""

    path: Path                       # audio file of just the window, inside workdir
    start_s: float                   # where in the media the window starts
    duration_s: float                # window length actually requested
    media_duration_s: float | None
    title: str | None
    bytes_read: int                  # bytes read from the network for this job, pages and API calls included
    hint: str | None                 # e.g. how to add a timestamp to a long set's link
    windows: tuple[tuple[float, float], ...] = ()   # (start_s, duration_s) of each window in `path`, in order


# --- errors ------------------------------------------------------------------------------------------

# yt-dlp reports everything as text; order matters (the first match wins, most specific first).
_MESSAGES: tuple[tuple[re.Pattern[str], type[errors.SpyError]], ...] = tuple(
    (re.compile(pattern, re.I), cls) for pattern, cls in (
        (r"not a bot|captcha|HTTP Error 429|try again later", errors.BotCheck),
        (r"confirm your age|age[- ]restrict|inappropriate for some users", errors.AgeRestricted),
        (r"in your country|from your location|geo[- ]?restrict", errors.GeoBlocked),
        (r"private video|video is private|track is private|granted access|members[- ]only|join this channel"
         r"|only available (?:to|for) (?:registered users|music premium)", errors.Private),
        (r"live event|premieres? in|is (?:a )?live|live stream|livestream|is_live|is_upcoming", errors.LiveStream),
        (r"video unavailable|been removed|no longer available|does not exist|terminated|HTTP Error 40[45]"
         r"|HTTP Error 410|not found", errors.Removed),
        (r"timed? ?out", errors.FetchTimeout),
        (r"unsupported url|no suitable extractor", errors.NotAllowed),
    ))


def classify_error(message: str) -> errors.SpyError:
    """Map a yt-dlp error message to our error with its friendly sentence (the message stays in `detail`)."""
    for pattern, cls in _MESSAGES:
        if pattern.search(message):
            return cls(detail=message)
    return errors.FetchFailed(detail=message)


class _Stop(yt_dlp.utils.DownloadCancelled):
    """Raised from our yt-dlp callbacks to abort a job with one of our errors (yt-dlp lets these through)."""

    def __init__(self, error: errors.SpyError | None = None) -> None:
        self.error = error or errors.FetchFailed()
        super().__init__(self.error.code)


# --- yt-dlp --------------------------------------------------------------------------------------

class YdlLog:
    """yt-dlp's logger interface, routed into ours. Its errors become our exceptions, so they log at DEBUG."""

    def debug(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)

    info = debug
    error = debug

    def warning(self, msg: str) -> None:
        log.warning("yt-dlp: %s", msg)


class _Job:
    """One fetch's state, shared by yt-dlp's callbacks, the watchdog thread and `fetch_window`."""

    def __init__(self, source: Source, settings: Settings, window_s: float, deadline: float,
                 cancel: threading.Event, egress: "Egress", *, spread: int = 0,
                 duration_hint_s: float | None = None) -> None:
        self.source, self.settings, self.window_s = source, settings, window_s
        self.spread, self.duration_hint_s = spread, duration_hint_s
        self.plan: tuple[float, float, str | None] | None = None
        self.spans: list[tuple[float, float]] = []
        self.refusal: errors.SpyError | None = None
        self.expired = False
        self._deadline, self._cancel, self._egress = deadline, cancel, egress
        self._done = threading.Event()

    # yt-dlp callbacks (they run in the fetch thread)
    def check(self, info: dict[str, Any], *, incomplete: bool = False) -> str | None:
        """match_filter: refuse live streams and over-long media before a byte of media is read.

        Returns yt-dlp's "skip" reason and keeps our error in `refusal` (yt-dlp re-raises exceptions from a
        match_filter as a fresh instance of their type, losing what they carried).
        """
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming", "post_live"):
            self.refusal = errors.LiveStream(detail=f"live_status={info.get('live_status')}")
        elif (duration := info.get("duration")) is not None and duration > self.settings.max_media_seconds:
            self.refusal = errors.MediaTooLong(detail=f"duration {duration:.0f} s")
        else:
            return None
        return self.refusal.code

    def ranges(self, info: dict[str, Any], ydl: Any) -> list[dict[str, float]]:
        """download_ranges: the window(s) to download, chosen once the media's length is known."""
        if self.spread:
            self.spans = spread_windows(self.spread, self.window_s, _float(info.get("duration")) or self.duration_hint_s)
            self.plan = (self.spans[0][0], sum(d for _, d in self.spans), None)
            return [{"start_time": a, "end_time": a + d, "index": i} for i, (a, d) in enumerate(self.spans, 1)]
        try:
            self.plan = choose_window(self.source.start_s, self.window_s, info.get("duration"), self.source.platform)
        except errors.SpyError as exc:
            raise _Stop(exc) from None
        start, duration, _ = self.plan
        self.spans = [(start, duration)]
        return [{"start_time": start, "end_time": start + duration}]

    def progress(self, status: dict[str, Any]) -> None:
        """progress_hooks: the byte cap for yt-dlp's own downloaders (ffmpeg's bytes are capped by Egress)."""
        if self.expired or self._cancel.is_set():
            raise _Stop(errors.FetchTimeout(detail="cancelled"))
        if (status.get("downloaded_bytes") or 0) > self.settings.max_fetch_bytes:
            raise _Stop(errors.DownloadTooLarge(detail=f"{status.get('downloaded_bytes')} bytes"))

    # the wall clock
    @contextlib.contextmanager
    def watched(self) -> Iterator["_Job"]:
        watchdog = threading.Thread(target=self._watch, name="spy-fetch-watchdog", daemon=True)
        watchdog.start()
        try:
            yield self
        finally:
            self._done.set()
            watchdog.join()

    def _watch(self) -> None:
        while not self._done.wait(0.05):
            if self._cancel.is_set() or time.monotonic() >= self._deadline:
                self.expired = True
                self._egress.close()        # every socket of the job dies, so yt-dlp and ffmpeg return soon
                return

    def failure(self, exc: BaseException) -> errors.SpyError:
        """What went wrong, in order of certainty: our own limits first, then yt-dlp's message."""
        if self.expired:
            return errors.FetchTimeout(detail=f"wall clock ({self.settings.fetch_timeout_s:.0f} s)")
        if self._egress.over_cap:
            return errors.DownloadTooLarge(detail=f"{self._egress.bytes_read} bytes")
        if self._egress.refused:
            return errors.NotAllowed(detail="refused egress to " + ", ".join(self._egress.refused))
        return classify_error(str(exc))


def base_options(settings: Settings, *, proxy: str) -> dict[str, Any]:
    """yt-dlp parameters every job shares (fetching a window, listing a page): through our proxy, quiet,
    no cookies, netrc or file:// URLs, no files beside the ones asked for, few retries."""
    io_timeout_s = min(30.0, settings.fetch_timeout_s)
    return {
        "proxy": proxy,
        "logger": YdlLog(),
        "quiet": True,
        "noprogress": True,
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "cookiefile": None,
        "usenetrc": False,
        "enable_file_urls": False,
        "postprocessors": [],
        "writethumbnail": False,
        "writeinfojson": False,
        "writesubtitles": False,
        "socket_timeout": io_timeout_s,
        "retries": 1,
        "extractor_retries": 1,
        # YouTube player code and SoundCloud client ids are worth caching between jobs; keep them in our folder.
        "cachedir": str(settings.data_dir / "cache" / "yt-dlp"),
        # YouTube's JavaScript challenges: the installed runtime by path, no solver downloaded at run time.
        **ydl_js_options(settings.js_runtime_path),
    }


def ydl_options(source: Source, settings: Settings, workdir: Path, *, proxy: str, job: _Job) -> dict[str, Any]:
    """The yt-dlp parameters for one job: one extractor, one track, one window, nothing written elsewhere."""
    io_timeout_s = min(30.0, settings.fetch_timeout_s)
    return {
        **base_options(settings, proxy=proxy),
        "allowed_extractors": _EXTRACTORS[source.platform],    # generic only ever for operator-added hosts
        "noplaylist": True,
        "extract_flat": "in_playlist",       # a playlist that slips through is listed, never expanded
        "format": "bestaudio/best",
        # several windows (enrolment) are one file each, numbered in order, joined afterwards
        "outtmpl": {"default": "window-%(section_number)s.%(ext)s" if job.spread else "window.%(ext)s"},
        "paths": {"home": str(workdir), "temp": str(workdir)},
        "download_ranges": job.ranges,
        "force_keyframes_at_cuts": False,    # no re-encode: a few ms of slack at the cut costs nothing here
        # Input options for the ffmpeg that downloads sections: fastseek lets MP3 seek by bitrate/TOC instead
        # of reading everything before the window; rw_timeout kills a stalled connection.
        "external_downloader_args": {"ffmpeg_i": ["-fflags", "+fastseek",
                                                  "-rw_timeout", str(int(io_timeout_s * 1e6))]},
        "match_filter": job.check,
        "progress_hooks": [job.progress],
        "fixup": "never",
        "overwrites": True,
        "updatetime": False,
        "fragment_retries": 1,
    }


# --- fetching ----------------------------------------------------------------------------------------

def fetch_window(source: Source, settings: Settings, workdir: Path, *, window_s: float | None = None,
                 cancel: threading.Event | None = None) -> Fetched:
    """Download only the audio window of `source` into `workdir` (blocking; the caller owns `workdir`).

    Parameters
    ----------
    window_s : seconds of audio to fetch; default `settings.fetch_window_seconds`.
    cancel : set it from another thread to abandon the job (it then raises `errors.FetchTimeout`).

    Raises
    ------
    errors.NotAllowed, errors.PlaylistRefused, errors.BadSource, errors.FetchFailed and its subclasses.
    """
    window_s = settings.fetch_window_seconds if window_s is None else float(window_s)
    return _fetch(source, settings, workdir, window_s=window_s, cancel=cancel)


def fetch_spread(source: Source, settings: Settings, workdir: Path, *, count: int, window_s: float,
                 duration_hint_s: float | None = None, cancel: threading.Event | None = None) -> Fetched:
    """Download `count` windows of `window_s` spread over the track (`spread_windows`), joined into one WAV
    file in `workdir`: enrolment hears a track's parts without downloading all of it (blocking).

    `duration_hint_s` is the track's length when yt-dlp cannot tell (a bare media URL), e.g. from a listing.
    `Fetched.windows` says where each part came from. Raises as `fetch_window`.
    """
    return _fetch(source, settings, workdir, window_s=float(window_s), cancel=cancel, spread=max(1, count),
                  duration_hint_s=duration_hint_s)


def _fetch(source: Source, settings: Settings, workdir: Path, *, window_s: float, cancel: threading.Event | None,
           spread: int = 0, duration_hint_s: float | None = None) -> Fetched:
    extra_hosts = settings.fetch_extra_hosts
    if not is_allowed_url(source.url, extra_hosts) or source.platform != _platform_of(source.host):
        raise errors.NotAllowed(detail=f"host {source.host}")
    if shutil.which("ffmpeg") is None:      # without it yt-dlp would silently download the whole file
        raise errors.FetchFailed(detail="ffmpeg not found on PATH")
    started = time.monotonic()
    with open_egress(source.platform, settings) as egress:
        job = _Job(source, settings, window_s, started + settings.fetch_timeout_s, cancel or threading.Event(), egress,
                   spread=spread, duration_hint_s=duration_hint_s)
        with job.watched():
            try:
                url = source.url
                if source.host == SOUNDCLOUD_SHORT_HOST:
                    url = resolve_share_link(url, egress.url, extra_hosts, settings.fetch_timeout_s)
                with yt_dlp.YoutubeDL(ydl_options(source, settings, workdir, proxy=egress.url, job=job)) as ydl:
                    info = ydl.extract_info(url, download=True)
            except _Stop as stop:
                raise (job.failure(stop) if job.expired or egress.over_cap else stop.error) from None
            except errors.SpyError:
                raise
            except (yt_dlp.utils.YoutubeDLError, OSError, http.client.HTTPException) as exc:
                raise job.failure(exc) from exc
        # ffmpeg may exit 0 with a short file when its connection is cut, so check our limits on success too.
        if job.expired or egress.over_cap:
            raise job.failure(RuntimeError("limit reached"))
        bytes_read = egress.bytes_read
    if job.refusal is not None:
        raise job.refusal
    if not info or info.get("_type") in ("playlist", "multi_video"):
        raise errors.PlaylistRefused(detail="extractor returned a playlist")
    if job.plan is None:
        raise errors.FetchFailed(detail="yt-dlp did not ask for a window")
    path = _joined(workdir, len(job.spans), settings.decode_timeout_s) if spread else _output(info, workdir)
    start, duration, hint = job.plan
    log.info("fetched %s %s: %.0f s from %s in %d window(s), %d bytes read in %.2f s", source.platform,
             source.host, duration, format_time(start), len(job.spans), bytes_read, time.monotonic() - started)
    return Fetched(path=path, start_s=start, duration_s=duration, media_duration_s=_float(info.get("duration")),
                   title=info.get("title"), bytes_read=bytes_read, hint=hint, windows=tuple(job.spans))


def _platform_of(host: str) -> str:
    return "youtube" if host in YOUTUBE_HOSTS else "soundcloud" if host in SOUNDCLOUD_HOSTS else "extra"


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _output(info: dict[str, Any], workdir: Path) -> Path:
    candidates = [Path(d["filepath"]) for d in info.get("requested_downloads") or () if d.get("filepath")]
    candidates += sorted(p for p in workdir.glob("window.*") if p.suffix not in (".part", ".ytdl"))
    for path in candidates:
        if path.is_file() and path.stat().st_size > 0 and path.resolve().is_relative_to(workdir.resolve()):
            return path
    raise errors.FetchFailed(detail="yt-dlp finished without an audio file")


def _joined(workdir: Path, count: int, timeout_s: float) -> Path:
    """The numbered window files yt-dlp wrote, decoded and joined in order into `windows.wav` (mono)."""
    parts = []
    for number in range(1, count + 1):
        found = [p for p in workdir.glob(f"window-{number}.*")
                 if p.suffix not in (".part", ".ytdl") and p.is_file() and p.stat().st_size > 0]
        if not found:
            raise errors.FetchFailed(detail=f"window {number} of {count} was not downloaded")
        parts.append(found[0])
    out = workdir / "windows.wav"
    inputs = [arg for part in parts for arg in ("-i", str(part))]
    graph = "".join(f"[{i}:a:0]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=0:a=1[out]"
    try:
        subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs,
                        "-filter_complex", graph, "-map", "[out]", "-ac", "1", str(out)],
                       check=True, capture_output=True, timeout=timeout_s)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise errors.FetchFailed(detail=f"joining {len(parts)} windows failed: {exc}") from exc
    for part in parts:
        part.unlink(missing_ok=True)
    return out


def open_egress(platform: str, settings: Settings) -> Egress:
    """The per-job loopback proxy for a `platform`'s job: its hosts only, the byte cap, the upstream proxy."""
    extra_hosts = settings.fetch_extra_hosts
    return Egress(
        permit=lambda host, port: egress_allowed(platform, host, port, extra_hosts),
        upstream=None if platform == "extra" else proxy_address(settings.fetch_proxy_url),
        max_bytes=settings.max_fetch_bytes,
        io_timeout_s=min(30.0, settings.fetch_timeout_s),
    )


def proxy_address(url: str) -> tuple[str, int] | None:
    if not url:
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http" or not parts.hostname:
        raise errors.FetchFailed(detail=f"fetch_proxy_url must be http://host:port, got scheme {parts.scheme!r}")
    return parts.hostname, parts.port or 80


# --- the async front ---------------------------------------------------------------------------------

class Fetcher:
    """Fetch windows from the event loop: at most `max_concurrent_fetches` at once, each in a thread, each
    under a wall-clock limit, each in its own temporary folder that is removed on exit, cancel or timeout."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._slots = asyncio.Semaphore(settings.max_concurrent_fetches)

    @contextlib.asynccontextmanager
    async def window(self, source: Source, *, window_s: float | None = None) -> AsyncIterator[Fetched]:
        workdir = Path(tempfile.mkdtemp(prefix="spy-fetch-"))
        try:
            async with self._slots:
                fetched = await self._run(source, workdir, window_s)
            yield fetched
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    async def _run(self, source: Source, workdir: Path, window_s: float | None) -> Fetched:
        cancel = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(
            fetch_window, source, self._settings, workdir, window_s=window_s, cancel=cancel))
        try:
            # fetch_window keeps its own wall clock; this one only catches a thread that ignores it.
            return await asyncio.wait_for(asyncio.shield(task), self._settings.fetch_timeout_s + _GRACE_S)
        except TimeoutError:
            await _abandon(task, cancel, workdir)
            raise errors.FetchTimeout(detail="fetch thread did not stop in time") from None
        except asyncio.CancelledError:
            await _abandon(task, cancel, workdir)
            raise


async def _abandon(task: asyncio.Future[Fetched], cancel: threading.Event, workdir: Path) -> None:
    """Stop a job's thread and let it release its files; if it will not stop, clean up whenever it does."""
    cancel.set()

    def cleanup(done: asyncio.Future[Fetched]) -> None:
        if not done.cancelled():
            done.exception()                # retrieved, so asyncio does not warn about it
        shutil.rmtree(workdir, ignore_errors=True)

    task.add_done_callback(cleanup)
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait({task}, timeout=_GRACE_S)
