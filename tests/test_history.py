"""The history store: schema and migrations, concurrent writers, corrections, forgetting, pruning, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bot.history import history_text, link_at, record_line
from bot.replies import HTML
from classifier import errors
from classifier.settings import Settings
from classifier.store import db
from classifier.store.history import AUDIO_NOT_KEPT, CSV_COLUMNS, History, Record, Store
from classifier.store.index import Index
from spy.cli import build_parser
from tests.fakes.telegram_api import canned_genre, canned_verdict

DAY = 86400.0
YT = "https://youtu.be/dQw4w9WgXcQ"


def _spy(settings: Settings, *argv: str) -> int:
    """Run a `spy` subcommand with these settings (the CLI minus reading the environment)."""
    args = build_parser().parse_args(list(argv))
    return args.func(settings, args)


# --- schema and migrations ---------------------------------------------------------------------------------

def _sql(path: Path, query: str) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


def _tables(path: Path) -> set[str]:
    return {r[0] for r in _sql(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def _version(path: Path) -> int:
    return _sql(path, "PRAGMA user_version")[0][0]


def test_an_empty_file_gets_the_whole_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    History(path).close()
    assert _version(path) == db.SCHEMA_VERSION == 3
    assert {"artists", "tracks", "embeddings", "models", "history"} <= _tables(path)
    with Index(path) as index:                  # the index opens the same file without migrating again
        assert index.artists() == []


def test_a_v1_file_with_an_artist_index_is_migrated_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as conn:   # as the program before history left it
        conn.executescript(db.MIGRATIONS[0] + "PRAGMA user_version = 1;")
        conn.execute("INSERT INTO artists(id, name, created) VALUES (1, 'Deep Pulse', 0)")
        conn.execute("INSERT INTO tracks VALUES (7, 1, 'pulse', '/x.wav', 6.0, 'abc', NULL, 'msd_musicnn', 3.0, 2, 0)")
        conn.execute("INSERT INTO embeddings VALUES (7, ?, ?, ?)", (
            np.zeros(2, np.float32).tobytes(), np.ones((2, 200), np.float32).tobytes(),
            np.ones((2, 1506), np.float16).tobytes()))
        conn.execute("INSERT INTO models VALUES ('head-1', 0, 'head', '/m', 1, '{}', 1)")
        conn.commit()
    assert _version(path) == 1 and "history" not in _tables(path)
    with Store(path) as store:
        assert _version(path) == db.SCHEMA_VERSION
        record_id = store.add(platform="telegram", chat="1", user="1", source="voice note", result=canned_verdict())
        assert store.get(record_id) is not None
    with Index(path) as index:
        assert [(t.id, t.artist, t.n_slices) for t in index.tracks()] == [(7, "Deep Pulse", 2)]
        assert index.dataset().embedding.shape == (2, 200) and index.active_model()["id"] == "head-1"


def test_a_file_from_a_newer_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    _sql(path, f"PRAGMA user_version = {db.SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer than this program"):
        History(path)


# --- what a record holds -----------------------------------------------------------------------------------

def test_a_record_keeps_the_answer_and_links_to_the_analysed_moment(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite3") as store:
        a = store.get(store.add(platform="telegram", chat="-100", user="111", source=link_at(YT, 95.0, ()),
                                result=canned_verdict(YT, start=95.0), message="1001"))
        b = store.get(store.add(platform="discord", chat="5/6", user="222", source="voice note",
                                result=canned_verdict(identified=False)))
        c = store.get(store.add(platform="telegram", chat="-100", user="111", source="song.mp3",
                                result=canned_genre("song.mp3")))
    assert a is not None and b is not None and c is not None
    assert a.source == "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=95s" and a.is_link
    assert (a.kind, a.verdict, a.winner, a.confidence, a.model_id) == ("identify", "identified", "Deep Pulse", 0.62,
                                                                       "head-test-5a")
    assert [name for name, _ in a.top] == ["Deep Pulse", "Broken Glass", "Slow Tide", "Iron Riff", "Chip Tune"]
    assert (a.start_s, a.seconds, a.message, a.correction) == (95.0, 30.0, "1001", None)
    assert (b.source, b.verdict, b.winner, b.is_link) == ("voice note", "unknown", "Deep Pulse", False)
    assert (c.kind, c.verdict, c.winner, c.confidence, c.model_id) == ("genre", "genre", "house", 0.41, None)
    assert c.top[0] == ("house", 0.41)
    assert a.created <= time.time() and isinstance(a, Record)


def test_recent_is_per_chat_newest_first_and_pages(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite3") as store:
        ids = [store.add(platform="telegram", chat="-100", user=str(i % 3), source=f"clip {i}",
                         result=canned_verdict(f"clip {i}"), now=1000.0 + i) for i in range(25)]
        store.add(platform="telegram", chat="-200", user="0", source="elsewhere", result=canned_verdict(), now=5000)
        store.add(platform="discord", chat="-100", user="0", source="other bot", result=canned_verdict(), now=5000)
        assert [r.id for r in store.recent("telegram", "-100", 10)] == ids[::-1][:10]
        assert [r.id for r in store.recent("telegram", "-100", 10, offset=20)] == ids[::-1][20:]
        assert store.count("telegram", "-100") == 25 and store.recent("telegram", "-999") == []
        assert len(store.recent("telegram", "-100", 10_000)) == 25


# --- concurrent writers --------------------------------------------------------------------------------------

async def test_concurrent_writers_from_both_bots_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """One History shared by both bots' tasks, plus a second connection (as another process would hold)."""
    path = tmp_path / "h.sqlite3"
    shared, other = History(path), History(path)
    try:
        async def ask(history: History, platform: str, i: int) -> int:
            chat = f"chat-{i % 4}"
            record_id = await history.record(platform=platform, chat=chat, user=f"u{i}", source=f"{platform} {i}",
                                             result=canned_verdict(f"{platform} {i}"))
            await history.recent(platform, chat, 5)
            await history.correct(record_id, user=f"u{i}", artist=f"Artist {i}", platform=platform, chat=chat)
            return record_id

        jobs = [ask(shared, "telegram", i) for i in range(60)] + [ask(shared, "discord", i) for i in range(60)]
        jobs += [ask(other, "discord", 100 + i) for i in range(60)]
        ids = await asyncio.gather(*jobs)
    finally:
        shared.close()
        other.close()
    assert len(ids) == len(set(ids)) == 180
    rows = _sql(path, "SELECT id, platform, source, correction FROM history")
    assert sorted(r[0] for r in rows) == sorted(ids)
    assert sorted(r[2] for r in rows) == sorted([f"telegram {i}" for i in range(60)]
                                                + [f"discord {i}" for i in range(60)]
                                                + [f"discord {100 + i}" for i in range(60)])
    assert all(r[3] == "Artist " + r[2].split()[1] for r in rows), "each correction on its own record"


_WRITER = textwrap.dedent("""
    import itertools, sys
    from classifier.store.history import Store
    from classifier.model.verdict import Verdict
    from classifier.model.voting import Candidate

    v = Verdict(source="voice note", seconds=30.0, slices=10, artists=(Candidate("A", 0.9, 9),), confidence=0.9,
                verdict="identified", genres=(), model_id="m", model_artists=1, timings={})
    store = Store(sys.argv[1])
    for i in itertools.count():
        store.add(platform="telegram", chat="1", user="1", source="voice note", result=v)
        print(i, flush=True)
""")


def test_a_writer_killed_mid_stream_leaves_only_whole_records(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    with subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": "."}) as proc:
        assert proc.stdout is not None
        printed = 0
        for line in proc.stdout:                 # let it write for a while, then kill it mid-flight
            printed = int(line) + 1
            if printed >= 40:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert _sql(path, "PRAGMA integrity_check") == [("ok",)]
    ids = [r[0] for r in _sql(path, "SELECT id FROM history ORDER BY id")]
    assert printed <= len(ids) and ids == list(range(1, len(ids) + 1))
    with Store(path) as store:                   # and every row reads back whole
        assert all(r.top == (("A", 0.9),) for r in store.recent("telegram", "1", 10_000))


# --- corrections, forgetting, pruning -----------------------------------------------------------------------------

def test_a_correction_sticks_to_its_record_and_stays_in_its_chat(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite3") as store:
        first = store.add(platform="telegram", chat="-100", user="1", source="voice note", result=canned_verdict())
        second = store.add(platform="telegram", chat="-100", user="2", source="voice note", result=canned_verdict())
        genre = store.add(platform="telegram", chat="-100", user="2", source="x", result=canned_genre())
        r = store.correct(first, user="3", artist="  Iron   Riff ", platform="telegram", chat="-100")
        assert (r.id, r.correction, r.corrected_by) == (first, "Iron Riff", "3") and r.corrected_at
        assert store.get(second).correction is None  # type: ignore[union-attr]
        assert store.correct(first, user="4", artist="Slow Tide").correction == "Slow Tide"   # the latest wins
        refusals = [
            dict(record_id=first, artist="X", platform="telegram", chat="-999"),      # another chat's button
            dict(record_id=first, artist="X", platform="discord", chat="-100"),
            dict(record_id=9999, artist="X"),
            dict(record_id=genre, artist="X"),
            dict(record_id=first, artist="   "),
            dict(record_id=first, artist="x" * 101),
        ]
        for kwargs in refusals:
            with pytest.raises(errors.BadRequest) as caught:
                store.correct(kwargs.pop("record_id"), user="5", **kwargs)
            assert caught.value.user_message
        assert store.get(first).correction == "Slow Tide"  # type: ignore[union-attr]


def test_forgetting_a_user_removes_only_their_records_in_that_chat(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite3") as store:
        def add(chat: str, user: str, platform: str = "telegram") -> int:
            return store.add(platform=platform, chat=chat, user=user, source="voice note", result=canned_verdict())

        ada_here, ada_there, ada_discord = add("-100", "ada"), add("-200", "ada"), add("-100", "ada", "discord")
        bob_here = add("-100", "bob")
        store.correct(bob_here, user="ada", artist="Iron Riff")     # Ada's word on Bob's record
        store.correct(ada_there, user="ada", artist="Slow Tide")
        assert store.forget_user("telegram", "-100", "ada") == 1
        assert store.get(ada_here) is None
        assert store.get(ada_there) is not None and store.get(ada_discord) is not None
        bob = store.get(bob_here)
        assert bob is not None and (bob.correction, bob.corrected_by) == (None, None)
        assert store.get(ada_there).correction == "Slow Tide"  # type: ignore[union-attr]
        assert store.forget_user("telegram", "-100", "ada") == 0


def test_pruning_removes_what_is_older_than_the_retention(tmp_path: Path) -> None:
    now = 1_700_000_000.0
    path = tmp_path / "h.sqlite3"
    with Store(path, retention_days=30) as store:
        ages = [0, 10, 29.9, 30.1, 100, 400]
        ids = [store.add(platform="telegram", chat="1", user="1", source=f"{age} days", result=canned_verdict(),
                         now=now - age * DAY) for age in ages]
        assert store.prune(now) == 3
        assert [r.source for r in store.recent("telegram", "1")] == ["0 days", "10 days", "29.9 days"]
        assert store.prune(now) == 0
        store.prune(now + 365 * DAY)                # everything gone: ids are still never handed out again
        assert store.add(platform="telegram", chat="1", user="1", source="new", result=canned_verdict()) > max(ids)
    with Store(path, retention_days=0) as forever:
        forever.add(platform="telegram", chat="1", user="1", source="old", result=canned_verdict(), now=0.0)
        assert forever.prune(now) == 0


async def test_the_bot_prunes_at_start_and_then_periodically(tmp_path: Path) -> None:
    history = History(tmp_path / "h.sqlite3", retention_days=1)
    try:
        history.store.add(platform="telegram", chat="1", user="1", source="old", result=canned_verdict(),
                          now=time.time() - 2 * DAY)
        task = asyncio.create_task(history.prune_periodically(every_s=0.05))
        for _ in range(100):
            if await history.count("telegram", "1") == 0:
                break
            await asyncio.sleep(0.02)
        assert await history.count("telegram", "1") == 0
        history.store.add(platform="telegram", chat="1", user="1", source="old", result=canned_verdict(),
                          now=time.time() - 2 * DAY)
        await asyncio.sleep(0.2)
        assert await history.count("telegram", "1") == 0, "pruned again on the next round"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        history.close()


# --- rendering ---------------------------------------------------------------------------------------------------

def test_history_lines_show_the_winner_the_link_at_its_moment_and_corrections(tmp_path: Path) -> None:
    with Store(tmp_path / "h.sqlite3") as store:
        store.add(platform="telegram", chat="1", user="1", source=link_at(YT, 95.0, ()), result=canned_verdict(YT, start=95.0),
                  now=1_700_000_000.0)
        unknown = store.add(platform="telegram", chat="1", user="1", source="voice note",
                            result=canned_verdict(identified=False), now=1_700_000_100.0)
        store.add(platform="telegram", chat="1", user="1", source="set.mp3", result=canned_genre(),
                  now=1_700_000_200.0)
        store.correct(unknown, user="2", artist="Iron <Riff>")
        records = store.recent("telegram", "1")
    text = history_text(records)
    lines = text.splitlines()
    assert lines[0] == "🕘 The last 3 answers in this chat, newest first:"
    assert lines[1] == "1. 🎛 genre house 41% · set.mp3 · 14 Nov 22:16 UTC"
    assert lines[2] == ("2. 🤷 didn't know (nearest Deep Pulse 31%) · voice note · 14 Nov 22:15 UTC · "
                        "✏️ corrected: Iron <Riff>")
    assert lines[3] == ("3. 🎧 Deep Pulse 62% · https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=95s at 1:35 · "
                        "14 Nov 22:13 UTC")
    html_line = record_line(records[2], HTML)
    assert html_line.startswith('🎧 <b>Deep Pulse</b> 62% · <a href="https://www.youtube.com/watch?v=dQw4w9WgXcQ'
                                '&amp;t=95s">youtube.com/watch?v=dQw4w9WgXcQ&amp;t=95s</a> at 1:35')
    assert "Iron &lt;Riff&gt;" in record_line(records[1], HTML)
    assert history_text(records[:2], offset=10, total=25).startswith("🕘 Answers 11–12 of 25 in this chat")
    assert history_text([]) == "Nothing identified in this chat yet."


# --- the operator's commands -----------------------------------------------------------------------------------

def test_spy_corrections_and_history_export(settings: Settings, capsys: pytest.CaptureFixture[str],
                                            tmp_path: Path) -> None:
    assert _spy(settings, "corrections") == 0 and "No corrections yet." in capsys.readouterr().out
    with Store(settings.database) as store:
        link = store.add(platform="telegram", chat="-100", user="1", source=link_at(YT, 95, ()), result=canned_verdict(YT, start=95))
        voice = store.add(platform="telegram", chat="-100", user="2", source="voice note", result=canned_verdict())
        store.add(platform="discord", chat="9/9", user="3", source="voice note", result=canned_verdict())
        store.correct(link, user="2", artist="Iron Riff")
        store.correct(voice, user="1", artist="=HYPERLINK(\"http://x\")")
    assert _spy(settings, "corrections") == 0
    out = capsys.readouterr().out
    assert "Iron Riff" in out and "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=95s (30 s)" in out
    assert f"voice note: {AUDIO_NOT_KEPT}" in out and "2 correction(s); 1 link(s) can be enrolled" in out

    assert _spy(settings, "history", "export") == 2
    err = capsys.readouterr().err
    assert "telegram -100  (2 record(s)" in err and "discord 9/9  (1 record(s)" in err
    assert _spy(settings, "history", "export", "telegram", "-404") == 1
    capsys.readouterr()
    assert _spy(settings, "history", "export", "telegram", "-100") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["id"] for r in rows] == [str(link), str(voice)] and tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["top5"].startswith("Deep Pulse 0.6200; Broken Glass 0.1700")
    assert rows[1]["correction"] == "'=HYPERLINK(\"http://x\")", "never a formula in a spreadsheet"
    assert rows[1]["source"] == "voice note" and rows[1]["chat"] == "-100"
    out_file = tmp_path / "export.csv"
    assert _spy(settings, "history", "export", "telegram", "-100", "--out", str(out_file)) == 0
    assert len(list(csv.DictReader(io.StringIO(out_file.read_text(encoding="utf-8"))))) == 2


def test_enrol_from_corrections_reports_what_cannot_be_enrolled(settings: Settings,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Voice notes ('audio not kept'), unknown ids: refused by name before any audio or model is touched."""
    with Store(settings.database) as store:
        voice = store.add(platform="telegram", chat="-100", user="2", source="voice note", result=canned_verdict())
        store.correct(voice, user="1", artist="Slow Tide")
    assert _spy(settings, "enrol", "--from-corrections") == 0
    err = capsys.readouterr().err
    assert f"history #{voice} (telegram -100): voice note: {AUDIO_NOT_KEPT}" in err
    assert "No corrected links waiting to be enrolled" in err
    assert _spy(settings, "enrol", "--from-corrections", "777") == 1
    assert "history #777: no correction with this id" in capsys.readouterr().err
    with pytest.raises(errors.EnrolError, match="not a history record id"):
        _spy(settings, "enrol", "--from-corrections", "Deep Pulse")
    with Index(settings.database) as index:
        assert index.tracks() == []
