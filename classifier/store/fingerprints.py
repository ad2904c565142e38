"""Known-track fingerprints in SQLite: each enrolled track's spectral peaks, and loading them into the index.

One row per track (table `fingerprints`, migration 3 in db.py), deleted with its track. Peaks, not hashes,
are stored: ~20 a second at 5 bytes before compression (~0.2 MB an hour after), and the in-memory
`KnownTracks` is rebuilt from them at load in a few seconds per hundred hours.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import zlib
from dataclasses import dataclass

import numpy as np

from classifier.model.known import KnownTracks, Peaks, TrackRef
from classifier.store import db

__all__ = ["save", "load", "missing", "count", "load_known", "encode", "decode", "Pending"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Pending:
    """An enrolled track without a fingerprint of the current version (what a backfill has to do)."""

    track_id: int
    artist: str
    title: str
    source: str
    duration_s: float


def encode(peaks: Peaks) -> bytes:
    """zlib of the frame deltas (uint32) then the bins (uint8): deltas are small, so they compress ~3x."""
    t = peaks.t.astype(np.int64)
    deltas = np.diff(t, prepend=0).astype("<u4")
    return zlib.compress(deltas.tobytes() + peaks.f.astype(np.uint8).tobytes(), 6)


def decode(blob: bytes, n_peaks: int, n_frames: int) -> Peaks:
    raw = zlib.decompress(blob)
    if len(raw) != 5 * n_peaks:
        raise ValueError(f"fingerprint blob holds {len(raw)} bytes, expected {5 * n_peaks}")
    deltas = np.frombuffer(raw[: 4 * n_peaks], dtype="<u4").astype(np.int64)
    bins = np.frombuffer(raw[4 * n_peaks:], dtype=np.uint8).copy()
    return Peaks(np.cumsum(deltas).astype(np.uint32), bins, int(n_frames))


def save(conn: sqlite3.Connection, track_id: int, peaks: Peaks, version: str) -> None:
    """Store (or replace) one track's peaks in one transaction."""
    with db.transaction(conn) as c:
        c.execute("INSERT OR REPLACE INTO fingerprints(track_id, version, n_frames, n_peaks, peaks, added)"
                  " VALUES (?, ?, ?, ?, ?, ?)",
                  (int(track_id), version, int(peaks.n_frames), len(peaks), encode(peaks), time.time()))


def load(conn: sqlite3.Connection, track_id: int, version: str) -> Peaks | None:
    row = conn.execute("SELECT n_frames, n_peaks, peaks FROM fingerprints WHERE track_id = ? AND version = ?",
                       (int(track_id), version)).fetchone()
    return None if row is None else decode(row["peaks"], row["n_peaks"], row["n_frames"])


def count(conn: sqlite3.Connection, version: str) -> tuple[int, int]:
    """(tracks with a fingerprint of this version, enrolled tracks)."""
    have = conn.execute("SELECT COUNT(*) FROM fingerprints WHERE version = ?", (version,)).fetchone()[0]
    total = conn.execute("SELECT COUNT(*) FROM tracks").fetchone()[0]
    return int(have), int(total)


def missing(conn: sqlite3.Connection, version: str) -> list[Pending]:
    """Enrolled tracks without a fingerprint of `version`, oldest first."""
    rows = conn.execute(
        "SELECT t.id, a.name AS artist, t.title, t.source, t.duration_s FROM tracks t"
        " JOIN artists a ON a.id = t.artist_id"
        " LEFT JOIN fingerprints f ON f.track_id = t.id AND f.version = ?"
        " WHERE f.track_id IS NULL ORDER BY t.id", (version,)).fetchall()
    return [Pending(r["id"], r["artist"], r["title"], r["source"], r["duration_s"]) for r in rows]


def load_known(conn: sqlite3.Connection, version: str, **kwargs: object) -> KnownTracks:
    """Every stored fingerprint of `version` in one in-memory index (kwargs go to KnownTracks)."""
    t0 = time.perf_counter()
    rows = conn.execute(
        "SELECT f.track_id, a.name AS artist, t.title, f.n_frames, f.n_peaks, f.peaks FROM fingerprints f"
        " JOIN tracks t ON t.id = f.track_id JOIN artists a ON a.id = t.artist_id"
        " WHERE f.version = ? ORDER BY f.track_id", (version,))
    entries = ((TrackRef(r["track_id"], r["artist"], r["title"]), decode(r["peaks"], r["n_peaks"], r["n_frames"]))
               for r in rows)
    known = KnownTracks.build(entries, **kwargs)  # type: ignore[arg-type]
    log.info("known tracks: %d tracks, %.1f h, %d hashes, %.1f MB in %.1f s", len(known), known.hours,
             known.n_hashes, known.nbytes / 1e6, time.perf_counter() - t0)
    return known
