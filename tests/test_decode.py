"""Decoding: every container we expect, the window, streaming, and each bad input's named error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from classifier import errors
from classifier.audio import decode


@pytest.mark.parametrize("name", ["loop.wav", "loop.mp3", "voice.ogg"])
def test_decodes_containers_to_mono_16k(audio_dir: Path, name: str) -> None:
    wave = decode.load(audio_dir / name, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size / 16000 - 20.0) < 0.1  # 20-s clip, give or take encoder padding
    assert 0.3 < np.abs(wave).max() <= 1.01


def test_window_and_chunks(audio_dir: Path) -> None:
    whole = decode.load(audio_dir / "loop.wav", 16000)
    part = decode.load(audio_dir / "loop.wav", 16000, start_s=5.0, duration_s=4.0)
    assert part.size == 64000
    # the same samples as the corresponding stretch of the whole decode (resampler edge effects aside)
    np.testing.assert_allclose(part[1000:-1000], whole[81000:143000], atol=1e-3)
    chunks = list(decode.stream(audio_dir / "loop.wav", 16000, chunk_seconds=3.0))
    assert all(c.size == 48000 for c in chunks[:-1])
    np.testing.assert_array_equal(np.concatenate(chunks), whole)


@pytest.mark.parametrize(
    ("name", "error", "code"),
    [("song.mp3", errors.Undecodable, "undecodable"),     # a PDF renamed .mp3
     ("empty.mp3", errors.Undecodable, "undecodable"),
     ("missing.mp3", errors.MissingFile, "no_such_file")],
)
def test_bad_files_get_named_errors(audio_dir: Path, name: str, error: type, code: str) -> None:
    with pytest.raises(error) as info:
        decode.load(audio_dir / name, 16000)
    assert info.value.code == code and info.value.user_message


def test_corrupt_stream_keeps_what_decodes(audio_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    wave = decode.load(audio_dir / "corrupt.mp3", 16000)
    assert wave.size > 16000 * 10  # most of the 20 s survive the damaged frames


def test_six_hour_file_refused_before_decoding(tmp_path: Path) -> None:
    # A real 6-hour WAV (8-bit, 1 kHz, 21.6 MB): refused from its header, no sample decoded.
    path = tmp_path / "six-hours.wav"
    wavfile.write(path, 1000, np.full(6 * 3600 * 1000, 128, dtype=np.uint8))
    with pytest.raises(errors.AudioTooLong) as info:
        next(decode.stream(path, 16000, max_seconds=4 * 3600))
    assert "6.0 h" in info.value.user_message


def test_longer_than_the_cap_is_refused(audio_dir: Path) -> None:
    # The cap is a parameter: the same 20-s clip is refused under a 5-s cap.
    with pytest.raises(errors.AudioTooLong):
        decode.load(audio_dir / "loop.mp3", 16000, max_seconds=5.0)


def test_timeout(audio_dir: Path) -> None:
    with pytest.raises(errors.Undecodable) as info:
        decode.load(audio_dir / "loop.wav", 16000, timeout_s=0.0001)
    assert "too long" in info.value.user_message
