"""A set's tracklist as a value, and its three written forms: JSON, a CUE sheet, CSV.

    Tracklist  {"source", "seconds",
                "segments": [{"start_s", "end_s", "artists": [{"name", "score"}], "verdict",
                              "confidence", "genres": [{"label", "score", "votes"}], "boundary_strength"}],
                "model": {"id", "artists"}, "timings": {...}}

`boundary_strength` is the strength of the boundary a segment starts at (segment.py), null for the first.

CUE sheets follow the CDRWIN rules players read: one `TRACK nn AUDIO` per segment, numbered 01-99
(a sheet cannot hold a hundredth track, so a longer list raises `TooManyTracks` instead of writing a
sheet players would reject or truncate); strings in double quotes, which the format cannot escape, so a
double quote inside a name becomes a single one; CD-Text fields at most 80 characters; `INDEX 01
mm:ss:ff` with 75 frames a second, rounded down so an index never points past the segment's start.
Minutes run past 99 for sets over 100 minutes (as DJ-set cue sheets and players that read them do).
Indexes are the segments' own times, on the source's clock, so the FILE named must be the source.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal, Mapping

from classifier import errors
from classifier.model.voting import Candidate

__all__ = ["Segment", "Tracklist", "TooManyTracks", "cue_time", "MAX_CUE_TRACKS"]

MAX_CUE_TRACKS = 99
_CDTEXT_MAX = 80
_K_ARTISTS = 5
_K_GENRES = 3


class TooManyTracks(errors.SpyError):
    """More segments than a CUE sheet can hold (99)."""

    code, http_status = "too_many_tracks", 422
    default_message = "That set has more than 99 tracks, the most a CUE sheet holds. Ask for the CSV or JSON instead."


@dataclass(frozen=True, slots=True)
class Segment:
    """One track of the set. Times are seconds from the start of the source."""

    start_s: float
    end_s: float
    artists: tuple[Candidate, ...]
    verdict: Literal["identified", "unknown"]
    confidence: float
    genres: tuple[Candidate, ...]
    boundary_strength: float | None

    @property
    def top(self) -> str | None:
        """The top artist when identified, else None ("Unknown" in a CUE sheet)."""
        return self.artists[0].label if self.artists and self.verdict == "identified" else None

    def to_dict(self) -> dict[str, object]:
        return {
            "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
            "artists": [{"name": c.label, "score": round(c.score, 4)} for c in self.artists],
            "verdict": self.verdict, "confidence": round(self.confidence, 4),
            "genres": [c.to_dict("label") for c in self.genres],
            "boundary_strength": None if self.boundary_strength is None else round(self.boundary_strength, 4),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Segment":
        bs = d.get("boundary_strength")
        return cls(float(d["start_s"]), float(d["end_s"]),
                   tuple(Candidate(str(a["name"]), float(a["score"]), int(a.get("votes", 0))) for a in d["artists"]),
                   d["verdict"], float(d["confidence"]),
                   tuple(Candidate(str(g["label"]), float(g["score"]), int(g.get("votes", 0))) for g in d["genres"]),
                   None if bs is None else float(bs))


@dataclass(frozen=True, slots=True)
class Tracklist:
    source: str
    seconds: float
    segments: tuple[Segment, ...]
    model_id: str
    model_artists: int
    timings: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "seconds": round(self.seconds, 3),
                "segments": [s.to_dict() for s in self.segments],
                "model": {"id": self.model_id, "artists": self.model_artists},
                "timings": {k: round(float(v), 4) for k, v in self.timings.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Tracklist":
        return cls(str(d["source"]), float(d["seconds"]), tuple(Segment.from_dict(s) for s in d["segments"]),
                   str(d["model"]["id"]), int(d["model"]["artists"]), dict(d.get("timings", {})))

    # -- CUE ----------------------------------------------------------------------------------------
    def to_cue(self, file_name: str, *, title: str | None = None) -> str:
        """A CUE sheet for the audio file `file_name` (see the module docstring for the rules kept).

        Raises
        ------
        TooManyTracks : more than 99 segments
        """
        if len(self.segments) > MAX_CUE_TRACKS:
            raise TooManyTracks(f"That set has {len(self.segments)} tracks; a CUE sheet holds at most "
                                f"{MAX_CUE_TRACKS}. Ask for the CSV or JSON instead.")
        kind = {".mp3": "MP3", ".aif": "AIFF", ".aiff": "AIFF"}.get(PurePath(file_name).suffix.lower(), "WAVE")
        lines = [f"REM GENERATOR {_q('Deep House Spy')}"]
        if title:
            lines.append(f"TITLE {_q(title)}")
        lines.append(f"FILE {_q(PurePath(file_name).name, limit=None)} {kind}")
        for i, seg in enumerate(self.segments, start=1):
            lines += [f"  TRACK {i:02d} AUDIO",
                      f"    TITLE {_q(f'Track {i}' + ('' if seg.top else ' (unidentified)'))}",
                      f"    PERFORMER {_q(seg.top or 'Unknown')}",
                      f"    REM CONFIDENCE {seg.confidence:.4f}",
                      f"    INDEX 01 {cue_time(seg.start_s)}"]
        return "\r\n".join(lines) + "\r\n"

    # -- CSV ----------------------------------------------------------------------------------------
    def to_csv(self) -> str:
        """One row per segment: times (seconds and h:mm:ss), verdict, confidence, boundary strength, the
        top-5 artists with scores and the top-3 genres with scores (empty cells where there are fewer)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(_CSV_HEADER)
        for i, s in enumerate(self.segments, start=1):
            d = s.to_dict()
            arts = [(a["name"], a["score"]) for a in d["artists"]][:_K_ARTISTS]  # type: ignore[index]
            gens = [(g["label"], g["score"], g["votes"]) for g in d["genres"]][:_K_GENRES]  # type: ignore[index]
            row: list[object] = [i, d["start_s"], d["end_s"], _hms(s.start_s), _hms(s.end_s), d["verdict"],
                                 d["confidence"], "" if d["boundary_strength"] is None else d["boundary_strength"]]
            for k in range(_K_ARTISTS):
                row += list(arts[k]) if k < len(arts) else ["", ""]
            for k in range(_K_GENRES):
                row += list(gens[k]) if k < len(gens) else ["", "", ""]
            w.writerow(row)
        return buf.getvalue()

    @staticmethod
    def segments_from_csv(text: str) -> tuple[Segment, ...]:
        """The segments of a CSV written by `to_csv` (values as rounded there)."""
        out = []
        for row in csv.DictReader(io.StringIO(text)):
            arts = tuple(Candidate(row[f"artist_{k}"], float(row[f"score_{k}"]), 0)
                         for k in range(1, _K_ARTISTS + 1) if row[f"artist_{k}"])
            gens = tuple(Candidate(row[f"genre_{k}"], float(row[f"genre_score_{k}"]), int(row[f"genre_votes_{k}"]))
                         for k in range(1, _K_GENRES + 1) if row[f"genre_{k}"])
            bs = row["boundary_strength"]
            out.append(Segment(float(row["start_s"]), float(row["end_s"]), arts, row["verdict"],  # type: ignore[arg-type]
                               float(row["confidence"]), gens, float(bs) if bs else None))
        return tuple(out)


_CSV_HEADER = (["track", "start_s", "end_s", "start", "end", "verdict", "confidence", "boundary_strength"]
               + [c for k in range(1, _K_ARTISTS + 1) for c in (f"artist_{k}", f"score_{k}")]
               + [c for k in range(1, _K_GENRES + 1) for c in (f"genre_{k}", f"genre_score_{k}", f"genre_votes_{k}")])


def cue_time(seconds: float) -> str:
    """mm:ss:ff (75 frames a second), rounded down to the frame; minutes grow past 99 when they must."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a CUE index cannot be {seconds!r} s")
    frames = int(math.floor(seconds * 75 + 1e-6))
    m, rest = divmod(frames, 75 * 60)
    s, f = divmod(rest, 75)
    return f"{m:02d}:{s:02d}:{f:02d}"


def _q(text: str, *, limit: int | None = _CDTEXT_MAX) -> str:
    """A quoted CUE string: no way to escape a double quote exists, so it becomes a single one; CD-Text
    fields are cut to 80 characters; control characters (a newline would end the command) become spaces."""
    clean = "".join(" " if ord(ch) < 32 or ch == "\x7f" else ch for ch in text).replace('"', "'")
    return '"' + (clean[:limit] if limit else clean) + '"'


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
