"""Cut a waveform (or a stream of chunks) into the fixed windows the network scores.

A window is exactly one network patch: (patch_frames - 1) * hop_length samples, which a centred STFT
turns into patch_frames frames (186 * 256 = 47,616 samples = 2.976 s -> 187 frames at 16 kHz).

The tail: windows start at 0, hop, 2*hop, ... while they fit. If the audio left uncovered after the
last such window is at least half a window long, one more window is added, aligned to the end of the
audio (it overlaps its neighbour). Shorter tails are dropped: scoring 1 s of a fade-out as if it were
3 s of music adds noise to the vote, not evidence. Audio shorter than one window yields no window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

__all__ = ["Windows", "window_starts", "windows", "stream_windows"]


@dataclass(frozen=True, slots=True)
class Windows:
    """A batch of windows and where each one starts in the source audio.

    samples : np.ndarray [shape=(n, window), dtype=float32]
    starts : np.ndarray [shape=(n,), dtype=int64], sample offsets from the start of the audio
    """

    samples: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.starts.shape[0])


def window_starts(n_samples: int, window: int, hop: int) -> np.ndarray:
    """Sample offsets of every window for audio of `n_samples` (see the module docstring for the tail)."""
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    starts = np.arange(0, n_samples - window + 1, hop, dtype=np.int64)
    tail = n_samples - (int(starts[-1]) + window)
    if tail * 2 >= window:
        starts = np.append(starts, n_samples - window)
    return starts


def windows(wave: np.ndarray, window: int, hop: int) -> Windows:
    """All windows of an in-memory waveform. Views into `wave` when possible (no copy)."""
    starts = window_starts(wave.shape[0], window, hop)
    if starts.size == 0:
        return Windows(np.zeros((0, window), dtype=np.float32), starts)
    view = np.lib.stride_tricks.sliding_window_view(wave, window)
    return Windows(view[starts], starts)


def stream_windows(chunks: Iterable[np.ndarray], window: int, hop: int, *,
                   max_windows: int = 64) -> Iterator[Windows]:
    """Windows of a chunked stream, in batches of at most `max_windows`, with flat memory.

    Yields exactly the windows `windows()` would give for the concatenated stream, tail rule included.
    """
    buf = np.zeros(0, dtype=np.float32)
    offset = 0          # sample index of buf[0] in the whole stream
    next_start = 0      # next regular window start (absolute)
    last_end = -1       # end of the last window emitted (absolute)
    total = 0
    for chunk in chunks:
        total += chunk.shape[0]
        buf = np.concatenate([buf, chunk.astype(np.float32, copy=False)])
        while True:
            room = offset + buf.shape[0] - window  # last start that fits
            if next_start > room:
                break
            stop = min(room, next_start + (max_windows - 1) * hop)
            starts = np.arange(next_start, stop + 1, hop, dtype=np.int64)
            rel = starts - offset
            view = np.lib.stride_tricks.sliding_window_view(buf, window)
            yield Windows(np.ascontiguousarray(view[rel]), starts)
            last_end = int(starts[-1]) + window
            next_start = int(starts[-1]) + hop
        # keep only what a future window (or the tail window) can still need
        keep_from = min(next_start, offset + buf.shape[0] - window) - offset
        keep_from = max(0, keep_from)
        buf = buf[keep_from:]
        offset += keep_from
    if total >= window and last_end >= 0 and (total - last_end) * 2 >= window:
        rel = total - window - offset
        yield Windows(np.ascontiguousarray(buf[rel:rel + window][None, :]),
                      np.array([total - window], dtype=np.int64))
