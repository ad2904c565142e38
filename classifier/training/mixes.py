"""Synthetic DJ mixes with their ground truth: excerpts of tracks, tempo-shifted, crossfaded, encoded.

A plan (`plan_mix`) says which excerpt of which track plays when, at what tempo, with or without key
lock, and how long each crossfade lasts; `render_mix` plays it through ffmpeg (training/augment.py
filters) into one audio file and returns the truth: every track's place in the mix, where each
transition starts and ends, and the boundary a listener would mark (the middle of the crossfade).

Rendering streams: only the excerpt being played and the previous one's tail are in memory, and the
mix goes straight into the encoder's pipe, so an hour-long mix costs tens of megabytes.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from classifier import errors
from classifier.audio import decode
from classifier.training import augment

__all__ = ["Source", "Excerpt", "Placed", "Mix", "plan_mix", "render_mix"]

log = logging.getLogger(__name__)

TARGET_RMS = 0.1  # each excerpt is gain-matched to this RMS (-20 dBFS) before mixing, as a DJ rides the gain


@dataclass(frozen=True, slots=True)
class Source:
    """A track the mix may play: the file, who made it, how long it is (seconds)."""

    path: Path
    artist: str
    title: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class Excerpt:
    """One entry of a mix plan.

    start_s, seconds : the excerpt in the recording's own time
    tempo, key_lock : how it is played (see augment.Variant)
    fade_in_s : length of the crossfade from the previous excerpt into this one (0 for the first)
    """

    source: Source
    start_s: float
    seconds: float
    tempo: float = 1.0
    key_lock: bool = True
    fade_in_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Placed:
    """Where one excerpt landed in the rendered mix (seconds of mix time).

    start_s, end_s : first and last moment it is audible
    boundary_s : the boundary a listener would mark before it (middle of the incoming crossfade; 0 for the first)
    solo_start_s, solo_end_s : the part where it plays alone (outside both crossfades)
    """

    artist: str
    title: str
    path: str
    tempo: float
    key_lock: bool
    start_s: float
    end_s: float
    boundary_s: float
    solo_start_s: float
    solo_end_s: float


@dataclass(frozen=True, slots=True)
class Mix:
    path: Path
    seconds: float
    tracks: tuple[Placed, ...]

    def intervals(self) -> np.ndarray:
        """Reference segments [shape=(n_tracks, 2)]: boundary to boundary, the last one to the end."""
        b = [t.boundary_s for t in self.tracks] + [self.seconds]
        return np.array([[b[i], b[i + 1]] for i in range(len(self.tracks))], dtype=np.float64)

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "seconds": self.seconds, "tracks": [asdict(t) for t in self.tracks]}

    @classmethod
    def from_dict(cls, d: dict) -> "Mix":  # type: ignore[type-arg]
        return cls(Path(d["path"]), float(d["seconds"]), tuple(Placed(**t) for t in d["tracks"]))

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: Path) -> "Mix":
        return cls.from_dict(json.loads(path.read_text()))


def plan_mix(sources: Sequence[Source], rng: np.random.Generator, *, n_tracks: int,
             excerpt_s: tuple[float, float] = (120.0, 240.0), tempo_pct: float = 6.0,
             fade_s: tuple[float, float] = (8.0, 32.0)) -> tuple[Excerpt, ...]:
    """Draw a mix: `n_tracks` different sources in random order, each an excerpt of `excerpt_s` seconds
    (uniform; never longer than the track), tempo uniform within +-`tempo_pct` %, key lock on exactly half
    of them (rounded down, shuffled), crossfades uniform in `fade_s` seconds."""
    if n_tracks > len(sources):
        raise ValueError(f"a mix of {n_tracks} tracks needs that many sources, not {len(sources)}")
    picked = [sources[i] for i in rng.permutation(len(sources))[:n_tracks]]
    locks = np.zeros(n_tracks, dtype=bool)
    locks[: n_tracks // 2] = True
    rng.shuffle(locks)
    out = []
    for i, src in enumerate(picked):
        seconds = min(float(rng.uniform(*excerpt_s)), src.duration_s)
        start = float(rng.uniform(0.0, src.duration_s - seconds))
        tempo = 1.0 + float(rng.uniform(-tempo_pct, tempo_pct)) / 100.0
        fade = float(rng.uniform(*fade_s)) if i else 0.0
        out.append(Excerpt(src, round(start, 3), round(seconds, 3), round(tempo, 4), bool(locks[i]), round(fade, 3)))
    return tuple(out)


def _equal_power(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = (np.arange(n, dtype=np.float64) + 0.5) / max(1, n)
    return np.cos(0.5 * np.pi * x).astype(np.float32), np.sin(0.5 * np.pi * x).astype(np.float32)


def render_mix(plan: Sequence[Excerpt], out: Path, *, sr: int = 44100, bitrate: str = "128k",
               stretcher: str = "auto") -> Mix:
    """Play a plan into `out` (MP3 at `bitrate` when out ends in .mp3, else WAV) and return its truth.

    Each excerpt is rendered through its tempo filter, gain-matched to TARGET_RMS, and crossfaded into the
    previous one with an equal-power fade of `fade_in_s` (mix time; clipped to half of either excerpt).
    """
    if not plan:
        raise ValueError("an empty plan")
    codec = ["-c:a", "libmp3lame", "-b:a", bitrate] if out.suffix.lower() == ".mp3" else ["-c:a", "pcm_s16le"]
    cmd = [decode.ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "f32le", "-ar", str(sr),
           "-ac", "1", "-i", "pipe:0", *codec, str(out)]
    enc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert enc.stdin is not None
    placed: list[Placed] = []
    written = 0                         # samples already sent to the encoder
    held = np.zeros(0, np.float32)      # the current excerpt's samples not yet written (its tail)
    held_start = 0                      # mix sample where `held` begins
    try:
        for i, ex in enumerate(plan):
            v = augment.Variant(f"mix{i}", tempo=ex.tempo, key_lock=ex.key_lock)
            wave = augment.render(ex.source.path, v, sr, start_s=ex.start_s, duration_s=ex.seconds,
                                  stretcher=stretcher)
            rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
            if rms <= 0:
                raise errors.Silent(detail=f"{ex.source.path}: silent excerpt at {ex.start_s} s")
            wave = np.clip(wave * (TARGET_RMS / rms), -1.0, 1.0).astype(np.float32)
            fade = min(int(round(ex.fade_in_s * sr)), held.size // 2, wave.size // 2) if i else 0
            start = held_start + held.size - fade          # where this excerpt begins in the mix
            if fade:
                out_gain, in_gain = _equal_power(fade)
                wave = wave.copy()
                wave[:fade] = held[held.size - fade:] * out_gain + wave[:fade] * in_gain
                held = held[: held.size - fade]
            enc.stdin.write(held.tobytes())
            written += held.size
            held, held_start = wave, start
            placed.append(Placed(
                artist=ex.source.artist, title=ex.source.title, path=str(ex.source.path), tempo=ex.tempo,
                key_lock=ex.key_lock, start_s=start / sr, end_s=(start + wave.size) / sr,
                boundary_s=(start + fade / 2) / sr, solo_start_s=(start + fade) / sr, solo_end_s=(start + wave.size) / sr))
            if i:  # the previous excerpt's solo part ends where this one fades in
                placed[i - 1] = _replace_solo_end(placed[i - 1], start / sr)
        enc.stdin.write(held.tobytes())
        written += held.size
        enc.stdin.close()
        if enc.wait(timeout=600) != 0:
            raise errors.Undecodable(detail=f"encoder: {enc.stderr.read().decode('utf-8', 'replace')[:300] if enc.stderr else ''}")
    finally:
        if enc.poll() is None:
            enc.kill()
            enc.wait()
        if enc.stderr is not None:
            enc.stderr.close()
    return Mix(out, written / sr, tuple(placed))


def _replace_solo_end(p: Placed, solo_end_s: float) -> Placed:
    d = asdict(p)
    d["solo_end_s"] = solo_end_s
    return Placed(**d)
