"""The embedded SQLite database: one file for the artist index, the model registry and chat history.

The program creates and migrates the schema itself; `PRAGMA user_version` holds the schema version.
Migrations are append-only: each entry moves the schema from version i to i + 1 inside one
transaction, so a crash mid-migration leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterator

__all__ = ["connect", "transaction", "SCHEMA_VERSION", "MIGRATIONS"]

MIGRATIONS: list[str] = [
    # 1: the artist index and the model registry
    """
    CREATE TABLE artists (
        id      INTEGER PRIMARY KEY,
        name    TEXT NOT NULL UNIQUE COLLATE NOCASE,
        created REAL NOT NULL
    );
    CREATE TABLE tracks (
        id           INTEGER PRIMARY KEY,
        artist_id    INTEGER NOT NULL REFERENCES artists(id) ON DELETE CASCADE,
        title        TEXT NOT NULL,
        source       TEXT NOT NULL,
        duration_s   REAL NOT NULL,
        content_hash TEXT NOT NULL,
        split        TEXT,
        backbone     TEXT NOT NULL,
        hop_s        REAL NOT NULL,
        n_slices     INTEGER NOT NULL,
        added        REAL NOT NULL,
        UNIQUE (content_hash, backbone)
    );
    CREATE INDEX tracks_artist ON tracks(artist_id);
    CREATE TABLE embeddings (
        track_id  INTEGER PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
        starts    BLOB NOT NULL,   -- float32 (n,) slice starts in seconds
        embedding BLOB NOT NULL,   -- float32 (n, 200) penultimate
        pooled    BLOB NOT NULL    -- float16 (n, 1506) max/mean pooled mid-end features
    );
    CREATE TABLE models (
        id       TEXT PRIMARY KEY,
        created  REAL NOT NULL,
        arch     TEXT NOT NULL,
        path     TEXT NOT NULL,
        artists  INTEGER NOT NULL,
        summary  TEXT NOT NULL,   -- JSON
        active   INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 2: chat history and corrections (bot/history.py). AUTOINCREMENT so that the id of a forgotten or
    # pruned record is never handed out again: old "Wrong?" buttons in chats still carry those ids.
    """
    CREATE TABLE history (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        platform       TEXT NOT NULL,              -- telegram | discord
        chat           TEXT NOT NULL,              -- the platform's chat, or guild/channel
        user           TEXT NOT NULL,              -- the platform's id of who asked
        source         TEXT NOT NULL,              -- the link at the analysed moment, or voice note / a file name
        start_s        REAL NOT NULL,              -- where in the source the analysed audio starts
        seconds        REAL NOT NULL,              -- how much audio was analysed
        kind           TEXT NOT NULL CHECK (kind IN ('identify', 'genre')),
        winner         TEXT,                       -- the top artist (or genre), even when not named
        confidence     REAL NOT NULL,
        verdict        TEXT NOT NULL CHECK (verdict IN ('identified', 'unknown', 'genre')),
        model_id       TEXT,                       -- the artist model that answered (NULL for genre)
        answer         TEXT NOT NULL,              -- JSON: the answer without timeline and timings
        message        TEXT,                       -- the platform's id of the answer message
        created        REAL NOT NULL,
        correction     TEXT,                       -- the artist a member says it is
        corrected_by   TEXT,
        corrected_at   REAL,
        enrolled_track INTEGER                     -- tracks.id once `spy enrol --from-corrections` took it
    );
    CREATE INDEX history_chat ON history(platform, chat, created, id);
    CREATE INDEX history_created ON history(created);
    CREATE INDEX history_message ON history(platform, chat, message) WHERE message IS NOT NULL;
    CREATE INDEX history_corrected ON history(corrected_at) WHERE correction IS NOT NULL;
    """,
    # 3: the known-track fingerprint of each enrolled track (classifier/store/fingerprints.py): its spectral
    # peaks, from which the in-memory hash index is rebuilt at load, so re-hashing never needs the audio.
    """
    CREATE TABLE fingerprints (
        track_id INTEGER PRIMARY KEY REFERENCES tracks(id) ON DELETE CASCADE,
        version  TEXT NOT NULL,      -- FingerprintParams.version the peaks were made with
        n_frames INTEGER NOT NULL,   -- the track's length in fingerprint frames
        n_peaks  INTEGER NOT NULL,
        peaks    BLOB NOT NULL,      -- zlib of uint32 frame deltas (n_peaks) then uint8 bins (n_peaks)
        added    REAL NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: Path, *, timeout_s: float = 30.0) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the database at `path`.

    WAL journal so readers never block the writer; foreign keys on; autocommit mode, with explicit
    transactions through `transaction()`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    _migrate(conn)
    return conn


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (KeyboardInterrupt included)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _migrate(conn: sqlite3.Connection) -> None:
    # Most opens find the schema current: check without taking the write lock (readers and writers
    # from both bots open the file all the time); only a migration takes it, and re-checks under it.
    if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return
    with transaction(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"database schema v{version} is newer than this program (v{SCHEMA_VERSION})")
        for i in range(version, SCHEMA_VERSION):
            for stmt in _statements(MIGRATIONS[i]):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {i + 1}")


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split on ';' instead (no ';' inside our DDL strings).
    out = []
    for part in script.split(";"):
        lines = [ln.split("--", 1)[0] for ln in part.splitlines()]
        stmt = "\n".join(lines).strip()
        if stmt:
            out.append(stmt)
    return out
