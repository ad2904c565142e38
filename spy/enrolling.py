"""`spy enrol`: an artist's files, folders or links, a manifest, or the links chat members corrected."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from classifier import errors
from classifier.settings import Settings

__all__ = ["register"]


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="track", file=sys.stderr, disable=not sys.stderr.isatty() or total < 2)


def cmd_enrol(settings: Settings, args: argparse.Namespace) -> int:
    from classifier.model.backbone import Backbone
    from classifier.store.index import Index
    from classifier.training.enrol import (
        ENROL_HOP_S,
        Report,
        enrol_items,
        items_from_manifest,
        items_from_sources,
    )

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
        from classifier.sources.fetch import fetch_window
        from classifier.sources.links import find_source

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
    from classifier.store.history import AUDIO_NOT_KEPT, Store
    from classifier.training.enrol import Item

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
    from classifier.store.history import Store

    done = [(corrected[o.item], o.track.id) for o in report.outcomes
            if o.item in corrected and o.status in ("added", "duplicate") and o.track is not None]
    with Store(settings.database) as store:
        for record_id, track_id in done:
            store.mark_enrolled(record_id, track_id)
    if done:
        print(f"{len(done)} correction(s) marked as enrolled.")


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
