"""Fingerprints of enrolled tracks: made at enrolment (one call from enrol.py) and backfilled for older tracks.

Backfill needs each track's audio. A track enrolled from a file has its path in `tracks.source`; a track
enrolled from a link was a fetched window that was deleted after enrolment, so its audio is gone: the
backfill fetches it again only when the caller hands it a `fetch` (the CLI's, through the egress
allowlist); without one such tracks are reported as skipped, never guessed. Every track is its own
transaction, so an interrupted backfill resumes where it stopped (it only ever looks at tracks that still
lack a fingerprint of the current version).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from classifier import errors
from classifier.audio import decode
from classifier.audio import fingerprint as fp
from classifier.store import fingerprints as store
from classifier.store.index import Index, TrackInfo

__all__ = ["fingerprint_file", "add", "backfill", "Backfill"]

log = logging.getLogger(__name__)

Fetch = Callable[[str], Iterator[Path]]
"""fetch(link) yields the path of the fetched audio (valid until the generator resumes), as enrol.py's."""


def fingerprint_file(path: Path, params: fp.FingerprintParams = fp.PARAMS, *, max_seconds: float = 4 * 3600.0,
                     timeout_s: float = 600.0) -> fp.Peaks:
    """Decode a file at the fingerprint's rate, streamed (flat memory for a 3-hour set), into its peaks."""
    chunks = decode.stream(Path(path), params.sample_rate, chunk_seconds=60.0, max_seconds=max_seconds,
                           timeout_s=timeout_s)
    return fp.stream_peaks(chunks, params)


def add(index: Index, track: TrackInfo, path: Path, params: fp.FingerprintParams = fp.PARAMS) -> bool:
    """Fingerprint one just-enrolled track. A failure is logged, not raised: the track is enrolled either
    way, and `backfill` picks up any track left without a fingerprint."""
    try:
        peaks = fingerprint_file(path, params)
    except errors.SpyError as exc:
        log.warning("no fingerprint for track %d (%s): %s", track.id, track.title, exc.detail or exc.user_message)
        return False
    store.save(index.conn, track.id, peaks, params.version)
    return True


@dataclass(slots=True)
class Backfill:
    """What a backfill did: tracks fingerprinted, and (track id, title, reason) for the ones it could not do."""

    done: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)   # audio not on disk, no fetcher
    failed: list[tuple[int, str, str]] = field(default_factory=list)    # audio there but unreadable


def backfill(index: Index, *, progress: Callable[[int, int, str], None] | None = None, fetch: Fetch | None = None,
             params: fp.FingerprintParams = fp.PARAMS) -> Backfill:
    """Fingerprint every enrolled track that has none of the current version yet.

    Parameters
    ----------
    index : the open artist index (its SQLite file holds the fingerprints too)
    progress : called as progress(done, total, title) after each track (a tqdm bar in the CLI)
    fetch : re-fetches link-enrolled tracks; None skips them (reported in `skipped`)

    Resumable: stop it at any point and run it again; tracks done stay done.
    """
    todo = store.missing(index.conn, params.version)
    out = Backfill()
    for i, track in enumerate(todo, start=1):
        try:
            peaks = _peaks_of(track, fetch, params)
        except _Skip as exc:
            out.skipped.append((track.track_id, track.title, str(exc)))
        except errors.SpyError as exc:
            out.failed.append((track.track_id, track.title, exc.user_message))
            log.warning("backfill: track %d (%s) failed: %s", track.track_id, track.title, exc.detail or exc)
        else:
            store.save(index.conn, track.track_id, peaks, params.version)
            out.done += 1
        if progress is not None:
            progress(i, len(todo), track.title)
    log.info("fingerprint backfill: %d done, %d skipped, %d failed", out.done, len(out.skipped), len(out.failed))
    return out


class _Skip(Exception):
    pass


def _peaks_of(track: store.Pending, fetch: Fetch | None, params: fp.FingerprintParams) -> fp.Peaks:
    if "://" in track.source:
        if fetch is None:
            raise _Skip("enrolled from a link; its audio is not kept (run the backfill with a fetcher)")
        for path in fetch(track.source):
            return fingerprint_file(path, params)
        raise errors.FetchFailed(detail=track.source)
    path = Path(track.source)
    if not path.is_file():
        raise _Skip(f"the file {path} is no longer there")
    return fingerprint_file(path, params)
