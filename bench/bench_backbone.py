"""Time the backbone's speed levers on this machine: how fast does one 30-s clip (10 patches) go through?

    python bench/bench_backbone.py                  # every lever, a table on stdout
    python bench/bench_backbone.py --quick          # the default Backbone.predict only

The cores are shared with other processes, so in-process variants are timed round-robin (each round runs
every variant once, so a burst of outside load hits all of them alike) and each keeps its best run over
`--rounds` rounds. Thread settings must be fixed before TensorFlow starts, so those rows run in child
processes, each measured twice (best kept).

Columns: `clip ms` is the wall time for 10 patches (one 30-s clip, what a chat request costs), `cpu ms` the
CPU time this process spent on it (all threads; less sensitive to other load than wall time);
`patches/s` is the throughput over 64 patches (a long file); `max |dtags|` is the deviation from the
original network's golden taggram (tests demand <= 1e-4).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOLDEN = ROOT / "tests" / "golden"
CLIP_PATCHES = 10
LONG_PATCHES = 64


@dataclass
class Variant:
    label: str
    batch: int
    fn: Callable[[np.ndarray], Any]      # (b, 187, 96) -> (tags, ...)
    pad: bool                            # zero-pad the last batch to `batch` (one fixed input shape)
    model: str = "msd_musicnn"
    clip_s: float = float("inf")
    clip_cpu_s: float = float("inf")
    long_s: float = float("inf")
    dev: float = float("nan")


def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / f"musicnn_{name}.npz") as z:
        return {k: z[k] for k in z.files}


def _patches(n: int) -> np.ndarray:
    golden = _golden("msd_musicnn")["patches"]
    return np.resize(golden, (n, *golden.shape[1:])).astype(np.float32)


def _batched(v: Variant, x: np.ndarray) -> np.ndarray:
    outs = []
    for start in range(0, len(x), v.batch):
        chunk = x[start : start + v.batch]
        n = len(chunk)
        if v.pad and n < v.batch:
            chunk = np.concatenate([chunk, np.zeros((v.batch - n, *chunk.shape[1:]), np.float32)])
        outs.append(np.asarray(v.fn(chunk)[0])[:n])
    return np.concatenate(outs)


def macs_per_patch(model: Any) -> int:
    """Multiply-accumulates of the convolutions and dense layers for one patch."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv1D", "Conv2D"):
            total += int(np.prod(layer.output.shape[1:-1])) * int(np.prod(layer.kernel.shape))
        elif kind == "Dense":
            total += int(np.prod(layer.kernel.shape))
    return total


def _variants(batches: list[int], quick: bool) -> list[Variant]:
    import tensorflow as tf

    from classifier.model import backbone

    bb = backbone.Backbone.load("msd_musicnn")
    mtt = backbone.Backbone.load("mtt_musicnn")
    default = [
        Variant("DEFAULT    Backbone.predict", 32, lambda x: (bb.predict(x, batch_size=32).tags,), False),
        Variant("DEFAULT    Backbone.predict, mtt_musicnn", 32, lambda x: (mtt.predict(x, batch_size=32).tags,), False,
                model="mtt_musicnn"),
    ]
    if quick:
        return default

    def fixed(model: Any, batch: int, jit: bool = False) -> Callable:
        spec = tf.TensorSpec((batch, 187, 96), tf.float32)
        return tf.function(lambda x: tuple(model(x, training=False)), input_signature=[spec], jit_compile=jit,
                           autograph=False)

    ref_open = backbone.compile_model(bb.model)
    fast_open = backbone.compile_model(bb.fast_model)
    plain = backbone.build_fast(backbone.read_checkpoint("msd_musicnn"), prune=False)
    rows = [Variant("reference  keras model.predict", b, lambda x, b=b: (bb.model.predict(x, batch_size=b, verbose=0)[0],),
                    False) for b in batches]
    rows += [Variant("reference  tf.function fixed batch (padded)", b, fixed(bb.model, b), True) for b in batches]
    rows += [Variant("reference  tf.function open batch (no pad)", b, ref_open, False) for b in batches]
    rows += [Variant("reference  XLA jit_compile, fixed batch 10", 10, fixed(bb.model, 10, jit=True), True)]
    rows += [Variant("max-first, no pruning, open batch", 32, backbone.compile_model(plain), False)]
    rows += [Variant("pruned     tf.function fixed batch (padded)", b, fixed(bb.fast_model, b), True) for b in batches]
    rows += [Variant("pruned     tf.function open batch (no pad)", b, fast_open, False) for b in batches]
    rows += [Variant("pruned     XLA jit_compile, fixed batch 10", 10, fixed(bb.fast_model, 10, jit=True), True)]
    return rows + default


def run(variants: list[Variant], rounds: int) -> None:
    """Warm every variant up, check it against the golden taggram, then time them round-robin."""
    goldens = {}
    for v in variants:
        g = goldens.setdefault(v.model, _golden(v.model))
        v.dev = float(np.abs(_batched(v, g["patches"]) - g["taggram"]).max())
    clip, long = _patches(CLIP_PATCHES), _patches(LONG_PATCHES)
    for _ in range(rounds):
        for v in variants:
            c0, t0 = time.process_time(), time.perf_counter()
            _batched(v, clip)
            v.clip_s = min(v.clip_s, time.perf_counter() - t0)
            v.clip_cpu_s = min(v.clip_cpu_s, time.process_time() - c0)
    for _ in range(2):
        for v in variants:
            t0 = time.perf_counter()
            _batched(v, long)
            v.long_s = min(v.long_s, time.perf_counter() - t0)


def _row(label: str, batch: int, clip_s: float, cpu_s: float, long_s: float, dev: float) -> str:
    return (f"{label:<52} {batch:>5} {1000 * clip_s:>8.0f} {1000 * cpu_s:>8.0f} {LONG_PATCHES / long_s:>10.1f}"
            f" {dev:>12.1e}")


def _child(args: argparse.Namespace) -> None:
    import tensorflow as tf

    if args.intra is not None:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.inter is not None:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    from classifier.model import backbone

    bb = backbone.Backbone.load("msd_musicnn")
    model = bb.fast_model if args.child == "pruned" else bb.model
    v = Variant(args.child, 32, backbone.compile_model(model), False)
    run([v], args.rounds)
    print(json.dumps({"clip_s": v.clip_s, "clip_cpu_s": v.clip_cpu_s, "long_s": v.long_s, "dev": v.dev}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed runs per variant (best kept)")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--quick", action="store_true", help="only the default Backbone.predict")
    parser.add_argument("--no-threads", action="store_true", help="skip the thread-setting child processes")
    parser.add_argument("--threads-only", action="store_true", help="only the thread-setting child processes")
    parser.add_argument("--child", choices=["reference", "pruned"], help=argparse.SUPPRESS)
    parser.add_argument("--intra", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--inter", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.child:
        _child(args)
        return 0

    import tensorflow as tf

    print(f"tensorflow {tf.__version__}, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f}; "
          f"best of {args.rounds} round-robin runs")
    if not args.threads_only:
        from classifier.model import backbone

        for name in ("msd_musicnn", "mtt_musicnn"):
            b = backbone.Backbone.load(name)
            print(f"MACs per patch, {name}: reference {macs_per_patch(b.model) / 1e9:.3f} G, "
                  f"pruned {macs_per_patch(b.fast_model) / 1e9:.3f} G")
    print(f"{'variant':<52} {'batch':>5} {'clip ms':>8} {'cpu ms':>8} {'patches/s':>10} {'max |dtags|':>12}")
    if not args.threads_only:
        variants = _variants(args.batches, args.quick)
        run(variants, args.rounds)
        for v in variants:
            print(_row(v.label, v.batch, v.clip_s, v.clip_cpu_s, v.long_s, v.dev), flush=True)
    if args.quick or args.no_threads:
        return 0
    configs = [
        ("TF default", None, None, {}),
        ("intra 2, inter 1", 2, 1, {}),
        ("intra 1, inter 2", 1, 2, {}),
        ("intra 1, inter 1", 1, 1, {}),
        ("TF default, oneDNN off", None, None, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    ]
    for model in ("reference", "pruned"):
        for text, intra, inter, env in configs:
            cmd = [sys.executable, __file__, "--child", model, "--rounds", str(args.rounds)]
            cmd += ["--intra", str(intra)] if intra else []
            cmd += ["--inter", str(inter)] if inter else []
            results = []
            for _ in range(2):
                proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, check=True)
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            best = {k: min(r[k] for r in results) for k in ("clip_s", "clip_cpu_s", "long_s")}
            print(_row(f"{model:<10} open batch 32, {text}", 32, best["clip_s"], best["clip_cpu_s"], best["long_s"],
                       results[0]["dev"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
