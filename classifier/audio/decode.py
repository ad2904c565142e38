"""Decode any file ffmpeg reads into mono float32 at the model's rate, streamed through a pipe.

Why ffmpeg and not librosa.load: one subprocess reads every container people send (OGG/Opus voice
notes, M4A, WebM, MP3, video files), resamples on the way out, and streams, so a 3-hour DJ set never
has to sit in memory at once. Resampling uses ffmpeg's SoX resampler (the same family of algorithm as
librosa's default soxr_hq) when ffmpeg has it; MODEL_CARD.md gives the measured deviation against the
resampy kaiser_best that the network was trained with.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from classifier import errors

__all__ = ["probe_duration", "stream", "load", "ffmpeg_path", "AUDIO_SUFFIXES"]

log = logging.getLogger(__name__)

# File names that say "audio or video" (what people send, what operators enrol from folders, tracker modules
# included): the one list everything checks names against. A name says nothing for certain; the decoder decides.
AUDIO_SUFFIXES = frozenset({
    ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wav", ".flac", ".aif", ".aiff", ".wma", ".amr", ".alac",
    ".caf", ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".3gp", ".mod", ".xm", ".it", ".s3m",
})

_BYTES_PER_SAMPLE = 4  # f32le


@functools.lru_cache(maxsize=1)
def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise errors.SpyError("ffmpeg is not installed. Install it (Debian/Ubuntu: sudo apt-get install ffmpeg).")
    return path


@functools.lru_cache(maxsize=1)
def _has_soxr() -> bool:
    try:
        out = subprocess.run([ffmpeg_path(), "-hide_banner", "-buildconf"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "libsoxr" in out


def _check_path(path: Path) -> None:
    if not path.exists():
        raise errors.MissingFile(f"I can't find the file {path.name!r}.", detail=str(path))
    if not path.is_file():
        raise errors.MissingFile(f"{path.name!r} is not a file.", detail=str(path))
    if path.stat().st_size == 0:
        raise errors.Undecodable("That file is empty.", detail=str(path))


_probed: dict[tuple[str, int, int, int], float | None] = {}
_probed_lock = threading.Lock()


def probe_duration(path: Path, *, timeout_s: float = 30.0) -> float | None:
    """Container duration in seconds from ffprobe, or None when the container does not say.

    Cheap (reads headers only), so long files are refused before a single sample is decoded. Remembered
    per (path, inode, size, mtime): one analysis asks up to three times, and each ffprobe costs ~80 ms CPU.
    """
    _check_path(path)
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _probed_lock:
        if key in _probed:
            return _probed[key]
    duration = _probe(path, timeout_s)
    with _probed_lock:
        if len(_probed) >= 256:
            _probed.pop(next(iter(_probed)))
        _probed[key] = duration
    return duration


def _probe(path: Path, timeout_s: float) -> float | None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    cmd = [ffprobe, "-v", "error", "-show_entries", "format=duration:stream=codec_type",
           "-of", "json", str(path)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise errors.Undecodable("Reading that file took too long.", detail=str(path)) from exc
    if res.returncode != 0:
        raise errors.Undecodable(detail=f"ffprobe: {res.stderr.strip()[:300]}")
    info = json.loads(res.stdout or "{}")
    if not any(s.get("codec_type") == "audio" for s in info.get("streams", [])):
        raise errors.Undecodable("That file has no audio track I can read.", detail=str(path))
    try:
        return float(info["format"]["duration"])
    except (KeyError, TypeError, ValueError):
        return None


def stream(path: Path, sr: int, *, chunk_seconds: float = 60.0, start_s: float = 0.0,
           duration_s: float | None = None, max_seconds: float = 4 * 3600.0,
           timeout_s: float = 300.0) -> Iterator[np.ndarray]:
    """Yield the audio of `path` as consecutive mono float32 chunks at `sr` Hz.

    Parameters
    ----------
    path : file in any format ffmpeg reads
    sr : output sample rate (the model's)
    chunk_seconds : size of each yielded chunk (the last one may be shorter)
    start_s, duration_s : decode only this window (fast input seek)
    max_seconds : refuse audio longer than this (`AudioTooLong`), checked on the container's
        duration first and on the decoded stream as a backstop
    timeout_s : wall-clock limit for the whole decode (`Undecodable` after it)

    Yields
    ------
    chunk : np.ndarray [shape=(n,), dtype=float32], n <= chunk_seconds * sr
    """
    path = Path(path)
    total = probe_duration(path)
    available = None if total is None else max(0.0, total - start_s)
    wanted = available if duration_s is None else (duration_s if available is None else min(duration_s, available))
    if wanted is not None and wanted > max_seconds:
        raise errors.AudioTooLong(
            f"That audio is {wanted / 3600:.1f} h long; I handle at most {max_seconds / 3600:.1f} h.",
            detail=str(path))

    cmd = [ffmpeg_path(), "-nostdin", "-hide_banner", "-loglevel", "error"]
    if start_s > 0:
        cmd += ["-ss", f"{start_s:.3f}"]
    cmd += ["-i", str(path), "-vn", "-sn", "-dn", "-map", "0:a:0", "-ac", "1", "-ar", str(sr)]
    if _has_soxr():
        cmd += ["-af", "aresample=resampler=soxr:precision=28"]
    # Backstop for containers that lie about their duration: never decode past the cap.
    cap = max_seconds + 1.0 if duration_s is None else min(duration_s, max_seconds + 1.0)
    cmd += ["-t", f"{cap:.3f}", "-f", "f32le", "pipe:1"]

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(timeout_s, _kill)
    watchdog.daemon = True
    watchdog.start()
    chunk_bytes = max(1, int(chunk_seconds * sr)) * _BYTES_PER_SAMPLE
    produced = 0
    started = time.perf_counter()
    try:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(chunk_bytes)
            if not buf:
                break
            usable = len(buf) - len(buf) % _BYTES_PER_SAMPLE
            chunk = np.frombuffer(buf[:usable], dtype="<f4").astype(np.float32, copy=False)
            produced += chunk.size
            if produced > max_seconds * sr:
                raise errors.AudioTooLong(
                    f"That audio is longer than {max_seconds / 3600:.1f} h, the most I handle.", detail=str(path))
            yield chunk
        proc.wait(timeout=max(1.0, timeout_s - (time.perf_counter() - started)))
        stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        if timed_out.is_set():
            raise errors.Undecodable("Decoding that file took too long.", detail=f"timeout after {timeout_s}s: {path}")
        if proc.returncode != 0 and produced == 0:
            raise errors.Undecodable(detail=f"ffmpeg exit {proc.returncode}: {stderr.strip()[:300]}")
        if proc.returncode != 0 or stderr.strip():
            # Corrupt frames inside an otherwise readable stream: keep what decoded, say so in the log.
            log.warning("decode of %s finished with errors after %.1f s of audio: %s",
                        path.name, produced / sr, stderr.strip()[:200])
        if produced == 0:
            raise errors.Undecodable("That file contains no audio samples.", detail=str(path))
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def load(path: Path, sr: int, **kwargs: object) -> np.ndarray:
    """Decode the whole of `path` (or the window in kwargs) into one array.

    Returns
    -------
    wave : np.ndarray [shape=(n,), dtype=float32]
    """
    chunks = list(stream(path, sr, **kwargs))  # type: ignore[arg-type]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
