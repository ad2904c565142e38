"""Fingerprints on disk: the migration, a round trip through SQLite, the index loaded from it, and the backfill."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from classifier.audio import decode
from classifier.audio import fingerprint as fp
from classifier.store import db
from classifier.store import fingerprints as store
from classifier.store.index import Index, TrackInfo
from classifier.training import demo
from classifier.training import fingerprints as training

V = fp.PARAMS.version


def _add(index: Index, title: str, source: str, k: int) -> TrackInfo:
    return index.add_track(artist="Deep Pulse", title=title, source=source, duration_s=20.0, content_hash=f"h{k}",
                           split=None, backbone="msd_musicnn", hop_s=3.0, starts=np.zeros(1, np.float32),
                           embedding=np.zeros((1, 200), np.float32), pooled=np.zeros((1, 1506), np.float32))


@pytest.fixture(scope="module")
def wavs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("tracks")
    return [demo.write_wav(folder / f"t{k}.wav", demo.render(style, 20.0, seed=k))
            for k, style in enumerate(("Deep Pulse", "Iron Riff", "Chip Tune"))]


def test_a_v2_file_gains_the_fingerprint_table_and_keeps_its_tracks(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as conn:     # as the program before fingerprints left it
        conn.executescript(db.MIGRATIONS[0] + db.MIGRATIONS[1] + "PRAGMA user_version = 2;")
        conn.execute("INSERT INTO artists(id, name, created) VALUES (1, 'Deep Pulse', 0)")
        conn.execute("INSERT INTO tracks VALUES (7, 1, 'pulse', '/x.wav', 6.0, 'abc', NULL, 'msd_musicnn', 3.0, 2, 0)")
        conn.commit()
    with Index(path) as index:
        assert index.conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION == 3
        assert [t.id for t in index.tracks()] == [7]
        assert [p.track_id for p in store.missing(index.conn, V)] == [7]
        assert store.count(index.conn, V) == (0, 1)


def test_peaks_round_trip_and_leave_with_their_track(tmp_path: Path, wavs: list[Path]) -> None:
    peaks = fp.peaks(decode.load(wavs[0], fp.PARAMS.sample_rate))
    with Index(tmp_path / "i.sqlite3") as index:
        track = _add(index, "pulse", str(wavs[0]), 0)
        store.save(index.conn, track.id, peaks, V)
        back = store.load(index.conn, track.id, V)
        assert back is not None and back.n_frames == peaks.n_frames
        np.testing.assert_array_equal(back.t, peaks.t)
        np.testing.assert_array_equal(back.f, peaks.f)
        assert store.load(index.conn, track.id, "another-version") is None
        blob = index.conn.execute("SELECT length(peaks) FROM fingerprints").fetchone()[0]
        assert blob < 5 * len(peaks)                       # deltas compress
        index.forget("pulse")
        assert index.conn.execute("SELECT COUNT(*) FROM fingerprints").fetchone()[0] == 0


def test_a_corrupt_blob_is_refused_not_misread() -> None:
    p = fp.Peaks(np.array([1, 5, 9], np.uint32), np.array([3, 4, 5], np.uint8), 20)
    with pytest.raises(ValueError, match="expected"):
        store.decode(store.encode(p), 4, 20)


def test_the_index_loaded_from_sqlite_matches_a_clip(tmp_path: Path, wavs: list[Path]) -> None:
    with Index(tmp_path / "i.sqlite3") as index:
        tracks = [_add(index, f"track {k}", str(w), k) for k, w in enumerate(wavs)]
        for t, w in zip(tracks, wavs):
            assert training.add(index, t, w)
        known = store.load_known(index.conn, V)
    assert len(known) == 3 and known.hours == pytest.approx(3 * 20 / 3600, rel=0.01)
    clip = decode.load(wavs[1], fp.PARAMS.sample_rate)[4 * 8000:14 * 8000]
    m = known.match(clip)
    assert m is not None and m.track_id == tracks[1].id and m.title == "track 1" and m.artist == "Deep Pulse"
    assert m.offset_s == pytest.approx(4.0, abs=0.05)


def test_a_failed_fingerprint_leaves_the_track_enrolled(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really audio")
    with Index(tmp_path / "i.sqlite3") as index:
        track = _add(index, "bad", str(bad), 0)
        assert training.add(index, track, bad) is False
        assert [t.id for t in index.tracks()] == [track.id]
        assert store.count(index.conn, V) == (0, 1)


def test_backfill_resumes_where_it_stopped_and_says_what_it_could_not_do(tmp_path: Path, wavs: list[Path]) -> None:
    with Index(tmp_path / "i.sqlite3") as index:
        files = [_add(index, f"file {k}", str(w), k) for k, w in enumerate(wavs)]
        gone = _add(index, "gone", str(tmp_path / "deleted.wav"), 10)
        link = _add(index, "linked", "https://soundcloud.com/someone/linked", 11)

        calls: list[tuple[int, int, str]] = []

        def stop_after_two(done: int, total: int, title: str) -> None:
            calls.append((done, total, title))
            if done == 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            training.backfill(index, progress=stop_after_two)
        assert calls == [(1, 5, "file 0"), (2, 5, "file 1")]
        assert store.count(index.conn, V) == (2, 5)

        again = training.backfill(index)                  # the rest, and nothing twice
        assert again.done == 1 and again.failed == []
        assert sorted(t for t, _, _ in again.skipped) == [gone.id, link.id]
        assert store.count(index.conn, V) == (3, 5)

        def fetch(link_url: str) -> Iterator[Path]:      # the CLI hands the real fetcher; a local file here
            assert link_url == "https://soundcloud.com/someone/linked"
            yield wavs[2]

        last = training.backfill(index, fetch=fetch)
        assert last.done == 1 and [t for t, _, _ in last.skipped] == [gone.id]
        assert store.load(index.conn, link.id, V) is not None
        assert {p.track_id for p in store.missing(index.conn, V)} == {gone.id}
        assert all(store.load(index.conn, t.id, V) is not None for t in files)


def test_enrolment_stores_the_fingerprint_of_each_added_track(wavs: list[Path], backbone, settings) -> None:  # noqa: ANN001
    """The hook in enrol.py: the real enrolment path (decode, network, index), then the fingerprint."""
    from classifier.training.enrol import Report, enrol_items, items_from_sources
    with Index(settings.database) as index:
        rep = enrol_items(items_from_sources("Iron Riff", [str(wavs[1])], Report()), index, backbone, settings,
                          hop_s=3.0)
        assert [o.status for o in rep.outcomes] == ["added"]
        track = rep.outcomes[0].track
        assert track is not None and store.count(index.conn, V) == (1, 1)
        m = store.load_known(index.conn, V).match(decode.load(wavs[1], fp.PARAMS.sample_rate)[6 * 8000:16 * 8000])
    assert m is not None and m.track_id == track.id and m.artist == "Iron Riff"
