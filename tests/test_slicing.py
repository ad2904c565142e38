"""Slicing: window counts follow the formula, the tail rule holds, streaming equals in-memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from classifier.audio import slicing

W, H = 47616, 48000


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 0), (W - 1, 0), (W, 1),
     (W + W // 2 - 1, 1),       # tail just under half a window: dropped
     (W + W // 2, 2),           # tail of half a window: one end-aligned window
     (W + H - 1, 2), (W + H, 2), (W + H + W // 2 - 384, 2), (W + H + W, 3), (W + 2 * H, 3)],
)
def test_window_counts(n: int, expected: int) -> None:
    assert len(slicing.window_starts(n, W, H)) == expected


@given(n=st.integers(0, 20 * W), hop=st.integers(1000, 2 * W))
def test_regular_windows_match_formula_and_tail_rule(n: int, hop: int) -> None:
    starts = slicing.window_starts(n, W, hop)
    if n < W:
        assert starts.size == 0
        return
    regular = 1 + (n - W) // hop
    tail = n - ((regular - 1) * hop + W)
    assert len(starts) == regular + (1 if 2 * tail >= W else 0)
    assert np.all(starts + W <= n) and np.all(np.diff(starts) > 0)
    # nothing longer than half a window is ever left unscored at the end
    assert n - (starts[-1] + W) < W / 2 or 2 * (n - (starts[-1] + W)) < W


@hsettings(max_examples=40, deadline=None)
@given(n=st.integers(0, 6 * W), hop=st.sampled_from([12000, 24000, 48000, W]),
       chunk=st.integers(500, 3 * W), max_windows=st.integers(1, 7))
def test_stream_windows_equal_in_memory(n: int, hop: int, chunk: int, max_windows: int) -> None:
    rng = np.random.default_rng(n)
    wave = rng.standard_normal(n).astype(np.float32)
    ref = slicing.windows(wave, W, hop)
    chunks = [wave[i:i + chunk] for i in range(0, n, chunk)]
    got = list(slicing.stream_windows(chunks, W, hop, max_windows=max_windows))
    starts = np.concatenate([g.starts for g in got]) if got else np.zeros(0, np.int64)
    np.testing.assert_array_equal(starts, ref.starts)
    if got:
        assert all(len(g) <= max_windows for g in got)
        np.testing.assert_array_equal(np.concatenate([g.samples for g in got]), ref.samples)
