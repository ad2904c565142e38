"""Deterministic procedural music for the offline demo and the tests: drums, bass and chords.

Nothing is downloaded: every clip is synthesised from a style and a seed, so the same call gives the
same samples on every machine. Five styles stand in for five "artists" with distinct habits (tempo,
drum pattern, bass sound, harmony, timbre), enough to demonstrate enrolment and identification.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.io import wavfile

__all__ = ["Style", "STYLES", "render", "write_wav", "demo_library"]

SR = 22050  # written at 22.05 kHz so the demo exercises the real resampling path


@dataclass(frozen=True, slots=True)
class Style:
    artist: str
    bpm: float
    kick: str          # 16-step pattern, 'x' = hit
    snare: str
    hat: str
    bass_wave: str     # "sine" | "saw" | "square"
    chord_wave: str
    scale: tuple[int, ...]
    drive: float       # >1 adds distortion
    swing: float = 0.0


STYLES: dict[str, Style] = {s.artist: s for s in (
    Style("Deep Pulse", 122, "x...x...x...x...", "....x.......x...", "..x...x...x...x.", "sine", "saw",
          (0, 3, 7, 10), 1.0),
    Style("Broken Glass", 172, "x.........x.....", "....x..x.x..x...", "x.x.x.x.x.x.x.xx", "saw", "square",
          (0, 2, 3, 7), 1.6),
    Style("Slow Tide", 78, "x.......x.......", "................", "........x.......", "sine", "sine",
          (0, 4, 7, 11), 1.0, 0.1),
    Style("Iron Riff", 140, "x.x...x.x.x...x.", "....x.......x...", "xxxxxxxxxxxxxxxx", "square", "square",
          (0, 5, 7, 10), 4.0),
    Style("Chip Tune", 150, "x...x...x...x...", "....x.......x..x", "x.x.x.x.x.x.x.x.", "square", "square",
          (0, 4, 7, 12), 1.0),
)}


def _osc(kind: str, freq: float, t: np.ndarray) -> np.ndarray:
    phase = (freq * t) % 1.0
    if kind == "sine":
        return np.sin(2 * np.pi * phase)
    if kind == "saw":
        return 2.0 * phase - 1.0
    return np.where(phase < 0.5, 1.0, -1.0)


def _env(n: int, attack: float, decay: float) -> np.ndarray:
    t = np.arange(n) / SR
    return np.minimum(1.0, t / max(attack, 1e-4)) * np.exp(-t / decay)


def _kick(n: int) -> np.ndarray:
    t = np.arange(n) / SR
    return np.sin(2 * np.pi * (50 * t + 60 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 9)


def _noise_hit(n: int, rng: np.random.Generator, decay: float, bright: bool) -> np.ndarray:
    noise = rng.standard_normal(n)
    if bright:
        noise = np.diff(noise, prepend=0.0)
    return noise * _env(n, 0.001, decay)


def _midi(note: float) -> float:
    return 440.0 * 2 ** ((note - 69) / 12)


def render(style: Style | str, seconds: float = 30.0, seed: int = 0) -> np.ndarray:
    """Render `seconds` of a style. Deterministic in (style, seconds, seed).

    Returns
    -------
    wave : np.ndarray [shape=(round(seconds * 22050),), dtype=float32], peak 0.9
    """
    st = STYLES[style] if isinstance(style, str) else style
    rng = np.random.default_rng([zlib.crc32(st.artist.encode()), seed])  # stable across runs, unlike hash()
    bpm = st.bpm * (1 + 0.03 * (rng.random() - 0.5))
    root = 40 + int(rng.integers(0, 12))            # bass root, MIDI
    n = int(round(seconds * SR))
    out = np.zeros(n + 4 * SR, dtype=np.float64)   # room for the last notes to ring out
    step = 60.0 / bpm / 4                            # a 16th note
    n_steps = int(seconds / step) + 1
    degrees = rng.permutation(len(st.scale))         # this track's chord progression
    drums = {"kick": st.kick, "snare": st.snare, "hat": st.hat}
    for i in range(n_steps):
        start = int((i * step + (st.swing * step if i % 2 else 0.0)) * SR)
        if start >= n:
            break
        s16 = i % 16
        bar = i // 16
        if drums["kick"][s16] == "x":
            seg = _kick(int(0.35 * SR))
            out[start:start + seg.size] += 0.9 * seg
        if drums["snare"][s16] == "x":
            seg = _noise_hit(int(0.2 * SR), rng, 0.06, False)
            out[start:start + seg.size] += 0.35 * seg
        if drums["hat"][s16] == "x":
            seg = _noise_hit(int(0.06 * SR), rng, 0.015, True)
            out[start:start + seg.size] += 0.12 * seg
        chord_root = root + st.scale[degrees[bar % len(degrees)]]
        if s16 % 4 == 2 or (st.bass_wave == "square" and s16 % 2 == 0):
            length = int(step * 2 * SR)
            t = np.arange(length) / SR
            seg = _osc(st.bass_wave, _midi(chord_root), t) * _env(length, 0.005, step * 1.5)
            out[start:start + length] += 0.3 * seg
        if s16 == 0:
            length = int(step * 16 * SR)
            t = np.arange(length) / SR
            seg = sum(_osc(st.chord_wave, _midi(chord_root + 12 + iv), t) for iv in st.scale[1:3])
            out[start:start + length] += 0.08 * seg * _env(length, 0.05, step * 12)
    wave = out[:n]
    if st.drive > 1.0:
        wave = np.tanh(st.drive * wave) / np.tanh(st.drive)
    peak = float(np.max(np.abs(wave))) or 1.0
    return (0.9 * wave / peak).astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, sr: int = SR) -> Path:
    """Write 16-bit PCM WAV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, sr, (np.clip(wave, -1, 1) * 32767).astype(np.int16))
    return path


def demo_library(folder: Path, *, tracks_per_artist: int = 3, seconds: float = 40.0) -> dict[str, list[Path]]:
    """Write a small library (tracks_per_artist per style) plus one held-out track per style.

    Returns {artist: [train paths...]}; held-out tracks are `folder/heldout/<artist>.wav`.
    """
    library: dict[str, list[Path]] = {}
    for artist, style in STYLES.items():
        slug = artist.lower().replace(" ", "-")
        library[artist] = [write_wav(folder / slug / f"{slug}-{k + 1}.wav", render(style, seconds, seed=k))
                           for k in range(tracks_per_artist)]
        write_wav(folder / "heldout" / f"{slug}.wav", render(style, 30.0, seed=1000))
    return library
