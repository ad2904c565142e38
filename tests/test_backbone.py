"""The musicnn port: golden outputs of the original network, stability, shapes, and the pruned fast path."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from classifier.model.backbone import (
    PRUNE_DOMAIN_ABS_MAX,
    Backbone,
    BackboneOutput,
    BackboneParams,
    load_params,
    models_root,
)
from tests.float32 import assert_close_scaled

GOLDEN_DIR = Path(__file__).parent / "golden"
MODELS = ["msd_musicnn", "mtt_musicnn"]

# Measured against the original TF1 graph (tools/make_golden.py) on x86-64 CPUs with oneDNN: tags 6e-7,
# penultimate 5e-6, pooled 1.7e-4 absolute on values up to ~170 (1e-6 of their scale). Tolerances: tests/float32.py.


@pytest.fixture(scope="module", params=MODELS)
def backbone(request: pytest.FixtureRequest) -> Backbone:
    return Backbone.load(request.param)


@pytest.fixture(scope="module")
def msd() -> Backbone:
    return Backbone.load("msd_musicnn")


def _golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN_DIR / f"musicnn_{name}.npz") as z:
        return {k: z[k] for k in z.files}


def _log_mel_patches(wave: np.ndarray, params: BackboneParams) -> np.ndarray:
    """The training recipe (float16 mel, float32 log), cut into non-overlapping patches."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=wave, sr=params.sample_rate, n_fft=params.n_fft, hop_length=params.hop_length, n_mels=params.n_mels,
        fmin=params.fmin, fmax=params.fmax, htk=params.htk, norm=params.mel_norm, pad_mode=params.pad_mode,
    ).T
    logmel = np.log10(1.0 + params.log_scale * mel.astype(np.float16).astype(np.float32))
    n = logmel.shape[0] // params.patch_frames
    return logmel[: n * params.patch_frames].reshape(n, params.patch_frames, params.n_mels).astype(np.float32)


def _clips(sr: int, seconds: float = 6.1) -> dict[str, np.ndarray]:
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(0)
    return {
        "silence": np.zeros_like(t, dtype=np.float32),
        "white_noise": (0.3 * rng.standard_normal(t.size)).astype(np.float32),
        "tone_440": (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32),
    }


# --- the port against the original network -----------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_golden_file_is_consistent(name: str) -> None:
    g = _golden(name)
    n = len(g["patches"])
    assert g["patches"].shape == (n, 187, 96) and g["patches"].dtype == np.float32
    assert g["taggram"].shape == (n, 50) and g["penultimate"].shape == (n, 200)
    assert np.all(np.isfinite(g["patches"])) and g["patches"].std() > 0.5
    # the house loop's two patches are the first 374 frames of its whole-file log-mel
    np.testing.assert_array_equal(g["patches"][:2].reshape(-1, 96), g["logmel_whole"][:374])
    assert g["wave16k"].shape == (96000,)


def test_predict_matches_original(backbone: Backbone) -> None:
    g = _golden(backbone.name)
    out = backbone.predict(g["patches"], batch_size=4)
    assert_close_scaled(out.tags, g["taggram"], what="tags")
    assert_close_scaled(out.embedding, g["penultimate"], what="penultimate")
    pooled = np.stack([g["max_pool"], g["mean_pool"]], axis=-1).reshape(len(g["patches"]), -1)
    assert_close_scaled(out.pooled, pooled, what="pooled")


def test_reference_model_matches_original(backbone: Backbone) -> None:
    g = _golden(backbone.name)
    tags, penultimate, _ = (np.asarray(o) for o in backbone.model(g["patches"], training=False))
    assert_close_scaled(tags, g["taggram"], what="tags")
    assert_close_scaled(penultimate, g["penultimate"], what="penultimate")


def test_labels_are_the_originals(backbone: Backbone) -> None:
    assert backbone.labels == tuple(_golden(backbone.name)["labels"])
    assert len(set(backbone.labels)) == 50


def test_parameter_count(backbone: Backbone) -> None:
    assert backbone.model.count_params() == 792_079


def test_original_python_code_not_imported(backbone: Backbone) -> None:
    # find_spec("musicnn") may register the (empty) package; its TF1 modules must never load
    assert not [m for m in sys.modules if m.startswith("musicnn.")]
    assert "tf_keras" not in sys.modules


# --- the pruned fast path ---------------------------------------------------------------------------


def test_fast_path_equals_reference_on_random_input(backbone: Backbone) -> None:
    """Random patches over the whole log-mel range, plus extremes, where dead filters would show."""
    rng = np.random.default_rng(1)
    x = np.concatenate([
        rng.uniform(0.0, 9.0, (4, 187, 96)),
        rng.uniform(0.0, 45.0, (2, 187, 96)),            # beyond any real log-mel
        np.full((1, 187, 96), 45.0),
        rng.normal(0.0, 50.0, (1, 187, 96)),              # negative and large, still in the domain
    ]).astype(np.float32)
    ref = [np.asarray(o) for o in backbone.model(x, training=False)]
    fast = [np.asarray(o) for o in backbone.fast_model(x, training=False)]
    for name, f, r in zip(("tags", "penultimate", "pooled"), fast, ref):
        assert_close_scaled(f, r, what=name)


def test_out_of_domain_input_uses_the_reference(msd: Backbone) -> None:
    x = np.random.default_rng(2).uniform(0.0, 5.0, (2, 187, 96)).astype(np.float32)
    x[1, 10, 10] = 2 * PRUNE_DOMAIN_ABS_MAX
    out = msd.predict(x)
    ref = np.asarray(msd.model(x, training=False)[0])
    assert_close_scaled(out.tags, ref, what="tags")


def test_one_trace_serves_every_batch_size(msd: Backbone) -> None:
    x = np.random.default_rng(3).uniform(0.0, 5.0, (37, 187, 96)).astype(np.float32)
    for n, batch in ((1, 32), (5, 32), (37, 16), (37, 32), (3, 2)):
        msd.predict(x[:n], batch_size=batch)
    assert msd._fast.experimental_get_tracing_count() == 1


def test_predict_from_a_worker_thread(msd: Backbone) -> None:
    from concurrent.futures import ThreadPoolExecutor

    x = _golden("msd_musicnn")["patches"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        threaded = pool.submit(msd.predict, x).result()
    np.testing.assert_array_equal(threaded.tags, msd.predict(x).tags)


# --- behaviour on simple signals ---------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["silence", "white_noise", "tone_440"])
def test_simple_signals_give_finite_stable_outputs(msd: Backbone, clip: str) -> None:
    patches = _log_mel_patches(_clips(msd.params.sample_rate)[clip], msd.params)
    assert patches.shape == (2, 187, 96)
    a = msd.predict(patches)
    b = msd.predict(patches)
    for arr in (a.tags, a.embedding, a.pooled):
        assert arr.dtype == np.float32 and np.all(np.isfinite(arr))
    assert np.all((a.tags >= 0.0) & (a.tags <= 1.0))
    np.testing.assert_array_equal(a.tags, b.tags)
    np.testing.assert_array_equal(a.embedding, b.embedding)


def test_batch_size_does_not_change_results(msd: Backbone) -> None:
    clips = _clips(msd.params.sample_rate)
    patches = np.concatenate([_log_mel_patches(w, msd.params) for w in clips.values()])
    patches = np.concatenate([patches, _golden("msd_musicnn")["patches"]])
    one = msd.predict(patches, batch_size=1)
    many = msd.predict(patches, batch_size=32)
    # different batch sizes pick different oneDNN blockings (summation order): tests/float32.py
    for name in ("tags", "embedding", "pooled"):
        assert_close_scaled(getattr(one, name), getattr(many, name), what=name)


# --- shapes and rejected input ----------------------------------------------------------------------


def test_empty_input(backbone: Backbone) -> None:
    out = backbone.predict(np.zeros((0, 187, 96), np.float32))
    assert isinstance(out, BackboneOutput)
    assert out.tags.shape == (0, 50) and out.embedding.shape == (0, 200) and out.pooled.shape == (0, 1506)
    assert out.tags.dtype == out.embedding.dtype == out.pooled.dtype == np.float32


@pytest.mark.parametrize("shape", [(187, 96), (1, 186, 96), (1, 187, 128), (2, 96, 187)])
def test_wrong_shape_is_rejected(msd: Backbone, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="patches must be"):
        msd.predict(np.zeros(shape, np.float32))


def test_bad_batch_size_is_rejected(msd: Backbone) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        msd.predict(np.zeros((1, 187, 96), np.float32), batch_size=0)


# --- model files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_params_are_the_training_settings(name: str) -> None:
    p = load_params(name)
    assert p == BackboneParams(name=name)      # the defaults are musicnn's settings
    assert (models_root() / name / "MODEL_CARD.md").is_file()


def test_load_is_cached() -> None:
    assert Backbone.load("msd_musicnn") is Backbone.load("msd_musicnn")


def test_unknown_model_is_rejected() -> None:
    with pytest.raises((ValueError, FileNotFoundError)):
        Backbone.load("no_such_model")
