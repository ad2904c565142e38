"""A whole DJ set in, its tracklist out: per-slice analysis + artist head -> segments -> top-5 per segment.

    analyse (pipeline.py, any number of consecutive chunks) -> TracklistBuilder.add
        -> per slice, kept small: artist probabilities, segmentation features, genre tags
    TracklistBuilder.finish -> boundaries (model/segment.py) -> each segment's core votes (model/voting.py)
        -> neighbours voted to the same artist across a weak boundary merged -> Tracklist (model/setlist.py)

Memory stays flat for a 4-hour set: `add` reduces each chunk's analysis to a few hundred floats per
slice (the 1,506-d pooled features are used once, by the head, and dropped), so the engine can analyse
the set in chunks and feed them as they come. Everything here is blocking (the head runs TensorFlow):
callers on an event loop run it in a worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import numpy as np

from classifier.model import genre, segment, voting
from classifier.model.heads import Head, features_of
from classifier.model.setlist import Segment, Tracklist
from classifier.pipeline import Analysis

__all__ = ["TracklistParams", "TracklistBuilder", "tracklist", "FEATURES"]

log = logging.getLogger(__name__)

FEATURES = ("embedding", "tags", "probs", "embedding+probs")


@dataclass(frozen=True, slots=True)
class TracklistParams:
    """How a set becomes a tracklist.

    segment : where boundaries go (min_track_s, penalty, guard_s, ...; see model/segment.py)
    feature : what the boundaries are found on: the backbone's 200-d "embedding", its 50 "tags", the
        head's per-slice artist log-"probs", or "embedding+probs" (both, each scaled to equal weight)
    merge_below : neighbours whose cores vote the same top artist are merged when the boundary between
        them is weaker than this (one track cut in two); at or above it they stay two tracks. Kept low
        (0.3): on the dev mixes, 0.5 merged one true same-artist boundary and repaired one false split,
        and 0.3 merged nothing (README "Tracklists"), so the default errs towards keeping boundaries
    k, k_genres : artists and genres kept per segment
    """

    segment: segment.SegmentParams = segment.SegmentParams()
    feature: str = "embedding"
    merge_below: float = 0.3
    k: int = 5
    k_genres: int = 3

    def __post_init__(self) -> None:
        if self.feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, not {self.feature!r}")


class TracklistBuilder:
    """Collects consecutive analyses of one set (in time order), then cuts and votes them.

    >>> b = TracklistBuilder(head)
    >>> for a in chunks: b.add(a)          # pipeline.Analysis with pooled features
    >>> tl = b.finish("set.mp3")
    """

    def __init__(self, head: Head, params: TracklistParams = TracklistParams()) -> None:
        self.head, self.params = head, params
        self._starts: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []
        self._feats: list[np.ndarray] = []
        self._tags: list[np.ndarray] = []
        self._tag_labels: tuple[str, ...] = ()
        self._first_s: float | None = None
        self._end_s = 0.0
        self._seconds = 0.0
        self._timings: dict[str, float] = {}

    @property
    def n_slices(self) -> int:
        return int(sum(s.shape[0] for s in self._starts))

    def add(self, a: Analysis) -> None:
        """Reduce one chunk's analysis to what the tracklist needs and keep it.

        a : pipeline.Analysis of the next stretch of the set (slice times on the set's clock, after
            every slice added before); needs `pooled` when the head votes on pooled features
        """
        t0 = time.perf_counter()
        if a.n_slices and self._starts and self._starts[-1].size and a.starts_s[0] <= self._starts[-1][-1]:
            raise ValueError("analyses must be added in time order, without overlap")
        probs = self.head.predict(features_of(self.head.config.feature, a.embedding, a.pooled))
        tags = a.tags[self.head.backbone]
        self._tag_labels = a.labels[self.head.backbone]
        self._starts.append(np.asarray(a.starts_s, dtype=np.float64))
        self._probs.append(probs.astype(np.float32))
        self._tags.append(np.asarray(tags, dtype=np.float32))
        self._feats.append(self._segment_features(a.embedding, tags, probs))
        if self._first_s is None:
            self._first_s = a.offset_s
        self._end_s = max(self._end_s, a.offset_s + a.seconds)
        self._seconds += a.seconds
        for key, v in a.timings.items():
            self._timings[key] = self._timings.get(key, 0.0) + float(v)
        self._timings["head"] = self._timings.get("head", 0.0) + time.perf_counter() - t0

    def _segment_features(self, embedding: np.ndarray, tags: np.ndarray, probs: np.ndarray) -> np.ndarray:
        f = self.params.feature
        logp = np.log(np.clip(probs, 1e-6, 1.0))
        if f == "embedding":
            return np.asarray(embedding, dtype=np.float32)
        if f == "tags":
            t = np.clip(tags, 1e-6, 1 - 1e-6)
            return np.log(t / (1 - t)).astype(np.float32)   # logits: sigmoid outputs saturate
        if f == "probs":
            return logp.astype(np.float32)
        return np.hstack([embedding, logp]).astype(np.float32)

    def finish(self, source: str) -> Tracklist:
        """Cut the set into segments and vote each one. A set shorter than two minimum-length tracks is one
        segment."""
        t0 = time.perf_counter()
        p = self.params
        if not self._starts or self.n_slices == 0:
            raise ValueError("no analysed slices: add at least one analysis first")
        starts = np.concatenate(self._starts)
        probs = np.concatenate(self._probs)
        tags = np.concatenate(self._tags)
        feats = np.concatenate(self._feats)
        if p.feature == "embedding+probs":   # equal weight to the 200 embedding and the k log-prob dimensions
            d = feats.shape[1] - probs.shape[1]
            z = np.hstack([segment.prepare(feats[:, :d], p.segment.n_components),
                           segment.prepare(feats[:, d:], p.segment.n_components)]) / np.sqrt(2.0)
        else:
            z = segment.prepare(feats, p.segment.n_components)
        bounds = list(segment.detect(z, starts, p.segment))
        t_detect = time.perf_counter() - t0
        votes = [self._vote(probs, c) for c in segment.cores(starts, bounds, p.segment)]
        # One track cut in two shows as two neighbours voted to the same artist across a weak boundary;
        # merge the weakest such pair first, then look again (a merge changes its neighbours' strengths).
        while True:
            same = [k for k, b in enumerate(bounds)
                    if votes[k].candidates and votes[k + 1].candidates
                    and votes[k].candidates[0].label == votes[k + 1].candidates[0].label and b.strength < p.merge_below]
            if not same:
                break
            k = min(same, key=lambda j: bounds[j].strength)
            del bounds[k]
            bounds = self._restrengthen(z, starts, bounds, around=k)
            cs = segment.cores(starts, bounds, p.segment)
            votes[k: k + 2] = [self._vote(probs, cs[k])]
        cs = segment.cores(starts, bounds, p.segment)
        segs = []
        edges = [self._first_s or 0.0] + [b.time_s for b in bounds] + [self._end_s]
        for i, core in enumerate(cs):
            r = votes[i]
            conf = r.candidates[0].score if r.candidates else 0.0
            g, _ = genre.genre_rankings({self.head.backbone: tags[core]}, {self.head.backbone: self._tag_labels},
                                        k_genres=p.k_genres)
            segs.append(Segment(
                start_s=float(edges[i]), end_s=float(edges[i + 1]), artists=r.candidates,
                verdict="identified" if r.candidates and conf >= self.head.threshold else "unknown",
                confidence=conf, genres=g.candidates, boundary_strength=bounds[i - 1].strength if i else None))
        timings = dict(self._timings, segment=t_detect, assemble=time.perf_counter() - t0 - t_detect)
        log.info("tracklist %s: %.0f s, %d slices, %d segments, %s", source, self._seconds, len(starts), len(segs),
                 {k: round(v, 2) for k, v in timings.items()})
        return Tracklist(source=source, seconds=self._seconds, segments=tuple(segs), model_id=self.head.id,
                         model_artists=len(self.head.labels), timings=timings)

    def _vote(self, probs: np.ndarray, core: np.ndarray) -> voting.Ranking:
        return voting.rank(probs[core], self.head.labels, k=self.params.k,
                           rule=self.head.config.rule)  # type: ignore[arg-type]

    def _restrengthen(self, z: np.ndarray, starts: np.ndarray, bounds: list[segment.Boundary],
                      around: int) -> list[segment.Boundary]:
        """Recompute the strengths of the boundaries next to a merge (their neighbour segment changed)."""
        cuts = [0] + [b.index for b in bounds] + [z.shape[0]]
        out = list(bounds)
        for j in (around - 1, around):
            if 0 <= j < len(out):
                s = segment.strength(z, starts, cuts[j], cuts[j + 1], cuts[j + 2], self.params.segment)
                out[j] = replace(out[j], strength=s)
        return out


def tracklist(a: Analysis, head: Head, source: str, params: TracklistParams = TracklistParams()) -> Tracklist:
    """The tracklist of one analysed set (the whole set in one Analysis; see TracklistBuilder for chunks)."""
    b = TracklistBuilder(head, params)
    b.add(a)
    return b.finish(source)
