"""Evaluation that cannot flatter itself: train on `split=train` rows, query the middle of `split=test` rows.

Everything happens in a temporary index (the operator's is never touched); test tracks never give a
slice to training, and a test row whose file is byte-for-byte a training row's file is left out
(and named among the problems); the "I don't know" threshold is calibrated on the training tracks only,
exactly as `spy train` calibrates it (the same threshold whatever the query length); tracks by
artists nobody enrolled are simulated by heads each trained without a quarter of the artists (every
artist left out once), so every test track is also queried once as a non-enrolled artist's.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from classifier import errors, pipeline
from classifier.audio import decode
from classifier.model import heads, voting
from classifier.model.backbone import Backbone
from classifier.model.heads import Dataset
from classifier.settings import Settings
from classifier.store.index import Index, file_hash
from classifier.training import calibrate
from classifier.training.enrol import Item, Report, enrol_items, items_from_manifest

__all__ = ["EvalResult", "evaluate", "confusion_png", "unknown_heads"]

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    top1: float
    top5: float
    macro_top1: float
    slice_top1: float
    n_artists: int
    n_test_tracks: int
    seconds: float
    query_seconds: float
    rule: str
    false_accept: float          # wrong-artist answers accepted, enrolled artists
    false_reject: float          # right answers refused as "I don't know"
    unknown_false_accept: float  # tracks by non-enrolled artists answered with an artist
    threshold: float
    n_unknown: int = 0           # queries behind unknown_false_accept
    per_artist: list[dict[str, Any]] = field(default_factory=list)
    confusion: np.ndarray | None = None
    labels: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        keys = ("top1", "top5", "macro_top1", "slice_top1", "n_artists", "n_test_tracks", "seconds",
                "query_seconds", "rule", "false_accept", "false_reject", "unknown_false_accept", "n_unknown", "threshold")
        # not measured (the seed CNN has no threshold) is null, not NaN, which JSON does not have
        d: dict[str, Any] = {k: ((round(v, 4) if np.isfinite(v) else None) if isinstance(v, float) else v)
                             for k in keys for v in [getattr(self, k)]}
        d["per_artist"] = self.per_artist
        d["timings"] = {k: round(v, 2) for k, v in self.timings.items()}
        d["problems"] = self.problems
        return d


def _query(path: Path, duration: float, query_seconds: float, bb: Backbone, settings: Settings,
           hop_s: float) -> pipeline.Analysis:
    start = max(0.0, (duration - query_seconds) / 2)
    return pipeline.analyse(path, [bb], hop_s=hop_s, batch_size=settings.batch_size, start_s=start,
                            duration_s=query_seconds, max_seconds=settings.max_audio_seconds,
                            min_seconds=min(settings.min_audio_seconds, query_seconds), keep_pooled=True,
                            silence_dbfs=settings.silence_dbfs, decode_timeout_s=settings.decode_timeout_s)


def _without_training_audio(train_items: list[Item], test_items: list[Item], report: Report) -> list[Item]:
    """The test rows whose file is not also a training row's file (same bytes under any name)."""
    def digest(item: Item) -> str | None:
        try:
            return file_hash(item.path) if item.path is not None else None
        except OSError:
            return None  # enrolment / querying reports the unreadable file

    seen = {d for d in map(digest, train_items) if d is not None}
    kept = []
    for item in test_items:
        if digest(item) in seen:
            report.problems.append(f"{item.where}: {item.path.name if item.path else ''} is the same audio file as a "
                                   "training row; left out of the test (testing on training audio would flatter "
                                   "the result)")
        else:
            kept.append(item)
    return kept


def _subset(ds: Dataset, keep_artists: list[int]) -> Dataset:
    mask = np.isin(ds.y, keep_artists)
    remap = {a: i for i, a in enumerate(keep_artists)}
    return Dataset(ds.embedding[mask], ds.pooled[mask], ds.starts[mask],
                   np.array([remap[int(a)] for a in ds.y[mask]], dtype=np.int64), ds.track[mask],
                   tuple(ds.labels[a] for a in keep_artists))


def evaluate(manifest: Path, settings: Settings, *, query_seconds: float = 30.0, train_seconds: float | None = None,
             cfg: heads.HeadConfig = heads.HeadConfig(), enrol_hop_s: float = 1.5, query_hop_s: float | None = None,
             cache_db: Path | None = None, log_line: Callable[[str], None] = lambda s: None) -> EvalResult:
    """Train on the manifest's train rows and measure on its test rows (see the module docstring).

    Queries are sliced exactly as `spy identify` slices them (settings.slice_hop_seconds) unless
    `query_hop_s` says otherwise; training tracks as `spy enrol` does (1.5 s).

    cache_db: reuse an index that already holds the train rows' embeddings (benchmarks only; by
    default a fresh temporary index is built and thrown away).
    """
    t0 = time.perf_counter()
    report = Report()
    train_items = items_from_manifest(manifest, report, split="train")
    test_items = _without_training_audio(train_items, items_from_manifest(manifest, report, split="test"), report)
    if not train_items or not test_items:
        raise errors.EnrolError(f"{manifest.name} needs rows with split=train and split=test.")
    bb = Backbone.load("msd_musicnn")
    with tempfile.TemporaryDirectory(prefix="spy-eval-") as tmp:
        db_path = cache_db or Path(tmp) / "eval.sqlite3"
        with Index(db_path) as index:
            enrolled = enrol_items(train_items, index, bb, settings, hop_s=enrol_hop_s,
                                   on_item=lambda o: log_line(f"enrol {o.status}: {o.item.where}: {o.message}"))
            report.problems += [f"{o.item.where}: {o.message}" for o in enrolled.outcomes if o.status == "failed"]
            ds = index.dataset(split="train")
        t_enrol = time.perf_counter() - t0
        if train_seconds is not None:
            ds = _limit_seconds(ds, train_seconds)
        t1 = time.perf_counter()
        model, mean, scale = heads.fit(ds, cfg)
        # calibrated exactly as `spy train` calibrates it (clips sliced at the product's query hop)
        hop = settings.slice_hop_seconds if query_hop_s is None else query_hop_s
        threshold, _ = calibrate.calibrate(ds, cfg, hop_s=hop)

        # Heads that never saw a quarter of the artists, one per quarter, so that every test track is also
        # queried once as a track by an artist nobody enrolled (one quarter alone gave 8 such queries on dev).
        unknown = unknown_heads(ds, cfg)
        t_train = time.perf_counter() - t1

    lab = {n: i for i, n in enumerate(ds.labels)}
    feats = lambda a: heads.features_of(cfg.feature, a.embedding, a.pooled)  # noqa: E731
    rows: list[tuple[int, int, bool, float, int, int]] = []  # (true, pred, in_top5, score, slice_hits, slices)
    unknown_scores: list[float] = []
    confusion = np.zeros((len(ds.labels), len(ds.labels)), dtype=np.int64)
    t2 = time.perf_counter()
    for item in test_items:
        if item.artist not in lab:
            report.problems.append(f"{item.where}: artist {item.artist!r} has no training tracks; skipped")
            continue
        try:
            duration = float(decode.probe_duration(item.path) or 0.0)  # type: ignore[arg-type]
            a = _query(item.path, duration, query_seconds, bb, settings, hop)  # type: ignore[arg-type]
        except errors.SpyError as exc:
            report.problems.append(f"{item.where}: {exc.user_message}")
            continue
        x = feats(a)
        p = np.asarray(model(((x - mean) / scale).astype(np.float32), training=False))
        r = voting.rank(p, ds.labels, k=5, rule=cfg.rule)  # type: ignore[arg-type]
        true = lab[item.artist]
        pred = lab[r.candidates[0].label]
        in5 = item.artist in [c.label for c in r.candidates]
        rows.append((true, pred, in5, r.candidates[0].score, int(np.sum(p.argmax(1) == true)), p.shape[0]))
        confusion[true, pred] += 1
        for held_out, sub_labels, (model_u, mean_u, scale_u) in unknown:
            if true in held_out:
                pu = np.asarray(model_u(((x - mean_u) / scale_u).astype(np.float32), training=False))
                ru = voting.rank(pu, sub_labels, k=1, rule=cfg.rule)  # type: ignore[arg-type]
                unknown_scores.append(ru.candidates[0].score)
        log_line(f"query {item.artist} / {item.path.name if item.path else ''}: "
                 f"{r.candidates[0].label} {r.candidates[0].score:.2f}")
    t_query = time.perf_counter() - t2
    if not rows:
        raise errors.EnrolError("No test track could be evaluated.")

    true = np.array([r[0] for r in rows])
    pred = np.array([r[1] for r in rows])
    score = np.array([r[3] for r in rows])
    hit = true == pred
    per_artist = []
    for i, name in enumerate(ds.labels):
        m = true == i
        if m.any():
            per_artist.append({"artist": name, "tracks": int(m.sum()), "top1": round(float(hit[m].mean()), 3),
                               "top5": round(float(np.mean([rows[j][2] for j in np.flatnonzero(m)])), 3)})
    accepted = score >= threshold
    return EvalResult(
        top1=float(hit.mean()), top5=float(np.mean([r[2] for r in rows])),
        macro_top1=float(np.mean([p["top1"] for p in per_artist])),
        slice_top1=float(sum(r[4] for r in rows) / sum(r[5] for r in rows)),
        n_artists=len(ds.labels), n_test_tracks=len(rows), seconds=time.perf_counter() - t0,
        query_seconds=query_seconds, rule=cfg.rule,
        false_accept=float(np.mean(accepted[~hit])) if (~hit).any() else 0.0,
        false_reject=float(np.mean(~accepted[hit])) if hit.any() else 0.0,
        unknown_false_accept=float(np.mean(np.array(unknown_scores) >= threshold)) if unknown_scores else float("nan"),
        n_unknown=len(unknown_scores), threshold=threshold, per_artist=per_artist, confusion=confusion, labels=ds.labels,
        timings={"enrol": t_enrol, "train": t_train, "query": t_query}, problems=report.problems,
    )


def unknown_heads(ds: Dataset, cfg: heads.HeadConfig, quarters: int = 4,
                   seed: int = 0) -> list[tuple[set[int], tuple[str, ...], tuple[Any, np.ndarray, np.ndarray]]]:
    """Heads each trained without one quarter of the artists (every artist left out of exactly one).

    Returns (left-out artist indices, the head's labels, fitted (model, mean, scale)) per quarter; a
    quarter that would leave fewer than two artists to train on is skipped.
    """
    order = np.random.default_rng(seed).permutation(len(ds.labels))
    out = []
    for q in range(min(quarters, len(ds.labels))):
        held_out = set(int(a) for a in order[q::quarters])
        kept = sorted(set(range(len(ds.labels))) - held_out)
        if len(kept) < 2:
            continue
        sub = _subset(ds, kept)
        out.append((held_out, sub.labels, heads.fit(sub, cfg)))
    return out


def _limit_seconds(ds: Dataset, seconds: float) -> Dataset:
    """Keep only the middle `seconds` of each training track."""
    keep = np.zeros(len(ds.y), dtype=bool)
    for t in np.unique(ds.track):
        idx = np.flatnonzero(ds.track == t)
        s = ds.starts[idx]
        mid = (s.min() + s.max() + 2.976) / 2
        keep[idx[(s >= mid - seconds / 2) & (s + 2.976 <= mid + seconds / 2 + 1e-6)]] = True
    return Dataset(ds.embedding[keep], ds.pooled[keep], ds.starts[keep], ds.y[keep], ds.track[keep], ds.labels)


def confusion_png(result: EvalResult, path: Path) -> Path:
    """Write the confusion matrix (rows: true artist, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert result.confusion is not None
    n = len(result.labels)
    fig, ax = plt.subplots(figsize=(2 + 0.45 * n, 1.5 + 0.45 * n), dpi=100)
    ax.imshow(result.confusion, cmap="Blues")
    ax.set_xticks(range(n), [s[:22] for s in result.labels], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [s[:22] for s in result.labels], fontsize=7)
    for i in range(n):
        for j in range(n):
            if result.confusion[i, j]:
                ax.text(j, i, str(result.confusion[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if i == j else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"top-1 {result.top1:.2f}, macro {result.macro_top1:.2f} ({result.query_seconds:.0f}-s queries)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def evaluate_seedcnn(manifest: Path, settings: Settings, *, query_seconds: float = 30.0,
                     cfg: "Any" = None, log_line: Callable[[str], None] = lambda s: None) -> EvalResult:
    """The same protocol for the seed CNN (trained from scratch on the train rows' audio)."""
    from classifier.model.backbone import load_params
    from classifier.training import seedcnn

    cfg = cfg or seedcnn.SeedConfig()
    params = load_params("msd_musicnn")
    t0 = time.perf_counter()
    report = Report()
    train_items = items_from_manifest(manifest, report, split="train")
    test_items = _without_training_audio(train_items, items_from_manifest(manifest, report, split="test"), report)
    labels = tuple(sorted({i.artist for i in train_items}))
    lab = {n: i for i, n in enumerate(labels)}
    xs, ys = [], []
    for item in train_items:
        try:
            _, x = seedcnn.slices_of(item.path, params, cfg, max_seconds=settings.max_audio_seconds)  # type: ignore[arg-type]
        except errors.SpyError as exc:
            report.problems.append(f"{item.where}: {exc.user_message}")
            continue
        xs.append(x)
        ys.append(np.full(len(x), lab[item.artist]))
        log_line(f"seedcnn features: {item.where}: {len(x)} slices")
    t_enrol = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = seedcnn.fit(np.concatenate(xs), np.concatenate(ys), len(labels), params, cfg)
    t_train = time.perf_counter() - t1
    head = seedcnn.SeedHead("eval", labels, cfg, model)
    rows, per, per5, confusion = [], {}, {}, np.zeros((len(labels), len(labels)), np.int64)
    slice_hits = slice_n = 0
    t2 = time.perf_counter()
    for item in test_items:
        if item.artist not in lab:
            continue
        duration = float(decode.probe_duration(item.path) or 0.0)  # type: ignore[arg-type]
        _, x = seedcnn.slices_of(item.path, params, cfg, start_s=max(0.0, (duration - query_seconds) / 2),  # type: ignore[arg-type]
                                 duration_s=query_seconds)
        p = head.predict(x)
        r = voting.rank(p, labels, k=5, rule="mean")
        true, pred = lab[item.artist], lab[r.candidates[0].label]
        in_top5 = item.artist in [c.label for c in r.candidates]
        rows.append((true, pred, in_top5))
        per.setdefault(true, []).append(true == pred)
        per5.setdefault(true, []).append(in_top5)
        confusion[true, pred] += 1
        slice_hits += int(np.sum(p.argmax(1) == true))
        slice_n += len(p)
    hit = np.array([r[0] == r[1] for r in rows])
    return EvalResult(
        top1=float(hit.mean()), top5=float(np.mean([r[2] for r in rows])),
        macro_top1=float(np.mean([np.mean(v) for v in per.values()])), slice_top1=slice_hits / max(1, slice_n),
        n_artists=len(labels), n_test_tracks=len(rows), seconds=time.perf_counter() - t0, query_seconds=query_seconds,
        rule="mean", false_accept=float("nan"), false_reject=float("nan"), unknown_false_accept=float("nan"),
        threshold=0.0, per_artist=[{"artist": labels[a], "tracks": len(v), "top1": round(float(np.mean(v)), 3),
                                    "top5": round(float(np.mean(per5[a])), 3)} for a, v in sorted(per.items())],
        confusion=confusion, labels=labels,
        timings={"features": t_enrol, "train": t_train, "query": time.perf_counter() - t2}, problems=report.problems)
