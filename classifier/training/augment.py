"""How DJs play a track, as ffmpeg filter chains: tempo with or without key lock, EQ, filters.

Used three ways: to build synthetic DJ mixes (training/mixes.py), to measure how identification holds up
when a track is played the way DJs play it (bench/bench_robustness.py), and, optionally, to enrol
tempo-shifted copies of each training track (`enrol_items(..., variants=...)`), so the head sees the
artist at the tempos a set plays it.

Why ffmpeg filters and not numpy/librosa: decoding already goes through ffmpeg, its `rubberband` filter
is a time-stretcher of the kind DJ software uses for key lock (ffmpeg's `atempo` is the fallback when it
is not built in), and a filter chain streams, so `write` renders a whole track to disk in flat memory.

Tempo conventions: `tempo` is the playback-speed factor (1.06 = the pitch fader at +6 %, the track
lasts 1/1.06 as long). With key lock the pitch is kept; without it (a turntable, "vinyl") pitch
rises with tempo, done by relabelling the sample rate (`asetrate`) and resampling back.
"""

from __future__ import annotations

import functools
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from classifier import errors
from classifier.audio import decode

if TYPE_CHECKING:  # pragma: no cover
    from classifier import pipeline
    from classifier.model.backbone import Backbone

__all__ = ["Variant", "CLEAN", "has_rubberband", "filter_chain", "render", "parse_variants",
           "write", "enrolment_slices"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of playing a track.

    tempo : playback-speed factor, > 0 (1.0 = as recorded)
    key_lock : True keeps the pitch (time-stretch), False moves pitch with tempo (vinyl)
    eq : an extra ffmpeg filter chain applied after the tempo change (EQ, high/low-pass), or ""
    """

    name: str
    tempo: float = 1.0
    key_lock: bool = True
    eq: str = ""

    def __post_init__(self) -> None:
        if not 0.5 <= self.tempo <= 2.0:
            raise ValueError(f"tempo factor {self.tempo} is outside 0.5-2.0")


CLEAN = Variant("clean")


@functools.lru_cache(maxsize=1)
def has_rubberband() -> bool:
    """Whether this ffmpeg was built with librubberband (the `rubberband` filter)."""
    try:
        out = subprocess.run([decode.ffmpeg_path(), "-hide_banner", "-filters"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(r"^\s*\S+\s+rubberband\s", out, flags=re.MULTILINE) is not None


def filter_chain(v: Variant, sr: int, *, stretcher: str = "auto") -> str:
    """The ffmpeg `-af` chain that plays a track as `v` says, ending at `sr` Hz (empty for the clean track).

    stretcher : "rubberband", "atempo" or "auto" (rubberband when this ffmpeg has it) for key-locked tempo
    """
    parts: list[str] = []
    if v.tempo != 1.0:
        if not v.key_lock:
            # vinyl: play the same samples faster, so pitch and tempo move together
            parts += [f"aresample={sr}", f"asetrate={sr * v.tempo:.3f}", f"aresample={sr}"]
        elif stretcher == "rubberband" or (stretcher == "auto" and has_rubberband()):
            parts.append(f"rubberband=tempo={v.tempo:.6f}")
        else:
            parts.append(f"atempo={v.tempo:.6f}")
    if v.eq:
        parts.append(v.eq)
    return ",".join(parts)


def render(path: Path, v: Variant, sr: int, *, start_s: float = 0.0, duration_s: float | None = None,
           stretcher: str = "auto", timeout_s: float = 600.0) -> np.ndarray:
    """Decode an excerpt of `path` played as `v`, mono at `sr` Hz, in one piece (excerpts are minutes long;
    whole tracks go through `write`, which streams to a file).

    start_s, duration_s : the excerpt, in the *recording's* time (before the tempo change); the output
        lasts about duration_s / v.tempo seconds

    Returns
    -------
    wave : np.ndarray [shape=(n,), dtype=float32]
    """
    cmd = [decode.ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    if start_s > 0:
        cmd += ["-ss", f"{start_s:.3f}"]
    if duration_s is not None:
        cmd += ["-t", f"{duration_s:.3f}"]
    chain = filter_chain(v, sr, stretcher=stretcher)
    cmd += ["-i", str(path), "-vn", "-map", "0:a:0", "-ac", "1", *(["-af", chain] if chain else []),
            "-ar", str(sr), "-f", "f32le", "pipe:1"]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise errors.Undecodable("Rendering that excerpt took too long.", detail=str(path)) from exc
    wave = np.frombuffer(res.stdout[: len(res.stdout) - len(res.stdout) % 4], dtype="<f4").astype(np.float32)
    if res.returncode != 0 or wave.size == 0:
        raise errors.Undecodable(detail=f"ffmpeg ({chain or 'clean'}) exit {res.returncode}: "
                                        f"{res.stderr.decode('utf-8', 'replace').strip()[:300]}")
    return wave


_SPEC = re.compile(r"^(vinyl|lock)([+-]\d+(?:\.\d+)?)$")


def parse_variants(spec: str | Sequence[str]) -> tuple[Variant, ...]:
    """Variants from a setting-style list: "vinyl-6,vinyl+6,lock+4" (percent on the pitch fader).

    "vinylX" plays the track X % faster with the pitch moving along (a turntable), "lockX" with key lock.
    An empty string gives no variants (enrolment as before).
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out = []
    for item in items:
        m = _SPEC.match(item.lower())
        if m is None:
            raise ValueError(f"{item!r} is not a tempo variant; write e.g. vinyl-6 or lock+4 (percent)")
        pct = float(m.group(2))
        if not 0 < abs(pct) <= 50:
            raise ValueError(f"{item!r}: the percentage must be between -50 and 50, not 0")
        out.append(Variant(item.lower(), tempo=1.0 + pct / 100.0, key_lock=m.group(1) == "lock"))
    return tuple(out)


def write(path: Path, v: Variant, out: Path, sr: int, *, stretcher: str = "auto", timeout_s: float = 600.0) -> Path:
    """Play the whole of `path` as `v` into a mono 16-bit WAV at `sr` Hz (ffmpeg streams it: flat memory)."""
    chain = filter_chain(v, sr, stretcher=stretcher)
    cmd = [decode.ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(path), "-vn",
           "-map", "0:a:0", "-ac", "1", *(["-af", chain] if chain else []), "-ar", str(sr), "-c:a", "pcm_s16le", str(out)]
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise errors.Undecodable("Rendering a tempo variant took too long.", detail=str(path)) from exc
    if res.returncode != 0:
        raise errors.Undecodable(detail=f"ffmpeg ({chain}) exit {res.returncode}: {res.stderr.decode()[:300]}")
    return out


def enrolment_slices(path: Path, variants: Sequence[Variant], backbone: "Backbone", base: "pipeline.Analysis", *,
                     hop_s: float, batch_size: int = 32,
                     decode_timeout_s: float = 300.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A track's slices as enrolled with tempo variants: the clean analysis `base` plus every variant's.

    Each variant is rendered to a temporary WAV at the model's rate (deleted before returning, also on
    error) and analysed like any file; its slice starts are mapped back onto the recording's clock
    (start x tempo), so every copy of a track stays that one track in the index (calibration's held-out
    folds never train on a copy of a track they hold out).

    Returns
    -------
    starts : np.ndarray [shape=(n,)], embedding : [shape=(n, 200)], pooled : [shape=(n, 1506)]
    """
    import tempfile

    from classifier import pipeline

    assert base.pooled is not None
    starts, emb, pooled = [base.starts_s], [base.embedding], [base.pooled]
    with tempfile.TemporaryDirectory(prefix="spy-augment-") as tmp:
        for v in variants:
            wav = write(path, v, Path(tmp) / f"{v.name}.wav", backbone.params.sample_rate, timeout_s=decode_timeout_s)
            a = pipeline.analyse(wav, [backbone], hop_s=hop_s, batch_size=batch_size, keep_pooled=True,
                                 decode_timeout_s=decode_timeout_s)
            wav.unlink()
            assert a.pooled is not None
            starts.append(a.starts_s * v.tempo)
            emb.append(a.embedding)
            pooled.append(a.pooled)
            log.debug("enrolled %s as %s: %d slices", path.name, v.name, a.n_slices)
    return np.concatenate(starts), np.concatenate(emb), np.concatenate(pooled)
