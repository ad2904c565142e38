"""The tracklist value's written forms: JSON shape, CUE sheet rules, CSV round trip."""

from __future__ import annotations

import json
import re

import pytest

from classifier.model.setlist import (
    MAX_CUE_TRACKS,
    Segment,
    TooManyTracks,
    Tracklist,
    cue_time,
)
from classifier.model.voting import Candidate


def _seg(start: float, end: float, names: list[str], *, verdict: str = "identified",
         strength: float | None = 0.8) -> Segment:
    arts = tuple(Candidate(n, round(0.9 / (i + 1), 4), 0) for i, n in enumerate(names))
    return Segment(start, end, arts, verdict, arts[0].score if arts else 0.0,  # type: ignore[arg-type]
                   (Candidate("electronic", 0.61, 12), Candidate("House", 0.4, 3)), strength)


def _tl(n: int = 3, *, step: float = 200.0) -> Tracklist:
    segs = [_seg(k * step, (k + 1) * step, ["Artist A", "B", "C", "D", "E"], strength=None if k == 0 else 0.7)
            for k in range(n)]
    return Tracklist("set.mp3", n * step, tuple(segs), "head-1", 19, {"network": 1.5})


def parse_cue(text: str) -> list[dict[str, object]]:
    """A strict little reader for the sheets we write: one dict per TRACK (number, title, performer, index s)."""
    tracks: list[dict[str, object]] = []
    for line in text.split("\r\n"):
        if m := re.fullmatch(r"  TRACK (\d\d) AUDIO", line):
            tracks.append({"number": int(m.group(1))})
        elif m := re.fullmatch(r'    (TITLE|PERFORMER) "([^"]*)"', line):
            tracks[-1][m.group(1).lower()] = m.group(2)
        elif m := re.fullmatch(r"    INDEX 01 (\d{2,}):(\d\d):(\d\d)", line):
            mm, ss, ff = map(int, m.groups())
            assert ss < 60 and ff < 75
            tracks[-1]["index_s"] = mm * 60 + ss + ff / 75
        else:
            assert line == "" or re.fullmatch(r'(REM .*|TITLE "[^"]*"|FILE "[^"]*" (MP3|WAVE|AIFF)|    REM .*)', line), line
    return tracks


def test_json_shape_and_round_trip() -> None:
    tl = _tl()
    d = json.loads(json.dumps(tl.to_dict()))
    assert set(d) == {"source", "seconds", "segments", "model", "timings"}
    assert d["model"] == {"id": "head-1", "artists": 19}
    assert set(d["segments"][0]) == {"start_s", "end_s", "artists", "verdict", "confidence", "genres",
                                     "boundary_strength"}
    assert d["segments"][0]["artists"][0] == {"name": "Artist A", "score": 0.9}
    assert d["segments"][0]["boundary_strength"] is None and d["segments"][1]["boundary_strength"] == 0.7
    assert Tracklist.from_dict(d).to_dict() == d


def test_cue_sheet_round_trip() -> None:
    segs = (_seg(0.0, 125.3, ["Deep Pulse"], strength=None), _seg(125.3, 301.0, ["x"], verdict="unknown"),
            _seg(301.0, 6100.5, ["Iron Riff"]))
    tl = Tracklist("set.mp3", 6100.5, segs, "h", 3)
    text = tl.to_cue("/some/where/My Set.mp3", title="Friday")
    assert text.endswith("\r\n") and 'FILE "My Set.mp3" MP3' in text and 'TITLE "Friday"' in text
    tracks = parse_cue(text)
    assert [t["number"] for t in tracks] == [1, 2, 3]
    assert [t["performer"] for t in tracks] == ["Deep Pulse", "Unknown", "Iron Riff"]   # unknown verdict: no name
    for t, s in zip(tracks, segs):
        assert s.start_s - 1 / 75 < t["index_s"] <= s.start_s                         # rounded down to a frame
    assert "INDEX 01 05:01:00" in text


def test_cue_times_follow_the_format() -> None:
    assert cue_time(0.0) == "00:00:00"
    assert cue_time(61.5) == "01:01:37"               # half a second is 37.5 frames: rounded down
    assert cue_time(59.9999) == "00:59:74"
    assert cue_time(3 * 3600 + 0.04) == "180:00:03"   # sets run past 99 minutes
    with pytest.raises(ValueError):
        cue_time(-1.0)


def test_cue_strings_cannot_break_the_sheet() -> None:
    name = 'The "Quoted"\nArtist ' + "x" * 100
    tl = Tracklist("s", 100.0, (_seg(0.0, 100.0, [name], strength=None),), "h", 1)
    text = tl.to_cue("set.wav")
    performer = re.search(r'PERFORMER "([^"]*)"', text)
    assert performer is not None
    assert len(performer.group(1)) == 80 and "'Quoted'" in performer.group(1) and "\n" not in performer.group(1)
    assert 'FILE "set.wav" WAVE' in text and len(parse_cue(text)) == 1


def test_cue_refuses_a_hundredth_track() -> None:
    assert len(parse_cue(_tl(MAX_CUE_TRACKS, step=61.0).to_cue("set.mp3"))) == 99
    with pytest.raises(TooManyTracks) as exc:
        _tl(MAX_CUE_TRACKS + 1, step=61.0).to_cue("set.mp3")
    assert exc.value.code == "too_many_tracks" and "99" in exc.value.user_message


def test_csv_round_trip() -> None:
    segs = (_seg(0.0, 95.25, ["A", "B"], strength=None), _seg(95.25, 400.0, ["C", "A", "B", "D", "E"]),
            _seg(400.0, 4000.0, ["Name, with comma", 'and "quotes"'], verdict="unknown"))
    tl = Tracklist("s", 4000.0, segs, "h", 5)
    text = tl.to_csv()
    assert text.splitlines()[0].startswith("track,start_s,end_s,start,end,verdict,confidence,boundary_strength,artist_1")
    assert text.splitlines()[3].split(",")[3:5] == ["0:06:40", "1:06:40"]
    back = Tracklist.segments_from_csv(text)
    assert tuple(s.to_dict() for s in back) == tuple(s.to_dict() for s in Tracklist.from_dict(tl.to_dict()).segments)
