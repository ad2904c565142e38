"""Known tracks: the in-memory fingerprint index and the exact-match decision ("this is X by Y at 1:23").

Layout: every enrolled track's hashes live on one global timeline of frames (tracks laid end to end with
a gap wider than any query), in a CSR table keyed by (anchor bin, triplet shape): `starts[key]` ..
`starts[key + 1]` index `frames`, the global frames of that key's anchors (4 bytes a hash). Every
track's peaks are kept too (5 bytes a peak) for the verification step.

A query is matched in four steps, each cheap enough for 500 hours of music:
1. Look up every query hash at its anchor bin and at the bins a pitch change of up to `max_shift_bins`
   moves it to (keys met more than `max_postings` times are skipped: common shapes say little and
   cost the most); each hit says "query frame tq is global frame g, at pitch shift s".
2. Coarse vote: hits of one true alignment share g - tq up to the tempo drift, so a histogram of
   (g - tq) in 2-s regions finds the few regions of the timeline worth a closer look.
3. Fine vote in each region: a Hough grid over tempo ratios r (0.90 .. 1.10), offsets b (g = b + r * tq)
   and pitch shifts s, where s must be what a deck does at that r (0 with key lock, 24 log2 r bins
   without); the best cell's hits are refitted by least squares and the distinct query anchors on the
   line counted (`hits`).
4. Verification: all the clip's peaks are mapped through that alignment onto the track's peaks; the
   share that land on one (+-2 frames, +-1 bin) is the `coverage`. Loop-built music lines up a few
   hashes by chance (same drum samples, same tempo); whole constellations it does not.

The decision: hits >= MIN_HITS and coverage >= MIN_COVERAGE. Chosen on the dev corpus: no window of the
44 never-enrolled test tracks reaches both (README, "Known-track fingerprint", gives the margin), and the
procedural demo's same-style tracks (same drums, other notes) stay below too.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from classifier.audio import fingerprint as fp
from classifier.audio.fingerprint import Peaks

# Peaks is part of this module's API (what the index is built from), so storage can build one without
# reaching into the audio layer.
__all__ = ["TrackRef", "Match", "Candidate", "KnownTracks", "Peaks", "MIN_HITS", "MIN_COVERAGE"]

log = logging.getLogger(__name__)

MIN_HITS = 12          # distinct query anchors on one line, and ...
MIN_COVERAGE = 0.35    # ... this share of the clip's peaks confirmed: chosen on data (module docstring)
MAX_POSTINGS = 100     # a (bin, shape) key met more often than this in the library is skipped at query time
_GAP_FRAMES = 1 << 14  # between tracks on the global timeline: 262 s, longer than any query we align
_COARSE_SHIFT = 7      # coarse bins of 128 frames (2 s)


@dataclass(frozen=True, slots=True)
class TrackRef:
    """What the index says about one enrolled track."""

    track_id: int
    artist: str
    title: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """The best alignment found for a query, matched or not (the threshold is chosen from these).

    hits : distinct query anchors on the alignment line
    anchors : distinct anchors in the query (the most hits there could be)
    offset_s : where the query's first frame falls in the track, seconds
    tempo_ratio : track seconds per query second (> 1: the clip plays faster than the record)
    pitch_bins : the clip's pitch minus the record's, in 1/24 octave
    coverage : the share of the clip's peaks that land on the track's peaks under this alignment
    """

    track: TrackRef
    hits: int
    anchors: int
    offset_s: float
    tempo_ratio: float
    pitch_bins: int
    coverage: float


@dataclass(frozen=True, slots=True)
class Match:
    """An exact match: the clip *is* this enrolled track, from offset_s on.

    confidence : the share of the clip's spectral peaks that land on the track's peaks under the found
        alignment (0..1]: ~0.5-0.8 for a clean copy, less through a phone or under another track;
        anything matched has at least `min_coverage`.
    pitch_semitones : the clip's pitch relative to the record (vinyl +6 % -> ~+1.0; key lock -> 0)
    """

    artist: str
    title: str
    track_id: int
    offset_s: float
    tempo_ratio: float
    pitch_semitones: float
    confidence: float
    hits: int


class KnownTracks:
    """The in-memory index of enrolled tracks' fingerprints. Build once (`build`), query from any thread.

    Read-only after construction, so concurrent `match` calls need no lock.
    """

    def __init__(self, refs: list[TrackRef], bases: np.ndarray, lengths: np.ndarray, starts: np.ndarray,
                 frames: np.ndarray, peak_g: np.ndarray, peak_f: np.ndarray, params: fp.FingerprintParams, *,
                 min_coverage: float = MIN_COVERAGE, min_hits: int = MIN_HITS, max_shift_bins: int = 3,
                 min_ratio: float = 0.90, max_ratio: float = 1.10, max_postings: int = MAX_POSTINGS) -> None:
        self.refs = refs
        self.bases = bases              # (n_tracks,) int64 global frame of each track's frame 0
        self.lengths = lengths          # (n_tracks,) int64 frames
        self.starts = starts            # (n_keys + 1,) uint32/int64 CSR row starts
        self.frames = frames            # (n_hashes,) uint32 global anchor frames
        self.peak_g = peak_g            # (n_peaks,) uint32 global frames of every track's peaks, sorted
        self.peak_f = peak_f            # (n_peaks,) uint8 their bins
        self.params = params
        self.min_coverage = min_coverage
        self.min_hits = min_hits
        self.max_shift_bins = max_shift_bins
        self.max_postings = max_postings
        self.ratios = np.arange(min_ratio, max_ratio + 1e-9, 0.005)
        shifts = np.arange(-max_shift_bins, max_shift_bins + 1)
        self._allowed = self._pitch_ok(shifts[None, :], self.ratios[:, None]).astype(np.int64)   # (R, n_s)

    # -- building --------------------------------------------------------------------------------
    @classmethod
    def build(cls, tracks: Iterable[tuple[TrackRef, fp.Peaks]], params: fp.FingerprintParams = fp.PARAMS,
              **kwargs: object) -> "KnownTracks":
        """Hash every track's peaks and lay them out for lookup.

        Memory while building: ~13 bytes a hash (a 64-bit sort key and the result), 4 after.
        """
        refs: list[TrackRef] = []
        bases: list[int] = []
        lengths: list[int] = []
        keys: list[np.ndarray] = []
        peak_g: list[np.ndarray] = []
        peak_f: list[np.ndarray] = []
        base = _GAP_FRAMES        # a gap before the first track too, so g - tq is never negative
        space = params.shape_space
        for ref, peaks in tracks:
            h = fp.hashes(peaks, params)
            refs.append(ref)
            bases.append(base)
            lengths.append(int(peaks.n_frames))
            key = h.f.astype(np.uint64) * np.uint64(space) + h.shape.astype(np.uint64)
            keys.append((key << np.uint64(32)) | (h.t.astype(np.uint64) + np.uint64(base)))
            peak_g.append(peaks.t.astype(np.uint32) + np.uint32(base))
            peak_f.append(peaks.f.astype(np.uint8))
            base += int(peaks.n_frames) + _GAP_FRAMES
        if base >= 1 << 32:
            raise ValueError("more audio than the 32-bit timeline holds (~19,000 hours)")
        packed = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
        del keys
        packed.sort()
        n_keys = params.n_bins * space
        counts = np.bincount((packed >> np.uint64(32)).astype(np.int64), minlength=n_keys)
        starts = np.zeros(n_keys + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        frames = (packed & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        del packed
        if starts[-1] < 1 << 32:
            starts = starts.astype(np.uint32)
        pg = np.concatenate(peak_g) if peak_g else np.zeros(0, np.uint32)
        pf = np.concatenate(peak_f) if peak_f else np.zeros(0, np.uint8)
        return cls(refs, np.asarray(bases, np.int64), np.asarray(lengths, np.int64), starts, frames, pg, pf,
                   params, **kwargs)  # type: ignore[arg-type]

    # -- facts -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.refs)

    @property
    def n_hashes(self) -> int:
        return int(self.frames.shape[0])

    @property
    def hours(self) -> float:
        return float(self.lengths.sum()) * self.params.frame_s / 3600.0

    @property
    def nbytes(self) -> int:
        """Bytes the lookup structures hold in memory."""
        return int(self.frames.nbytes + self.starts.nbytes + self.bases.nbytes + self.lengths.nbytes
                   + self.peak_g.nbytes + self.peak_f.nbytes)

    # -- matching --------------------------------------------------------------------------------
    def match(self, query: np.ndarray | fp.Peaks) -> Match | None:
        """The enrolled track this clip is, or None.

        Parameters
        ----------
        query : np.ndarray [shape=(n,), dtype=float32] mono audio at params.sample_rate (8 kHz), or its
            Peaks. Align clips of up to a few minutes; split longer audio into windows.

        Returns
        -------
        Match when at least `min_hits` distinct query anchors agree on one track, offset, tempo ratio
        and pitch shift, and at least `min_coverage` of the clip's peaks land on the track's peaks
        there; otherwise None (silence, a tone, music that is not enrolled).
        """
        cand = self.best(query)
        if cand is None or cand.hits < self.min_hits or cand.coverage < self.min_coverage:
            return None
        return Match(artist=cand.track.artist, title=cand.track.title, track_id=cand.track.track_id,
                     offset_s=cand.offset_s, tempo_ratio=cand.tempo_ratio,
                     pitch_semitones=cand.pitch_bins * 12.0 / self.params.bins_per_octave,
                     confidence=cand.coverage, hits=cand.hits)

    def best(self, query: np.ndarray | fp.Peaks) -> Candidate | None:
        """The best-aligned track for the query whatever its score (None when nothing aligns at all)."""
        t0 = time.perf_counter()
        peaks = query if isinstance(query, fp.Peaks) else fp.peaks(query, self.params)
        h = fp.hashes(peaks, self.params)
        if len(h) == 0 or not self.refs:
            return None
        tq, g, s = self._lookup(h)
        if tq.size == 0:
            return None
        anchors = int(np.unique(h.t).size)
        best: Candidate | None = None
        for region in self._regions(tq, g):
            cand = self._align(tq[region], g[region], s[region], anchors, peaks)
            if cand is not None and (best is None or (cand.coverage, cand.hits) > (best.coverage, best.hits)):
                best = cand
        log.debug("fingerprint query: %d hashes, %d hits, best %s in %.1f ms", len(h), tq.size,
                  best and (best.track.title, best.hits), 1000 * (time.perf_counter() - t0))
        return best

    def _lookup(self, h: fp.Hashes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query frame, global frame, pitch shift) hit of the query's hashes at shifted bins."""
        space = self.params.shape_space
        tqs, gs, ss = [], [], []
        f = h.f.astype(np.int64)
        for shift in range(-self.max_shift_bins, self.max_shift_bins + 1):
            ref_bin = f - shift                                  # the record's bin for a clip shifted by +shift
            ok = (ref_bin >= 0) & (ref_bin < self.params.n_bins)
            key = ref_bin[ok] * space + h.shape[ok].astype(np.int64)
            lo = self.starts[key].astype(np.int64)
            cnt = self.starts[key + 1].astype(np.int64) - lo
            cnt[cnt > self.max_postings] = 0        # a shape that common says little and costs much
            total = int(cnt.sum())
            if total == 0:
                continue
            first = np.cumsum(cnt) - cnt
            pos = np.arange(total, dtype=np.int64) + np.repeat(lo - first, cnt)
            gs.append(self.frames[pos].astype(np.int64))
            tqs.append(np.repeat(h.t[ok].astype(np.int64), cnt))
            ss.append(np.full(total, shift, np.int64))
        if not gs:
            z = np.zeros(0, np.int64)
            return z, z, z
        return np.concatenate(tqs), np.concatenate(gs), np.concatenate(ss)

    def _regions(self, tq: np.ndarray, g: np.ndarray, *, n: int = 8) -> list[np.ndarray]:
        """Index arrays of the hits in the n most voted 2-s regions of (g - tq), each +-1 region wide.

        Votes go to a table of 2**18 slots (coarse region mod 2**18) rather than one counter per region
        of a 500-hour timeline (14 M): a collision can only add a candidate, which the fine vote then
        rejects, never hide the true one."""
        coarse = np.maximum(g - tq, 0) >> _COARSE_SHIFT
        mask = (1 << 18) - 1
        slot = coarse & mask
        votes = np.bincount(slot, minlength=mask + 1)
        smooth = votes + np.roll(votes, 1) + np.roll(votes, -1)
        # the strongest slots, then the regions of the hits that fell in them (few), voted exactly
        best_slots = np.argpartition(smooth, -4 * n)[-4 * n:]
        near_slots = np.concatenate([best_slots, (best_slots + 1) & mask, (best_slots - 1) & mask])
        in_best = np.flatnonzero(np.isin(slot, near_slots))
        regions, counts = np.unique(coarse[in_best], return_counts=True)
        strength = counts.copy()
        strength[1:] += np.where(np.diff(regions) == 1, counts[:-1], 0)
        strength[:-1] += np.where(np.diff(regions) == 1, counts[1:], 0)
        keep = strength >= 3
        regions, strength = regions[keep], strength[keep]
        top = np.argsort(-strength, kind="stable")[: 4 * n]
        # strongest first; drop regions adjacent to a stronger one (the same alignment seen twice)
        chosen: list[int] = []
        for c in regions[top].tolist():
            if all(abs(c - d) > 2 for d in chosen):
                chosen.append(c)
            if len(chosen) == n:
                break
        near = coarse[in_best]
        return [in_best[np.abs(near - c) <= 1] for c in chosen]

    def _pitch_ok(self, s: np.ndarray, r: np.ndarray | float) -> np.ndarray:
        """Pitch shifts a DJ's deck produces at tempo ratio r: none (key lock) or the same ratio (vinyl),
        +-1 bin of peak jitter. Anything else (a transposed re-use of the same loops, say) is not the record."""
        vinyl = self.params.bins_per_octave * np.log2(r)
        return (np.abs(s) <= 1) | (np.abs(s - vinyl) <= 1)

    def _align(self, tq: np.ndarray, g: np.ndarray, s: np.ndarray, anchors: int,
               query: fp.Peaks) -> Candidate | None:
        """Hough vote over (tempo ratio, offset, pitch shift) for the hits of one region; refit; count."""
        centre = float(np.median(tq))
        x = tq - centre
        bw = 3.0                                                         # offset bins of 3 frames
        b = g[None, :] - self.ratios[:, None] * x[None, :]             # (R, m)
        bmin = float(b.min())
        bi = ((b - bmin) / bw).astype(np.int64)
        n_b = int(bi.max()) + 2
        n_s = 2 * self.max_shift_bins + 1
        key = (np.arange(self.ratios.size)[:, None] * n_b + bi) * n_s + (s + self.max_shift_bins)[None, :]
        votes = np.bincount(key.ravel(), minlength=self.ratios.size * n_b * n_s).reshape(self.ratios.size, n_b, n_s)
        votes *= self._allowed[:, None, :]
        sm = votes.copy()
        sm[:, 1:] += votes[:, :-1]                                        # an offset may straddle two bins
        sm2 = sm.copy()
        sm2[:, :, 1:] += sm[:, :, :-1]                                    # a fractional pitch shift two bins
        ri, bj, sk = np.unravel_index(int(np.argmax(sm2)), sm2.shape)
        r = float(self.ratios[ri])
        b0 = bmin + (bj + 0.0) * bw
        s0 = sk - self.max_shift_bins
        ok_s = self._pitch_ok(s, r) & ((s == s0) | (s == s0 - 1))
        near = (np.abs(g - (b0 + r * x)) <= 2 * bw) & ok_s
        if near.sum() < 3:
            return None
        # least-squares refit on the inliers, then count them with a tight tolerance
        for tol in (4.0, 2.0):
            xs, gs_ = x[near], g[near].astype(np.float64)
            if np.ptp(xs) > 0:
                r, b0 = np.polyfit(xs, gs_, 1)
            else:
                b0 = float(np.median(gs_))
            if not self.ratios[0] <= r <= self.ratios[-1]:
                return None
            ok_s = self._pitch_ok(s, r) & ((s == s0) | (s == s0 - 1))    # the refit r decides vinyl or not
            near = (np.abs(g - (b0 + r * x)) <= tol) & ok_s
            if near.sum() < 3:
                return None
        hits = int(np.unique(tq[near]).size)
        # which track the line lies in, and is it inside that track
        t_at_centre = b0
        k = int(np.searchsorted(self.bases, t_at_centre, side="right")) - 1
        if k < 0 or not (0 <= t_at_centre - self.bases[k] <= self.lengths[k]):
            return None
        first_frame = t_at_centre - r * centre - self.bases[k]
        pitch = float(np.median(s[near]))
        coverage = self._coverage(query, r, b0, centre, pitch, int(self.bases[k]), int(self.lengths[k]))
        return Candidate(self.refs[k], hits, anchors, float(first_frame * self.params.frame_s), float(r),
                         int(round(pitch)), coverage)

    def _coverage(self, query: fp.Peaks, r: float, b0: float, centre: float, pitch: float, base: int,
                  length: int) -> float:
        """The share of the query's peaks (those that fall inside the track) that have a peak of the track
        within +-2 frames and +-1 bin once mapped through the alignment: the verification step.

        Hashes can line up by chance in loop-built music; whole peak constellations do not. A true copy
        covers ~30-80 %, an unrelated clip aligned by chance a few %."""
        g = b0 + r * (query.t.astype(np.float64) - centre)
        f = query.f.astype(np.float64) - pitch
        inside = (g >= base) & (g < base + length)
        if inside.sum() < 10:
            return 0.0
        g, f = np.round(g[inside]).astype(np.int64), np.round(f[inside]).astype(np.int64)
        # the probe in the array's own dtype: numpy would otherwise convert the whole array to compare
        lo = int(np.searchsorted(self.peak_g, np.uint32(max(0, g.min() - 2)), side="left"))
        hi = int(np.searchsorted(self.peak_g, np.uint32(g.max() + 3), side="left"))
        ref_g = self.peak_g[lo:hi].astype(np.int64) - (g.min() - 2)
        n_bins = self.params.n_bins
        grid = np.zeros((int(g.max() - g.min()) + 5, n_bins + 2), bool)
        grid[ref_g, self.peak_f[lo:hi].astype(np.int64) + 1] = True
        ok = (f >= -1) & (f <= n_bins)
        row, col = g[ok] - (g.min() - 2), f[ok] + 1
        hit = np.zeros(int(ok.sum()), bool)
        for dt in range(-2, 3):                 # a +-2 frame, +-1 bin neighbourhood, probed directly
            for df in (-1, 0, 1):
                c = col + df
                inside = (c >= 0) & (c < n_bins + 2)
                hit[inside] |= grid[row[inside] + dt, c[inside]]
        return float(hit.sum()) / g.size

