"""Chat history: every answer the bots give, kept per chat or channel, with the corrections members make.

    history = History(settings.database, retention_days=settings.history_retention_days)
    record_id = await history.record(platform="telegram", chat="-100500", user="111",
                                     source=verdict.source, result=verdict)
    await history.recent("telegram", "-100500", n=10)          # newest first
    await history.correct(record_id, user="222", artist="Deep Pulse")
    await history.forget_user("telegram", "-100500", "111")    # /forget_me
    await history.prune()                                      # older than retention_days

The rows live in the same SQLite file as the artist index (`store/db.py`, migration 2). `Store` does
the blocking work on one connection behind a lock; `History` is its async face for the bots (one per process,
every call in a worker thread, so the event loop never waits on the disk); the operator's CLI
(`spy corrections`, `spy history export`, `spy enrol --from-corrections`) uses `Store` directly.
Every write is one transaction: an answer is a single row (its top-5 and genres as JSON in that row), so a
crash leaves either the whole record or none of it.

Decisions:

- Front ends store links at the moment that was analysed (`bot.history.link_at`), so `/history` links there
  and `spy enrol --from-corrections` re-fetches exactly the window the members heard.
- Voice notes and files: the bot does not keep audio, so their corrections are listed as "audio not kept"
  and cannot be enrolled (no uploaded audio lies around on disk, and none outlives `/forget_me`).
- A correction is stored on the record; a later one replaces it (the latest word wins). Corrections name an
  artist, so only artist answers (kind "identify") take them.
- `/forget_me` deletes the user's records in that chat and clears the corrections they made there on others'
  records. `retention_days <= 0` keeps records forever.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence, TextIO

from classifier import errors
from classifier.model.verdict import GenreReport, Verdict
from classifier.store import db

__all__ = ["History", "Store", "Record", "MAX_ARTIST_CHARS", "MAX_RECENT", "PRUNE_EVERY_S", "AUDIO_NOT_KEPT",
           "CSV_COLUMNS"]

log = logging.getLogger(__name__)

MAX_ARTIST_CHARS = 100        # a name, not an essay (and a bound on what one chat message can store)
MAX_RECENT = 200              # most records one /history call reads
PRUNE_EVERY_S = 6 * 3600.0    # the bot prunes at start and then this often (retention is counted in days)
AUDIO_NOT_KEPT = "audio not kept"
_DAY_S = 86400.0
CSV_COLUMNS = ("id", "created_utc", "platform", "chat", "user", "kind", "source", "start_s", "seconds", "verdict",
               "winner", "confidence", "model_id", "top5", "genres", "correction", "corrected_by",
               "corrected_at_utc", "enrolled_track")


@dataclass(frozen=True, slots=True)
class Record:
    """One answer a bot gave.

    kind : "identify" | "genre";  verdict : "identified" | "unknown" for artists, "genre" for genres
    winner : the top artist (or genre), also when the verdict is "unknown"; None when there was no candidate
    source : the link at the analysed moment (`start_s`), or "voice note" / a file name
    top : the top-5 as (name, score);  correction : the artist a member named, or None
    """

    id: int
    platform: str
    chat: str
    user: str
    source: str
    kind: str
    winner: str | None
    confidence: float
    verdict: str
    created: float
    correction: str | None
    start_s: float = 0.0
    seconds: float = 0.0
    model_id: str | None = None
    top: tuple[tuple[str, float], ...] = ()
    message: str | None = None
    corrected_by: str | None = None
    corrected_at: float | None = None
    enrolled_track: int | None = None

    @property
    def is_link(self) -> bool:
        return self.source.startswith(("http://", "https://"))


def _record(row: sqlite3.Row) -> Record:
    answer = json.loads(row["answer"])
    key = "artists" if row["kind"] == "identify" else "genres"
    top = tuple((str(c.get("name", c.get("label"))), float(c["score"])) for c in answer.get(key, ()))
    return Record(id=row["id"], platform=row["platform"], chat=row["chat"], user=row["user"], source=row["source"],
                  kind=row["kind"], winner=row["winner"], confidence=row["confidence"], verdict=row["verdict"],
                  created=row["created"], correction=row["correction"], start_s=row["start_s"],
                  seconds=row["seconds"], model_id=row["model_id"], top=top, message=row["message"],
                  corrected_by=row["corrected_by"], corrected_at=row["corrected_at"],
                  enrolled_track=row["enrolled_track"])


def _artist_name(artist: str) -> str:
    name = " ".join(artist.split())
    if not name:
        raise errors.BadRequest("Tell me the artist's name.")
    if len(name) > MAX_ARTIST_CHARS:
        raise errors.BadRequest(f"That name is longer than {MAX_ARTIST_CHARS} characters. Just the artist, please.")
    return name


_NOT_HERE = "I can't find that answer in this chat's history any more (it was forgotten or is too old)."
_SELECT = "SELECT * FROM history"


class Store:
    """The history tables, blocking. One connection behind a lock: `History` calls it from worker threads,
    and one sqlite3 connection must not run two transactions at once. Other processes (the CLI, a second
    bot process) open their own connection; SQLite's WAL and `BEGIN IMMEDIATE` serialise the writers."""

    def __init__(self, db_path: Path, *, retention_days: int = 365) -> None:
        self.path = Path(db_path)
        self.retention_days = retention_days
        self._conn = db.connect(self.path)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes ----------------------------------------------------------------------------------------
    def add(self, *, platform: str, chat: str, user: str, source: str, result: Verdict | GenreReport,
            message: str | None = None, now: float | None = None) -> int:
        """Insert one answer; returns its id."""
        answer = result.to_dict()
        for bulky in ("timeline", "timings", "source"):
            answer.pop(bulky, None)
        if isinstance(result, Verdict):
            top = result.artists[0] if result.artists else None
            kind, verdict, confidence, model = "identify", result.verdict, result.confidence, result.model_id
        else:
            top = result.genres[0] if result.genres else None
            kind, verdict, confidence, model = "genre", "genre", (top.score if top else 0.0), None
        row = (platform, str(chat), str(user), source, result.start,
               result.seconds, kind, top.label if top else None, float(confidence), verdict, model,
               json.dumps(answer, separators=(",", ":")), message, time.time() if now is None else now)
        with self._lock, db.transaction(self._conn) as c:
            cur = c.execute(
                "INSERT INTO history(platform, chat, user, source, start_s, seconds, kind, winner, confidence,"
                " verdict, model_id, answer, message, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
            return int(cur.lastrowid or 0)

    def set_message(self, record_id: int, message: str) -> None:
        """Remember which platform message shows the answer (for `/correct` as a reply to it)."""
        with self._lock, db.transaction(self._conn) as c:
            c.execute("UPDATE history SET message = ? WHERE id = ?", (message, record_id))

    def correct(self, record_id: int, *, user: str, artist: str, platform: str | None = None,
                chat: str | None = None, now: float | None = None) -> Record:
        """Store `artist` as the correction of a record (replacing an earlier one).

        `platform`/`chat`, when given, must be the record's: a button or a reply in one chat never reaches
        another chat's records. Raises `errors.BadRequest` (with a sentence for the user) otherwise, for a
        record that is gone, for a genre answer, and for an empty or overlong name.
        """
        name = _artist_name(artist)
        with self._lock, db.transaction(self._conn) as c:
            row = c.execute(_SELECT + " WHERE id = ?", (record_id,)).fetchone()
            if row is None or (platform is not None and row["platform"] != platform) or (
                    chat is not None and row["chat"] != str(chat)):
                raise errors.BadRequest(_NOT_HERE, detail=f"record {record_id}")
            if row["kind"] != "identify":
                raise errors.BadRequest("Corrections name an artist, so they go under artist answers "
                                        "(/identify), not genre ones.")
            c.execute("UPDATE history SET correction = ?, corrected_by = ?, corrected_at = ? WHERE id = ?",
                      (name, str(user), time.time() if now is None else now, record_id))
            return _record(c.execute(_SELECT + " WHERE id = ?", (record_id,)).fetchone())

    def forget_user(self, platform: str, chat: str, user: str) -> int:
        """Delete `user`'s records in one chat and clear the corrections they made there. Returns records deleted."""
        with self._lock, db.transaction(self._conn) as c:
            n = c.execute("DELETE FROM history WHERE platform = ? AND chat = ? AND user = ?",
                          (platform, str(chat), str(user))).rowcount
            c.execute("UPDATE history SET correction = NULL, corrected_by = NULL, corrected_at = NULL"
                      " WHERE platform = ? AND chat = ? AND corrected_by = ?", (platform, str(chat), str(user)))
        return int(n)

    def prune(self, now: float | None = None) -> int:
        """Delete records older than `retention_days` (none when it is 0 or less). Returns how many."""
        if self.retention_days <= 0:
            return 0
        cutoff = (time.time() if now is None else now) - self.retention_days * _DAY_S
        with self._lock, db.transaction(self._conn) as c:
            return int(c.execute("DELETE FROM history WHERE created < ?", (cutoff,)).rowcount)

    def mark_enrolled(self, record_id: int, track_id: int) -> None:
        with self._lock, db.transaction(self._conn) as c:
            c.execute("UPDATE history SET enrolled_track = ? WHERE id = ?", (track_id, record_id))

    # -- reads -------------------------------------------------------------------------------------------
    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Record]:
        with self._lock:
            return [_record(r) for r in self._conn.execute(sql, args).fetchall()]

    def recent(self, platform: str, chat: str, n: int = 10, offset: int = 0) -> list[Record]:
        """A chat's records, newest first: `n` of them (at most `MAX_RECENT`) after skipping `offset`."""
        n = max(0, min(int(n), MAX_RECENT))
        return self._rows(_SELECT + " WHERE platform = ? AND chat = ? ORDER BY created DESC, id DESC"
                                    " LIMIT ? OFFSET ?", (platform, str(chat), n, max(0, int(offset))))

    def count(self, platform: str, chat: str) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM history WHERE platform = ? AND chat = ?",
                                          (platform, str(chat))).fetchone()[0])

    def get(self, record_id: int) -> Record | None:
        rows = self._rows(_SELECT + " WHERE id = ?", (record_id,))
        return rows[0] if rows else None

    def by_message(self, platform: str, chat: str, message: str) -> Record | None:
        """The record an answer message shows, if any."""
        rows = self._rows(_SELECT + " WHERE platform = ? AND chat = ? AND message = ? ORDER BY id DESC LIMIT 1",
                          (platform, str(chat), str(message)))
        return rows[0] if rows else None

    def corrections(self, *, platform: str | None = None, chat: str | None = None,
                    ids: Iterable[int] | None = None, pending: bool = False) -> list[Record]:
        """Corrected records, oldest correction first; `pending`: only those not enrolled yet."""
        sql, args = _SELECT + " WHERE correction IS NOT NULL", []
        if platform is not None:
            sql, args = sql + " AND platform = ?", [*args, platform]
        if chat is not None:
            sql, args = sql + " AND chat = ?", [*args, str(chat)]
        if pending:
            sql += " AND enrolled_track IS NULL"
        wanted = None if ids is None else {int(i) for i in ids}
        return [r for r in self._rows(sql + " ORDER BY corrected_at, id", args) if wanted is None or r.id in wanted]

    def chats(self) -> list[tuple[str, str, int, float]]:
        """(platform, chat, records, newest) for every chat with history, busiest first."""
        with self._lock:
            rows = self._conn.execute("SELECT platform, chat, COUNT(*) AS n, MAX(created) AS last FROM history"
                                      " GROUP BY platform, chat ORDER BY n DESC, last DESC").fetchall()
        return [(r["platform"], r["chat"], int(r["n"]), float(r["last"])) for r in rows]

    def export_csv(self, platform: str, chat: str, out: TextIO) -> int:
        """Write one chat's history as CSV (`CSV_COLUMNS`, oldest first); returns the number of rows.

        What members typed (file names, corrections) is written so that a spreadsheet never runs it as a formula.
        """
        with self._lock:
            rows = self._conn.execute(_SELECT + " WHERE platform = ? AND chat = ? ORDER BY created, id",
                                      (platform, str(chat))).fetchall()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            answer = json.loads(row["answer"])
            writer.writerow([
                row["id"], _iso(row["created"]), row["platform"], row["chat"], row["user"], row["kind"],
                _cell(row["source"]), f"{row['start_s']:.3f}", f"{row['seconds']:.3f}", row["verdict"],
                row["winner"] or "",
                f"{row['confidence']:.4f}", row["model_id"] or "",
                "; ".join(f"{a['name']} {a['score']:.4f}" for a in answer.get("artists", ())),
                "; ".join(f"{g['label']} {g['score']:.4f}" for g in answer.get("genres", ())),
                _cell(row["correction"] or ""), row["corrected_by"] or "",
                _iso(row["corrected_at"]) if row["corrected_at"] is not None else "", row["enrolled_track"] or "",
            ])
        return len(rows)


def _cell(text: str) -> str:
    # A cell starting with = + - @ is a formula to Excel and LibreOffice (CSV injection): quote it as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="seconds")


class History:
    """The bots' history: `Store`'s calls, each run in a worker thread. One per process.

    Errors: `correct` raises `errors.BadRequest` (a sentence for the user) for a record that is gone, in another
    chat (when `platform`/`chat` are given), a genre answer, or a bad name; storage failures are `sqlite3.Error`.
    """

    def __init__(self, db_path: Path, *, retention_days: int = 365) -> None:
        self.store = Store(db_path, retention_days=retention_days)

    def close(self) -> None:
        self.store.close()

    async def record(self, *, platform: str, chat: str, user: str, source: str, result: Verdict | GenreReport,
                     message: str | None = None) -> int:
        """Keep one answer; returns its record id."""
        return await asyncio.to_thread(lambda: self.store.add(platform=platform, chat=chat, user=user, source=source,
                                                              result=result, message=message))

    async def set_message(self, record_id: int, message: str) -> None:
        await asyncio.to_thread(self.store.set_message, record_id, message)

    async def recent(self, platform: str, chat: str, n: int = 10, offset: int = 0) -> list[Record]:
        return await asyncio.to_thread(self.store.recent, platform, chat, n, offset)

    async def count(self, platform: str, chat: str) -> int:
        return await asyncio.to_thread(self.store.count, platform, chat)

    async def get(self, record_id: int) -> Record | None:
        return await asyncio.to_thread(self.store.get, record_id)

    async def by_message(self, platform: str, chat: str, message: str) -> Record | None:
        return await asyncio.to_thread(self.store.by_message, platform, chat, message)

    async def correct(self, record_id: int, *, user: str, artist: str, platform: str | None = None,
                      chat: str | None = None) -> Record:
        return await asyncio.to_thread(lambda: self.store.correct(record_id, user=user, artist=artist,
                                                                  platform=platform, chat=chat))

    async def forget_user(self, platform: str, chat: str, user: str) -> int:
        return await asyncio.to_thread(self.store.forget_user, platform, chat, user)

    async def prune(self, now: float | None = None) -> int:
        return await asyncio.to_thread(self.store.prune, now)

    async def prune_periodically(self, every_s: float = PRUNE_EVERY_S) -> None:
        """Prune now and every `every_s` seconds, until cancelled (`bot/__main__` runs it beside the bots)."""
        while True:
            try:
                n = await self.prune()
            except sqlite3.Error as exc:        # a locked or full disk: the next round tries again
                log.warning("history prune failed: %s", exc)
            else:
                if n:
                    log.info("history: pruned %d record(s) older than %d days", n, self.store.retention_days)
            await asyncio.sleep(every_s)
