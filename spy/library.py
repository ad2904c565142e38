"""The artist library: `spy artists`, `spy forget`, `spy train`, `spy eval`, and the offline `spy demo`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from classifier.settings import Settings

__all__ = ["register"]


def cmd_artists(settings: Settings, args: argparse.Namespace) -> int:
    from classifier.store.index import Index

    with Index(settings.database) as index:
        rows = index.artists()
        if not rows:
            print("No artists enrolled yet. Enrol with: spy enrol ARTIST FILE_OR_FOLDER...")
            return 0
        print(f"{'artist':32s} {'tracks':>6s} {'minutes':>8s}")
        for r in rows:
            print(f"{r.name:32s} {r.tracks:6d} {r.minutes:8.1f}")
            if args.tracks:
                for t in index.tracks(r.name):
                    print(f"    #{t.id:<5d} {t.title[:40]:40s} {t.duration_s / 60:5.1f} min  {t.content_hash[:10]}")
        model = index.active_model()
        print(f"\n{sum(r.tracks for r in rows)} tracks, {len(rows)} artists. "
              + (f"Active model: {model['id']} ({model['artists']} artists)." if model else "No model trained yet: run `spy train`."))
    return 0


def cmd_forget(settings: Settings, args: argparse.Namespace) -> int:
    from classifier.store.index import Index

    with Index(settings.database) as index:
        what, n = index.forget(args.what)
    print(f"Removed {what} ({n} track(s)). Run `spy train` to update the model.")
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from classifier.model import heads
    from classifier.store.index import Index
    from classifier.training import train

    t0 = time.perf_counter()
    if args.arch == "seedcnn":
        from classifier.training import seedcnn

        with Index(settings.database) as index:
            tracks = [(t.artist, Path(t.source)) for t in index.tracks()]
            head = seedcnn.train_from_tracks(tracks, settings.heads_dir, seedcnn.SeedConfig(epochs=args.epochs or 12))
            index.register_model(head.id, arch="seedcnn", path=settings.heads_dir / head.id,
                                 artists=len(head.labels), summary=head.summary, activate=False)
        print(f"Trained {head.id} ({head.summary['slices']} slices, {time.perf_counter() - t0:.0f} s) and saved it "
              "for comparison. It is not activated: the embedding head measured better (README, 'Artist model').")
        return 0
    with Index(settings.database) as index:
        head = train.train(index, settings.heads_dir, heads.HeadConfig(epochs=args.epochs or 40))
    cal = head.summary.get("calibration", {})
    print(f"Trained {head.id}: {len(head.labels)} artists, {head.summary['slices']} slices, "
          f"{time.perf_counter() - t0:.1f} s. \"I don't know\" below {head.threshold:.2f} "
          f"(held-out clips of 10 s to 2 min: false accept {cal.get('false_accept', 0):.2f}, "
          f"false reject {cal.get('false_reject', 0):.2f}).")
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from classifier.model import heads
    from classifier.training.evaluate import confusion_png, evaluate, evaluate_seedcnn

    say = (lambda s: print(s, file=sys.stderr)) if args.verbose else (lambda s: None)
    if args.arch == "seedcnn":
        from classifier.training.seedcnn import SeedConfig

        cfg = SeedConfig(epochs=args.epochs or SeedConfig.epochs, hop_s=args.seed_hop)
        res = evaluate_seedcnn(Path(args.manifest), settings, query_seconds=args.query_seconds, cfg=cfg, log_line=say)
    else:
        res = evaluate(Path(args.manifest), settings, query_seconds=args.query_seconds,
                       train_seconds=args.train_seconds, cfg=heads.HeadConfig(),
                       cache_db=Path(args.cache) if args.cache else None, log_line=say)
    png = confusion_png(res, Path(args.confusion))
    if args.json:
        print(json.dumps({**res.to_dict(), "confusion_png": str(png)}, indent=2))
        return 0
    print(f"{res.n_test_tracks} test tracks, {res.n_artists} artists, {res.query_seconds:.0f}-s queries "
          f"from the middle, vote rule {res.rule}")
    print(f"song top-1 {res.top1:.3f}   top-5 {res.top5:.3f}   macro top-1 {res.macro_top1:.3f}   "
          f"slice top-1 {res.slice_top1:.3f}")
    print(f"\"I don't know\" threshold {res.threshold:.2f} (calibrated on training tracks): false accept "
          f"{res.false_accept:.2f}, false reject {res.false_reject:.2f}, non-enrolled artists accepted "
          f"{res.unknown_false_accept:.2f} ({res.n_unknown} queries)")
    print(f"\n{'artist':32s} {'tracks':>6s} {'top1':>5s} {'top5':>5s}")
    for p in res.per_artist:
        print(f"{p['artist'][:32]:32s} {p['tracks']:6d} {p['top1']:5.2f} {p['top5']:5.2f}")
    for p in res.problems:
        print(f"problem: {p}", file=sys.stderr)
    print(f"\nconfusion matrix: {png}   time: " + ", ".join(f"{k} {v:.0f} s" for k, v in res.timings.items())
          + f", total {res.seconds:.0f} s")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    """Offline demo: generate five procedural 'artists', enrol, train, then identify a held-out track."""
    from classifier.model import heads
    from classifier.model.backbone import Backbone
    from classifier.serve.api import Query
    from classifier.serve.engine import Engine
    from classifier.store.index import Index
    from classifier.training import demo, train
    from classifier.training.enrol import (
        ENROL_HOP_S,
        Report,
        enrol_items,
        items_from_sources,
    )
    from spy.render import render_genre, render_identify

    folder = settings.data_dir / "demo"
    settings = settings.replace(db_path=folder / "demo.sqlite3", data_dir=folder)
    print(f"Generating a small library of procedural music in {folder} (deterministic, nothing downloaded)...")
    library = demo.demo_library(folder / "audio")
    backbone = Backbone.load("msd_musicnn")
    t0 = time.perf_counter()
    with Index(settings.database) as index:
        for artist, paths in library.items():
            rep = enrol_items(items_from_sources(artist, [str(p) for p in paths], Report()), index, backbone,
                              settings, hop_s=ENROL_HOP_S)
            print(f"  enrolled {artist}: {rep.count('added')} new, {rep.count('duplicate')} already in")
        head = train.train(index, settings.heads_dir, heads.HeadConfig(epochs=60))
    print(f"Trained {head.id} on {len(head.labels)} artists in {time.perf_counter() - t0:.1f} s.\n")
    heldout = folder / "audio" / "heldout" / "deep-pulse.wav"

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with Engine(settings) as clf:
            q = Query(path=heldout, label="held-out track by 'Deep Pulse'")
            return (await clf.identify(q)).to_dict(), (await clf.genre(q)).to_dict()

    ident, gen = asyncio.run(run())
    print("$ spy identify " + str(heldout))
    print(render_identify(ident))
    print("\n$ spy genre " + str(heldout))
    print(render_genre(gen))
    return 0


def register(sub: Any) -> None:
    sp = sub.add_parser("artists", help="list enrolled artists")
    sp.add_argument("--tracks", action="store_true", help="list each artist's tracks")
    sp.set_defaults(func=cmd_artists)

    sp = sub.add_parser("forget", help="remove an artist or a track (id, title or hash prefix)")
    sp.add_argument("what")
    sp.set_defaults(func=cmd_forget)

    sp = sub.add_parser("train", help="train the artist model on the enrolled tracks")
    sp.add_argument("--arch", default="head", choices=["head", "seedcnn"])
    sp.add_argument("--epochs", type=int, default=None, help="training epochs (default: 40 for head, 12 for seedcnn)")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("eval", help="train on split=train, measure on split=test (temporary index)")
    sp.add_argument("--manifest", required=True)
    sp.add_argument("--query-seconds", type=float, default=30.0)
    sp.add_argument("--train-seconds", type=float, default=None, help="seconds per training track (default: whole)")
    sp.add_argument("--arch", default="head", choices=["head", "seedcnn"])
    sp.add_argument("--epochs", type=int, default=None, help="seedcnn: training epochs (default 12)")
    sp.add_argument("--seed-hop", type=float, default=1.5, help="seedcnn: hop between training slices, seconds")
    sp.add_argument("--confusion", default="eval-confusion.png", help="where to write the confusion-matrix PNG")
    sp.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    sp.add_argument("--json", action="store_true")
    sp.add_argument("-v", "--verbose", action="store_true")
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("demo", help="offline demo on generated music: enrol, train, identify")
    sp.set_defaults(func=cmd_demo)
