"""An artist's page -> the tracks on it, newest first, as yt-dlp lists them, without opening any track.

For operators only (`spy enrol ARTIST PAGE`): the chat front ends keep refusing playlists. yt-dlp's flat
extraction reads the page (or the platform's API) and names each entry; the audio is fetched later, a few
windows per track (`fetch.fetch_spread`). The listing goes through the same per-job egress proxy as a fetch:
the platform's own hosts (or the operator-added host) only, under the byte cap and the wall clock.
"""

from __future__ import annotations

import calendar
import http.client
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import yt_dlp
import yt_dlp.utils

from classifier import errors
from classifier.settings import Settings
from classifier.sources.fetch import base_options, classify_error, open_egress
from classifier.sources.platforms import Page, Source, from_url

__all__ = ["Listed", "Listing", "list_page"]

log = logging.getLogger(__name__)

# The extractors that list pages, per platform (never the generic one for YouTube or SoundCloud).
_LISTERS = {
    "youtube": ["youtube:tab", "youtube:playlist"],
    "soundcloud": ["soundcloud:user", "soundcloud:set", "soundcloud:playlist"],
    "extra": ["generic"],
}


@dataclass(frozen=True, slots=True)
class Listed:
    """One track on a page."""

    source: Source              # canonical, no start
    title: str | None
    duration_s: float | None    # when the page says (RSS, YouTube); a fetch can then spread its windows
    uploaded: float | None      # Unix time, when the page says


@dataclass(frozen=True, slots=True)
class Listing:
    page: Page
    title: str | None
    tracks: tuple[Listed, ...]  # newest first (by upload time when every entry has one, else page order)
    refused: tuple[str, ...]    # entries that are no track we may fetch, each with why
    bytes_read: int


def list_page(page: Page, settings: Settings, *, max_entries: int | None = None) -> Listing:
    """List up to `max_entries` (default `settings.enrol_page_max_entries`) tracks of `page` (blocking).

    Raises
    ------
    errors.NotAllowed       the page, or a redirect, leads off the platform's hosts
    errors.FetchFailed      and its subclasses: the page could not be read (removed, private, too slow, ...)
    """
    limit = settings.enrol_page_max_entries if max_entries is None else max_entries
    started = time.monotonic()
    with open_egress(page.platform, settings) as egress:
        # One wall clock for the whole listing: closing the proxy ends every connection yt-dlp has open.
        timer = threading.Timer(settings.fetch_timeout_s, egress.close)
        timer.daemon = True
        timer.start()
        options = {
            **base_options(settings, proxy=egress.url),
            "allowed_extractors": _LISTERS[page.platform],
            "extract_flat": True,            # name the entries; open none of them
            "playlist_items": f"1-{max(1, limit)}",
            "skip_download": True,
        }
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                info = ydl.extract_info(page.url, download=False)
        except (yt_dlp.utils.YoutubeDLError, OSError, http.client.HTTPException) as exc:
            if time.monotonic() - started >= settings.fetch_timeout_s:
                raise errors.FetchTimeout(detail=f"listing took over {settings.fetch_timeout_s:.0f} s") from exc
            if egress.over_cap:
                raise errors.DownloadTooLarge(detail=f"listing read {egress.bytes_read} bytes") from exc
            if egress.refused:
                raise errors.NotAllowed(detail="refused egress to " + ", ".join(egress.refused)) from exc
            raise classify_error(str(exc)) from exc
        finally:
            timer.cancel()
        bytes_read = egress.bytes_read
    entries = (info or {}).get("entries")
    if entries is not None:
        raw = list(entries)
    else:                                        # a page with one track on it: that page is the track's link
        raw = [{**info, "url": info.get("webpage_url") or info.get("url")}] if info else []
    tracks: list[Listed] = []
    refused: list[str] = []
    for entry in raw[:limit]:
        listed, why = _track(entry, settings.fetch_extra_hosts)
        if listed is not None:
            tracks.append(listed)
        elif why:
            refused.append(why)
    if tracks and all(t.uploaded is not None for t in tracks):
        tracks.sort(key=lambda t: t.uploaded or 0.0, reverse=True)
    log.info("listed %s %s: %d tracks, %d refused, %d bytes in %.2f s", page.platform, page.url.split("?")[0],
             len(tracks), len(refused), bytes_read, time.monotonic() - started)
    return Listing(page=page, title=(info or {}).get("title"), tracks=tuple(tracks), refused=tuple(refused),
                   bytes_read=bytes_read)


def _track(entry: Any, extra_hosts: tuple[str, ...]) -> tuple[Listed | None, str | None]:
    """A listed entry as a track we may fetch, or why not."""
    if not isinstance(entry, dict):
        return None, None
    url = entry.get("url") or entry.get("webpage_url") or ""
    url, _ = yt_dlp.utils.unsmuggle_url(str(url))    # the RSS reader smuggles each item's guid into its URL
    title = entry.get("title") if isinstance(entry.get("title"), str) else None
    try:
        source = from_url(url, extra_hosts).with_start(None)
    except errors.SpyError as exc:
        return None, f"{title or url}: {exc.user_message}"
    return Listed(source=source, title=title, duration_s=_number(entry.get("duration")),
                  uploaded=_uploaded(entry)), None


def _number(value: Any) -> float | None:
    """A finite, non-negative number (seconds of audio, or a Unix time) or None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e11
    return float(value) if ok else None


def _uploaded(entry: dict[str, Any]) -> float | None:
    if (stamp := _number(entry.get("timestamp"))) is not None:
        return stamp
    day = entry.get("upload_date")
    if isinstance(day, str) and len(day) == 8 and day.isdigit():
        return float(calendar.timegm(time.strptime(day, "%Y%m%d")))
    return None
