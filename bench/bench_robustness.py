"""Does identification survive the way DJs play tracks? Test tracks played differently, clean head vs augmented head.

    python bench/bench_robustness.py data/dev-cache.sqlite3 ../shared/corpus/dev.csv data/robust
        [--augment vinyl-6,vinyl+6] [--augment-seconds 60]

Queries: the middle 30 s of each of the 44 dev *test* tracks, as `spy eval` takes them, played as each
condition says (training/augment.py filters; a tempo-shifted query takes 30 x tempo s of the recording so
that it still lasts 30 s), decoded to 16 kHz and analysed at the product's 3-s hop. Song-level top-1 /
top-5 with the product's log-mean vote, and macro top-1 (per-artist mean).

"overlap -6 dB": the query with the middle of another test track by another artist mixed in 6 dB lower, as
in the middle of a long blend. Per-query features are cached under the output folder, so a second head
is measured without running the network on the queries again.

--augment: also train a head on the training split *plus* the listed tempo variants of every training
track (only its middle `--augment-seconds` s, to bound the cost; analysed at 3 s like the rest), and
report both heads side by side with the cost (network time, extra slices).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mixbench  # noqa: E402
from scipy.io import wavfile  # noqa: E402

from classifier import errors, pipeline  # noqa: E402
from classifier.model import heads, voting  # noqa: E402
from classifier.training import augment  # noqa: E402

SR = 16000
QUERY_S = 30.0
CONDITIONS: tuple[augment.Variant, ...] = (
    augment.CLEAN,
    # the pitch fader's ends (+-8 %), with key lock (rubberband time-stretch) and without (vinyl)
    augment.Variant("key lock +8 %", 1.08, True), augment.Variant("key lock -8 %", 0.92, True),
    augment.Variant("vinyl +8 %", 1.08, False), augment.Variant("vinyl -8 %", 0.92, False),
    augment.Variant("vinyl +4 %", 1.04, False), augment.Variant("vinyl -4 %", 0.96, False),
    # a DJ's EQ and filter moves: bass killed for a blend, a high-pass or low-pass sweep held
    augment.Variant("EQ: bass cut -12 dB", eq="bass=g=-12:f=150"),
    augment.Variant("high-pass 400 Hz", eq="highpass=f=400:poles=2"),
    augment.Variant("low-pass 1.5 kHz", eq="lowpass=f=1500:poles=2"),
)
OVERLAP = "overlap -6 dB"


def _query_wave(src, v: augment.Variant) -> np.ndarray:  # noqa: ANN001
    span = min(src.duration_s, QUERY_S * v.tempo)
    start = max(0.0, (src.duration_s - span) / 2)
    return augment.render(src.path, v, SR, start_s=start, duration_s=span)


def query_features(sources, out: Path, backbone) -> dict[str, dict[str, np.ndarray]]:  # noqa: ANN001
    """condition -> track title -> pooled features (n, 1506) of its query; cached in out/<condition>.npz."""
    out.mkdir(parents=True, exist_ok=True)
    result = {}
    names = [v.name for v in CONDITIONS] + [OVERLAP]
    for name in names:
        cache = out / (name.replace(" ", "_").replace("%", "pc").replace(":", "").replace("/", "") + ".npz")
        if cache.exists():
            result[name] = dict(np.load(cache))
            continue
        t0 = time.perf_counter()
        feats = {}
        with tempfile.TemporaryDirectory(prefix="robust-") as tmp:
            for i, src in enumerate(sources):
                if name == OVERLAP:   # the next test track by another artist, 6 dB down
                    other = next(s for s in sources[i + 1:] + sources[:i] if s.artist != src.artist)
                    a, b = _query_wave(src, augment.CLEAN), _query_wave(other, augment.CLEAN)
                    n = min(a.size, b.size)
                    ra, rb = (float(np.sqrt(np.mean(w[:n].astype(np.float64) ** 2))) or 1.0 for w in (a, b))
                    wave = a[:n] / ra * 0.1 + b[:n] / rb * 0.05
                else:
                    wave = _query_wave(src, next(v for v in CONDITIONS if v.name == name))
                wav = Path(tmp) / "q.wav"
                wavfile.write(wav, SR, (np.clip(wave, -1, 1) * 32767).astype(np.int16))
                an = pipeline.analyse(wav, [backbone], hop_s=3.0, keep_pooled=True, min_seconds=3.0)
                assert an.pooled is not None
                feats[f"{i:03d}"] = an.pooled.astype(np.float16)
        np.savez(cache, **feats)
        result[name] = feats
        print(f"  {name}: {len(feats)} queries analysed in {time.perf_counter() - t0:.0f} s", flush=True)
    return result


def scores(head: heads.Head, sources, feats: dict[str, dict[str, np.ndarray]]) -> dict[str, tuple[float, float, float]]:  # noqa: ANN001
    out = {}
    for name, per in feats.items():
        h1, h5, per_artist = [], [], {}
        for i, src in enumerate(sources):
            p = head.predict(per[f"{i:03d}"].astype(np.float32))
            r = voting.rank(p, head.labels, k=5, rule=head.config.rule)  # type: ignore[arg-type]
            names = [c.label for c in r.candidates]
            h1.append(names[0] == src.artist)
            h5.append(src.artist in names)
            per_artist.setdefault(src.artist, []).append(h1[-1])
        out[name] = (float(np.mean(h1)), float(np.mean(h5)), float(np.mean([np.mean(v) for v in per_artist.values()])))
    return out


def augmented_dataset(cache_db: Path, manifest: Path, variants, seconds: float, out: Path, backbone) -> tuple:  # noqa: ANN001
    """Train-split dataset (3-s grid) plus each variant of each training track's middle `seconds` s."""
    from classifier.store.index import Index

    with Index(cache_db) as index:
        ds = mixbench.thin(index.dataset(split="train"))
    lab = {n: i for i, n in enumerate(ds.labels)}
    extra_p, extra_e, extra_y, extra_t = [], [], [], []
    cost = 0.0
    for v in variants:
        cache = out / f"train_{v.name}_{seconds:g}.npz"
        if not cache.exists():
            t0 = time.perf_counter()
            store = {}
            with tempfile.TemporaryDirectory(prefix="robust-") as tmp:
                for i, src in enumerate(mixbench.corpus(manifest, "train")):
                    span = min(src.duration_s, seconds * v.tempo)
                    wave = augment.render(src.path, v, SR, start_s=max(0.0, (src.duration_s - span) / 2),
                                          duration_s=span)
                    wav = Path(tmp) / "t.wav"
                    wavfile.write(wav, SR, (np.clip(wave, -1, 1) * 32767).astype(np.int16))
                    try:
                        an = pipeline.analyse(wav, [backbone], hop_s=3.0, keep_pooled=True, min_seconds=3.0)
                    except errors.SpyError as exc:   # a silent middle (a track's pause): nothing to learn from
                        print(f"  {v.name} {src.path.name}: skipped ({exc.code})")
                        continue
                    assert an.pooled is not None
                    store[f"{i:03d}|{src.artist}"] = an.pooled.astype(np.float16)
                    store[f"{i:03d}|{src.artist}|e"] = an.embedding
            np.savez(cache, seconds_taken=time.perf_counter() - t0, **store)
        z = np.load(cache)
        cost += float(z["seconds_taken"])
        for key in z.files:
            if key.count("|") == 1:
                i, artist = key.split("|")
                p = z[key].astype(np.float32)
                extra_p.append(p)
                extra_e.append(z[key + "|e"])
                extra_y.append(np.full(len(p), lab[artist]))
                # track ids only matter to calibration's folds, and this head is not recalibrated
                extra_t.append(np.full(len(p), 10_000_000 + int(i)))
    n_extra = int(sum(len(p) for p in extra_p))
    aug = heads.Dataset(np.concatenate([ds.embedding, *extra_e]), np.concatenate([ds.pooled, *extra_p]),
                        np.concatenate([ds.starts, np.zeros(n_extra, np.float32)]), np.concatenate([ds.y, *extra_y]),
                        np.concatenate([ds.track, *extra_t]), ds.labels)
    return ds, aug, n_extra, cost


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cache", type=Path)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--augment", default="")
    ap.add_argument("--augment-seconds", type=float, default=60.0)
    args = ap.parse_args()
    from classifier.model.backbone import Backbone

    t0 = time.perf_counter()
    bb = Backbone.load("msd_musicnn")
    sources = mixbench.corpus(args.manifest, "test")
    head = mixbench.dev_head(args.cache, args.out / "head-clean")
    feats = query_features(sources, args.out, bb)
    base = scores(head, sources, feats)
    cols = [("clean head", base)]
    variants = augment.parse_variants(args.augment)
    if variants:
        ds, aug, n_extra, cost = augmented_dataset(args.cache, args.manifest, variants, args.augment_seconds,
                                                   args.out, bb)
        cfg = heads.HeadConfig()
        model, mean, scale = heads.fit(aug, cfg)
        ah = heads.Head("aug", aug.labels, "msd_musicnn", cfg, mean, scale, model, head.threshold)
        cols.append((f"+ {args.augment} ({args.augment_seconds:g} s/track)", scores(ah, sources, feats)))
        print(f"augmentation: {n_extra} extra slices on top of {len(ds.y)} ({n_extra / len(ds.y):.0%} more rows in "
              f"the index), network time for them {cost:.0f} s (load {os.getloadavg()[0]:.1f})")
    print(f"\n{len(sources)} test tracks, middle {QUERY_S:g} s, hop 3 s, log-mean vote. top-1 / top-5 / macro top-1 "
          "(change in top-1 against clean)\n")
    print("| condition | " + " | ".join(c for c, _ in cols) + " |\n|---|" + "---:|" * len(cols))
    for name in feats:
        cells = []
        for _, sc in cols:
            t1, t5, m = sc[name]
            cells.append(f"{t1:.3f} / {t5:.3f} / {m:.3f} ({t1 - sc['clean'][0]:+.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
