"""The artist index and enrolment: duplicates, forget, transactions, resume, bad rows."""

from __future__ import annotations

import csv
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from classifier import errors
from classifier.store import db
from classifier.store.index import Index
from classifier.training.enrol import (
    Report,
    enrol_items,
    items_from_manifest,
    items_from_sources,
)


def _fake_track(index: Index, artist: str, h: str, n: int = 4) -> None:
    index.add_track(artist=artist, title=f"t-{h}", source=f"/x/{h}.wav", duration_s=3.0 * n, content_hash=h,
                    split=None, backbone="msd_musicnn", hop_s=3.0, starts=np.arange(n, dtype=np.float32) * 3,
                    embedding=np.ones((n, 200), np.float32), pooled=np.ones((n, 1506), np.float32))


def test_schema_created_and_versioned(tmp_path: Path) -> None:
    with Index(tmp_path / "a.sqlite3") as index:
        assert index.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    with Index(tmp_path / "a.sqlite3") as index:  # reopening migrates nothing twice
        assert index.artists() == []


def test_duplicates_forget_and_listing(tmp_path: Path) -> None:
    with Index(tmp_path / "a.sqlite3") as index:
        _fake_track(index, "A", "h1")
        _fake_track(index, "A", "h1")            # same content: nothing changes
        _fake_track(index, "B", "h2", n=10)
        assert [(a.name, a.tracks) for a in index.artists()] == [("A", 1), ("B", 1)]
        assert index.artists()[1].minutes == pytest.approx(0.5)
        ds = index.dataset()
        assert ds.labels == ("A", "B") and ds.embedding.shape == (14, 200) and np.bincount(ds.y).tolist() == [4, 10]
        assert index.forget("t-h2") == ("track t-h2", 1)
        assert [a.name for a in index.artists()] == ["A"]
        assert index.forget("A") == ("artist A", 1)
        with pytest.raises(errors.EnrolError):
            index.forget("nobody")
        with pytest.raises(errors.EnrolError):
            _fake_track(index, "  ", "h3")


def test_interrupted_track_leaves_nothing_behind(tmp_path: Path) -> None:
    with Index(tmp_path / "a.sqlite3") as index:
        with pytest.raises(KeyboardInterrupt):
            with db.transaction(index.conn) as c:
                c.execute("INSERT INTO artists(name, created) VALUES ('half', 0)")
                raise KeyboardInterrupt
        assert index.conn.execute("SELECT COUNT(*) FROM artists").fetchone()[0] == 0
        # and a mismatched insert is refused before anything is written
        with pytest.raises(ValueError):
            index.add_track(artist="A", title="t", source="s", duration_s=1, content_hash="x", split=None,
                            backbone="b", hop_s=1, starts=np.zeros(3), embedding=np.zeros((2, 200)),
                            pooled=np.zeros((3, 1506)))
        assert index.tracks() == []


def test_enrol_resumes_and_reports_bad_items(tmp_path: Path, audio_dir: Path, backbone, settings) -> None:  # noqa: ANN001
    pre = Report()
    items = items_from_sources("Loop", [str(audio_dir / "loop.wav"), str(audio_dir / "song.mp3"),
                                        str(audio_dir / "short.wav"), str(tmp_path / "missing.wav")], pre)
    assert pre.problems == [f"{tmp_path / 'missing.wav'}: no such file or folder"]
    with Index(settings.database) as index:
        rep = enrol_items(items, index, backbone, settings, hop_s=3.0)
        assert [o.status for o in rep.outcomes] == ["added", "failed", "failed"]
        assert "does not contain audio" in rep.outcomes[1].message
        assert "too short" in rep.outcomes[2].message or "at least 3 seconds" in rep.outcomes[2].message
        again = enrol_items(items[:1], index, backbone, settings, hop_s=3.0)   # a re-run skips what is in
        assert again.outcomes[0].status == "duplicate"
        assert len(index.tracks()) == 1
    with pytest.raises(errors.EnrolError):
        items_from_sources(" ", [str(audio_dir / "loop.wav")], Report())


def test_manifest_rows(tmp_path: Path, audio_dir: Path) -> None:
    m = tmp_path / "m.csv"
    with open(m, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["artist", "path", "split"])
        w.writerow(["A", str(audio_dir / "loop.wav"), "train"])
        w.writerow(["", str(audio_dir / "loop.mp3"), "train"])
        w.writerow(["B", "nope.wav", "test"])
        w.writerow(["B", str(audio_dir / "voice.ogg"), "test"])
    rep = Report()
    items = items_from_manifest(m, rep)
    assert [(i.artist, i.split) for i in items] == [("A", "train"), ("B", "test")]
    assert rep.problems == ["m.csv row 3: empty artist", "m.csv row 4: no such file nope.wav"]
    assert [i.artist for i in items_from_manifest(m, Report(), split="test")] == ["B"]
    bad = tmp_path / "bad.csv"
    bad.write_text("name,file\nA,x.wav\n")
    with pytest.raises(errors.EnrolError, match="missing column"):
        items_from_manifest(bad, Report())


def test_index_is_real_sqlite_on_disk(tmp_path: Path) -> None:
    with Index(tmp_path / "a.sqlite3") as index:
        _fake_track(index, "A", "h1")
    conn = sqlite3.connect(tmp_path / "a.sqlite3")
    assert conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 1
