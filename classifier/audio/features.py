"""Windows -> log-mel patches, exactly as the backbone was trained.

The recipe (musicnn, Pons & Serra 2019): 16 kHz mono; STFT n_fft 512, hop 256, Hann, centred with
*reflect* padding (librosa >= 0.10 defaults to constant padding: we pass reflect explicitly); power
spectrum; 96 Slaney-normalised mel bands from 0 to 8 kHz; the mel power is stored as float16 (as the
training data were), then compressed with log10(1 + 10000 x) computed in float32. The original code
kept float16 through the log, which overflows to inf on loud music under NumPy 2; we do not.
"""

from __future__ import annotations

import functools
from typing import Protocol

import librosa
import numpy as np

__all__ = ["MelParams", "mel_basis", "log_mel", "patches", "limit_blas_threads"]


_F16_MAX = float(np.finfo(np.float16).max)


class MelParams(Protocol):
    """The DSP settings a network was trained with (the model's `BackboneParams` has them all)."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def n_fft(self) -> int: ...

    @property
    def hop_length(self) -> int: ...

    @property
    def n_mels(self) -> int: ...

    @property
    def fmin(self) -> float: ...

    @property
    def fmax(self) -> float: ...

    @property
    def patch_frames(self) -> int: ...

    @property
    def log_scale(self) -> float: ...

    @property
    def pad_mode(self) -> str: ...

    @property
    def mel_norm(self) -> str: ...

    @property
    def htk(self) -> bool: ...


@functools.lru_cache(maxsize=8)
def mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float, htk: bool, norm: str) -> np.ndarray:
    """Mel filter bank, shape (n_mels, 1 + n_fft // 2), float32 (read-only, cached)."""
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk,
                                norm=norm).astype(np.float32)
    basis.setflags(write=False)
    return basis


def _compress(mel_power: np.ndarray, log_scale: float) -> np.ndarray:
    # float16 storage as in training; clip first so a rare over-range bin stays finite, not inf.
    stored = np.minimum(mel_power, _F16_MAX).astype(np.float16)
    return np.log10(1.0 + log_scale * stored.astype(np.float32)).astype(np.float32)


def log_mel(wave: np.ndarray, params: MelParams) -> np.ndarray:
    """Log-mel spectrogram of one waveform or a batch of equal-length windows.

    Parameters
    ----------
    wave : np.ndarray [shape=(..., n_samples), dtype=float32] at params.sample_rate

    Returns
    -------
    logmel : np.ndarray [shape=(..., n_frames, n_mels), dtype=float32],
        n_frames = 1 + n_samples // hop_length
    """
    spec = librosa.stft(np.asarray(wave, dtype=np.float32), n_fft=params.n_fft, hop_length=params.hop_length,
                        window="hann", center=True, pad_mode=params.pad_mode)
    power = spec.real ** 2 + spec.imag ** 2                                   # (..., bins, frames)
    basis = mel_basis(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax,
                      params.htk, params.mel_norm)
    mel = np.matmul(basis, power.astype(np.float32, copy=False))              # (..., n_mels, frames)
    return _compress(np.swapaxes(mel, -1, -2), params.log_scale)


def patches(windows: np.ndarray, params: MelParams) -> np.ndarray:
    """Network input for a batch of windows.

    Parameters
    ----------
    windows : np.ndarray [shape=(n, (patch_frames - 1) * hop_length), dtype=float32]

    Returns
    -------
    patches : np.ndarray [shape=(n, patch_frames, n_mels), dtype=float32]
    """
    expected = (params.patch_frames - 1) * params.hop_length
    if windows.ndim != 2 or windows.shape[1] != expected:
        raise ValueError(f"windows must have shape (n, {expected}), got {windows.shape}")
    if windows.shape[0] == 0:
        return np.zeros((0, params.patch_frames, params.n_mels), dtype=np.float32)
    return np.ascontiguousarray(log_mel(windows, params)[:, : params.patch_frames, :])


def limit_blas_threads() -> None:
    """Keep NumPy's BLAS to one thread per process (call once, at a process's entry).

    The mel projection is a small matmul; with OpenBLAS's default thread pool it took 350 ms instead of
    20 ms on a busy 2-core host, as BLAS threads fought TensorFlow's own pool for the cores.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn (via librosa) brings it
        return
    threadpool_limits(1, user_api="blas")
