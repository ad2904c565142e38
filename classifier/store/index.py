"""The artist index: artists, their enrolled tracks and each track's per-slice embeddings, in SQLite.

Each track goes in with its embeddings in one transaction, so an interrupted enrolment leaves every
track either fully there or absent, and a re-run skips what is already in (by content hash).

The model registry stores each trained head's folder relative to the folder that holds the database: the data
folder (`<SPY_DATA_DIR>/spy.sqlite3`, heads in `<SPY_DATA_DIR>/models/`). So `spy` finds the active model from
any working folder, and the data folder can be moved or copied whole. The database's own folder is the anchor,
not a setting, so every reader and writer agrees on it without being told (a database that SPY_DB_PATH puts
outside the data folder gets absolute paths instead: it still works from any folder, but cannot be moved).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from classifier import errors
from classifier.model.heads import Dataset
from classifier.store import db

__all__ = ["Index", "TrackInfo", "ArtistSummary", "file_hash", "resolve_model_path", "stored_model_path"]

log = logging.getLogger(__name__)


def file_hash(path: Path, *, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the same file enrolled twice is recognised; re-encodes are not)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_legacy_seen: set[Path] = set()     # legacy paths already warned about (active_model runs once per request)


def stored_model_path(folder: Path, base: Path) -> str:
    """How the registry writes a model's folder: relative to `base` (absolute) when inside it, else absolute."""
    folder = Path(os.path.abspath(folder))
    if folder.is_relative_to(base):
        return folder.relative_to(base).as_posix()
    return str(folder)


def resolve_model_path(stored: str, base: Path) -> Path:
    """The folder a registry row names, as an absolute path.

    Absolute paths are taken as they are. Relative ones are relative to `base` (the database's folder), except
    in databases written before that rule, whose relative paths meant the working folder of `spy train`
    (`data/models/<id>`): if the folder is not under `base` but is there, that is the one.
    """
    path = Path(stored)
    if path.is_absolute():
        return path
    inside = base / path
    if not inside.exists() and path.exists():
        legacy = Path(os.path.abspath(path))
        if legacy not in _legacy_seen:
            _legacy_seen.add(legacy)
            log.warning("model folder %s is registered relative to the working folder (an older spy); "
                        "run `spy train` again to register a model that works from any folder", stored)
        return legacy
    return inside


@dataclass(frozen=True, slots=True)
class TrackInfo:
    id: int
    artist: str
    title: str
    source: str
    duration_s: float
    content_hash: str
    split: str | None
    n_slices: int


@dataclass(frozen=True, slots=True)
class ArtistSummary:
    name: str
    tracks: int
    minutes: float


_TRACK_SQL = """SELECT t.id, a.name AS artist, t.title, t.source, t.duration_s, t.content_hash, t.split, t.n_slices
                FROM tracks t JOIN artists a ON a.id = t.artist_id"""


def _track(row: sqlite3.Row) -> TrackInfo:
    return TrackInfo(row["id"], row["artist"], row["title"], row["source"], row["duration_s"],
                     row["content_hash"], row["split"], row["n_slices"])


class Index:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.folder = Path(os.path.abspath(self.path.parent))   # the data folder: the registry's paths are relative to it
        self.conn = db.connect(self.path)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tracks ------------------------------------------------------------------------------------
    def find_hash(self, content_hash: str, backbone: str) -> TrackInfo | None:
        row = self.conn.execute(_TRACK_SQL + " WHERE t.content_hash = ? AND t.backbone = ?",
                                (content_hash, backbone)).fetchone()
        return _track(row) if row else None

    def add_track(self, *, artist: str, title: str, source: str, duration_s: float, content_hash: str,
                  split: str | None, backbone: str, hop_s: float, starts: np.ndarray,
                  embedding: np.ndarray, pooled: np.ndarray) -> TrackInfo:
        """Insert one track and its embeddings atomically. Returns the existing track for a duplicate."""
        artist = artist.strip()
        if not artist:
            raise errors.EnrolError("The artist name is empty.")
        n = int(starts.shape[0])
        if embedding.shape[0] != n or pooled.shape[0] != n:
            raise ValueError("starts, embedding and pooled disagree on the number of slices")
        with db.transaction(self.conn) as c:
            existing = c.execute(_TRACK_SQL + " WHERE t.content_hash = ? AND t.backbone = ?",
                                 (content_hash, backbone)).fetchone()
            if existing:
                return _track(existing)
            now = time.time()
            c.execute("INSERT OR IGNORE INTO artists(name, created) VALUES (?, ?)", (artist, now))
            artist_id = c.execute("SELECT id FROM artists WHERE name = ?", (artist,)).fetchone()[0]
            cur = c.execute(
                "INSERT INTO tracks(artist_id, title, source, duration_s, content_hash, split, backbone, hop_s,"
                " n_slices, added) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (artist_id, title, source, float(duration_s), content_hash, split, backbone, float(hop_s), n, now))
            track_id = int(cur.lastrowid or 0)
            c.execute("INSERT INTO embeddings(track_id, starts, embedding, pooled) VALUES (?,?,?,?)",
                      (track_id, starts.astype(np.float32).tobytes(), embedding.astype(np.float32).tobytes(),
                       pooled.astype(np.float16).tobytes()))
        return TrackInfo(track_id, artist, title, source, float(duration_s), content_hash, split, n)

    def tracks(self, artist: str | None = None) -> list[TrackInfo]:
        if artist is None:
            rows = self.conn.execute(_TRACK_SQL + " ORDER BY a.name, t.title").fetchall()
        else:
            rows = self.conn.execute(_TRACK_SQL + " WHERE a.name = ? ORDER BY t.title", (artist,)).fetchall()
        return [_track(r) for r in rows]

    def artists(self) -> list[ArtistSummary]:
        rows = self.conn.execute(
            "SELECT a.name, COUNT(t.id) AS n, COALESCE(SUM(t.duration_s), 0) AS secs FROM artists a"
            " LEFT JOIN tracks t ON t.artist_id = a.id GROUP BY a.id HAVING n > 0 ORDER BY a.name").fetchall()
        return [ArtistSummary(r["name"], r["n"], r["secs"] / 60.0) for r in rows]

    def forget(self, what: str) -> tuple[str, int]:
        """Remove an artist (all tracks) or one track (by id, title or hash prefix).

        Returns (what was removed, number of tracks removed); raises EnrolError when nothing matches.
        """
        with db.transaction(self.conn) as c:
            row = c.execute("SELECT id, name FROM artists WHERE name = ?", (what.strip(),)).fetchone()
            if row:
                n = c.execute("SELECT COUNT(*) FROM tracks WHERE artist_id = ?", (row["id"],)).fetchone()[0]
                c.execute("DELETE FROM artists WHERE id = ?", (row["id"],))
                return f"artist {row['name']}", int(n)
            rows = c.execute(
                "SELECT id, title FROM tracks WHERE CAST(id AS TEXT) = ? OR title = ? OR"
                " (length(?) >= 8 AND content_hash LIKE ? || '%')",
                (what, what, what, what)).fetchall()
            if len(rows) > 1:
                raise errors.EnrolError(f"{what!r} matches {len(rows)} tracks; use the track id (spy artists --tracks).")
            if not rows:
                raise errors.EnrolError(f"No artist or track called {what!r}.")
            c.execute("DELETE FROM tracks WHERE id = ?", (rows[0]["id"],))
            c.execute("DELETE FROM artists WHERE id NOT IN (SELECT DISTINCT artist_id FROM tracks)")
            return f"track {rows[0]['title']}", 1

    def dataset(self, *, split: str | None = None, artists: Iterable[str] | None = None) -> Dataset:
        """All slices (optionally of one split / some artists), with artist labels sorted by name."""
        sql = ("SELECT t.id, a.name, e.starts, e.embedding, e.pooled FROM tracks t JOIN artists a ON a.id = t.artist_id"
               " JOIN embeddings e ON e.track_id = t.id")
        args: list[Any] = []
        if split is not None:
            sql += " WHERE t.split = ?"
            args.append(split)
        rows = self.conn.execute(sql + " ORDER BY a.name, t.id", args).fetchall()
        wanted = set(artists) if artists is not None else None
        rows = [r for r in rows if wanted is None or r["name"] in wanted]
        labels = tuple(sorted({r["name"] for r in rows}))
        lab = {n: i for i, n in enumerate(labels)}
        emb, pooled, starts, y, track = [], [], [], [], []
        for r in rows:
            s = np.frombuffer(r["starts"], dtype=np.float32)
            emb.append(np.frombuffer(r["embedding"], dtype=np.float32).reshape(len(s), -1))
            pooled.append(np.frombuffer(r["pooled"], dtype=np.float16).reshape(len(s), -1).astype(np.float32))
            starts.append(s)
            y.append(np.full(len(s), lab[r["name"]], dtype=np.int64))
            track.append(np.full(len(s), r["id"], dtype=np.int64))
        if not rows:
            return Dataset(np.zeros((0, 200), np.float32), np.zeros((0, 1506), np.float32), np.zeros(0, np.float32),
                           np.zeros(0, np.int64), np.zeros(0, np.int64), ())
        return Dataset(np.concatenate(emb), np.concatenate(pooled), np.concatenate(starts), np.concatenate(y),
                       np.concatenate(track), labels)

    # -- model registry -----------------------------------------------------------------------------
    def register_model(self, model_id: str, *, arch: str, path: Path, artists: int, summary: dict[str, Any],
                       activate: bool = True) -> None:
        """Record a saved model's folder (relative to the data folder when inside it) and maybe activate it."""
        with db.transaction(self.conn) as c:
            if activate:
                c.execute("UPDATE models SET active = 0")
            c.execute("INSERT INTO models(id, created, arch, path, artists, summary, active) VALUES (?,?,?,?,?,?,?)",
                      (model_id, time.time(), arch, stored_model_path(path, self.folder), artists,
                       json.dumps(summary), int(activate)))

    def active_model(self) -> dict[str, Any] | None:
        """The active model's row; its "path" is the model's folder as an absolute `Path`."""
        row = self.conn.execute("SELECT * FROM models WHERE active = 1 ORDER BY created DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {**dict(row), "path": resolve_model_path(row["path"], self.folder),
                "summary": json.loads(row["summary"])}

    def models(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT id, created, arch, artists, active FROM models ORDER BY created DESC").fetchall()
        return [dict(r) for r in rows]
