"""The known-track fingerprint: a decoded waveform -> spectral peaks -> tempo- and pitch-invariant hashes.

Pure DSP, no storage. Design (after Six & Leman's Panako and Sonnleitner & Widmer's quad hashes, both
built for DJ sets where plain peak-pair landmarks fail):

1. A log-frequency power spectrogram (24 bins per octave, 150 Hz - 3.8 kHz at 8 kHz): on a log axis a
   pitch change (vinyl speed, pitch fader) is a *shift*, not a stretch. 3.8 kHz keeps what survives a
   phone in a room and a 32 kb/s Opus voice note; the bass below 150 Hz is what a phone loses first.
2. Each bin minus its own moving average over +-0.5 s (dB), so a static EQ or filter moves nothing and a
   held tone or a drone is flat (no peak): only *events* (onsets, note changes) make peaks. Silence
   and pure tones therefore give no peaks at all.
3. Peaks: local maxima in +-96 ms x +-1/6 octave, at least `peak_db` above the background, the
   strongest `peaks_per_block` of every 64-frame (1.02 s) block.
4. Hashes over peak *triplets* (anchor, two later peaks within 1 s and 1.3 octaves): the ratio of their
   time gaps (unchanged by any tempo change) and their log-frequency differences (unchanged by any
   pitch shift). The anchor's time and bin travel with each hash: the index keys on (bin, shape), a
   query probes the bins a pitch change of up to ~9 % can reach, and the matcher checks that all hits
   agree on one offset, one tempo ratio and one pitch shift.

Peaks are what gets stored (5 bytes each, ~20 per second); hashes are recomputed from them when the
index loads, so a change of hashing never needs the audio again.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

__all__ = ["FingerprintParams", "PARAMS", "Peaks", "Hashes", "peaks", "stream_peaks", "hashes", "log_spectrogram"]


@dataclass(frozen=True, slots=True)
class FingerprintParams:
    """Everything that decides the fingerprint. Change any field -> change `version` (stored per track)."""

    version: str = "tri1"
    sample_rate: int = 8000
    n_fft: int = 1024
    hop_length: int = 128            # 16 ms frames
    fmin_hz: float = 150.0
    bins_per_octave: int = 24
    n_bins: int = 112                # 150 Hz .. 3.8 kHz
    background_frames: int = 31      # moving average over 31 frames (~0.5 s) per bin
    peak_time_frames: int = 6        # local maximum over +-6 frames (+-96 ms) ...
    peak_freq_bins: int = 4          # ... and +-4 bins (1/6 octave)
    peak_db: float = 4.0             # above the bin's own moving average
    floor_dbfs: float = -70.0        # quieter than this (relative to a full-scale sine) is never a peak
    block_frames: int = 64           # density control: at most peaks_per_block peaks per block
    peaks_per_block: int = 24
    # triplets
    min_dt_frames: int = 2
    max_dt_frames: int = 62          # both partners within ~1 s of the anchor
    max_df_bins: int = 31            # and within +-1.3 octaves of it
    fan_out: int = 5                 # the first 5 such peaks -> C(5, 2) = 10 triplets per anchor
    ratio_levels: int = 32           # time-gap ratio in (0, 1] quantised to 32 levels

    @property
    def frame_s(self) -> float:
        return self.hop_length / self.sample_rate

    @property
    def shape_space(self) -> int:
        """How many distinct triplet shapes there are (ratio levels x frequency differences squared)."""
        span = 2 * self.max_df_bins + 1
        return self.ratio_levels * span * span


PARAMS = FingerprintParams()


@dataclass(frozen=True, slots=True)
class Peaks:
    """Spectral peaks of one recording, sorted by (time, bin).

    t : np.ndarray [shape=(n,), dtype=uint32] frame index (frame = hop_length samples)
    f : np.ndarray [shape=(n,), dtype=uint8] log-frequency bin
    n_frames : frames the audio spans (its length, even where it held no peak)
    """

    t: np.ndarray
    f: np.ndarray
    n_frames: int

    def __len__(self) -> int:
        return int(self.t.shape[0])


@dataclass(frozen=True, slots=True)
class Hashes:
    """Triplet hashes of one recording.

    shape : np.ndarray [shape=(m,), dtype=uint32] < params.shape_space: the triplet's time-gap ratio and
        frequency differences, invariant to tempo and pitch
    t : np.ndarray [shape=(m,), dtype=uint32] the anchor's frame
    f : np.ndarray [shape=(m,), dtype=uint8] the anchor's bin (the index keys on it, and a query probes
        the few neighbouring bins a pitch change can move it to)
    """

    shape: np.ndarray
    t: np.ndarray
    f: np.ndarray

    def __len__(self) -> int:
        return int(self.shape.shape[0])


@functools.lru_cache(maxsize=4)
def _filterbank(params: FingerprintParams) -> np.ndarray:
    """(n_bins, n_fft // 2 + 1) float32 weights from FFT bins to log-frequency bins, rows summing to 1.

    A triangle on the log axis, widened to the neighbouring FFT bins where a log bin is narrower than
    the FFT's spacing (below ~350 Hz), so no row is empty.
    """
    fft_hz = np.arange(params.n_fft // 2 + 1) * params.sample_rate / params.n_fft
    centres = params.fmin_hz * 2.0 ** (np.arange(params.n_bins) / params.bins_per_octave)
    with np.errstate(divide="ignore"):
        octaves = np.log2(np.maximum(fft_hz, 1e-6)[None, :] / centres[:, None])
    log_tri = np.maximum(0.0, 1.0 - np.abs(octaves) * params.bins_per_octave)
    spacing = params.sample_rate / params.n_fft
    lin_tri = np.maximum(0.0, 1.0 - np.abs(fft_hz[None, :] - centres[:, None]) / spacing)
    w = np.maximum(log_tri, lin_tri)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def log_spectrogram(wave: np.ndarray, params: FingerprintParams = PARAMS, *, first_frame: int = 0) -> np.ndarray:
    """Log-frequency power in dB relative to a full-scale sine.

    Parameters
    ----------
    wave : np.ndarray [shape=(n,), dtype=float32] mono audio at params.sample_rate, already padded so
        frame k is centred on sample (first_frame + k) * hop_length of the recording
    Returns
    -------
    spec : np.ndarray [shape=(n_frames, n_bins), dtype=float32]
    """
    n_fft, hop = params.n_fft, params.hop_length
    if wave.shape[0] < n_fft:
        return np.zeros((0, params.n_bins), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    spectrum = sfft.rfft(frames * window, axis=1)
    power = spectrum.real ** 2 + spectrum.imag ** 2
    full_scale = (window.sum() / 2.0) ** 2   # a full-scale sine's power in its FFT bin
    mel = power.astype(np.float32) @ _filterbank(params).T
    return (10.0 * np.log10(mel / full_scale + 1e-12)).astype(np.float32)


def _pick(spec: np.ndarray, lo: int, hi: int,
          params: FingerprintParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of spec[lo:hi] (rows outside it are context): (rows, bins, contrast in dB), rows relative to spec."""
    bg = ndimage.uniform_filter1d(spec, params.background_frames, axis=0, mode="nearest")
    contrast = spec - bg
    size = (2 * params.peak_time_frames + 1, 2 * params.peak_freq_bins + 1)
    local_max = ndimage.maximum_filter(contrast, size=size, mode="nearest")
    ok = (contrast == local_max) & (contrast >= params.peak_db) & (spec >= params.floor_dbfs)
    ok[:lo] = False
    ok[hi:] = False
    rows, bins = np.nonzero(ok)
    return rows, bins, contrast[rows, bins]


def _cap(t: np.ndarray, f: np.ndarray, strength: np.ndarray, params: FingerprintParams) -> tuple[np.ndarray, np.ndarray]:
    """Keep the strongest peaks_per_block of each block; return them sorted by (t, f)."""
    if t.size == 0:
        return t, f
    block = t // params.block_frames
    order = np.lexsort((-strength, block))                 # by block, strongest first
    block_sorted = block[order]
    starts = np.searchsorted(block_sorted, block_sorted, side="left")
    rank = np.arange(order.size) - starts
    keep = order[rank < params.peaks_per_block]
    t, f = t[keep], f[keep]
    final = np.lexsort((f, t))
    return t[final], f[final]


def stream_peaks(chunks: Iterable[np.ndarray], params: FingerprintParams = PARAMS) -> Peaks:
    """Peaks of audio that arrives in chunks (a 3-hour set never sits in memory as one spectrogram).

    Gives exactly what `peaks` gives on the concatenated audio: each block of frames is analysed with
    enough frames of context on both sides for the moving average and the local-maximum window, and
    the edges of the whole recording are extended as `peaks` extends them.

    Parameters
    ----------
    chunks : iterable of np.ndarray [shape=(n_i,), dtype=float32] mono audio at params.sample_rate
    """
    hop, half = params.hop_length, params.n_fft // 2
    ctx = params.background_frames // 2 + params.peak_time_frames + 1   # frames of context each side
    block = params.block_frames * 16                                     # frames analysed per step
    samples = np.zeros(half, np.float32)     # centred frames: the recording starts half a window in
    sample_base = -half                      # recording sample index of samples[0]
    spec = np.zeros((0, params.n_bins), np.float32)
    spec_base = 0                            # frame index of spec[0]
    done = 0                                 # frames [0, done) are picked
    n_samples = 0
    out_t: list[np.ndarray] = []
    out_f: list[np.ndarray] = []
    out_s: list[np.ndarray] = []

    def analyse(upto: int, *, final: bool) -> None:
        nonlocal done, spec, spec_base
        while done < upto and (final or done + block + ctx <= spec_base + spec.shape[0]):
            lo = done
            hi = min(done + block, upto)
            a, b = max(lo - ctx, spec_base), min(hi + ctx, spec_base + spec.shape[0])
            window = spec[a - spec_base:b - spec_base]
            # replicate the recording's first/last frame, as a whole-array filter in mode="nearest" does
            pad_lo = ctx - (lo - a) if lo - ctx < 0 else 0
            pad_hi = ctx - (b - hi) if final and b == spec_base + spec.shape[0] else 0
            if pad_lo or pad_hi:
                window = np.pad(window, ((pad_lo, pad_hi), (0, 0)), mode="edge")
            rows, bins, strength = _pick(window, lo - a + pad_lo, hi - a + pad_lo, params)
            out_t.append((rows - pad_lo + a).astype(np.int64))
            out_f.append(bins.astype(np.int64))
            out_s.append(strength.astype(np.float32))
            done = hi
        drop = max(0, done - ctx - spec_base)
        spec, spec_base = spec[drop:], spec_base + drop

    for chunk in chunks:
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        n_samples += chunk.shape[0]
        samples = np.concatenate([samples, chunk])
        n_new = (samples.shape[0] - params.n_fft) // hop + 1 if samples.shape[0] >= params.n_fft else 0
        if n_new > 0:
            spec = np.concatenate([spec, log_spectrogram(samples[: (n_new - 1) * hop + params.n_fft], params)])
            samples = samples[n_new * hop:]
            sample_base += n_new * hop
        analyse(spec_base + spec.shape[0], final=False)

    n_frames = n_samples // hop + 1 if n_samples else 0
    # the tail: pad with zeros to centre the last frames, as numpy-centred STFTs do
    have = spec_base + spec.shape[0]
    if n_frames > have:
        tail = np.concatenate([samples, np.zeros(params.n_fft, np.float32)])
        extra = log_spectrogram(tail, params)[: n_frames - have]
        spec = np.concatenate([spec, extra])
    analyse(n_frames, final=True)
    t = np.concatenate(out_t) if out_t else np.zeros(0, np.int64)
    f = np.concatenate(out_f) if out_f else np.zeros(0, np.int64)
    s = np.concatenate(out_s) if out_s else np.zeros(0, np.float32)
    t, f = _cap(t, f, s, params)
    return Peaks(t.astype(np.uint32), f.astype(np.uint8), n_frames)


def peaks(wave: np.ndarray, params: FingerprintParams = PARAMS) -> Peaks:
    """Spectral peaks of a whole recording.

    Parameters
    ----------
    wave : np.ndarray [shape=(n,), dtype=float32] mono audio at params.sample_rate (8 kHz)

    Returns
    -------
    Peaks with t : [shape=(p,), uint32] frames and f : [shape=(p,), uint8] bins, about 20 per second
    of music, none for silence or a steady tone
    """
    return stream_peaks([np.asarray(wave, dtype=np.float32)], params)


def hashes(p: Peaks, params: FingerprintParams = PARAMS) -> Hashes:
    """Triplet hashes of a recording's peaks (about 10 per peak).

    For an anchor peak a and two later peaks b, c among the first `fan_out` within `max_dt_frames`
    and `max_df_bins` of it: shape = (quantised (t_b - t_a) / (t_c - t_a), f_b - f_a,
    f_c - f_a). Tempo changes scale time gaps alike, and pitch changes shift log-frequencies alike,
    so neither moves the shape; the anchor's bin travels beside it.

    Returns
    -------
    Hashes with shape, t, f each of shape (m,)
    """
    t = p.t.astype(np.int64)
    f = p.f.astype(np.int64)
    n = t.shape[0]
    look = 48   # the fan-out partners lie among the next 48 peaks (24 per 64 frames at most -> > 1 s)
    if n < 3:
        empty = np.zeros(0, np.uint32)
        return Hashes(empty, empty.copy(), np.zeros(0, np.uint8))
    idx = np.arange(n)[:, None] + np.arange(1, look + 1)[None, :]          # (n, look)
    inside = idx < n
    idx = np.minimum(idx, n - 1)
    dt = t[idx] - t[:, None]
    df = f[idx] - f[:, None]
    ok = inside & (dt >= params.min_dt_frames) & (dt <= params.max_dt_frames) & (np.abs(df) <= params.max_df_bins)
    rank = np.cumsum(ok, axis=1) - 1
    ok &= rank < params.fan_out
    # partner table: (n, fan_out) with -1 where missing
    partners = np.full((n, params.fan_out), -1, np.int64)
    rows, cols = np.nonzero(ok)
    partners[rows, rank[rows, cols]] = idx[rows, cols]
    i1, i2 = np.triu_indices(params.fan_out, k=1)
    a = np.repeat(np.arange(n), i1.size)
    b = partners[:, i1].reshape(-1)
    c = partners[:, i2].reshape(-1)
    valid = (b >= 0) & (c >= 0)
    a, b, c = a[valid], b[valid], c[valid]
    # c comes after b in time order (or the same frame): the ratio lies in (0, 1]
    dt_b, dt_c = t[b] - t[a], t[c] - t[a]
    ratio = np.minimum((dt_b * params.ratio_levels) // dt_c, params.ratio_levels - 1)
    # a pure tone or a single repeated pitch: all three in one bin carries no pitch information
    degenerate = (f[b] == f[a]) & (f[c] == f[a])
    a, b, c, ratio = a[~degenerate], b[~degenerate], c[~degenerate], ratio[~degenerate]
    span = 2 * params.max_df_bins + 1
    h = (ratio * span + (f[b] - f[a] + params.max_df_bins)) * span + (f[c] - f[a] + params.max_df_bins)
    return Hashes(h.astype(np.uint32), t[a].astype(np.uint32), f[a].astype(np.uint8))
