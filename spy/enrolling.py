"""`spy enrol`: an artist's files, folders, links or pages, a manifest, or the links chat members corrected.

An artist page (a SoundCloud profile or set, a YouTube channel or playlist, a feed on an operator-added host)
is listed first (`sources.listing`), and its newest `--limit` tracks are fetched as a few windows each.
"""

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
    spread: dict[str, float | None] = {}    # page tracks: link -> its length when the listing says
    listed: list[Any] = []                  # page tracks already in (duplicates, conflicts): no fetch
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
            raise errors.EnrolError("Usage: spy enrol ARTIST FILE_OR_FOLDER_OR_LINK_OR_PAGE... "
                                    "(or spy enrol --manifest FILE.csv)")
        pages, others = _split_pages(settings, args.sources, pre)
        items = items_from_sources(args.artist, others, pre) if others else []
        if pages:
            page_items, listed = _items_from_pages(settings, args.artist, pages, args.limit, pre, spread)
            items += page_items
    for p in pre.problems:
        print(f"skipped: {p}", file=sys.stderr)
    for o in listed:
        print(f"{o.status}: {o.item.where}: {o.message}", file=sys.stderr)
    if args.dry_run:
        for item in items:
            print(f"would enrol: {item.where}: {item.artist} / {item.title or item.link or item.path}")
        print(f"{len(items)} track(s) would be enrolled; {len(listed)} already in; {len(pre.problems)} skipped.")
        return 0 if not pre.problems and not any(o.status == "conflict" for o in listed) else 1
    if not items:
        print("Nothing to enrol." if not listed else "Nothing new to enrol.", file=sys.stderr)
        return 0 if listed and not pre.problems and not any(o.status == "conflict" for o in listed) else 1
    backbone = Backbone.load("msd_musicnn")
    bar = _progress(len(items), "enrolling")
    t0 = time.perf_counter()

    def on_item(o: Any) -> None:
        bar.update(1)
        if o.status != "added" or args.verbose:
            bar.write(f"{o.status}: {o.item.where}: {o.message}", file=sys.stderr)

    with Index(settings.database) as index, _link_fetcher(settings, windows, spread) as fetch:
        report = enrol_items(items, index, backbone, settings, hop_s=ENROL_HOP_S, on_item=on_item, fetch=fetch)
    bar.close()
    report.outcomes[:0] = listed
    if corrected:
        _mark_enrolled(settings, report, corrected)
    secs = sum(o.track.duration_s for o in report.outcomes if o.status == "added" and o.track)
    dt = time.perf_counter() - t0
    conflicts = report.count("conflict")
    print(f"Enrolled {report.count('added')} track(s) ({secs / 60:.1f} min of audio in {dt:.1f} s, "
          f"{secs / max(dt, 1e-9):.0f}x real time); {report.count('duplicate')} already in; "
          + (f"{conflicts} under another artist (see above); " if conflicts else "")
          + f"{report.count('failed')} failed; {len(pre.problems)} skipped.")
    if report.count("added"):
        print("Run `spy train` to update the model.")
    return 0 if report.count("failed") == 0 and not conflicts and not pre.problems else 1


def _split_pages(settings: Settings, sources: list[str], report: Any) -> tuple[list[Any], list[str]]:
    """Artist pages apart from everything else (files, folders, single-track links); refused pages reported."""
    from classifier.sources.links import page_of

    pages, others = [], []
    for src in sources:
        if "://" not in src:
            others.append(src)
            continue
        try:
            page = page_of(src, settings.fetch_extra_hosts)
        except errors.SpyError as exc:
            report.problems.append(f"{src}: {exc.user_message}")
            continue
        if page is None:
            others.append(src)
        else:
            pages.append(page)
    return pages, others


def _items_from_pages(settings: Settings, artist: str, pages: list[Any], limit: int | None, report: Any,
                      spread: dict[str, float | None]) -> tuple[list[Any], list[Any]]:
    """List each page (no audio yet) and pick its newest `limit` tracks; those already in are not fetched."""
    from classifier.sources.listing import list_page
    from classifier.store.index import Index
    from classifier.training.enrol import items_from_page

    limit = settings.enrol_page_limit if limit is None else limit
    with Index(settings.database) as index:
        known = {t.source: t for t in index.tracks()}
    items: list[Any] = []
    done: list[Any] = []
    for page in pages:
        try:
            listing = list_page(page, settings)
        except errors.SpyError as exc:
            report.problems.append(f"{page.url}: {exc.user_message}")
            continue
        for why in listing.refused:
            print(f"not a track: {page.url}: {why}", file=sys.stderr)
        todo, already = items_from_page(artist, listing, known, limit=limit)
        print(f"{page.url}: {len(listing.tracks)} track(s) listed ({listing.bytes_read:,} bytes read); taking the "
              f"newest {min(limit, len(listing.tracks))}: {len(todo)} to enrol, {len(already)} already in.",
              file=sys.stderr)
        for track in listing.tracks[:limit]:
            spread[track.source.url] = track.duration_s
        items += todo
        done += already
    return items, done


@contextlib.contextmanager
def _link_fetcher(settings: Settings, windows: Mapping[str, tuple[float, float]] | None = None,
                  spread: Mapping[str, float | None] | None = None) -> Iterator[Any]:
    """A blocking `fetch(link) -> iterator of one path` for enrolling links (a longer window: 120 s).

    `windows`: links to fetch at exactly `(start_s, seconds)` instead (corrected clips: the window the chat
    heard, and no more, since past it a DJ mix may already play the next artist).
    `spread`: links of an artist page's tracks, fetched as `settings.enrol_windows` windows spread over the
    track (the value is its length when the listing says), so 20 tracks cost ~30 minutes of audio, not 20 files.
    """

    def fetch(link: str) -> Iterator[Path]:
        from classifier.sources.fetch import fetch_spread, fetch_window
        from classifier.sources.links import find_source

        source = find_source(link, extra_hosts=settings.fetch_extra_hosts)
        with tempfile.TemporaryDirectory(prefix="spy-enrol-") as tmp:
            if spread is not None and link in spread:
                yield fetch_spread(source, settings, Path(tmp), count=settings.enrol_windows,
                                   window_s=settings.enrol_window_seconds, duration_hint_s=spread[link]).path
                return
            window_s = 120.0
            if windows and link in windows:
                start_s, window_s = windows[link]
                source = source.with_start(start_s)
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


def _count(text: str) -> int:
    """argparse type for --limit: a whole number of tracks, at least 1."""
    if not (text.isdigit() and len(text) < 7 and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be a whole number of tracks, 1 or more (got {text[:20]!r})")
    return int(text)


def register(sub: Any) -> None:
    sp = sub.add_parser("enrol", help="add an artist's tracks to the index")
    sp.add_argument("artist", nargs="?", help="artist name (with --from-corrections: a history record id)")
    sp.add_argument("sources", nargs="*", help="files, folders, links or artist pages (a SoundCloud profile or set, "
                    "a YouTube channel or playlist); with --from-corrections: more record ids")
    sp.add_argument("--manifest", help="CSV with columns artist,path (optional split,title)")
    sp.add_argument("--split", help="with --manifest: only rows of this split")
    sp.add_argument("--from-corrections", action="store_true",
                    help="enrol the corrected links from chat history (all waiting ones, or the record IDs given)")
    sp.add_argument("--limit", type=_count, default=None,
                    help="from an artist page: how many of its newest tracks (default: SPY_ENROL_PAGE_LIMIT, 20)")
    sp.add_argument("--dry-run", action="store_true", help="list what would be enrolled; fetch and change nothing")
    sp.add_argument("-v", "--verbose", action="store_true")
    sp.set_defaults(func=cmd_enrol)
