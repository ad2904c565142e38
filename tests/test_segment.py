"""Segmentation on synthetic per-slice feature sequences: tracks are noisy constant pieces joined by ramps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier.model import segment as sg

HOP = 3.0


def _mix(lengths_s: list[float], *, fade_s: float = 20.0, d: int = 40, sep: float = 1.0, noise: float = 1.0,
         seed: int = 0, means: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Per-slice features of a mix: track k is means[k] + noise; a crossfade of `fade_s` ramps linearly from
    one mean to the next. Returns (features (n, d), slice starts (n,), true boundaries (mid-fade) in s)."""
    rng = np.random.default_rng(seed)
    if means is None:
        means = rng.normal(size=(len(lengths_s), d)) * sep
    edges = np.concatenate([[0.0], np.cumsum(lengths_s)])
    total = float(edges[-1])
    starts = np.arange(0.0, total - sg.WINDOW_S + 1e-9, HOP)
    centre = starts + sg.WINDOW_S / 2
    x = np.empty((starts.size, means.shape[1]))
    for i, t in enumerate(centre):
        k = min(int(np.searchsorted(edges, t, side="right")) - 1, len(lengths_s) - 1)
        m = means[k]
        for j in (k, k + 1):           # inside a crossfade around inner edge j: a linear ramp
            if 0 < j < len(lengths_s) and abs(t - edges[j]) < fade_s / 2:
                w = (t - (edges[j] - fade_s / 2)) / fade_s
                m = (1 - w) * means[j - 1] + w * means[j]
        x[i] = m + noise * rng.normal(size=means.shape[1])
    return x, starts, [float(e) for e in edges[1:-1]]


def _times(bs: tuple[sg.Boundary, ...]) -> list[float]:
    return [b.time_s for b in bs]


def test_clear_boundaries_are_found_mid_transition() -> None:
    x, starts, truth = _mix([150, 200, 120, 240, 180], fade_s=24.0, seed=1)
    found = sg.detect(sg.prepare(x), starts)
    assert len(found) == len(truth), (_times(found), truth)
    for got, want in zip(_times(found), truth):
        assert abs(got - want) <= 6.0, (got, want)   # two slices: the middle of a 24-s ramp, on a 3-s grid
    assert all(0.5 < b.strength < 1.0 for b in found)


@pytest.mark.parametrize("min_track_s", [30.0, 60.0, 90.0])
def test_minimum_track_length_is_respected(min_track_s: float) -> None:
    # tracks as short as 40 s among long ones: no segment may come out shorter than the minimum
    x, starts, _ = _mix([100, 40, 130, 45, 95, 150], fade_s=10.0, seed=2)
    found = sg.detect(sg.prepare(x), starts, sg.SegmentParams(min_track_s=min_track_s))
    cuts = [0] + [b.index for b in found] + [starts.size]
    lengths = [(cuts[k + 1] - cuts[k]) * HOP for k in range(len(cuts) - 1)]
    assert min(lengths) >= min_track_s - 1e-9, lengths
    assert found, "the 95-150-s tracks must still be told apart"


def test_same_artist_neighbours_split_on_a_strong_boundary() -> None:
    # Two tracks "by the same artist": their means share most of their direction, yet the change is clear
    rng = np.random.default_rng(3)
    artist = rng.normal(size=40) * 1.5
    other = rng.normal(size=40) * 1.5
    means = np.stack([artist + rng.normal(size=40) * 0.8, artist + rng.normal(size=40) * 0.8, other])
    x, starts, truth = _mix([180, 180, 180], means=means, fade_s=16.0, seed=3)
    found = sg.detect(sg.prepare(x), starts)
    assert len(found) == 2 and all(abs(g - w) <= 6.0 for g, w in zip(_times(found), truth)), (_times(found), truth)
    # and the strength says how different the sides are: same artist weaker than a change of artist
    assert found[0].strength < found[1].strength


def test_a_single_track_gives_no_boundary() -> None:
    x, starts, _ = _mix([600], seed=4)
    assert sg.detect(sg.prepare(x), starts) == ()


def test_a_set_shorter_than_two_minimum_tracks_is_one_segment() -> None:
    x, starts, _ = _mix([50, 55], seed=5, sep=3.0)       # a clear change, but 105 s < 2 x 60 s
    assert sg.detect(sg.prepare(x), starts) == ()
    cs = sg.cores(starts, ())
    assert len(cs) == 1 and cs[0].tolist() == list(range(starts.size))   # nothing to guard: every slice votes


def test_cores_leave_out_the_transitions_but_keep_half() -> None:
    starts = np.arange(0.0, 300.0 - sg.WINDOW_S, HOP)
    b = (sg.Boundary(50, 150.0, 0.9),)
    p = sg.SegmentParams(guard_s=15.0)
    left, right = sg.cores(starts, b, p)
    assert starts[left[0]] == 0.0                        # the set's start is not guarded
    assert starts[left[-1]] + sg.WINDOW_S <= starts[50] - 15.0 + 1e-6
    assert starts[right[0]] >= starts[50] + 15.0 - 1e-6
    assert starts[right[-1]] == starts[-1]               # nor its end
    # a guard wider than half a short segment shrinks to keep min_core_fraction of it
    short = sg.cores(starts, (sg.Boundary(10, 30.0, 0.9), sg.Boundary(30, 90.0, 0.9)),
                     sg.SegmentParams(guard_s=40.0, min_core_fraction=0.5))[1]
    assert short.size >= 0.5 * 20 - 1


def test_prepare_is_scale_free_and_unit_norm() -> None:
    x, starts, _ = _mix([120, 120, 120], seed=6)
    z = sg.prepare(x, 8)
    assert z.shape == (x.shape[0], 8)
    np.testing.assert_allclose(np.mean(np.sum(z * z, axis=1)), 1.0, rtol=1e-9)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    z2 = sg.prepare(x * 1000.0 + 7.0, 8)
    np.testing.assert_allclose(np.abs(z2), np.abs(z), atol=1e-7)      # principal axes up to sign
    a, b = sg.detect(z, starts), sg.detect(z2, starts)
    assert [x.index for x in a] == [x.index for x in b] and len(a) == 2
    np.testing.assert_allclose([x.strength for x in a], [x.strength for x in b], rtol=1e-9)


def test_constant_features_give_no_boundary_and_no_nan() -> None:
    starts = np.arange(100) * HOP
    z = sg.prepare(np.ones((100, 5)))
    assert np.isfinite(z).all()
    assert sg.detect(z, starts) == ()


def test_bad_params_are_refused() -> None:
    with pytest.raises(ValueError):
        sg.SegmentParams(min_track_s=0)
    with pytest.raises(ValueError):
        sg.SegmentParams(kernel="poly")
    with pytest.raises(ValueError):
        sg.detect(np.zeros((10, 2)), np.arange(9.0))


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.floats(min_value=20, max_value=200), min_size=1, max_size=6),
       min_track_s=st.sampled_from([30.0, 60.0]), seed=st.integers(0, 1000))
def test_segments_always_cover_the_set_in_order(lengths: list[float], min_track_s: float, seed: int) -> None:
    x, starts, _ = _mix(lengths, seed=seed)
    if starts.size == 0:
        return
    p = sg.SegmentParams(min_track_s=min_track_s)
    found = sg.detect(sg.prepare(x), starts, p)
    idx = [b.index for b in found]
    assert idx == sorted(set(idx)) and all(0 < i < starts.size for i in idx)
    assert all(0.0 <= b.strength < 1.0 for b in found)
    cs = sg.cores(starts, found, p)
    assert len(cs) == len(found) + 1
    cuts = [0] + idx + [starts.size]
    for k, c in enumerate(cs):                           # each core lies inside its own segment, never empty
        assert c.size >= 1 and cuts[k] <= c.min() and c.max() < cuts[k + 1]
