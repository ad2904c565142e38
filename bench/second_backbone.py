"""A second pretrained backbone from the same pinned package: musicnn's MSD VGG, alone and with musicnn.

    python bench/second_backbone.py data/dev-cache-h15.sqlite3

The musicnn wheel also ships `MSD_vgg`, a 5-layer VGG (3x3 convolutions, 128 filters, batch norm, max
pooling) trained on the same Million Song Dataset tags (its checkpoint reports a validation ROC-AUC of
0.877, against 0.880 for MSD musicnn), although musicnn's own extractor refuses to load it. This script
ports it to Keras (the TF1 checkpoint read by classifier/model/backbone.py's `read_checkpoint`), takes the max
and mean over time and frequency of each of its five pooling layers (1,280-d per 3-s slice), and
computes them once for every slice of every track in the cache index, sliced every 3 s (kept beside
the index as `<db>.msd_vgg.npz`).

Rows: the product's head (linear softmax, Adam) and shrinkage LDA 0.3 on musicnn's pooled features (from
the index, the same 3-s grid), on the VGG's, and on both side by side. Song-level top-1 / top-5 of the
log-mean vote on the middle 30 s of the 44 test tracks, and by grouped 4-fold cross-validation over
the 107 training tracks (the folds of bench/feature_variants.py).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feature_variants import (  # noqa: E402
    default_head,
    grouped_folds,
    lda,
    middle_windows,
    song_hits,
    splits,
)

from classifier import pipeline  # noqa: E402
from classifier.model.backbone import Backbone, read_checkpoint  # noqa: E402
from classifier.model.heads import Dataset  # noqa: E402
from classifier.store.index import Index  # noqa: E402

# TF1 max_pooling2d (pool, strides) after each conv block, 'valid' padding
_POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))


def build_vgg():  # noqa: ANN201 - keras.Model
    """MSD_vgg as Keras layers with the checkpoint's weights: (n, 187, 96) -> (tags (n, 50), features (n, 1280))."""
    import keras
    from keras import layers

    var = read_checkpoint("msd_vgg")
    weights = []

    def bn(scope: str) -> layers.Layer:
        layer = layers.BatchNormalization(epsilon=1e-3)
        weights.append((layer, [var[f"{scope}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")]))
        return layer

    inp = keras.Input((187, 96))
    x = bn("batch_normalization")(layers.Reshape((187, 96, 1))(inp))
    pools = []
    for i, (size, strides) in enumerate(_POOLS, start=1):
        conv = layers.Conv2D(128, 3, padding="same", activation="relu")
        weights.append((conv, [var[f"{i}CNN/kernel"], var[f"{i}CNN/bias"]]))
        x = layers.MaxPooling2D(size, strides)(bn(f"batch_normalization_{i}")(conv(x)))
        pools.append(x)
    dense = layers.Dense(50, activation="sigmoid")
    weights.append((dense, [var["dense/kernel"], var["dense/bias"]]))
    tags = dense(layers.Flatten()(x))
    feats = layers.Concatenate()([layers.Concatenate()([layers.GlobalMaxPooling2D()(p), layers.GlobalAveragePooling2D()(p)])
                                  for p in pools])
    model = keras.Model(inp, [tags, feats])
    for layer, w in weights:
        layer.set_weights(w)
    return model


def vgg_features(db: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per track id: (slice starts in s, VGG features), every 3 s over the whole track (computed once)."""
    path = db.with_suffix(".msd_vgg.npz")
    if not path.exists():
        import tensorflow as tf

        with Index(db) as index:
            rows = [(int(r["id"]), r["source"]) for r in index.conn.execute("SELECT id, source FROM tracks ORDER BY id")]
        params = Backbone.load("msd_musicnn").params
        model = build_vgg()
        run = tf.function(lambda x: model(x, training=False)[1], autograph=False,
                          input_signature=[tf.TensorSpec((None, 187, 96), tf.float32)])
        arrays, t0 = {}, time.perf_counter()
        for n, (tid, source) in enumerate(rows):
            starts, feats = [], []
            for s, x in pipeline.PatchStream(Path(source), params, hop_s=3.0, max_windows=64):
                starts.append(s / params.sample_rate)
                feats += [run(x[b:b + 32]).numpy() for b in range(0, len(x), 32)]
            arrays[f"s_{tid}"], arrays[f"f_{tid}"] = np.concatenate(starts), np.concatenate(feats)
            print(f"  VGG features {n + 1}/{len(rows)} tracks, {time.perf_counter() - t0:.0f} s", flush=True)
        np.savez(path, **arrays)
    z = np.load(path)
    return {int(k[2:]): (z[k], z["f_" + k[2:]]) for k in z.files if k.startswith("s_")}


def aligned(ds: Dataset, y: np.ndarray,
            vgg: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """musicnn pooled and VGG features of the same 3-s slices of `ds` (whose slice labels are `y`):
    (musicnn, vgg, labels, track ids, starts)."""
    parts: list[list[np.ndarray]] = [[], [], [], [], []]
    for t in dict.fromkeys(ds.track.tolist()):
        idx = np.flatnonzero(ds.track == t)
        where = {round(float(s), 2): i for i, s in zip(idx, ds.starts[idx])}
        starts, feats = vgg[int(t)]
        keep = [j for j, s in enumerate(starts) if round(float(s), 2) in where]
        rows = [where[round(float(starts[j]), 2)] for j in keep]
        for part, value in zip(parts, (ds.pooled[rows], feats[keep], y[rows],
                                       np.full(len(rows), t), starts[keep])):
            part.append(value)
    return tuple(np.concatenate(p) for p in parts)  # type: ignore[return-value]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    args = ap.parse_args()
    train, test, y_test = splits(args.db)
    vgg = vgg_features(args.db)
    m_tr, v_tr, y_tr, t_tr, s_tr = aligned(train, train.y, vgg)
    m_te, v_te, y_te, t_te, s_te = aligned(test, y_test, vgg)
    print(f"{len(y_tr)} training and {len(y_te)} test slices (3-s hop)")
    folds = grouped_folds(y_tr, t_tr)
    print(f"{'features':14s} {'head':10s} {'test (44)':>12s} {'cv (107)':>12s}")
    for name, (a, b) in {"musicnn": (m_tr, m_te), "VGG": (v_tr, v_te),
                         "musicnn + VGG": (np.hstack([m_tr, v_tr]), np.hstack([m_te, v_te]))}.items():
        for head, method in {"default": default_head, "LDA 0.3": lda(0.3)}.items():
            h1, h5 = song_hits(method(a, y_tr, t_tr)(b), y_te, middle_windows(s_te, t_te, every=1))
            c1, c5 = [], []
            for f in range(4):
                tr, te = folds != f, folds == f
                x1, x5 = song_hits(method(a[tr], y_tr[tr], t_tr[tr])(a[te]), y_tr[te],
                                   middle_windows(s_tr[te], t_tr[te], every=1))
                c1 += x1
                c5 += x5
            print(f"{name:14s} {head:10s} {np.mean(h1):.3f}/{np.mean(h5):.3f} {np.mean(c1):.3f}/{np.mean(c5):.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
