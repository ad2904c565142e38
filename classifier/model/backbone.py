"""The pretrained musicnn tagger/embedding network (Pons & Serra 2019), ported to Keras 3, weights loaded once.

Two Keras graphs are built from the original TF1 checkpoint:

- the *reference* port, layer for layer what `musicnn.models.build_musicnn` builds (792,079 parameters);
- the *fast* port, the same function with the front-end filters that are provably dead left out and the
  frequency max taken before the bias, ReLU and batch norm. `Backbone.predict` runs it (about 4x fewer
  multiply-adds for msd_musicnn) and falls back to the reference for input outside the proof's domain.

TensorFlow and Keras are imported lazily, so `BackboneParams`/`load_params` cost nothing to import.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import threading
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

__all__ = [
    "Backbone",
    "BackboneOutput",
    "BackboneParams",
    "PRUNE_DOMAIN_ABS_MAX",
    "build_fast",
    "build_reference",
    "load_params",
    "load_weights",
    "models_root",
    "read_checkpoint",
]

# Where each model's checkpoint sits inside the musicnn package (the only thing we use from it). msd_vgg is
# not a Backbone (different network); only bench/second_backbone.py reads it.
_MODEL_FILES = "classifier.model.files"   # the package that pyproject.toml maps onto models/
_CHECKPOINT_DIRS = {"msd_musicnn": "MSD_musicnn", "mtt_musicnn": "MTT_musicnn", "msd_vgg": "MSD_vgg"}
_BN_EPSILON = 1e-3   # tf.compat.v1.layers.batch_normalization's default
_N_TIMBRAL = 204     # int(1.6 * 128) filters per timbral branch
_N_TEMPORAL = 51     # int(1.6 * 32) filters per temporal branch
_N_MIDEND = 64
_N_DENSE = 200
_N_TAGS = 50
_N_FEATURES = 2 * _N_TIMBRAL + 3 * _N_TEMPORAL + 3 * _N_MIDEND   # 753 per frame

# Inputs whose magnitude stays below this are inside the domain where the dead-filter proof holds. A log-mel
# log10(1 + 1e4 * mel) is at most ~43 even for float32's largest mel, so only nonsense falls back.
PRUNE_DOMAIN_ABS_MAX = 1.0e4


@dataclass(frozen=True, slots=True)
class BackboneParams:
    """The DSP settings the network was trained with (read from `models/<name>/params.json`)."""

    name: str
    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    fmin: float = 0.0
    fmax: float = 8000.0
    patch_frames: int = 187
    log_scale: float = 10000.0
    pad_mode: str = "reflect"
    mel_norm: str = "slaney"
    htk: bool = False


@dataclass(frozen=True, slots=True)
class BackboneOutput:
    """Per-patch network outputs.

    tags : np.ndarray [shape=(n, 50), dtype=float32]
        Sigmoid tag probabilities (the taggram), in `Backbone.labels` order.
    embedding : np.ndarray [shape=(n, 200), dtype=float32]
        The 'penultimate' layer: dense 200 + ReLU + batch norm.
    pooled : np.ndarray [shape=(n, 1506), dtype=float32]
        Temporal max and mean of the 753 mid-end features, interleaved (max0, mean0, max1, ...),
        before the back end's batch norm.
    """

    tags: np.ndarray
    embedding: np.ndarray
    pooled: np.ndarray


def models_root() -> Traversable:
    """The installed `models/` folder: one folder per model with params.json, labels.txt and MODEL_CARD.md.

    pyproject.toml installs the top-level models/ as the package `classifier.model.files`; importlib.resources
    finds it in a checkout (editable install) and in a wheel install alike.
    """
    return resources.files(_MODEL_FILES)


def _model_file(name: str, file: str) -> Traversable:
    path = models_root() / name / file
    if not path.is_file():
        known = sorted(p.name for p in models_root().iterdir() if p.is_dir() and (p / "params.json").is_file())
        raise ValueError(f"unknown model {name!r} (no models/{name}/{file}); known: {known}")
    return path


def load_params(name: str) -> BackboneParams:
    """Read `models/<name>/params.json`; the name in the file must match the folder."""
    data = json.loads(_model_file(name, "params.json").read_text(encoding="utf-8"))
    params = BackboneParams(**data)
    if params.name != name:
        raise ValueError(f"models/{name}/params.json names {params.name!r}")
    return params


def load_labels(name: str) -> tuple[str, ...]:
    """`models/<name>/labels.txt`, one tag per line, in network output order."""
    lines = _model_file(name, "labels.txt").read_text(encoding="utf-8").splitlines()
    return tuple(line for line in lines if line)


def checkpoint_prefix(name: str) -> str:
    """The checkpoint's file prefix inside the installed musicnn package (files `.index`, `.data-*`)."""
    if name not in _CHECKPOINT_DIRS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(_CHECKPOINT_DIRS)}")
    # find_spec locates the package without running any of its (TF1) code
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the musicnn package (its checkpoint files) is not installed")
    return str(Path(list(spec.submodule_search_locations)[0]) / _CHECKPOINT_DIRS[name]) + "/"


def read_checkpoint(name: str) -> dict[str, np.ndarray]:
    """Every inference variable of the TF1 checkpoint by its TF1 name (Adam slots left out)."""
    import tensorflow as tf

    # The reader takes the prefix as is; tf.train.load_checkpoint would see a directory and follow the
    # `checkpoint` file, which names the author's training machine.
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_prefix(name))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if not key.endswith(("/Adam", "/Adam_1")) and not key.startswith("beta")
    }


# --- the reference port: layer for layer what musicnn's models.build_musicnn builds ------------------

# TF1 variable scope (tf.compat.v1.layers numbers them in creation order) -> our Keras layer name.
_SCOPES = {
    "batch_normalization": "input_bn",
    "conv2d": "timbral_74_conv", "batch_normalization_1": "timbral_74_bn",
    "conv2d_1": "timbral_77_conv", "batch_normalization_2": "timbral_77_bn",
    "conv2d_2": "temporal_128_conv", "batch_normalization_3": "temporal_128_bn",
    "conv2d_3": "temporal_64_conv", "batch_normalization_4": "temporal_64_bn",
    "conv2d_4": "temporal_32_conv", "batch_normalization_5": "temporal_32_bn",
    "conv2d_5": "midend_1_conv", "batch_normalization_6": "midend_1_bn",
    "conv2d_6": "midend_2_conv", "batch_normalization_7": "midend_2_bn",
    "conv2d_7": "midend_3_conv", "batch_normalization_8": "midend_3_bn",
    "batch_normalization_9": "pool_bn",
    "dense": "dense", "batch_normalization_10": "dense_bn",
    "dense_1": "tags",
}
_BN_KEYS = ("gamma", "beta", "moving_mean", "moving_variance")


@dataclass(frozen=True, slots=True)
class _Branch:
    name: str                   # Keras layer prefix, e.g. "timbral_74"
    scope: str                  # TF1 conv scope holding its kernel and bias
    bn_scope: str
    kernel: tuple[int, int]     # (time, frequency)
    padding: str                # "valid" on the time-padded input (timbral) or "same" (temporal)
    filters: int


def _branches(n_mels: int) -> tuple[_Branch, ...]:
    return (
        _Branch("timbral_74", "conv2d", "batch_normalization_1", (7, int(0.4 * n_mels)), "valid", _N_TIMBRAL),
        _Branch("timbral_77", "conv2d_1", "batch_normalization_2", (7, int(0.7 * n_mels)), "valid", _N_TIMBRAL),
        _Branch("temporal_128", "conv2d_2", "batch_normalization_3", (128, 1), "same", _N_TEMPORAL),
        _Branch("temporal_64", "conv2d_3", "batch_normalization_4", (64, 1), "same", _N_TEMPORAL),
        _Branch("temporal_32", "conv2d_4", "batch_normalization_5", (32, 1), "same", _N_TEMPORAL),
    )


def _bn(name: str) -> keras.layers.Layer:
    from keras import layers

    return layers.BatchNormalization(epsilon=_BN_EPSILON, name=name)


def _input_and_bn(n_frames: int, n_mels: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    import keras
    from keras import layers

    patches = keras.Input((n_frames, n_mels), name="log_mel")
    x = layers.Reshape((n_frames, n_mels, 1), name="add_channel")(patches)
    return patches, _bn("input_bn")(x)


def _interleaved_pool(x: Any) -> Any:
    """(n, time, c) -> (n, 2c). The original concatenates (n, c, 1) max and mean tensors on the last axis
    and flattens, which interleaves them: max0, mean0, max1, mean1, ..."""
    from keras import ops

    return ops.reshape(ops.stack([ops.max(x, axis=1), ops.mean(x, axis=1)], axis=-1), (-1, 2 * x.shape[-1]))


def _mid_and_back_end(frontend: keras.KerasTensor) -> list[keras.KerasTensor]:
    """(n, 187, 561) front-end features -> [tags (n, 50), penultimate (n, 200), pooled (n, 1506)]."""
    from keras import layers

    mid = []
    y = frontend
    for i in (1, 2, 3):
        # TF1 ran these as conv2d over a one-channel (time, feature) image with the kernel spanning all
        # features: that is a Conv1D over time with the features as channels
        z = layers.ZeroPadding1D(3, name=f"midend_{i}_pad")(y)
        z = layers.Conv1D(_N_MIDEND, 7, activation="relu", name=f"midend_{i}_conv")(z)
        z = _bn(f"midend_{i}_bn")(z)
        y = z if i == 1 else layers.Add(name=f"midend_{i}_res")([z, y])
        mid.append(y)
    features = layers.Concatenate(axis=-1, name="midend")([frontend, *mid])   # (n, 187, 753)
    pooled = layers.Lambda(_interleaved_pool, name="pooled")(features)       # (n, 1506)
    y = _bn("pool_bn")(pooled)
    y = layers.Dense(_N_DENSE, activation="relu", name="dense")(y)           # dropout: a no-op here
    penultimate = _bn("dense_bn")(y)
    tags = layers.Dense(_N_TAGS, activation="sigmoid", name="tags")(penultimate)
    return [tags, penultimate, pooled]


def build_reference(n_frames: int = 187, n_mels: int = 96) -> keras.Model:
    """The musicnn network as plain Keras layers, one per TF1 layer, untrained (see `load_weights`).

    Outputs `[tags (n, 50), penultimate (n, 200), pooled (n, 1506)]`; 792,079 parameters.
    """
    import keras
    from keras import layers

    patches, x = _input_and_bn(n_frames, n_mels)
    # The timbral branches pad time only, after the batch norm (so with zeros of the normalised input);
    # frequency is max-pooled away afterwards, so 'valid' there is what the original does.
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name="timbral_pad")(x)
    features = []
    for b in _branches(n_mels):
        y = layers.Conv2D(b.filters, b.kernel, padding=b.padding, activation="relu", name=f"{b.name}_conv")(
            padded if b.padding == "valid" else x
        )
        y = _bn(f"{b.name}_bn")(y)
        y = layers.MaxPooling2D(pool_size=(1, y.shape[2]), name=f"{b.name}_pool")(y)
        features.append(layers.Reshape((n_frames, b.filters), name=f"{b.name}_squeeze")(y))
    frontend = layers.Concatenate(axis=-1, name="frontend")(features)          # (n, 187, 561)
    return keras.Model(patches, _mid_and_back_end(frontend), name="musicnn")


def load_weights(model: keras.Model, variables: dict[str, np.ndarray]) -> None:
    """Copy TF1 checkpoint variables into those layers of `model` named in `_SCOPES` (Keras checks shapes)."""
    names = {layer.name for layer in model.layers}
    for scope, layer_name in _SCOPES.items():
        if layer_name not in names:
            continue
        keys = _BN_KEYS if scope.startswith("batch_normalization") else ("kernel", "bias")
        values = [variables[f"{scope}/{k}"] for k in keys]
        if layer_name.startswith("midend") and layer_name.endswith("_conv"):
            values[0] = values[0][:, :, 0, :]     # (7, features, 1, filters) -> Conv1D (7, features, filters)
        model.get_layer(layer_name).set_weights(values)


# --- the fast port: the same function, with provably dead filters left out ------------------------------


def _bn_affine(variables: dict[str, np.ndarray], scope: str) -> tuple[np.ndarray, np.ndarray]:
    """Inference batch norm as y = x * scale + shift, in float64."""
    gamma, beta, mean, var = (variables[f"{scope}/{k}"].astype(np.float64) for k in _BN_KEYS)
    scale = gamma / np.sqrt(var + _BN_EPSILON)
    return scale, beta - mean * scale


def dead_filters(variables: dict[str, np.ndarray], branch: _Branch, abs_max: float = PRUNE_DOMAIN_ABS_MAX) -> np.ndarray:
    """Front-end filters whose ReLU output is exactly zero for every input with |x| <= abs_max.

    Training left most timbral filters dead (negative bias, weights decayed to ~1e-30). Interval arithmetic
    proves it: after the input batch norm every tap lies in [lo, hi], or is 0 where time is zero-padded, so
    a filter's pre-activation is at most bias + sum(max(w * lo, w * hi, 0)). Where that bound is negative by
    more than float32 rounding could make up, ReLU returns 0 and the branch outputs the constant BN(0) for
    that filter, whatever the input.

    Returns
    -------
    dead : np.ndarray [shape=(filters,), dtype=bool]
    """
    s, t = _bn_affine(variables, "batch_normalization")
    lo, hi = sorted((t[0] - s[0] * abs_max, t[0] + s[0] * abs_max))
    w = variables[f"{branch.scope}/kernel"].astype(np.float64).reshape(-1, branch.filters)
    bias = variables[f"{branch.scope}/bias"].astype(np.float64)
    bound = bias + np.maximum(np.maximum(w * lo, w * hi), 0.0).sum(axis=0)
    # float32 accumulation error stays far below 1e-4 of the magnitudes summed
    return bound < -1e-4 * (np.abs(bias) + np.abs(w).sum(axis=0) * max(abs(lo), abs(hi)))


@functools.cache
def _fast_layers() -> tuple[type, type]:
    """The fast port's two custom layers (defined on first use so that Keras is imported lazily)."""
    import keras
    from keras import ops

    class SignedReluBN(keras.layers.Layer):
        """relu(sign * m + bias) * scale + shift per channel, on (n, time, c) frequency maxima.

        With a per-channel batch-norm scale s, max_f BN(relu(z_f)) = BN(relu(max_f z_f)) if s > 0 and
        BN(relu(min_f z_f)) if s < 0. The conv kernel comes pre-multiplied by sign(s), so one max over
        frequency serves both (min_f z = -max_f(-z)); bias, ReLU and batch norm then run on the pooled
        tensor, not on the (time x frequency x filters) one.
        """

        def __init__(self, sign: np.ndarray, bias: np.ndarray, scale: np.ndarray, shift: np.ndarray, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._init = {k: np.asarray(v, np.float32) for k, v in
                          (("sign", sign), ("bias", bias), ("scale", scale), ("shift", shift))}

        def build(self, input_shape: tuple[int | None, ...]) -> None:
            for key, value in self._init.items():
                var = self.add_weight(shape=value.shape, initializer="zeros", trainable=False, name=key)
                var.assign(value)
                setattr(self, key, var)

        def call(self, m: Any) -> Any:
            return ops.relu(m * self.sign + self.bias) * self.scale + self.shift

    class Scatter(keras.layers.Layer):
        """(n, time, live) -> (n, time, 561): live features back in their places, dead ones as constants."""

        def __init__(self, index: np.ndarray, constants: np.ndarray, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._index = np.asarray(index, np.int32)
            self._constants = np.asarray(constants, np.float32)

        def call(self, live: Any) -> Any:
            if self._constants.size:
                n, t = ops.shape(live)[0], ops.shape(live)[1]
                const = ops.broadcast_to(ops.convert_to_tensor(self._constants), (n, t, self._constants.size))
                live = ops.concatenate([live, const], axis=-1)
            return ops.take(live, ops.convert_to_tensor(self._index), axis=-1)

    return SignedReluBN, Scatter


def build_fast(
    variables: dict[str, np.ndarray], n_frames: int = 187, n_mels: int = 96, *, prune: bool = True
) -> keras.Model:
    """The reference network with dead front-end filters removed and the frequency max taken first.

    Computes what `build_reference` computes, to float32 rounding, for every input with
    |x| <= PRUNE_DOMAIN_ABS_MAX (for any input if prune=False). Weights are loaded here.
    """
    import keras
    from keras import layers, ops

    SignedReluBN, Scatter = _fast_layers()
    patches, x = _input_and_bn(n_frames, n_mels)
    padded = layers.ZeroPadding2D(((3, 3), (0, 0)), name="timbral_pad")(x)
    maps, kernels, live_pos, dead_pos, dead_values = [], [], [], [], []
    offset = 0
    for b in _branches(n_mels):
        dead = dead_filters(variables, b) if prune else np.zeros(b.filters, bool)
        live = np.flatnonzero(~dead)
        scale, shift = _bn_affine(variables, b.bn_scope)
        live_pos.extend(offset + live)
        dead_pos.extend(offset + np.flatnonzero(dead))
        dead_values.extend(shift[dead])                   # BN(relu(z <= 0)) = BN(0) = shift
        offset += b.filters
        if live.size == 0:
            continue
        sign = np.where(scale[live] < 0, -1.0, 1.0)
        conv = layers.Conv2D(live.size, b.kernel, padding=b.padding, use_bias=False, name=f"{b.name}_live_conv")
        y = conv(padded if b.padding == "valid" else x)
        kernels.append((conv, variables[f"{b.scope}/kernel"][..., live] * sign.astype(np.float32)))
        y = layers.Lambda(lambda t: ops.max(t, axis=2), name=f"{b.name}_freq_max")(y)
        bias = variables[f"{b.scope}/bias"][live]
        maps.append(SignedReluBN(sign, bias, scale[live], shift[live], name=f"{b.name}_relu_bn")(y))
    live_all = maps[0] if len(maps) == 1 else layers.Concatenate(axis=-1, name="frontend_live")(maps)
    # original feature j sits at position order[j] of [live..., dead...]
    order = np.argsort(np.asarray(live_pos + dead_pos, np.int64), kind="stable")
    frontend = Scatter(order, np.asarray(dead_values), name="frontend")(live_all)
    model = keras.Model(patches, _mid_and_back_end(frontend), name="musicnn_fast")
    load_weights(model, variables)
    for conv, kernel in kernels:
        conv.set_weights([kernel.astype(np.float32)])
    return model


# --- the runtime wrapper ---------------------------------------------------------------------------------


def compile_model(model: keras.Model, *, jit_compile: bool = False) -> Callable[[Any], tuple[tf.Tensor, ...]]:
    """One `tf.function` over `model` with an open batch dimension: traced once, whatever the batch size.

    Returns fn(x (b, 187, 96) float32) -> (tags, penultimate, pooled) tensors.
    """
    import tensorflow as tf

    frames, mels = model.inputs[0].shape[1:]
    spec = tf.TensorSpec((None, frames, mels), tf.float32)
    return tf.function(lambda x: tuple(model(x, training=False)), input_signature=[spec],
                       jit_compile=jit_compile, autograph=False)


class Backbone:
    """A loaded musicnn model: `predict` maps log-mel patches to tags, embeddings and pooled features.

    Build with `Backbone.load(name)`; instances are cached per process and name.

    Attributes
    ----------
    name : str
    params : BackboneParams
    labels : tuple[str, ...]
        The 50 tags, in `BackboneOutput.tags` column order.
    model : keras.Model
        The layer-for-layer port (792,079 parameters); `predict` falls back to it for out-of-domain input.
    fast_model : keras.Model
        The same function without the provably dead front-end filters; what `predict` normally runs.
    """

    def __init__(self, name: str, params: BackboneParams, labels: tuple[str, ...],
                 model: keras.Model, fast_model: keras.Model) -> None:
        self.name = name
        self.params = params
        self.labels = labels
        self.model = model
        self.fast_model = fast_model
        self._lock = threading.Lock()
        self._fast = compile_model(fast_model)
        self._reference = compile_model(model)

    @classmethod
    def load(cls, name: str = "msd_musicnn") -> Backbone:
        """Build the network and load its checkpoint, once per process and name."""
        return _load_cached(name)

    def predict(self, patches: np.ndarray, batch_size: int = 32) -> BackboneOutput:
        """Run the network over log-mel patches.

        Parameters
        ----------
        patches : np.ndarray [shape=(n, 187, 96), dtype=float32]
            Log-mel patches as `features.log_mel` makes them; n may be 0.
        batch_size : int
            Most patches per network call. The compiled graph's batch dimension is open, so the last,
            shorter batch runs as it is: padding it would cost a 10-patch clip 32 patches of compute, and one
            trace serves every size anyway.

        Returns
        -------
        BackboneOutput with tags (n, 50), embedding (n, 200), pooled (n, 1506), all float32.
        """
        p = self.params
        x = np.asarray(patches, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != (p.patch_frames, p.n_mels):
            raise ValueError(f"patches must be (n, {p.patch_frames}, {p.n_mels}), got {x.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = x.shape[0]
        out = BackboneOutput(
            tags=np.empty((n, _N_TAGS), np.float32),
            embedding=np.empty((n, _N_DENSE), np.float32),
            pooled=np.empty((n, 2 * _N_FEATURES), np.float32),
        )
        with self._lock:
            for start in range(0, n, batch_size):
                batch = x[start : start + batch_size]
                # the pruned graph is exact inside its proof's domain; NaN fails this test too
                inside = max(float(batch.max()), -float(batch.min())) <= PRUNE_DOMAIN_ABS_MAX
                tags, emb, pooled = (self._fast if inside else self._reference)(batch)
                stop = start + len(batch)
                out.tags[start:stop] = tags.numpy()
                out.embedding[start:stop] = emb.numpy()
                out.pooled[start:stop] = pooled.numpy()
        return out


@functools.lru_cache(maxsize=None)
def _load_cached(name: str) -> Backbone:
    import tensorflow as tf

    # The port matches the original in float32 (1e-4 on tags); TF32 convs and matmuls, on by default on
    # Ampere and later GPUs, keep 10 mantissa bits. No effect on CPU.
    tf.config.experimental.enable_tensor_float_32_execution(False)
    params = load_params(name)
    labels = load_labels(name)
    if len(labels) != _N_TAGS:
        raise ValueError(f"models/{name}/labels.txt has {len(labels)} labels, the network {_N_TAGS}")
    variables = read_checkpoint(name)
    model = build_reference(params.patch_frames, params.n_mels)
    load_weights(model, variables)
    fast = build_fast(variables, params.patch_frames, params.n_mels)
    return Backbone(name, params, labels, model, fast)
