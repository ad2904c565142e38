"""The operator's commands: enrol, artists, forget, train, eval, demo, bench, corrections, history (on `spy`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from . import errors
from .settings import Settings

__all__ = ["register"]

ENROL_HOP_S = 1.5  # overlapping slices for training data: measured in README ("Levers")


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="track", file=sys.stderr, disable=not sys.stderr.isatty() or total < 2)


def cmd_enrol(settings: Settings, args: argparse.Namespace) -> int:
    from .backbone import Backbone
    from .enrol import Report, enrol_items, items_from_manifest, items_from_sources
    from .index import Index

    pre = Report()
    corrected: dict[Any, int] = {}          # Item -> the history record it comes from
    windows: dict[str, tuple[float, float]] = {}
    if args.from_corrections:
        if args.manifest:
            raise errors.EnrolError("Give either --from-corrections [ID...] or --manifest FILE, not both.")
        wanted = [args.artist, *args.sources] if args.artist else []
        items, corrected, windows = _items_from_corrections(settings, wanted, pre)
        if not items and not pre.problems:
            print("No corrected links waiting to be enrolled (spy corrections lists them).", file=sys.stderr)
            return 0
    elif args.manifest:
        if args.artist or args.sources:
            raise errors.EnrolError("Give either --manifest FILE or ARTIST SOURCE..., not both.")
        items = items_from_manifest(Path(args.manifest), pre, split=args.split)
    else:
        if not args.artist or not args.sources:
            raise errors.EnrolError("Usage: spy enrol ARTIST FILE_OR_FOLDER_OR_LINK... (or spy enrol --manifest FILE.csv)")
        items = items_from_sources(args.artist, args.sources, pre)
    for p in pre.problems:
        print(f"skipped: {p}", file=sys.stderr)
    if not items:
        print("Nothing to enrol.", file=sys.stderr)
        return 1
    backbone = Backbone.load("msd_musicnn")
    bar = _progress(len(items), "enrolling")
    t0 = time.perf_counter()

    def on_item(o: Any) -> None:
        bar.update(1)
        if o.status != "added" or args.verbose:
            bar.write(f"{o.status}: {o.item.where}: {o.message}", file=sys.stderr)

    with Index(settings.database) as index, _link_fetcher(settings, windows) as fetch:
        report = enrol_items(items, index, backbone, settings, hop_s=ENROL_HOP_S, on_item=on_item, fetch=fetch)
    bar.close()
    if corrected:
        _mark_enrolled(settings, report, corrected)
    secs = sum(o.track.duration_s for o in report.outcomes if o.status == "added" and o.track)
    dt = time.perf_counter() - t0
    print(f"Enrolled {report.count('added')} track(s) ({secs / 60:.1f} min of audio in {dt:.1f} s, "
          f"{secs / max(dt, 1e-9):.0f}x real time); {report.count('duplicate')} already in; "
          f"{report.count('failed')} failed; {len(pre.problems)} skipped.")
    if report.count("added"):
        print("Run `spy train` to update the model.")
    return 0 if report.count("failed") == 0 and not pre.problems else 1


@contextlib.contextmanager
def _link_fetcher(settings: Settings, windows: Mapping[str, tuple[float, float]] | None = None) -> Iterator[Any]:
    """A blocking `fetch(link) -> iterator of one path` for enrolling links (a longer window: 120 s).

    `windows`: links to fetch at exactly `(start_s, seconds)` instead (corrected clips: the window the chat
    heard, and no more, since past it a DJ mix may already play the next artist).
    """

    def fetch(link: str) -> Iterator[Path]:
        from .fetch import fetch_window
        from .sources import find_source

        source = find_source(link, extra_hosts=settings.fetch_extra_hosts)
        window_s = 120.0
        if windows and link in windows:
            start_s, window_s = windows[link]
            source = source.with_start(start_s)
        with tempfile.TemporaryDirectory(prefix="spy-enrol-") as tmp:
            yield fetch_window(source, settings, Path(tmp), window_s=window_s).path

    yield fetch


def _items_from_corrections(settings: Settings, wanted: list[str], report: Any
                            ) -> tuple[list[Any], dict[Any, int], dict[str, tuple[float, float]]]:
    """Enrolment items for corrected history records: all pending ones, or the record ids in `wanted`.

    Links are re-fetched at the analysed window; voice notes and files are reported ("audio not kept"),
    as are ids that are not corrections and records already enrolled.
    """
    from bot.history import AUDIO_NOT_KEPT, Store

    from .enrol import Item

    ids: list[int] = []
    for raw in wanted:
        if not raw.lstrip("#").isdigit():
            raise errors.EnrolError(f"{raw!r} is not a history record id. Usage: spy enrol --from-corrections [ID...] "
                                    "(spy corrections lists them).")
        ids.append(int(raw.lstrip("#")))
    with Store(settings.database) as store:
        records = store.corrections(ids=ids or None, pending=not ids)
    missing = sorted(set(ids) - {r.id for r in records})
    report.problems += [f"history #{i}: no correction with this id" for i in missing]
    items: list[Any] = []
    corrected: dict[Any, int] = {}
    windows: dict[str, tuple[float, float]] = {}
    for r in records:
        where = f"history #{r.id} ({r.platform} {r.chat})"
        if r.enrolled_track is not None:
            print(f"skipped: {where}: already enrolled as track #{r.enrolled_track}", file=sys.stderr)
        elif not r.is_link:
            print(f"skipped: {where}: {r.source}: {AUDIO_NOT_KEPT}", file=sys.stderr)
        else:
            item = Item(r.correction or "", None, link=r.source, title=f"history #{r.id}", where=where)
            items.append(item)
            corrected[item] = r.id
            windows[r.source] = (r.start_s, r.seconds)
    return items, corrected, windows


def _mark_enrolled(settings: Settings, report: Any, corrected: dict[Any, int]) -> None:
    """Note on each history record which track its clip became, so a later run does not enrol it again."""
    from bot.history import Store

    done = [(corrected[o.item], o.track.id) for o in report.outcomes
            if o.item in corrected and o.status in ("added", "duplicate") and o.track is not None]
    with Store(settings.database) as store:
        for record_id, track_id in done:
            store.mark_enrolled(record_id, track_id)
    if done:
        print(f"{len(done)} correction(s) marked as enrolled.")


def cmd_corrections(settings: Settings, args: argparse.Namespace) -> int:
    """List the corrections members made, with whether their audio can be enrolled."""
    from bot.history import AUDIO_NOT_KEPT, Store

    with Store(settings.database) as store:
        records = store.corrections(platform=args.platform, chat=args.chat, pending=args.pending)
    if not records:
        print("No corrections" + (" waiting" if args.pending else "") + " yet.")
        return 0
    print(f"{'id':>5s}  {'corrected (UTC)':16s}  {'chat':24s}  {'answered':24s}  {'correction':24s}  audio")
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.corrected_at or r.created))
        said = f"{r.winner or '?'} {100 * r.confidence:.0f}%" + ("" if r.verdict == "identified" else " (unknown)")
        if r.enrolled_track is not None:
            audio = f"enrolled as track #{r.enrolled_track}"
        elif r.is_link:
            audio = f"{r.source} ({r.seconds:.0f} s)"
        else:
            audio = f"{r.source}: {AUDIO_NOT_KEPT}"
        print(f"{r.id:5d}  {when:16s}  {(r.platform + ' ' + r.chat)[:24]:24s}  {said[:24]:24s}  "
              f"{(r.correction or '')[:24]:24s}  {audio}")
    pending = [r for r in records if r.enrolled_track is None and r.is_link]
    print(f"\n{len(records)} correction(s); {len(pending)} link(s) can be enrolled: "
          "spy enrol --from-corrections [ID...], then spy train.")
    return 0


def cmd_history_export(settings: Settings, args: argparse.Namespace) -> int:
    """Write one chat's history as CSV (stdout, or --out FILE)."""
    from bot.history import Store

    with Store(settings.database) as store:
        if args.platform is None or args.chat is None:
            chats = store.chats()
            print("Which chat? Usage: spy history export PLATFORM CHAT [--out FILE]", file=sys.stderr)
            for platform, chat, n, last in chats:
                print(f"  {platform} {chat}  ({n} record(s), last {time.strftime('%Y-%m-%d', time.gmtime(last))})",
                      file=sys.stderr)
            if not chats:
                print("  (no history yet)", file=sys.stderr)
            return 2
        n = store.count(args.platform, args.chat)
        if n == 0:
            print(f"No history for {args.platform} chat {args.chat} (spy history export lists the chats).",
                  file=sys.stderr)
            return 1
        if args.out:
            with open(args.out, "w", newline="", encoding="utf-8") as f:
                n = store.export_csv(args.platform, args.chat, f)
            print(f"Wrote {n} record(s) to {args.out}.", file=sys.stderr)
        else:
            n = store.export_csv(args.platform, args.chat, sys.stdout)
    return 0


def cmd_artists(settings: Settings, args: argparse.Namespace) -> int:
    from .index import Index

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
    from .index import Index

    with Index(settings.database) as index:
        what, n = index.forget(args.what)
    print(f"Removed {what} ({n} track(s)). Run `spy train` to update the model.")
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from . import artists
    from .index import Index

    t0 = time.perf_counter()
    if args.arch == "seedcnn":
        from . import seedcnn

        with Index(settings.database) as index:
            tracks = [(t.artist, Path(t.source)) for t in index.tracks()]
            head = seedcnn.train_from_tracks(tracks, settings.heads_dir, seedcnn.SeedConfig(epochs=args.epochs or 12))
            index.register_model(head.id, arch="seedcnn", path=settings.heads_dir / head.id,
                                 artists=len(head.labels), summary=head.summary, activate=False)
        print(f"Trained {head.id} ({head.summary['slices']} slices, {time.perf_counter() - t0:.0f} s) and saved it "
              "for comparison. It is not activated: the embedding head measured better (README, 'Artist model').")
        return 0
    with Index(settings.database) as index:
        head = artists.train(index, settings, artists.HeadConfig(epochs=args.epochs or 40))
    cal = head.summary.get("calibration", {})
    print(f"Trained {head.id}: {len(head.labels)} artists, {head.summary['slices']} slices, "
          f"{time.perf_counter() - t0:.1f} s. \"I don't know\" below {head.threshold:.2f} "
          f"(held-out clips of 10 s to 2 min: false accept {cal.get('false_accept', 0):.2f}, "
          f"false reject {cal.get('false_reject', 0):.2f}).")
    return 0


def cmd_eval(settings: Settings, args: argparse.Namespace) -> int:
    from . import artists
    from .evaluate import confusion_png, evaluate, evaluate_seedcnn

    say = (lambda s: print(s, file=sys.stderr)) if args.verbose else (lambda s: None)
    if args.arch == "seedcnn":
        from .seedcnn import SeedConfig

        cfg = SeedConfig(epochs=args.epochs or SeedConfig.epochs, hop_s=args.seed_hop)
        res = evaluate_seedcnn(Path(args.manifest), settings, query_seconds=args.query_seconds, cfg=cfg, log_line=say)
    else:
        res = evaluate(Path(args.manifest), settings, query_seconds=args.query_seconds,
                       train_seconds=args.train_seconds, cfg=artists.HeadConfig(),
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
    from . import artists, demo
    from .backbone import Backbone
    from .cli import render_genre, render_identify
    from .client import LocalClassifier, Query
    from .enrol import enrol_items, items_from_sources, Report
    from .index import Index

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
        head = artists.train(index, settings, artists.HeadConfig(epochs=60))
    print(f"Trained {head.id} on {len(head.labels)} artists in {time.perf_counter() - t0:.1f} s.\n")
    heldout = folder / "audio" / "heldout" / "deep-pulse.wav"

    async def run() -> tuple[dict[str, Any], dict[str, Any]]:
        async with LocalClassifier(settings) as clf:
            q = Query(path=heldout, label="held-out track by 'Deep Pulse'")
            return (await clf.identify(q)).to_dict(), (await clf.genre(q)).to_dict()

    ident, gen = asyncio.run(run())
    print("$ spy identify " + str(heldout))
    print(render_identify(ident))
    print("\n$ spy genre " + str(heldout))
    print(render_genre(gen))
    return 0


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    import runpy

    script = Path(__file__).resolve().parents[1] / "bench" / "bench_pipeline.py"
    if not script.exists():
        raise errors.SpyError("bench/bench_pipeline.py is not in this installation.")
    sys.argv = [str(script)] + (["--quick"] if args.quick else [])
    runpy.run_path(str(script), run_name="__main__")
    return 0


def register(sub: Any) -> None:
    sp = sub.add_parser("enrol", help="add an artist's tracks to the index")
    sp.add_argument("artist", nargs="?", help="artist name (with --from-corrections: a history record id)")
    sp.add_argument("sources", nargs="*", help="files, folders or links (with --from-corrections: more record ids)")
    sp.add_argument("--manifest", help="CSV with columns artist,path (optional split,title)")
    sp.add_argument("--split", help="with --manifest: only rows of this split")
    sp.add_argument("--from-corrections", action="store_true",
                    help="enrol the corrected links from chat history (all waiting ones, or the record IDs given)")
    sp.add_argument("-v", "--verbose", action="store_true")
    sp.set_defaults(func=cmd_enrol)

    sp = sub.add_parser("corrections", help="list the corrections chat members made (spy enrol --from-corrections)")
    sp.add_argument("--platform", default=None, help="only this platform (telegram, discord)")
    sp.add_argument("--chat", default=None, help="only this chat (as `spy history export` lists them)")
    sp.add_argument("--pending", action="store_true", help="only those not enrolled yet")
    sp.set_defaults(func=cmd_corrections)

    sp = sub.add_parser("history", help="the bots' chat history")
    hist = sp.add_subparsers(dest="history_command", required=True)
    sp = hist.add_parser("export", help="write one chat's history as CSV (without a chat: list the chats)")
    sp.add_argument("platform", nargs="?", help="telegram or discord")
    sp.add_argument("chat", nargs="?", help="the chat id")
    sp.add_argument("--out", "-o", default=None, help="CSV file to write (default: standard output)")
    sp.set_defaults(func=cmd_history_export)

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

    sp = sub.add_parser("bench", help="time the pipeline on generated audio")
    sp.add_argument("--quick", action="store_true")
    sp.set_defaults(func=cmd_bench)

    def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
        """Run the classifier service (an aiohttp API) until SIGINT/SIGTERM."""
        from .service import serve

        serve(settings, host=args.host, port=args.port)
        return 0

    sp = sub.add_parser("serve", help="run the classifier as an HTTP service (for GPU hosts; bots use CLASSIFIER_URL)")
    sp.add_argument("--host", default=None, help="address to bind (default: SPY_SERVE_HOST or 127.0.0.1)")
    sp.add_argument("--port", type=int, default=None, help="port (default: SPY_SERVE_PORT or 8080)")
    sp.set_defaults(func=cmd_serve)

    def cmd_bot(settings: Settings, args: argparse.Namespace) -> int:
        """Run the chat bots (bot/__main__.py) until SIGINT/SIGTERM."""
        from bot.__main__ import serve

        return serve(settings)

    sp = sub.add_parser("bot", help="run the chat bots (TELEGRAM_TOKEN and/or DISCORD_TOKEN)")
    sp.set_defaults(func=cmd_bot)

    def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
        """Write the backbones (and, with --with-head, the active artist head) as SavedModels for TF Serving."""
        from . import artists
        from .export import HEAD_SIGNATURE, SIGNATURE, export_models

        head = None
        if args.with_head:
            head = artists.current_head(settings)
            if head is None:
                raise errors.NoModel("No trained artist model to export: run `spy train` first.")
        out = Path(args.out) if args.out else settings.data_dir / "export"
        for path in export_models(args.model or ["msd_musicnn", "mtt_musicnn"], out, version=args.version, head=head):
            stacked = head is not None and path.parent.name == head.backbone
            print(f"{path}  signatures: {SIGNATURE}" + (f", {HEAD_SIGNATURE} (head {head.id})" if stacked else ""))
        print(f"Serve with TensorFlow Serving: --model_base_path={out.resolve()}/<model> (docs/deployment.md).")
        return 0

    sp = sub.add_parser("export", help="write the network as a TensorFlow SavedModel for TensorFlow Serving")
    sp.add_argument("--out", default=None, help="model base folder (default: <SPY_DATA_DIR>/export)")
    sp.add_argument("--model", action="append", choices=["msd_musicnn", "mtt_musicnn"],
                    help="backbone to export (repeatable; default: both)")
    sp.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    sp.add_argument("--with-head", action="store_true",
                    help="also stack the active artist head on its backbone (signature 'artists')")
    sp.set_defaults(func=cmd_export)
