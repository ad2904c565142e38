"""The artist head: train on stored slice embeddings, predict per slice, vote to a Verdict.

A head is a small Keras network over the backbone's per-slice features (never the audio: the
embeddings are cached in the index, so retraining never re-runs the backbone). Each trained head is
a versioned artifact in `<data_dir>/models/<id>/`: `head.weights.h5` and `head.json` (labels,
parameters, the backbone it expects, the feature normalisation, the calibrated "I don't know"
threshold and a training summary). The classifier loads the active head at start and picks up a
newly trained one on the next request, without a restart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import errors, voting
from .index import Dataset, Index
from .pipeline import Analysis
from .settings import Settings
from .verdict import TimelinePoint, Verdict

__all__ = ["CALIBRATION_SECONDS", "HeadConfig", "Head", "fit", "train", "current_head", "verdict", "calibrate",
           "choose_threshold", "features_of", "held_out_chunks"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


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

    def predict_analysis(self, a: Analysis) -> np.ndarray:
        return self.predict(features_of(self.config.feature, a.embedding, a.pooled))

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


# Clip lengths the threshold is calibrated on: a voice note, a link's window, a long upload.
CALIBRATION_SECONDS = (10.0, 30.0, 60.0, 120.0)


def _query_chunks(ds: Dataset, seconds: float, hop_s: float) -> list[tuple[int, np.ndarray]]:
    """Consecutive non-overlapping `seconds`-long chunks per track, sliced as a query would be.

    Enrolment stores a slice every 1.5 s; a query is sliced every `hop_s` (3 s). Each chunk keeps only
    slices at least `hop_s` apart, so it has as many slices as a real query of that length.
    Returns (artist, slice indices) pairs: whole chunks only, or the whole track (3 slices or more)
    when it is shorter than one chunk.
    """
    full = int((seconds - 2.976 + 1e-6) // hop_s) + 1     # slices in a whole chunk
    out = []
    for t in np.unique(ds.track):
        idx = np.flatnonzero(ds.track == t)
        idx = idx[np.argsort(ds.starts[idx], kind="stable")]
        lo = float(ds.starts[idx[0]])
        chunks: dict[int, list[int]] = {}
        last: dict[int, float] = {}
        for i in idx:    # one pass: a slice joins its chunk if it fits inside and is hop_s past the last one
            st = float(ds.starts[i])
            c = int((st - lo + 1e-6) // seconds)
            if st + 2.976 <= lo + (c + 1) * seconds + 1e-6 and st >= last.get(c, -np.inf) + hop_s - 1e-3:
                chunks.setdefault(c, []).append(int(i))
                last[c] = st
        # whole chunks only (a 9-s tail is not a 30-s query), unless the track is shorter than one chunk:
        # then, like a query of that track, it is all there is
        whole = [sel for _, sel in sorted(chunks.items()) if len(sel) >= full]
        if not whole and len(chunks) == 1 and len(chunks[0]) >= 3:
            whole = [chunks[0]]
        out += [(int(ds.y[sel[0]]), np.array(sel)) for sel in whole]
    return out


def held_out_chunks(ds: Dataset, cfg: HeadConfig, *, lengths: tuple[float, ...] = CALIBRATION_SECONDS,
                    hop_s: float = 3.0, folds: int = 3,
                    seed: int = 0) -> Iterator[tuple[float, str | None, np.ndarray, tuple[str, ...]]]:
    """Query-like chunks of training tracks, each scored by a head that never saw its track.

    Tracks are split into `folds` groups; each fold trains on the others and scores chunks of its
    held-out tracks, `lengths` seconds long and sliced every `hop_s` seconds as queries are. In each
    fold about one artist in nine (at least one, a different set per fold) is also left out entirely,
    so its chunks play the part of tracks by artists nobody enrolled.

    Yields (chunk seconds, the chunk's artist or None if that fold's head does not know it,
    per-slice probabilities (n, k), that head's k labels).
    """
    rng = np.random.default_rng(seed)
    tracks = np.unique(ds.track)
    rng.shuffle(tracks)
    fold_of = {int(t): i % folds for i, t in enumerate(tracks)}
    artists = np.arange(len(ds.labels))
    rng.shuffle(artists)
    for f in range(folds):
        unknown = set(int(a) for a in artists[f::folds][:max(1, len(artists) // (folds * 3))])
        test_mask = np.array([fold_of[int(t)] == f for t in ds.track])
        train_mask = ~test_mask & ~np.isin(ds.y, list(unknown))
        kept = sorted(set(np.unique(ds.y[train_mask]).tolist()))
        if len(kept) < 2:
            continue
        remap = {a: i for i, a in enumerate(kept)}
        sub = Dataset(ds.embedding[train_mask], ds.pooled[train_mask], ds.starts[train_mask],
                      np.array([remap[int(a)] for a in ds.y[train_mask]]), ds.track[train_mask],
                      tuple(ds.labels[a] for a in kept))
        model, mean, scale = fit(sub, cfg)
        test = Dataset(ds.embedding[test_mask], ds.pooled[test_mask], ds.starts[test_mask], ds.y[test_mask],
                       ds.track[test_mask], ds.labels)
        x_all = features_of(cfg.feature, test.embedding, test.pooled)
        p_all = np.asarray(model(((x_all - mean) / scale).astype(np.float32), training=False))
        for seconds in lengths:
            for artist, sel in _query_chunks(test, seconds, hop_s):
                yield seconds, (ds.labels[artist] if artist in remap else None), p_all[sel], sub.labels


def calibrate(ds: Dataset, cfg: HeadConfig, *, lengths: tuple[float, ...] = CALIBRATION_SECONDS,
              hop_s: float = 3.0, folds: int = 3, seed: int = 0) -> tuple[float, dict[str, Any]]:
    """Choose the "I don't know" threshold on held-out data from the training set itself.

    On `held_out_chunks` (chunks of held-out training tracks, some by artists left out entirely),
    the threshold on the winner's score is the one that minimises false accepts (wrong or
    non-enrolled winner accepted) plus false rejects (right winner refused), averaged over the
    lengths so that each length counts the same (on the dev corpus the best threshold for each
    length alone showed no trend with the length, so one threshold from all the chunks is kept
    rather than four, each from a quarter of them). On dev the winner's score separated right
    from wrong better than its margin over the runner-up, its vote share or its mean
    probability (bench/confidence_rules.py).

    Returns (threshold, rates): the rates at that threshold, over all lengths and per length.
    """
    right: dict[float, list[float]] = {s: [] for s in lengths}
    wrong: dict[float, list[float]] = {s: [] for s in lengths}
    for seconds, artist, probs, labels in held_out_chunks(ds, cfg, lengths=lengths, hop_s=hop_s, folds=folds,
                                                           seed=seed):
        c = voting.rank(probs, labels, k=1, rule=cfg.rule).candidates[0]  # type: ignore[arg-type]
        (right if c.label == artist else wrong)[seconds].append(c.score)
    threshold, rates = choose_threshold({s: np.array(v) for s, v in right.items()},
                                        {s: np.array(v) for s, v in wrong.items()})
    return threshold, {**rates, "hop_s": hop_s}


def choose_threshold(right: dict[float, np.ndarray], wrong: dict[float, np.ndarray]) -> tuple[float, dict[str, Any]]:
    """The score threshold minimising false accepts + false rejects, averaged over clip lengths.

    right / wrong : clip length -> winner scores of chunks whose winner was right / wrong (or not enrolled)
    Lengths without chunks on both sides are left out. Returns (threshold, rates at it).
    """
    used = [s for s in right if len(right[s]) and len(wrong.get(s, ()))]
    if not used:
        return 0.0, {"n_right": int(sum(map(len, right.values()))), "n_wrong": int(sum(map(len, wrong.values())))}

    def rates_at(t: float, s: float) -> tuple[float, float]:
        return float(np.mean(wrong[s] >= t)), float(np.mean(right[s] < t))

    grid = np.unique(np.concatenate([*(right[s] for s in used), *(wrong[s] for s in used), [0.0]]))
    _, best = min((float(np.mean([sum(rates_at(t, s)) for s in used])), float(t)) for t in grid)
    by_length = {f"{s:g}": dict(zip(("false_accept", "false_reject"), rates_at(best, s)),
                                n_right=len(right[s]), n_wrong=len(wrong[s])) for s in used}
    return best, {"threshold": best,
                  "false_accept": float(np.mean([v["false_accept"] for v in by_length.values()])),
                  "false_reject": float(np.mean([v["false_reject"] for v in by_length.values()])),
                  "n_right": sum(v["n_right"] for v in by_length.values()),
                  "n_wrong": sum(v["n_wrong"] for v in by_length.values()), "by_length": by_length}


def train(index: Index, settings: Settings, cfg: HeadConfig = HeadConfig(), *, backbone: str = "msd_musicnn",
          split: str | None = None, calibrate_threshold: bool = True, activate: bool = True) -> Head:
    """Train a head on everything enrolled (or one split), calibrate it, save it, register it."""
    t0 = time.perf_counter()
    ds = index.dataset(split=split)
    if len(ds.labels) < 2:
        raise errors.EnrolError(f"Training needs at least two enrolled artists; the index has {len(ds.labels)}. "
                                "Enrol more with `spy enrol ARTIST FILES...`.")
    model, mean, scale = fit(ds, cfg)
    t_fit = time.perf_counter() - t0
    threshold, rates = calibrate(ds, cfg, hop_s=settings.slice_hop_seconds) if calibrate_threshold else (0.0, {})
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    head_id = time.strftime("head-%Y%m%d-%H%M%S", time.gmtime()) + f"-{len(ds.labels)}a"
    summary = {"artists": len(ds.labels), "tracks": int(len(np.unique(ds.track))), "slices": int(len(ds.y)),
               "fit_seconds": round(t_fit, 2), "total_seconds": round(time.perf_counter() - t0, 2),
               "calibration": rates}
    head = Head(head_id, ds.labels, backbone, cfg, mean, scale, model, threshold, created, summary)
    folder = head.save(settings.heads_dir / head_id)
    index.register_model(head_id, arch=head.arch, path=folder, artists=len(ds.labels), summary=summary,
                         activate=activate)
    _cache.clear()
    return head


_cache: dict[str, Head] = {}
_cache_lock = threading.Lock()


def current_head(settings: Settings) -> Head | None:
    """The active head from the registry (cached; a newly trained one is picked up on the next call)."""
    if not settings.database.exists():
        return None
    with Index(settings.database) as index:
        row = index.active_model()
    if row is None:
        return None
    with _cache_lock:
        head = _cache.get(row["id"])
        if head is None:
            folder = Path(row["path"])
            if not (folder / "head.json").exists():
                raise errors.NoModel(f"The active model {row['id']} is missing from {folder}; run `spy train` again.")
            head = Head.load(folder)
            _cache.clear()
            _cache[row["id"]] = head
        return head


def verdict(head: Head, a: Analysis, display: str, hint: str | None = None, *, k: int = 5) -> Verdict:
    """Vote the per-slice artist probabilities of an analysis into a Verdict."""
    from . import genre

    t0 = time.perf_counter()
    probs = head.predict_analysis(a)
    r = voting.rank(probs, head.labels, k=k, rule=head.config.rule)  # type: ignore[arg-type]
    confidence = r.candidates[0].score if r.candidates else 0.0
    g, _ = genre.genre_rankings({head.backbone: a.tags[head.backbone]}, {head.backbone: a.labels[head.backbone]},
                                k_genres=3)
    timings = dict(a.timings)
    timings["head"] = round(time.perf_counter() - t0, 4)
    return Verdict(
        source=display, seconds=a.seconds, slices=a.n_slices, artists=r.candidates, confidence=confidence,
        verdict="identified" if confidence >= head.threshold and r.candidates else "unknown",
        genres=g.candidates, model_id=head.id, model_artists=len(head.labels), timings=timings,
        vote_share=r.vote_share, start=a.offset_s, hint=hint,
        timeline=tuple(TimelinePoint(float(t), head.labels[w]) for t, w in zip(a.starts_s, r.winners)),
    )
