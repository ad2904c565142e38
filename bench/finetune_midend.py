"""Does fine-tuning musicnn's mid-end on the enrolled artists beat the frozen features? (issue 3's last lever)

    python bench/finetune_midend.py data/dev-cache-h15.sqlite3 [--lr 1e-4] [--epochs 4] [--cv]

The front end (the timbral and temporal convolutions, most of the network's multiply-adds) stays frozen:
its (187 x 561) output for every 3-s slice of every track in the cache index, sliced every 3 s as
queries are, is computed once and kept beside the index (`<db>.frontend.npy`, float16, about 2.2 GB
for the dev corpus, 4 minutes on 2 cores). The trainable model is the pretrained mid-end (three
Conv1D layers, 64 filters each, batch norm frozen in inference mode), the same max/mean pooling,
standardisation with the frozen network's statistics, and the product's linear softmax head.

Epoch 0 is the product's recipe on these slices: the head alone, 40 Adam epochs on the frozen
features. Each later epoch trains mid-end and head together (Adam at --lr, batches of 64,
artist-balanced weights). After every epoch: song-level top-1 / top-5 of the log-mean vote on the middle
30 s of each held-out track. Held-out tracks are the test split, or with --cv the training tracks by
grouped 4-fold cross-validation (the folds of bench/feature_variants.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from feature_variants import grouped_folds, middle_windows, song_hits  # noqa: E402

from classifier import pipeline  # noqa: E402
from classifier.model.backbone import Backbone, _mid_and_back_end  # noqa: E402
from classifier.store.index import Index  # noqa: E402

FRAMES, CHANNELS = 187, 561


def frontend_cache(db: Path) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Front-end maps of every slice (hop 3 s) of every track in the index, computed once."""
    maps_path, meta_path = db.with_suffix(".frontend.npy"), db.with_suffix(".frontend.json")
    if not meta_path.exists():
        import keras
        import tensorflow as tf

        with Index(db) as index:
            rows = [dict(r) for r in index.conn.execute(
                "SELECT t.id, t.source, t.split, a.name AS artist FROM tracks t JOIN artists a ON a.id = t.artist_id "
                "ORDER BY t.id")]
        msd = Backbone.load("msd_musicnn")
        sub = keras.Model(msd.fast_model.input, msd.fast_model.get_layer("frontend").output)
        front = tf.function(lambda x: sub(x, training=False), autograph=False,
                            input_signature=[tf.TensorSpec((None, FRAMES, 96), tf.float32)])
        rate = msd.params.sample_rate
        streams = [pipeline.PatchStream(Path(r["source"]), msd.params, hop_s=3.0, max_windows=64) for r in rows]
        total = sum(s.expected for s in streams) + 64 * len(streams)   # probe estimates, with room to spare
        maps = np.lib.format.open_memmap(maps_path, mode="w+", dtype=np.float16, shape=(total, FRAMES, CHANNELS))
        meta: dict[str, list] = {"track": [], "artist": [], "split": [], "start": []}
        n, t0 = 0, time.perf_counter()
        for i, (r, stream) in enumerate(zip(rows, streams)):
            for starts, x in stream:
                for b in range(0, len(x), 32):
                    y = front(x[b:b + 32]).numpy()
                    maps[n:n + len(y)] = y
                    n += len(y)
                meta["track"] += [r["id"]] * len(x)
                meta["artist"] += [r["artist"]] * len(x)
                meta["split"] += [r["split"]] * len(x)
                meta["start"] += (starts / rate).tolist()
            print(f"  front end {i + 1}/{len(rows)} tracks, {n} slices, {time.perf_counter() - t0:.0f} s", flush=True)
        maps.flush()
        meta_path.write_text(json.dumps({"n": n, **meta}))
    meta = json.loads(meta_path.read_text())
    maps = np.load(maps_path, mmap_mode="r")[: meta["n"]]
    return maps, {k: np.asarray(v) for k, v in meta.items() if k != "n"}


def build_midend(msd: Backbone):  # noqa: ANN201 - keras.Model
    """(n, 187, 561) front-end maps -> (n, 1506) pooled features: the backbone's own mid-end graph
    (`_mid_and_back_end`, back end left out), pretrained weights, batch norm frozen in inference mode."""
    import keras

    inp = keras.Input((FRAMES, CHANNELS))
    model = keras.Model(inp, _mid_and_back_end(inp)[2])
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(msd.fast_model.get_layer(layer.name).get_weights())
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    return model


def run(maps: np.ndarray, y: np.ndarray, start: np.ndarray, track: np.ndarray, tr: np.ndarray, te: np.ndarray,
        n_artists: int, args: argparse.Namespace, tag: str) -> list[tuple[list[bool], list[bool]]]:
    """Train on slices `tr`, report the held-out tracks `te` after each epoch. Returns hits per epoch."""
    import keras

    keras.utils.set_random_seed(0)
    msd = Backbone.load("msd_musicnn")
    midend = build_midend(msd)

    def pooled(idx: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(midend(np.asarray(maps[idx[b:b + 128]], np.float32), training=False))
                               for b in range(0, len(idx), 128)])

    x0 = pooled(tr)
    mean, scale = x0.mean(axis=0), x0.std(axis=0) + 1e-3
    head = keras.layers.Dense(n_artists, activation="softmax", kernel_regularizer=keras.regularizers.l2(args.l2))
    z_in = keras.Input((1506,))
    head_model = keras.Model(z_in, head(z_in))
    m_in = keras.Input((FRAMES, CHANNELS))
    full = keras.Model(m_in, head((midend(m_in) - mean) / scale))
    counts = np.bincount(y[tr], minlength=n_artists).astype(np.float64)
    weight = (len(tr) / (n_artists * counts))[y[tr]].astype(np.float32)
    head_model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    head_model.fit(((x0 - mean) / scale).astype(np.float32), y[tr], sample_weight=weight, epochs=40,
                   batch_size=256, verbose=0)
    windows = middle_windows(start[te], track[te], every=1)
    t0 = time.perf_counter()
    results = []

    def report(epoch: int) -> None:
        p = np.asarray(head_model(((pooled(te) - mean) / scale).astype(np.float32)))
        h1, h5 = song_hits(np.log(np.clip(p, 1e-12, 1.0)), y[te], windows)
        results.append((h1, h5))
        print(f"  {tag} epoch {epoch}: top-1 {np.mean(h1):.3f} top-5 {np.mean(h5):.3f} ({len(h1)} tracks, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)

    report(0)
    full.compile(keras.optimizers.Adam(args.lr), "sparse_categorical_crossentropy")
    x_tr = np.asarray(maps[tr])                      # float16 in memory; batches go up to float32
    rng = np.random.default_rng(0)
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(tr))
        for b in range(0, len(order), 64):
            sel = np.sort(order[b:b + 64])
            full.train_on_batch(x_tr[sel].astype(np.float32), y[tr][sel], sample_weight=weight[sel])
        report(epoch)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--l2", type=float, default=3e-3)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--cv", action="store_true", help="4-fold CV over the training tracks instead of the test split")
    args = ap.parse_args()
    maps, meta = frontend_cache(args.db)
    labels = sorted(set(meta["artist"][meta["split"] == "train"].tolist()))
    y = np.array([labels.index(a) for a in meta["artist"]])
    track, start = meta["track"].astype(np.int64), meta["start"].astype(np.float64)
    train = np.flatnonzero(meta["split"] == "train")
    print(f"{len(maps)} slices, {len(labels)} artists; mid-end lr {args.lr}, {args.epochs} epochs")
    if not args.cv:
        run(maps, y, start, track, train, np.flatnonzero(meta["split"] == "test"), len(labels), args, "test")
        return
    folds = grouped_folds(y[train], track[train])
    total: dict[int, tuple[list[bool], list[bool]]] = {}
    for f in range(4):
        for epoch, (h1, h5) in enumerate(run(maps, y, start, track, train[folds != f], train[folds == f],
                                             len(labels), args, f"fold {f}")):
            total.setdefault(epoch, ([], []))[0].extend(h1)
            total[epoch][1].extend(h5)
    for epoch, (h1, h5) in total.items():
        print(f"cross-validation epoch {epoch}: top-1 {np.mean(h1):.3f} top-5 {np.mean(h5):.3f} ({len(h1)} tracks)")


if __name__ == "__main__":
    main()
