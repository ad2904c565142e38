"""The artist head: a small Keras network over the backbone's per-slice features -> artist probabilities.

A head never sees audio: it is trained on the embeddings the index caches at enrolment (training/train.py),
so retraining never re-runs the backbone. Each trained head is a versioned artifact in a folder:
`head.weights.h5` and `head.json` (labels, parameters, the backbone it expects, the feature
normalisation, the calibrated "I don't know" threshold and a training summary). Which head is active is
the registry's business (store/registry.py).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classifier import errors

__all__ = ["HeadConfig", "Head", "Dataset", "fit", "features_of", "FORMAT_VERSION"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Dataset:
    """Slice-level training data.

    embedding : (n, 200) float32;  pooled : (n, 1506) float32;  starts : (n,) seconds
    y : (n,) artist index into `labels`;  track : (n,) track id
    """

    embedding: np.ndarray
    pooled: np.ndarray
    starts: np.ndarray
    y: np.ndarray
    track: np.ndarray
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HeadConfig:
    """Hyper-parameters of the artist head (stored with every trained model)."""

    # Defaults chosen on the dev corpus, one lever at a time (README "Artist model"): a linear softmax
    # over the standardised pooled features beat the 200-d embedding by 18 points of top-1 and a
    # 256-unit MLP by 4; the log-mean vote had the best top-1 (test and cross-validation).
    feature: str = "pooled"         # "pooled" (1506-d max/mean mid-end features) or "embedding" (200-d)
    hidden: int = 0                 # 0 = linear softmax; > 0 adds one ReLU layer of this width
    dropout: float = 0.0
    l2: float = 3e-3
    epochs: int = 40
    batch_size: int = 256
    learning_rate: float = 1e-3
    balance: str = "artist"         # sample weights: "artist" (each artist weighs the same) or "none"
    rule: str = "logmean"           # song-level vote rule (voting.RULES)
    noise: float = 0.0              # Gaussian noise on standardised inputs while training (augmentation)
    seed: int = 0
    # "adam" (epochs of mini-batches) or, for linear heads, "lbfgs" (the exact optimum, full batch): on dev
    # L-BFGS gained one track of top-5 but took 3x longer to fit (README levers), so Adam stays the default
    solver: str = "adam"
    max_iter: int = 300             # L-BFGS iterations


def features_of(feature: str, embedding: np.ndarray, pooled: np.ndarray | None) -> np.ndarray:
    if feature == "embedding":
        return embedding
    if feature == "pooled":
        if pooled is None:
            raise ValueError("this head needs the pooled features")
        return pooled
    raise ValueError(f"unknown feature {feature!r}")


def _build(n_in: int, n_out: int, cfg: HeadConfig):  # noqa: ANN202 - keras.Model
    import keras

    reg = keras.regularizers.l2(cfg.l2) if cfg.l2 else None
    inp = keras.Input((n_in,))
    x = keras.layers.GaussianNoise(cfg.noise)(inp) if cfg.noise else inp
    if cfg.hidden:
        x = keras.layers.Dropout(cfg.dropout / 2)(x)
        x = keras.layers.Dense(cfg.hidden, activation="relu", kernel_regularizer=reg)(x)
        x = keras.layers.Dropout(cfg.dropout)(x)
    out = keras.layers.Dense(n_out, activation="softmax", kernel_regularizer=reg)(x)
    return keras.Model(inp, out)


@dataclass
class Head:
    """A trained artist head. `predict` maps per-slice backbone features to artist probabilities."""

    id: str
    labels: tuple[str, ...]
    backbone: str
    config: HeadConfig
    mean: np.ndarray
    scale: np.ndarray
    model: Any
    threshold: float = 0.0
    created: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def arch(self) -> str:
        return "head"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """x : (n, d) raw features -> (n, n_artists) probabilities."""
        if x.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        z = ((x - self.mean) / self.scale).astype(np.float32)
        with self._lock:
            return np.asarray(self.model(z, training=False), dtype=np.float32)


    # -- artifact -----------------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_weights(folder / "head.weights.h5")
        meta = {
            "format": FORMAT_VERSION, "id": self.id, "arch": self.arch, "labels": list(self.labels),
            "backbone": self.backbone, "config": {k: getattr(self.config, k) for k in HeadConfig.__dataclass_fields__},
            "mean": self.mean.tolist(), "scale": self.scale.tolist(), "threshold": self.threshold,
            "created": self.created, "summary": self.summary,
        }
        tmp = folder / "head.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.replace(folder / "head.json")
        return folder

    @classmethod
    def load(cls, folder: Path) -> "Head":
        meta = json.loads((folder / "head.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise errors.NoModel(f"The trained model in {folder} has an unknown format; run `spy train` again.")
        cfg = HeadConfig(**meta["config"])
        mean = np.asarray(meta["mean"], dtype=np.float32)
        model = _build(mean.shape[0], len(meta["labels"]), cfg)
        model.load_weights(folder / "head.weights.h5")
        return cls(meta["id"], tuple(meta["labels"]), meta["backbone"], cfg, mean,
                   np.asarray(meta["scale"], dtype=np.float32), model, float(meta["threshold"]),
                   meta.get("created", ""), meta.get("summary", {}))


def fit(ds: Dataset, cfg: HeadConfig = HeadConfig(), *, verbose: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    """Train a head's network on a dataset. Returns (keras model, feature mean, feature scale)."""
    import keras

    if len(ds.labels) < 2:
        raise errors.EnrolError("Training needs at least two enrolled artists.")
    x = features_of(cfg.feature, ds.embedding, ds.pooled).astype(np.float32)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-3
    z = (x - mean) / scale
    keras.utils.set_random_seed(cfg.seed)
    model = _build(z.shape[1], len(ds.labels), cfg)
    if cfg.balance == "artist":
        counts = np.bincount(ds.y, minlength=len(ds.labels)).astype(np.float64)
        w = (len(ds.y) / (len(ds.labels) * counts))[ds.y]
    else:
        w = np.ones(len(ds.y))
    if cfg.solver == "lbfgs" and not cfg.hidden and not cfg.noise:
        kernel, bias = _fit_linear_lbfgs(z, ds.y, w, len(ds.labels), cfg.l2, max_iter=cfg.max_iter)
        model.layers[-1].set_weights([kernel, bias])
    else:
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy")
        model.fit(z, ds.y, sample_weight=w.astype(np.float32), epochs=cfg.epochs, batch_size=cfg.batch_size,
                  shuffle=True, verbose=verbose)
    return model, mean.astype(np.float32), scale.astype(np.float32)


def _fit_linear_lbfgs(z: np.ndarray, y: np.ndarray, w: np.ndarray, n_out: int, l2: float, *,
                      max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """The linear softmax head's exact optimum: full-batch L-BFGS on the weighted cross-entropy.

    Minimises  sum_i w_i CE_i / sum_i w_i + l2 * ||W||^2  (the objective Keras' Adam approximates, same
    l2 convention). Convex, so deterministic and seed-free; faster than 40 epochs of mini-batches.

    z : (n, d) standardised features;  y : (n,) labels;  w : (n,) sample weights
    Returns (kernel (d, n_out), bias (n_out,)) as float32.
    """
    from scipy.optimize import minimize

    n, d = z.shape
    wn = (w / w.sum()).astype(np.float64)
    rows = np.arange(n)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        kernel = theta[: d * n_out].reshape(d, n_out)
        logits = (z @ kernel.astype(np.float32)).astype(np.float64) + theta[d * n_out:]
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -float(np.dot(wn, logp[rows, y])) + l2 * float(np.sum(kernel * kernel))
        g = np.exp(logp)
        g[rows, y] -= 1.0
        g *= wn[:, None]
        grad_k = (z.T @ g.astype(np.float32)).astype(np.float64) + 2.0 * l2 * kernel
        return loss, np.concatenate([grad_k.ravel(), g.sum(axis=0)])

    res = minimize(loss_grad, np.zeros(d * n_out + n_out), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter})
    return (res.x[: d * n_out].reshape(d, n_out).astype(np.float32), res.x[d * n_out:].astype(np.float32))
