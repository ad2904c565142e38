"""`spy export`: the backbone network (and optionally the active artist head) as a TensorFlow SavedModel.

The layout is the one TensorFlow Serving's file-system source watches: one folder per model, one numbered
folder per version, the highest number served. A version is written under a hidden name and renamed into
place, so a server polling the folder never loads half a model.

    <out>/<model>/<version>/saved_model.pb
                            variables/
                            assets.extra/spy_export.json     what was exported, from what, with which labels

Signatures (the contract `classifier/serve/tfserving.py` and any other client rely on)

    serving_default   inputs   log_mel    float32 (n, 187, 96)   log-mel patches as `features.patches` makes them
                      outputs  tags       float32 (n, 50)        sigmoid tag probabilities, labels.txt order
                               embedding  float32 (n, 200)       the penultimate layer
                               pooled     float32 (n, 1506)      max/mean pooled mid-end features
    artists           (only with a head) the same inputs and outputs, plus
                               artists    float32 (n, n_artists) the artist head's softmax per patch, in the
                                                                 order of spy_export.json's head.labels

Why the head is optional and apart: the head is retrained whenever an artist is enrolled, the backbone never
changes. The service sends only backbone batches to TF Serving (`serving_default`) and keeps the small head
in-process, so `spy train` never needs a re-export. The `artists` signature is for clients that want one call
from patches to per-patch artist probabilities; voting over patches and the "I don't know" threshold stay
with the client (the threshold is in spy_export.json).

The exported graph computes what `Backbone.predict` computes: the pruned ("fast") network for input inside
its proof's domain (|x| <= PRUNE_DOMAIN_ABS_MAX, NaN excluded), the layer-for-layer reference otherwise,
decided per request with `tf.cond` as `predict` decides per batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from classifier.model.backbone import PRUNE_DOMAIN_ABS_MAX

if TYPE_CHECKING:  # pragma: no cover
    from classifier.model.backbone import Backbone
    from classifier.model.heads import Head

__all__ = ["SIGNATURE", "HEAD_SIGNATURE", "INPUT", "OUTPUTS", "METADATA", "FORMAT_VERSION",
           "export_backbone", "export_models", "next_version", "read_metadata"]

log = logging.getLogger(__name__)

SIGNATURE = "serving_default"
HEAD_SIGNATURE = "artists"
INPUT = "log_mel"
OUTPUTS = ("tags", "embedding", "pooled")
METADATA = Path("assets.extra") / "spy_export.json"   # TF Serving ignores assets.extra; it is ours
FORMAT_VERSION = 1


def next_version(model_dir: Path) -> int:
    """One more than the highest numbered version folder in `model_dir` (1 for a new model)."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    return max(versions, default=0) + 1


def read_metadata(version_dir: Path) -> dict[str, Any]:
    """The `spy_export.json` written next to an exported SavedModel."""
    return json.loads((Path(version_dir) / METADATA).read_text(encoding="utf-8"))


def export_backbone(backbone: "Backbone", out: Path, *, version: int | None = None,
                    head: "Head | None" = None) -> Path:
    """Write `backbone` (and `head` stacked on it) as `<out>/<backbone.name>/<version>/`.

    Parameters
    ----------
    backbone : a loaded `Backbone` (its fast and reference Keras models are both exported)
    out : the model base folder TF Serving is pointed at (`--model_base_path=<out>/<name>`)
    version : the version number (default: one more than the highest already there)
    head : an artist head trained on this backbone's features; adds the `artists` signature

    Returns
    -------
    The version folder, complete (written under a hidden name, then renamed).
    """
    import keras
    import tensorflow as tf

    if head is not None and head.backbone != backbone.name:
        raise ValueError(f"the head {head.id} was trained on {head.backbone}, not {backbone.name}")
    p = backbone.params
    model_dir = Path(out) / backbone.name
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError("TF Serving versions are positive integers")
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; pick another --version")
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = model_dir / f".tmp-{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)

    fast, reference = backbone.fast_model, backbone.model

    def network(log_mel: Any) -> dict[str, Any]:
        # NaN fails the comparison, so it takes the reference path as in Backbone.predict
        inside = tf.reduce_all(tf.abs(log_mel) <= PRUNE_DOMAIN_ABS_MAX)
        tags, embedding, pooled = tf.cond(inside, lambda: tuple(fast(log_mel, training=False)),
                                          lambda: tuple(reference(log_mel, training=False)))
        return {"tags": tags, "embedding": embedding, "pooled": pooled}

    spec = [tf.TensorSpec((None, p.patch_frames, p.n_mels), tf.float32, name=INPUT)]
    archive = keras.export.ExportArchive()
    archive.track(fast)
    archive.track(reference)
    # the first endpoint is also what TF Serving calls when a request names no signature
    archive.add_endpoint(SIGNATURE, network, input_signature=spec)
    if head is not None:
        archive.track(head.model)
        mean = tf.constant(head.mean, tf.float32)
        scale = tf.constant(head.scale, tf.float32)

        def artists(log_mel: Any) -> dict[str, Any]:
            out = network(log_mel)
            z = (out[head.config.feature] - mean) / scale     # Head.predict's standardisation, in float32
            return {**out, "artists": head.model(z, training=False)}

        archive.add_endpoint(HEAD_SIGNATURE, artists, input_signature=spec)
    t0 = time.perf_counter()
    try:
        archive.write_out(str(tmp), verbose=False)
        meta = _metadata(backbone, version, head)
        (tmp / METADATA).parent.mkdir(parents=True, exist_ok=True)
        (tmp / METADATA).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s version %d to %s in %.1f s", backbone.name, version, final, time.perf_counter() - t0)
    return final


def _metadata(backbone: "Backbone", version: int, head: "Head | None") -> dict[str, Any]:
    import keras
    import tensorflow as tf

    p = backbone.params
    shapes = {"tags": [-1, len(backbone.labels)], "embedding": [-1, 200], "pooled": [-1, 1506]}
    signatures: dict[str, Any] = {SIGNATURE: {"inputs": {INPUT: [-1, p.patch_frames, p.n_mels]}, "outputs": shapes}}
    if head is not None:
        signatures[HEAD_SIGNATURE] = {"inputs": {INPUT: [-1, p.patch_frames, p.n_mels]},
                                      "outputs": {**shapes, "artists": [-1, len(head.labels)]}}
    return {
        "format": FORMAT_VERSION,
        "model": backbone.name,
        "version": version,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "signatures": signatures,
        "params": dataclasses.asdict(p),
        "tag_labels": list(backbone.labels),
        "head": None if head is None else {
            "id": head.id, "labels": list(head.labels), "feature": head.config.feature, "rule": head.config.rule,
            "threshold": head.threshold, "created": head.created,
        },
    }


def export_models(names: Sequence[str], out: Path, *, version: int | None = None,
                  head: "Head | None" = None) -> list[Path]:
    """Export each named backbone; `head` goes on top of the backbone it was trained on."""
    from classifier.model.backbone import Backbone

    written = []
    for name in names:
        backbone = Backbone.load(name)
        written.append(export_backbone(backbone, out, version=version,
                                       head=head if head is not None and head.backbone == name else None))
    return written
