"""How sets are played and shared, as transforms of a window of a track: the fingerprint benchmark's conditions.

Each condition turns (file, start, seconds) into the mono float32 clip at the fingerprint's rate that a
user would send. Tempo, pitch, EQ and Opus go through ffmpeg, as a DJ's software or a phone would change
them; the mix and the room are done in numpy (same maths either side of a linear resampler).

    clean        the window as it is
    voice        Telegram voice note: libopus 32 kb/s, 48 kHz mono, then decoded
    tempo±3/±6   tempo changed with key lock (rubberband when ffmpeg has it, else atempo)
    vinyl±6      tempo *and* pitch changed together (asetrate + aresample), a turntable's pitch fader
    eq           DJ EQ and filter: bass +6 dB at 80 Hz, mids -6 dB at 1 kHz, low-pass at 2 kHz
    mix-6dB      another (not enrolled) track over it at -6 dB of its RMS, as in a transition
    room10dB     a phone in a room: synthetic reverb (RT60 0.5 s), a 200 Hz high-pass, noise at 10 dB SNR
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy import signal

SR = 8000

CONDITIONS = ("clean", "voice", "tempo+3", "tempo-3", "tempo+6", "tempo-6", "vinyl+6", "vinyl-6", "eq",
              "mix-6dB", "room10dB")


@functools.lru_cache(maxsize=1)
def _has_rubberband() -> bool:
    out = subprocess.run(["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True).stdout
    return " rubberband " in out


def _ffmpeg(path: Path, start: float, seconds: float, af: str | None, *, sr: int = SR) -> np.ndarray:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{start:.3f}", "-t",
           f"{seconds:.3f}", "-i", str(path), "-vn", "-ac", "1"]
    if af:
        cmd += ["-af", af]
    cmd += ["-ar", str(sr), "-f", "f32le", "pipe:1"]
    res = subprocess.run(cmd, capture_output=True, check=True, timeout=120)
    return np.frombuffer(res.stdout, dtype="<f4").copy()


def decode(path: Path, start: float = 0.0, seconds: float = 1e9) -> np.ndarray:
    """The plain window at 8 kHz mono float32."""
    return _ffmpeg(path, start, seconds, None)


def _tempo_filter(factor: float) -> str:
    if _has_rubberband():
        return f"rubberband=tempo={factor:.4f}"
    return f"atempo={factor:.4f}"


def _opus(path: Path, start: float, seconds: float) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        voice = Path(tmp) / "voice.ogg"
        subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{start:.3f}",
                        "-t", f"{seconds:.3f}", "-i", str(path), "-vn", "-ac", "1", "-ar", "48000",
                        "-c:a", "libopus", "-b:a", "32k", "-application", "voip", str(voice)],
                       check=True, capture_output=True, timeout=120)
        return decode(voice)


def room_impulse(rt60_s: float = 0.5, sr: int = SR, seed: int = 0) -> np.ndarray:
    """A synthetic room: the direct path, a few early reflections, then exponentially decaying noise."""
    rng = np.random.default_rng(seed)
    n = int(rt60_s * sr)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s) * 0.3
    tail[: int(0.005 * sr)] = 0.0
    ir = tail
    ir[0] = 1.0
    for delay_ms, gain in ((7, 0.5), (13, 0.35), (23, 0.25)):
        ir[int(delay_ms * sr / 1000)] += gain
    return (ir / np.sqrt(np.sum(ir ** 2))).astype(np.float32)


def _room(clip: np.ndarray, seed: int, snr_db: float = 10.0) -> np.ndarray:
    wet = signal.fftconvolve(clip, room_impulse(seed=seed))[: clip.size]
    sos = signal.butter(2, 200, "highpass", fs=SR, output="sos")
    wet = signal.sosfilt(sos, wet)
    rng = np.random.default_rng(seed + 1)
    noise = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(wet.size))   # a room's noise is not white
    p_sig = float(np.mean(wet ** 2)) or 1e-12
    noise *= np.sqrt(p_sig / (10 ** (snr_db / 10)) / float(np.mean(noise ** 2)))
    return (wet + noise).astype(np.float32)


def _mix(clip: np.ndarray, other: np.ndarray, db: float = -6.0) -> np.ndarray:
    other = np.resize(other, clip.size)
    rms_c = float(np.sqrt(np.mean(clip ** 2))) or 1e-6
    rms_o = float(np.sqrt(np.mean(other ** 2))) or 1e-6
    return (clip + other * (rms_c / rms_o) * 10 ** (db / 20)).astype(np.float32)


def render(condition: str, path: Path, start: float, seconds: float, *, other: Path | None = None,
           other_start: float = 0.0, seed: int = 0) -> np.ndarray:
    """The clip a user would send for this condition; `seconds` long (tempo changes read more or less)."""
    if condition == "clean":
        return decode(path, start, seconds)
    if condition == "voice":
        return _opus(path, start, seconds)
    if condition.startswith("tempo"):
        factor = 1 + int(condition[5:]) / 100
        return _ffmpeg(path, start, seconds * factor, _tempo_filter(factor))[: int(seconds * SR)]
    if condition.startswith("vinyl"):
        factor = 1 + int(condition[5:]) / 100
        af = f"aresample=44100,asetrate={44100 * factor:.1f},aresample={SR}"
        return _ffmpeg(path, start, seconds * factor, af)[: int(seconds * SR)]
    if condition == "eq":
        af = "equalizer=f=80:t=q:w=1:g=6,equalizer=f=1000:t=q:w=1:g=-6,lowpass=f=2000"
        return _ffmpeg(path, start, seconds, af)
    if condition == "mix-6dB":
        if other is None:
            raise ValueError("mix needs another track")
        return _mix(decode(path, start, seconds), decode(other, other_start, seconds))
    if condition == "room10dB":
        return _room(decode(path, start, seconds), seed)
    raise ValueError(f"unknown condition {condition!r}")
