"""Enrolment: files, folders, links or a manifest -> decoded, sliced, embedded tracks in the index.

Every track is its own transaction and is skipped when its content hash is already in, so an
interrupted enrolment resumes where it stopped. A bad row or file is reported by name and the rest
still go in. The same audio under another artist is flagged ("conflict"), since one of the labels is wrong.
An artist page (`items_from_page`) resumes by link: tracks whose link is already in are not fetched again.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Mapping, Sequence

from classifier import errors, pipeline
from classifier.audio.decode import AUDIO_SUFFIXES
from classifier.model.backbone import Backbone
from classifier.settings import Settings
from classifier.store.index import Index, TrackInfo, file_hash
from classifier.training import augment, fingerprints

if TYPE_CHECKING:
    from classifier.sources.listing import Listing

__all__ = ["Item", "Outcome", "Report", "enrol_items", "items_from_sources", "items_from_manifest",
           "items_from_page", "ENROL_HOP_S"]

log = logging.getLogger(__name__)

ENROL_HOP_S = 1.5  # overlapping slices for training data: measured in README ("Levers")


@dataclass(frozen=True, slots=True)
class Item:
    """One thing to enrol. `where` names it in messages (a path, or 'manifest.csv row 12')."""

    artist: str
    path: Path | None
    link: str | None = None
    split: str | None = None
    title: str | None = None
    where: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    item: Item
    status: str               # "added" | "duplicate" | "conflict" (in under another artist) | "failed"
    message: str
    track: TrackInfo | None = None


@dataclass(slots=True)
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # rows refused before any audio was read

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)


def items_from_sources(artist: str, sources: Iterable[str], report: Report) -> list[Item]:
    """Expand files, folders (recursively, audio extensions only) and links for one artist."""
    if not artist.strip():
        raise errors.EnrolError("The artist name is empty. Usage: spy enrol ARTIST FILE_OR_FOLDER...")
    out: list[Item] = []
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            if not files:
                report.problems.append(f"{src}: no audio files in this folder")
            out += [Item(artist.strip(), f, where=str(f)) for f in files]
        elif p.is_file():
            out.append(Item(artist.strip(), p, where=str(p)))
        elif "://" in src:
            out.append(Item(artist.strip(), None, link=src, where=src))
        else:
            report.problems.append(f"{src}: no such file or folder")
    return out


def items_from_manifest(manifest: Path, report: Report, *, split: str | None = None) -> list[Item]:
    """Rows of a CSV with columns `artist,path` (optional `split`, `title`); relative paths are relative
    to the manifest. Rows with problems are reported by row number and skipped."""
    if not manifest.is_file():
        raise errors.EnrolError(f"No manifest at {manifest}.")
    # utf-8-sig: spreadsheets save "CSV UTF-8" with a byte-order mark, which would stick to the first column's name.
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        missing = {"artist", "path"} - cols
        if missing:
            raise errors.EnrolError(f"{manifest.name}: missing column(s) {', '.join(sorted(missing))}; "
                                    "the header needs at least artist,path (optional split,title).")
        out = []
        for i, row in enumerate(reader, start=2):
            where = f"{manifest.name} row {i}"
            artist = (row.get("artist") or "").strip()
            raw = (row.get("path") or "").strip()
            row_split = (row.get("split") or "").strip() or None
            if split is not None and row_split != split:
                continue
            if not artist:
                report.problems.append(f"{where}: empty artist")
                continue
            if not raw:
                report.problems.append(f"{where}: empty path")
                continue
            if "://" in raw:
                out.append(Item(artist, None, link=raw, split=row_split, title=row.get("title") or None, where=where))
                continue
            p = Path(raw).expanduser()
            p = p if p.is_absolute() else (manifest.parent / p)
            if not p.is_file():
                report.problems.append(f"{where}: no such file {raw}")
                continue
            out.append(Item(artist, p, split=row_split, title=(row.get("title") or "").strip() or None, where=where))
        return out


def items_from_page(artist: str, listing: "Listing", known: Mapping[str, TrackInfo], *,
                    limit: int) -> tuple[list[Item], list[Outcome]]:
    """The newest `limit` tracks of an artist page: the ones to enrol, and outcomes for those already in.

    `known` maps the links already in the index to their tracks (`{t.source: t for t in index.tracks()}`), so
    a re-run fetches nothing twice; a track already in under another artist is a "conflict".
    """
    if not artist.strip():
        raise errors.EnrolError("The artist name is empty. Usage: spy enrol ARTIST PAGE_LINK")
    todo: list[Item] = []
    done: list[Outcome] = []
    for number, listed in enumerate(listing.tracks[:max(0, limit)], start=1):
        item = Item(artist.strip(), None, link=listed.source.url, title=listed.title,
                    where=f"{listing.page.url} #{number}")
        existing = known.get(listed.source.url)
        if existing is None:
            todo.append(item)
        else:
            done.append(_already(item, existing))
    return todo, done


def _already(item: Item, existing: TrackInfo) -> Outcome:
    """A track already in: a plain duplicate, or a conflict when the index has it under another artist."""
    if existing.artist.casefold() == item.artist.strip().casefold():
        return Outcome(item, "duplicate", f"already enrolled as {existing.artist} / {existing.title}", existing)
    return Outcome(item, "conflict", f"this audio is already enrolled as {existing.artist} / {existing.title} "
                   f"(track #{existing.id}), not {item.artist}: one label is wrong. If it is the index's, run "
                   f"`spy forget {existing.id}` and enrol it again.", existing)


def enrol_items(items: list[Item], index: Index, backbone: Backbone, settings: Settings, *,
                hop_s: float, on_item: Callable[[Outcome], None] | None = None,
                fetch: Callable[[str], Iterator[Path]] | None = None,
                variants: Sequence[augment.Variant] = ()) -> Report:
    """Enrol each item; one transaction per track. KeyboardInterrupt stops between or inside a track,
    never leaving a half-written one (the transaction rolls back). `variants`: tempo-shifted copies of
    each track enrolled with it, as part of the same track (training/augment.py)."""
    report = Report()
    for item in items:
        try:
            outcome = _enrol_one(item, index, backbone, settings, hop_s=hop_s, fetch=fetch, variants=variants)
        except errors.SpyError as exc:
            outcome = Outcome(item, "failed", exc.user_message)
            log.debug("enrol %s failed: %s", item.where, exc.detail)
        report.outcomes.append(outcome)
        if on_item is not None:
            on_item(outcome)
    return report


def _enrol_one(item: Item, index: Index, backbone: Backbone, settings: Settings, *, hop_s: float,
               fetch: Callable[[str], Iterator[Path]] | None, variants: Sequence[augment.Variant] = ()) -> Outcome:
    if item.path is None:
        if fetch is None:
            raise errors.EnrolError("Enrolling links needs the fetcher.")
        for path in fetch(item.link or ""):
            return _enrol_file(item, path, item.link or "", index, backbone, settings, hop_s=hop_s, variants=variants)
        raise errors.FetchFailed()
    return _enrol_file(item, item.path, str(item.path), index, backbone, settings, hop_s=hop_s, variants=variants)


def _enrol_file(item: Item, path: Path, source: str, index: Index, backbone: Backbone, settings: Settings,
                *, hop_s: float, variants: Sequence[augment.Variant] = ()) -> Outcome:
    digest = file_hash(path)
    existing = index.find_hash(digest, backbone.name)
    if existing is not None:
        return _already(item, existing)
    a = pipeline.analyse(path, [backbone], hop_s=hop_s, batch_size=settings.batch_size,
                         max_seconds=settings.max_audio_seconds, min_seconds=settings.min_audio_seconds,
                         silence_dbfs=settings.silence_dbfs, decode_timeout_s=settings.decode_timeout_s,
                         keep_pooled=True)
    assert a.pooled is not None
    starts, embedding, pooled = (a.starts_s, a.embedding, a.pooled) if not variants else augment.enrolment_slices(
        path, variants, backbone, a, hop_s=hop_s, batch_size=settings.batch_size, decode_timeout_s=settings.decode_timeout_s)
    track = index.add_track(artist=item.artist, title=item.title or path.stem, source=source,
                            duration_s=a.seconds, content_hash=digest, split=item.split, backbone=backbone.name,
                            hop_s=hop_s, starts=starts, embedding=embedding, pooled=pooled)
    fingerprints.add(index, track, path)   # the known-track fingerprint; a failure leaves it to the backfill
    return Outcome(item, "added", f"{len(starts)} slices, {a.seconds:.0f} s", track)
