"""Does any head or feature set beat the pooled-feature plateau? Test split and cross-validation side by side.

    python bench/feature_variants.py data/dev-cache-h15.sqlite3 [--only NAME] [--no-cv]

Reads the cache index that bench/corpus_cache.py builds (MSD musicnn, hop 1.5 s). Two extra feature sets
are computed once per track from the tracks' source files and kept beside the index
(`<db>.variants.npz`, about 13 minutes on 2 cores): the MTT musicnn's pooled features, and the standard
deviation over time of the MSD network's 753 mid-end channels ("std pooling", next to the max and mean
the backbone already pools).

Each row is one head on one feature set. Columns:
- test h3 / h3': song-level top-1/top-5 on the 44 test tracks (log-mean vote unless the row says
  otherwise), the middle 30 s sliced at the product's hop
  (3 s) on the two possible offsets of the cached 1.5-s grid. The two differ only in which slices a query
  sees, so their difference is the noise floor of a 44-track test.
- cv: the same on the 107 *training* tracks, by grouped 4-fold cross-validation (a track's slices are
  all in one fold; each artist's tracks spread over folds). A second, larger sample that never looks at
  the test split.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model import heads, voting
from classifier.model.heads import Dataset
from classifier.store.index import Index

WIN = 2.976
# the pooled features interleave max and mean per channel; channels 0-560 are the front end, 561-752 the mid end
MAX_COLS = np.arange(0, 1506, 2)
MEAN_COLS = np.arange(1, 1506, 2)
FRONT_COLS = np.arange(0, 2 * 561)

Predictor = Callable[[np.ndarray], np.ndarray]          # features (n, d) -> log-scores (n, k)
Method = Callable[[np.ndarray, np.ndarray, np.ndarray], Predictor]  # (features, labels, track ids) -> predictor


def splits(db: Path) -> tuple[Dataset, Dataset, np.ndarray]:
    """The cache index's train and test datasets, and each test slice's artist in the training labels' order."""
    with Index(db) as index:
        train, test = index.dataset(split="train"), index.dataset(split="test")
    lab = {n: i for i, n in enumerate(train.labels)}
    return train, test, np.array([lab[test.labels[v]] for v in test.y])


def middle_windows(starts: np.ndarray, track: np.ndarray, seconds: float = 30.0, every: int = 2,
                   offset: int = 0) -> list[np.ndarray]:
    """Per track, the slice indices of its middle `seconds`, thinned to every `every`-th slice."""
    out = []
    for t in np.unique(track):
        idx = np.flatnonzero(track == t)
        s = starts[idx]
        mid = (s.min() + s.max() + WIN) / 2
        sel = idx[(s >= mid - seconds / 2 - 1e-6) & (s + WIN <= mid + seconds / 2 + 1e-6)]
        out.append((sel if len(sel) else idx)[offset::every])
    return out


def song_hits(logp: np.ndarray, y: np.ndarray, windows: list[np.ndarray],
              rule: str = "logmean") -> tuple[list[bool], list[bool]]:
    """The product's vote (voting.rank with `rule`) per window: (top-1 hits, top-5 hits)."""
    labels = tuple(str(i) for i in range(logp.shape[1]))
    h1, h5 = [], []
    for sel in windows:
        names = [int(c.label) for c in voting.rank(np.exp(logp[sel]), labels, k=5, rule=rule).candidates]  # type: ignore[arg-type]
        h1.append(names[0] == y[sel[0]])
        h5.append(int(y[sel[0]]) in names)
    return h1, h5


def grouped_folds(y: np.ndarray, track: np.ndarray, n_folds: int = 4, seed: int = 0) -> np.ndarray:
    """Fold number per slice: whole tracks per fold, each artist's tracks dealt round the folds."""
    rng = np.random.default_rng(seed)
    fold_of: dict[int, int] = {}
    for a in np.unique(y):
        tracks = np.unique(track[y == a])
        rng.shuffle(tracks)
        first = int(rng.integers(n_folds))
        for i, t in enumerate(tracks):
            fold_of[int(t)] = (first + i) % n_folds
    return np.array([fold_of[int(t)] for t in track])


def standardise(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
    return lambda a: (a - mean) / scale


def lda(shrinkage: float) -> Method:
    """Shrinkage LDA with equal priors (artist-balanced), closed form."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    def method(x: np.ndarray, y: np.ndarray, track: np.ndarray) -> Predictor:
        s = standardise(x)
        k = int(y.max()) + 1
        model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage, priors=np.full(k, 1 / k)).fit(s(x), y)
        return lambda a: model.predict_log_proba(s(a))
    return method


def default_head(x: np.ndarray, y: np.ndarray, track: np.ndarray | None = None) -> Predictor:
    """The product's head (heads.fit with the default HeadConfig) on these features."""
    labels = tuple(str(i) for i in range(int(y.max()) + 1))
    ds = Dataset(np.zeros((len(y), 1), np.float32), x, np.zeros(len(y), np.float32), y, np.zeros(len(y), np.int64),
                 labels)
    model, mean, scale = heads.fit(ds, heads.HeadConfig())
    return lambda a: np.log(np.clip(np.asarray(model(((a - mean) / scale).astype(np.float32))), 1e-12, 1.0))


def mixup_head(alpha: float = 0.4, same_artist: bool = False, epochs: int = 40) -> Method:
    """The default head's network and loss, trained on mixed pairs of slices (feature-space "mixing").

    Each epoch pairs every slice with a random other one (any artist, soft label lam*a + (1-lam)*b; or,
    with `same_artist`, one of the same artist) and trains on lam*x_i + (1-lam)*x_j, lam ~ Beta(alpha, alpha).
    """
    def method(x: np.ndarray, y: np.ndarray, track: np.ndarray) -> Predictor:
        import keras

        cfg = heads.HeadConfig()
        n_art = int(y.max()) + 1
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
        z = ((x - mean) / scale).astype(np.float32)
        keras.utils.set_random_seed(cfg.seed)
        model = heads._build(z.shape[1], n_art, cfg)
        model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="categorical_crossentropy")
        weight = (len(y) / (n_art * np.bincount(y, minlength=n_art)))[y].astype(np.float32)
        onehot = np.eye(n_art, dtype=np.float32)[y]
        rng = np.random.default_rng(0)
        members = [np.flatnonzero(y == a) for a in range(n_art)]
        for _ in range(epochs):
            if same_artist:
                j = np.array([rng.choice(members[a]) for a in y])
            else:
                j = rng.permutation(len(y))
            lam = rng.beta(alpha, alpha, size=(len(y), 1)).astype(np.float32)
            model.fit(lam * z + (1 - lam) * z[j], lam * onehot + (1 - lam) * onehot[j], sample_weight=weight,
                      epochs=1, batch_size=cfg.batch_size, shuffle=True, verbose=0)
        return lambda a: np.log(np.clip(np.asarray(model(((a - mean) / scale).astype(np.float32))), 1e-12, 1.0))
    return method


def fusion(*methods: Method) -> Method:
    """Average of the members' log-scores (each member on the same features)."""
    def method(x: np.ndarray, y: np.ndarray, track: np.ndarray) -> Predictor:
        preds = [m(x, y, track) for m in methods]
        return lambda a: sum(p(a) for p in preds) / len(preds)
    return method


def _unit(z: np.ndarray) -> np.ndarray:
    return z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-9)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def lda_metric(prototypes: str, shrinkage: float = 0.3, temperature: float = 10.0, k: int = 50) -> Method:
    """Metric learning: project onto the shrinkage-LDA directions, then score by cosine similarity to
    artist centroids ("centroid"), to each training *track*'s centroid, best track per artist
    ("track": an artist whose pieces differ is several prototypes, not one), or by the k nearest training
    slices, weighted by similarity and divided by the artist's slice count ("knn")."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    def method(x: np.ndarray, y: np.ndarray, track: np.ndarray) -> Predictor:
        s = standardise(x)
        n_art = int(y.max()) + 1
        lda_ = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage,
                                          priors=np.full(n_art, 1 / n_art)).fit(s(x), y)
        z = _unit(lda_.transform(s(x))).astype(np.float32)
        if prototypes == "knn":
            count = np.bincount(y, minlength=n_art).astype(np.float64)

            def knn(a: np.ndarray) -> np.ndarray:
                sim = _unit(lda_.transform(s(a))).astype(np.float32) @ z.T
                near = np.argpartition(-sim, k, axis=1)[:, :k]
                out = np.full((len(a), n_art), 1e-6)
                for i in range(len(a)):
                    np.add.at(out[i], y[near[i]], np.exp(temperature * sim[i, near[i]]) / count[y[near[i]]])
                return np.log(out / out.sum(axis=1, keepdims=True))
            return knn
        groups = np.arange(n_art) if prototypes == "centroid" else np.unique(track)
        member = y if prototypes == "centroid" else track
        centres = _unit(np.stack([z[member == g].mean(axis=0) for g in groups]))
        owner = groups if prototypes == "centroid" else np.array([y[track == g][0] for g in groups])

        def nearest(a: np.ndarray) -> np.ndarray:
            sim = _unit(lda_.transform(s(a))) @ centres.T
            best = np.stack([sim[:, owner == c].max(axis=1) for c in range(n_art)], axis=1)
            return _log_softmax(temperature * best)
        return nearest
    return method


def transformed(f: Callable[[np.ndarray], np.ndarray], method: Method) -> Method:
    """The method on element-wise transformed features (the pooled activations are heavy-tailed)."""
    def fitted(x: np.ndarray, y: np.ndarray, track: np.ndarray) -> Predictor:
        pred = method(f(x), y, track)
        return lambda a: pred(f(a))
    return fitted


def extra_features(db: Path, sources: dict[int, str], starts: dict[int, np.ndarray]) -> dict[str, dict[int, np.ndarray]]:
    """MTT pooled and MSD std-pooled features per track, on the cache's slice grid (computed once)."""
    out_path = db.with_suffix(".variants.npz")
    if out_path.exists():
        z = np.load(out_path)
        return {kind: {int(k.split("_")[1]): z[k] for k in z.files if k.startswith(kind + "_")} for kind in ("mtt", "std")}
    import keras
    import tensorflow as tf

    from classifier import pipeline
    from classifier.model.backbone import Backbone

    msd, mtt = Backbone.load("msd_musicnn"), Backbone.load("mtt_musicnn")
    sub = keras.Model(msd.fast_model.input, msd.fast_model.get_layer("midend").output)
    std_of = tf.function(lambda x: tf.math.reduce_std(sub(x, training=False), axis=1),
                         input_signature=[tf.TensorSpec((None, 187, 96), tf.float32)], autograph=False)
    arrays: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    for n, (tid, src) in enumerate(sorted(sources.items())):
        a = pipeline.analyse(Path(src), [mtt], hop_s=1.5, keep_pooled=True, max_seconds=4 * 3600)
        stream = pipeline.PatchStream(Path(src), msd.params, hop_s=1.5, max_windows=128, max_seconds=4 * 3600)
        s_std, f_std = [], []
        for s, x in stream:
            s_std.append(s / msd.params.sample_rate)
            f_std.append(np.concatenate([std_of(x[i:i + 32]).numpy() for i in range(0, len(x), 32)]))
        want = starts[tid]
        for kind, s_have, f in (("mtt", a.starts_s, a.pooled), ("std", np.concatenate(s_std), np.concatenate(f_std))):
            pos = {round(float(v), 2): i for i, v in enumerate(s_have)}
            arrays[f"{kind}_{tid}"] = np.asarray(f)[[pos[round(float(v), 2)] for v in want]].astype(np.float16)
        print(f"  features {n + 1}/{len(sources)} {time.perf_counter() - t0:6.0f}s {Path(src).name}", flush=True)
    np.savez(out_path, **arrays)
    return extra_features(db, sources, starts)


def _signed_sqrt(a: np.ndarray) -> np.ndarray:
    return (np.sign(a) * np.sqrt(np.abs(a))).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--only", default=None)
    ap.add_argument("--no-cv", action="store_true")
    args = ap.parse_args()
    train, test_all, y_te = splits(args.db)
    with Index(args.db) as index:
        sources = {int(r["id"]): r["source"] for r in index.conn.execute("SELECT id, source FROM tracks")}
    starts = {int(t): np.concatenate([d.starts[d.track == t] for d in (train, test_all)]) for t in sources}
    extra = extra_features(args.db, sources, starts)

    def stack(kind: str, ds: Dataset) -> np.ndarray:
        return np.concatenate([extra[kind][int(t)] for t in dict.fromkeys(ds.track.tolist())]).astype(np.float32)

    feats = {"pooled": (train.pooled, test_all.pooled)}
    feats["mtt"] = (stack("mtt", train), stack("mtt", test_all))
    feats["std"] = (stack("std", train), stack("std", test_all))
    cols = {"max": MAX_COLS, "mean": MEAN_COLS, "front": FRONT_COLS}

    def features(spec: str, which: int) -> np.ndarray:
        parts = []
        for p in spec.split("+"):
            name, _, sel = p.partition(":")
            f = feats[name][which]
            parts.append(f[:, cols[sel]] if sel else f)
        return np.hstack(parts)

    rows: list[tuple[str, str, Method] | tuple[str, str, Method, str]] = [
        ("default head (linear softmax, Adam)", "pooled", default_head),
        ("default head, mean-probability vote", "pooled", default_head, "mean"),
        ("default head, majority vote", "pooled", default_head, "majority"),
        ("shrinkage LDA 0.3", "pooled", lda(0.3)),
        ("shrinkage LDA 0.5", "pooled", lda(0.5)),
        ("default head + LDA 0.3, fused", "pooled", fusion(default_head, lda(0.3))),
        ("LDA 0.3, max-pooled half only", "pooled:max", lda(0.3)),
        ("LDA 0.3, mean-pooled half only", "pooled:mean", lda(0.3)),
        ("LDA 0.3, front-end channels only", "pooled:front", lda(0.3)),
        ("LDA 0.3, MTT pooled", "mtt", lda(0.3)),
        ("LDA 0.3, MSD + MTT pooled", "pooled+mtt", lda(0.3)),
        ("LDA 0.3, MSD pooled + std pooling", "pooled+std", lda(0.3)),
        ("default head, MSD pooled + std pooling", "pooled+std", default_head),
        ("LDA metric, nearest artist centroid", "pooled", lda_metric("centroid")),
        ("LDA metric, nearest track centroid", "pooled", lda_metric("track")),
        ("LDA metric, 50 nearest slices", "pooled", lda_metric("knn")),
        ("default head, signed sqrt of features", "pooled", transformed(_signed_sqrt, default_head)),
        ("LDA 0.3, signed sqrt of features", "pooled", transformed(_signed_sqrt, lda(0.3))),
        ("default head, mixup across artists", "pooled", mixup_head()),
        ("default head, mixup within an artist", "pooled", mixup_head(same_artist=True)),
    ]
    order = [int(t) for t in dict.fromkeys(train.track.tolist())]
    folds = grouped_folds(train.y, train.track)
    print(f"{'head':42s} {'features':12s} {'test h3':>11s} {'test h3_':>11s} {'cv (107)':>11s} {'fit s':>6s}")
    for name, spec, method, *rest in rows:
        rule = rest[0] if rest else "logmean"
        if args.only and args.only not in name:
            continue
        x_tr, x_te = features(spec, 0), features(spec, 1)
        t0 = time.perf_counter()
        pred = method(x_tr, train.y, train.track)
        fit_s = time.perf_counter() - t0
        lp = pred(x_te)
        res = []
        for offset in (0, 1):
            h1, h5 = song_hits(lp, y_te, middle_windows(test_all.starts, test_all.track, offset=offset), rule)
            res.append(f"{np.mean(h1):.3f}/{np.mean(h5):.3f}")
        if args.no_cv:
            res.append("")
        else:
            h1, h5 = [], []
            for f in range(4):
                tr, te = folds != f, folds == f
                p = method(x_tr[tr], train.y[tr], train.track[tr])(x_tr[te])
                a, b = song_hits(p, train.y[te], middle_windows(train.starts[te], train.track[te]), rule)
                h1 += a
                h5 += b
            assert len(h1) == len(order)
            res.append(f"{np.mean(h1):.3f}/{np.mean(h5):.3f}")
        print(f"{name:42s} {spec:12s} {res[0]:>11s} {res[1]:>11s} {res[2]:>11s} {fit_s:6.1f}", flush=True)


if __name__ == "__main__":
    main()
