"""Where one track ends and the next begins: per-slice features on a regular grid -> boundaries.

A DJ set is a sequence of tracks, each steady in sound for minutes, joined by 8-60-s transitions in
which both play. On the per-slice features that is a piecewise-constant signal plus noise, with ramps
between the pieces, so we search for the segmentation minimising the within-segment squared error
plus a penalty per boundary: penalised kernel change-point detection (Pelt) from `ruptures`, with
its `min_size` as the minimum track length. A least-squares fit of two constant pieces to a ramp
puts the change in the ramp's middle, so a boundary lands mid-transition.

Before the search the features are made scale-free: each dimension standardised over the set, then
projected on the set's leading principal components and scaled so that an average slice's squared
distance from the set's mean is 1. The penalty is then in units of "slices' worth of variance": a
boundary between two 60-slice tracks whose means lie `D` apart (squared, in those units) lowers the
cost by 30 * D, and is kept when that beats `penalty`.

Each boundary gets a strength in [0, 1): the squared distance between the two neighbouring segments'
core means, D, relative to D plus their average within-core spread. 0.5 means the two sides differ as
much as slices of one side differ among themselves; a split inside one track scores low, a change of
track high. The tracklist uses it to decide whether two neighbours voted to the same artist are one
track cut in two (weak boundary: merge) or two tracks by that artist (strong boundary: keep).

A segment's *core* leaves out `guard_s` seconds on each side of an inner boundary (the transition,
where the neighbour still plays), but always keeps at least `min_core_fraction` of the segment.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["SegmentParams", "Boundary", "prepare", "detect", "cores", "strength", "WINDOW_S"]

log = logging.getLogger(__name__)

WINDOW_S = 2.976  # one network patch: a slice covers [start, start + WINDOW_S]


@dataclass(frozen=True, slots=True)
class SegmentParams:
    """How to cut a set into tracks (defaults chosen on mixes of the dev corpus' *training* tracks, README).

    min_track_s : no segment shorter than this (seconds); a set shorter than two of these is one segment
    penalty : cost of one more boundary, in slices' worth of variance (see the module docstring)
    n_components : principal components kept before the search (noise in the rest only adds cost)
    kernel : ruptures KernelCPD kernel: "linear" (changes of mean), "rbf" or "cosine"
    guard_s : seconds left out of a segment's vote on each side of an inner boundary (the transition)
    min_core_fraction : a core keeps at least this share of its segment, whatever the guard
    """

    min_track_s: float = 60.0
    penalty: float = 8.0
    n_components: int = 16
    kernel: str = "linear"
    guard_s: float = 15.0
    min_core_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.min_track_s <= 0 or self.penalty <= 0 or self.n_components < 1:
            raise ValueError("min_track_s, penalty and n_components must be positive")
        if self.kernel not in ("linear", "rbf", "cosine"):
            raise ValueError(f"unknown kernel {self.kernel!r}")
        if not 0.0 < self.min_core_fraction <= 1.0 or self.guard_s < 0:
            raise ValueError("min_core_fraction must be in (0, 1] and guard_s >= 0")


@dataclass(frozen=True, slots=True)
class Boundary:
    """A change of track: `index` is the first slice of the new segment, `time_s` lies between the two
    slices' centres (seconds, on the same clock as the slice starts), `strength` in [0, 1)."""

    index: int
    time_s: float
    strength: float


def prepare(x: np.ndarray, n_components: int = 16) -> np.ndarray:
    """Standardise, project on the leading principal components, scale to unit mean squared norm.

    Parameters
    ----------
    x : np.ndarray [shape=(n, d)] per-slice features (any scale; constant dimensions are ignored)
    n_components : at most this many components (fewer when n or d is smaller)

    Returns
    -------
    z : np.ndarray [shape=(n, k), dtype=float64], k = min(n_components, n, d); mean 0, mean(|z_i|^2) = 1
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (n, d), not {x.shape}")
    n, d = x.shape
    if n == 0:
        return np.zeros((0, min(n_components, d)))
    sd = x.std(axis=0)
    keep = sd > 1e-8 * max(1.0, float(np.abs(x).max()))
    z = (x[:, keep] - x[:, keep].mean(axis=0)) / sd[keep] if keep.any() else np.zeros((n, 1))
    k = max(1, min(n_components, n, z.shape[1]))
    if z.shape[1] <= n:
        # principal axes from the d x d covariance: for a 3-hour set (n = 3,600) and d <= 1,506 this is
        # several times cheaper than an SVD of the n x d matrix
        _, vecs = np.linalg.eigh(z.T @ z)
        z = z @ vecs[:, ::-1][:, :k]
    else:
        u, s, _ = np.linalg.svd(z, full_matrices=False)
        z = u[:, :k] * s[:k]
    total = float(np.mean(np.sum(z * z, axis=1)))
    return z / math.sqrt(total) if total > 0 else z


def _min_size(times: np.ndarray, min_track_s: float) -> int:
    """Slices in `min_track_s` seconds on this grid (the grid's median hop)."""
    hop = float(np.median(np.diff(times))) if times.size > 1 else WINDOW_S
    return max(2, int(math.ceil(min_track_s / max(hop, 1e-3))))


def detect(z: np.ndarray, starts_s: np.ndarray, params: SegmentParams = SegmentParams()) -> tuple[Boundary, ...]:
    """Boundaries between tracks in a prepared feature sequence.

    Parameters
    ----------
    z : np.ndarray [shape=(n, k)] `prepare`d per-slice features, in time order
    starts_s : np.ndarray [shape=(n,)] slice starts (seconds), increasing
    params : see SegmentParams

    Returns
    -------
    boundaries : sorted by time; none when the set is shorter than two minimum-length tracks. Every
        segment between consecutive boundaries (and the set's ends) has at least `min_track_s` of slices.
    """
    import ruptures

    n = int(z.shape[0])
    if starts_s.shape[0] != n:
        raise ValueError("features and starts disagree on the number of slices")
    min_size = _min_size(starts_s, params.min_track_s)
    if n < 2 * min_size:
        return ()
    algo = ruptures.KernelCPD(kernel=params.kernel, min_size=min_size)
    try:
        ends = algo.fit(np.ascontiguousarray(z, dtype=np.float64)).predict(pen=params.penalty)
    except ruptures.exceptions.BadSegmentationParameters:
        return ()
    idx = [int(e) for e in ends if 0 < e < n]
    centres = starts_s + WINDOW_S / 2
    out = []
    for k, i in enumerate(idx):
        lo = idx[k - 1] if k else 0
        hi = idx[k + 1] if k + 1 < len(idx) else n
        out.append(Boundary(i, float((centres[i - 1] + centres[i]) / 2), 0.0))
        out[-1] = Boundary(i, out[-1].time_s, strength(z, starts_s, lo, i, hi, params))
    return tuple(out)


def _core(starts_s: np.ndarray, lo: int, hi: int, *, guard_lo: bool, guard_hi: bool,
          params: SegmentParams) -> np.ndarray:
    """Indices of slices lo..hi-1 that lie outside the guarded transitions (see `cores`)."""
    idx = np.arange(lo, hi)
    if idx.size == 0:
        return idx
    seg_lo = float(starts_s[lo])
    seg_hi = float(starts_s[hi - 1]) + WINDOW_S
    guard = min(params.guard_s, (seg_hi - seg_lo) * (1.0 - params.min_core_fraction) / 2)
    a = seg_lo + (guard if guard_lo else 0.0)
    b = seg_hi - (guard if guard_hi else 0.0)
    s = starts_s[idx]
    sel = idx[(s >= a - 1e-6) & (s + WINDOW_S <= b + 1e-6)]
    if sel.size == 0:  # a segment of a slice or two: its middle slice
        sel = idx[[idx.size // 2]]
    return sel


def cores(starts_s: np.ndarray, boundaries: tuple[Boundary, ...] | list[Boundary],
          params: SegmentParams = SegmentParams()) -> list[np.ndarray]:
    """Each segment's core: its slices minus `guard_s` seconds at each inner boundary.

    Returns one index array per segment (len(boundaries) + 1 of them), in time order. The set's own start
    and end are not guarded (nothing overlaps them); a core keeps at least `min_core_fraction` of its segment.
    """
    cuts = [0] + [b.index for b in boundaries] + [int(starts_s.shape[0])]
    return [_core(starts_s, cuts[k], cuts[k + 1], guard_lo=k > 0, guard_hi=k + 2 < len(cuts), params=params)
            for k in range(len(cuts) - 1)]


def strength(z: np.ndarray, starts_s: np.ndarray, lo: int, mid: int, hi: int,
             params: SegmentParams = SegmentParams()) -> float:
    """Strength of the boundary at slice `mid` between segments [lo, mid) and [mid, hi): D / (D + W).

    D is the squared distance between the two segments' core means, W their average within-core spread
    (mean squared distance of a core slice from its core's mean). In [0, 1); 0 when both sides are alike.
    """
    left = _core(starts_s, lo, mid, guard_lo=False, guard_hi=True, params=params)
    right = _core(starts_s, mid, hi, guard_lo=True, guard_hi=False, params=params)
    zl, zr = z[left], z[right]
    ml, mr = zl.mean(axis=0), zr.mean(axis=0)
    d = float(np.sum((ml - mr) ** 2))
    w = 0.5 * (float(np.mean(np.sum((zl - ml) ** 2, axis=1))) + float(np.mean(np.sum((zr - mr) ** 2, axis=1))))
    return d / (d + w) if d + w > 0 else 0.0
