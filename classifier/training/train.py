"""`spy train`: fit a head on everything enrolled, calibrate its threshold, save it, make it the active one."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from classifier import errors
from classifier.model.heads import Head, HeadConfig, fit
from classifier.store import registry
from classifier.store.index import Index
from classifier.training.calibrate import calibrate

__all__ = ["train"]


def train(index: Index, heads_dir: Path, cfg: HeadConfig = HeadConfig(), *, query_hop_s: float = 3.0,
          backbone: str = "msd_musicnn", split: str | None = None, calibrate_threshold: bool = True,
          activate: bool = True) -> Head:
    """Train a head on everything enrolled (or one split), calibrate it, save it under `heads_dir`, register it.

    query_hop_s : the hop queries are sliced at (`slice_hop_seconds`): calibration slices its chunks the same way.
    """
    t0 = time.perf_counter()
    ds = index.dataset(split=split)
    if len(ds.labels) < 2:
        raise errors.EnrolError(f"Training needs at least two enrolled artists; the index has {len(ds.labels)}. "
                                "Enrol more with `spy enrol ARTIST FILES...`.")
    model, mean, scale = fit(ds, cfg)
    t_fit = time.perf_counter() - t0
    threshold, rates = calibrate(ds, cfg, hop_s=query_hop_s) if calibrate_threshold else (0.0, {})
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    head_id = time.strftime("head-%Y%m%d-%H%M%S", time.gmtime()) + f"-{len(ds.labels)}a"
    summary = {"artists": len(ds.labels), "tracks": int(len(np.unique(ds.track))), "slices": int(len(ds.y)),
               "fit_seconds": round(t_fit, 2), "total_seconds": round(time.perf_counter() - t0, 2),
               "calibration": rates}
    head = Head(head_id, ds.labels, backbone, cfg, mean, scale, model, threshold, created, summary)
    folder = head.save(heads_dir / head_id)
    index.register_model(head_id, arch=head.arch, path=folder, artists=len(ds.labels), summary=summary,
                         activate=activate)
    registry.forget_cached()
    return head
