"""Shared fixtures: generated audio in several containers, the real backbone, a trained demo head."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from classifier.settings import Settings
from classifier.training import demo


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(autouse=True)
def _no_real_data_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default data folder is per user (platformdirs): a test that forgets SPY_DATA_DIR writes here instead."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated clips: a 20-s procedural loop as WAV/MP3/OGG-Opus, silence, a tone, bad files."""
    d = tmp_path_factory.mktemp("audio")
    loop = demo.write_wav(d / "loop.wav", demo.render("Deep Pulse", 20.0, seed=1))
    ffmpeg("-i", str(loop), "-c:a", "libmp3lame", "-b:a", "128k", str(d / "loop.mp3"))
    ffmpeg("-i", str(loop), "-c:a", "libopus", "-b:a", "32k", str(d / "voice.ogg"))
    demo.write_wav(d / "silence.wav", np.zeros(22050 * 10, dtype=np.float32))
    demo.write_wav(d / "short.wav", demo.render("Chip Tune", 0.5, seed=0))
    t = np.arange(22050 * 8) / 22050
    demo.write_wav(d / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
    (d / "empty.mp3").write_bytes(b"")
    (d / "song.mp3").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + b"x" * 4000 + b"\n%%EOF\n")
    data = (d / "loop.mp3").read_bytes()
    (d / "corrupt.mp3").write_bytes(data[:2000] + bytes(range(256)) * 40 + data[12000:])
    return d


@pytest.fixture(scope="session")
def backbone():  # noqa: ANN201
    from classifier.model.backbone import Backbone

    return Backbone.load("msd_musicnn")


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", batch_size=16)


@pytest.fixture(scope="session")
def demo_lib(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Three procedural artists x 2 tracks x 24 s, plus held-out tracks under heldout/."""
    d = tmp_path_factory.mktemp("lib")
    lib: dict[str, list[Path]] = {}
    for artist in ("Deep Pulse", "Iron Riff", "Slow Tide"):
        slug = artist.lower().replace(" ", "-")
        lib[artist] = [demo.write_wav(d / slug / f"{slug}-{k}.wav", demo.render(artist, 24.0, seed=k)) for k in range(2)]
        demo.write_wav(d / "heldout" / f"{slug}.wav", demo.render(artist, 15.0, seed=99))
    return lib


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, demo_lib, backbone):  # noqa: ANN001, ANN201
    """Settings whose database holds the demo library and an active trained head."""
    from classifier.model import heads
    from classifier.store.index import Index
    from classifier.training import train
    from classifier.training.enrol import Report, enrol_items, items_from_sources

    d = tmp_path_factory.mktemp("trained")
    s = Settings(data_dir=d, batch_size=16)
    with Index(s.database) as index:
        for artist, paths in demo_lib.items():
            enrol_items(items_from_sources(artist, [str(p) for p in paths], Report()), index, backbone, s, hop_s=1.5)
        train.train(index, s.heads_dir, heads.HeadConfig(epochs=30))
    return s


@pytest.fixture(scope="session")
def trained5(tmp_path_factory: pytest.TempPathFactory, backbone):  # noqa: ANN001, ANN201
    """Settings with an active head over all five procedural artists (`demo.STYLES`), for front ends that
    show a top-5. Cheap on purpose: one 15-s track per artist and no threshold calibration (threshold 0,
    so a verdict always names someone); `trained` is the realistic one."""
    from classifier.model import heads
    from classifier.store.index import Index
    from classifier.training import train
    from classifier.training.enrol import Report, enrol_items, items_from_sources

    d = tmp_path_factory.mktemp("trained5")
    s = Settings(data_dir=d, batch_size=16)
    with Index(s.database) as index:
        for artist in demo.STYLES:
            slug = artist.lower().replace(" ", "-")
            path = demo.write_wav(d / "lib" / f"{slug}.wav", demo.render(artist, 15.0, seed=0))
            enrol_items(items_from_sources(artist, [str(path)], Report()), index, backbone, s, hop_s=1.5)
        train.train(index, s.heads_dir, heads.HeadConfig(epochs=30), calibrate_threshold=False)
    return s
