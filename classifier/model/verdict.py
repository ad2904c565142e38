"""The answers the classifier gives, and their stable JSON shape (the CLI prints it, the service sends it).

    GenreReport  {"source", "seconds", "slices", "genres": [{"label", "score", "votes"}],
                  "descriptors": [...], "timings": {...}}
    Verdict      {"source", "seconds", "slices", "artists": [{"name", "score", "votes"}], "confidence",
                  "verdict": "identified" | "unknown", "genres": [...], "model": {"id", "artists"},
                  "timings": {...}}

Both also carry "start" (seconds into the source where the analysed audio begins), "hint" (a sentence
for the user, or null) and "timeline" (per-slice start and top label, for charts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from classifier.model.voting import Candidate

__all__ = ["GenreReport", "Verdict", "TimelinePoint"]


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    t: float      # seconds into the source
    label: str    # the slice's top label


def _cands(cands: tuple[Candidate, ...], key: str) -> list[dict[str, object]]:
    return [c.to_dict(key) for c in cands]


def _cands_from(items: list[Mapping[str, Any]], key: str) -> tuple[Candidate, ...]:
    return tuple(Candidate(str(d[key]), float(d["score"]), int(d["votes"])) for d in items)


def _timeline(points: tuple[TimelinePoint, ...]) -> list[dict[str, object]]:
    return [{"t": round(p.t, 3), "label": p.label} for p in points]


@dataclass(frozen=True, slots=True)
class GenreReport:
    source: str
    seconds: float
    slices: int
    genres: tuple[Candidate, ...]
    descriptors: tuple[Candidate, ...]
    timings: Mapping[str, float]
    start: float = 0.0
    hint: str | None = None
    timeline: tuple[TimelinePoint, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source, "start": round(self.start, 3), "seconds": round(self.seconds, 3),
            "slices": self.slices, "genres": _cands(self.genres, "label"),
            "descriptors": _cands(self.descriptors, "label"), "timings": dict(self.timings),
            "hint": self.hint, "timeline": _timeline(self.timeline),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GenreReport":
        return cls(source=d["source"], seconds=float(d["seconds"]), slices=int(d["slices"]),
                   genres=_cands_from(d["genres"], "label"), descriptors=_cands_from(d["descriptors"], "label"),
                   timings=dict(d.get("timings", {})), start=float(d.get("start", 0.0)), hint=d.get("hint"),
                   timeline=tuple(TimelinePoint(float(p["t"]), str(p["label"])) for p in d.get("timeline", [])))


@dataclass(frozen=True, slots=True)
class Verdict:
    source: str
    seconds: float
    slices: int
    artists: tuple[Candidate, ...]
    confidence: float
    verdict: Literal["identified", "unknown"]
    genres: tuple[Candidate, ...]
    model_id: str
    model_artists: int
    timings: Mapping[str, float]
    vote_share: float = 0.0
    start: float = 0.0
    hint: str | None = None
    timeline: tuple[TimelinePoint, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identified(self) -> bool:
        return self.verdict == "identified"

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source, "start": round(self.start, 3), "seconds": round(self.seconds, 3),
            "slices": self.slices, "artists": _cands(self.artists, "name"),
            "confidence": round(self.confidence, 4), "vote_share": round(self.vote_share, 4),
            "verdict": self.verdict, "genres": _cands(self.genres, "label"),
            "model": {"id": self.model_id, "artists": self.model_artists},
            "timings": dict(self.timings), "hint": self.hint, "timeline": _timeline(self.timeline),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        return cls(source=d["source"], seconds=float(d["seconds"]), slices=int(d["slices"]),
                   artists=_cands_from(d["artists"], "name"), confidence=float(d["confidence"]),
                   verdict=d["verdict"], genres=_cands_from(d["genres"], "label"),
                   model_id=str(d["model"]["id"]), model_artists=int(d["model"]["artists"]),
                   timings=dict(d.get("timings", {})), vote_share=float(d.get("vote_share", 0.0)),
                   start=float(d.get("start", 0.0)), hint=d.get("hint"),
                   timeline=tuple(TimelinePoint(float(p["t"]), str(p["label"])) for p in d.get("timeline", [])))
