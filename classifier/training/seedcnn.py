"""The seed projects' approach, kept for comparison: a VGG-style CNN trained from scratch on short log-mel slices.

Han & Lee (2016) style: stacked 3x3 convolutions in blocks with max pooling, global pooling, a
softmax over artists. Unlike the default head it needs the audio itself (not cached embeddings), so
`spy train --arch seedcnn` re-decodes every enrolled track from its source path, and it is slow on a
CPU: it is offered for operators with large libraries and a GPU. README "Artist model" compares both.

Input: 96 log-mel bands x 96 frames (1.536 s at 16 kHz, the backbone's own front end).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from classifier import errors
from classifier.audio import decode, features, slicing
from classifier.model.backbone import BackboneParams, load_params

__all__ = ["SeedConfig", "SeedHead", "slices_of", "build", "fit"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SeedConfig:
    frames: int = 96            # 1.536 s per slice
    hop_s: float = 1.5
    filters: tuple[int, ...] = (16, 32, 64, 128)
    dense: int = 128
    dropout: float = 0.3
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 1e-3
    seed: int = 0


def slices_of(path: Path, params: BackboneParams, cfg: SeedConfig, *, start_s: float = 0.0,
              duration_s: float | None = None, max_seconds: float = 4 * 3600.0) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel slices of a file: (starts_s (n,), x (n, frames, n_mels) float16)."""
    window = (cfg.frames - 1) * params.hop_length
    hop = int(cfg.hop_s * params.sample_rate)
    starts, xs = [], []
    chunks = decode.stream(path, params.sample_rate, start_s=start_s, duration_s=duration_s, max_seconds=max_seconds)
    for win in slicing.stream_windows(chunks, window, hop, max_windows=256):
        xs.append(features.log_mel(win.samples, params)[:, : cfg.frames, :].astype(np.float16))
        starts.append(win.starts / params.sample_rate + start_s)
    if not xs:
        return np.zeros(0), np.zeros((0, cfg.frames, params.n_mels), np.float16)
    return np.concatenate(starts), np.concatenate(xs)


def build(n_mels: int, cfg: SeedConfig, n_out: int):  # noqa: ANN201 - keras.Model
    import keras
    from keras import layers

    inp = keras.Input((cfg.frames, n_mels))
    x = layers.Reshape((cfg.frames, n_mels, 1))(inp)
    x = layers.BatchNormalization()(x)
    for i, f in enumerate(cfg.filters):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        if i:  # the second conv of a block (VGG pairs), except in the cheap first block
            x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2 if i < len(cfg.filters) - 1 else 1)(x)
        x = layers.Dropout(cfg.dropout / 2)(x)
    x = layers.GlobalMaxPooling2D()(x)
    x = layers.Dense(cfg.dense, activation="relu")(x)
    x = layers.Dropout(cfg.dropout)(x)
    out = layers.Dense(n_out, activation="softmax")(x)
    return keras.Model(inp, out)


def fit(x: np.ndarray, y: np.ndarray, n_out: int, params: BackboneParams, cfg: SeedConfig, *, verbose: int = 0) -> Any:
    """Train from scratch, artist-balanced sample weights."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    model = build(params.n_mels, cfg, n_out)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy")
    counts = np.bincount(y, minlength=n_out).astype(np.float64)
    w = (len(y) / (n_out * np.maximum(counts, 1)))[y].astype(np.float32)
    model.fit(x.astype(np.float32), y, sample_weight=w, epochs=cfg.epochs, batch_size=cfg.batch_size,
              shuffle=True, verbose=verbose)
    return model


@dataclass
class SeedHead:
    """A trained seed CNN: predicts artist probabilities per 1.5-s log-mel slice of a file."""

    id: str
    labels: tuple[str, ...]
    config: SeedConfig
    model: Any
    threshold: float = 0.0
    created: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def arch(self) -> str:
        return "seedcnn"

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 0:
            return np.zeros((0, len(self.labels)), np.float32)
        with self._lock:
            return np.asarray(self.model.predict(x.astype(np.float32), batch_size=256, verbose=0), np.float32)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_weights(folder / "seedcnn.weights.h5")
        meta = {"arch": self.arch, "id": self.id, "labels": list(self.labels), "config": asdict(self.config),
                "threshold": self.threshold, "created": self.created, "summary": self.summary}
        (folder / "seedcnn.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: Path) -> "SeedHead":
        meta = json.loads((folder / "seedcnn.json").read_text())
        cfg_d = meta["config"]
        cfg_d["filters"] = tuple(cfg_d["filters"])
        cfg = SeedConfig(**cfg_d)
        model = build(load_params("msd_musicnn").n_mels, cfg, len(meta["labels"]))
        model.load_weights(folder / "seedcnn.weights.h5")
        return cls(meta["id"], tuple(meta["labels"]), cfg, model, meta["threshold"], meta["created"], meta["summary"])


def train_from_tracks(tracks: Iterable[tuple[str, Path]], folder: Path, cfg: SeedConfig = SeedConfig()) -> SeedHead:
    """Decode every (artist, path), train, save under `folder`. Raises EnrolError for < 2 artists."""
    params = load_params("msd_musicnn")
    xs, ys, names = [], [], []
    t0 = time.perf_counter()
    pairs = list(tracks)
    labels = tuple(sorted({a for a, _ in pairs}))
    if len(labels) < 2:
        raise errors.EnrolError("Training needs at least two enrolled artists.")
    lab = {n: i for i, n in enumerate(labels)}
    for artist, path in pairs:
        if not Path(path).is_file():
            log.warning("seedcnn: %s is gone; skipped", path)
            continue
        _, x = slices_of(Path(path), params, cfg)
        xs.append(x)
        ys.append(np.full(len(x), lab[artist]))
        names.append(str(path))
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    t_feat = time.perf_counter() - t0
    model = fit(x_all, y_all, len(labels), params, cfg)
    head_id = time.strftime("seedcnn-%Y%m%d-%H%M%S", time.gmtime()) + f"-{len(labels)}a"
    head = SeedHead(head_id, labels, cfg, model, 0.0, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    {"artists": len(labels), "tracks": len(names), "slices": int(len(y_all)),
                     "features_seconds": round(t_feat, 1), "total_seconds": round(time.perf_counter() - t0, 1)})
    head.save(folder / head_id)
    return head
