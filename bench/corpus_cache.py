"""Enrol a whole manifest (train and test rows) into a cache index for head experiments.

    python bench/corpus_cache.py ../shared/corpus/dev.csv data/dev-cache.sqlite3 [--hop 1.5]

Resumable (tracks already in are skipped). The artist experiments in bench/ (artist_experiments,
feature_variants, confidence_rules, finetune_midend, second_backbone) read it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from classifier.model.backbone import Backbone  # noqa: E402
from classifier.settings import load_settings  # noqa: E402
from classifier.store.index import Index  # noqa: E402
from classifier.training.enrol import Report, enrol_items, items_from_manifest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest", type=Path)
    ap.add_argument("db", type=Path)
    ap.add_argument("--hop", type=float, default=1.5)
    args = ap.parse_args()
    settings = load_settings()
    rep = Report()
    items = items_from_manifest(args.manifest, rep)
    bb = Backbone.load("msd_musicnn")
    t0 = time.perf_counter()
    done = [0]

    def on_item(o):  # noqa: ANN001, ANN202
        done[0] += 1
        print(f"[{done[0]}/{len(items)}] {time.perf_counter() - t0:7.1f}s {o.status:9s} {o.item.artist} / "
              f"{o.item.path.name if o.item.path else o.item.link}: {o.message}", flush=True)

    with Index(args.db) as index:
        r = enrol_items(items, index, bb, settings, hop_s=args.hop, on_item=on_item)
    print("problems:", rep.problems, "added", r.count("added"), "dup", r.count("duplicate"), "failed", r.count("failed"))


if __name__ == "__main__":
    main()
