"""Write the golden outputs of the ORIGINAL musicnn graph, which tests/test_backbone.py checks our port against.

Run once, by hand, in an environment that has the full musicnn package and tf-keras (the original code
builds with `tf.compat.v1.layers`, which TF 2.x only provides through legacy Keras)::

    TF_USE_LEGACY_KERAS=1 python tools/make_golden.py            # refuses to overwrite
    TF_USE_LEGACY_KERAS=1 python tools/make_golden.py --force    # regenerate on purpose

The inputs are deterministic synthetic clips (a house loop, a filtered noise burst, a chirp, a clipped
square-wave riff and silence) turned into log-mel patches with the original feature recipe, with one fix:
the original takes the log of a float16 array, which NumPy 2 keeps in float16 (10000 * x overflows to inf);
here the float16 mel is cast to float32 before the log.

Each `tests/golden/musicnn_<name>.npz` holds:

    patches       float32 (n, 187, 96)   the network input
    patch_names   str     (n,)           which clip, which patch
    taggram       float32 (n, 50)        sigmoid tag probabilities
    penultimate   float32 (n, 200)       the 200-unit embedding (after its batch norm)
    max_pool      float32 (n, 753)       temporal max pool of the 753 mid-end features
    mean_pool     float32 (n, 753)       temporal mean pool
    wave16k       float32 (96000,)       the house loop at 16 kHz
    logmel_whole  float32 (376, 96)      the original recipe's log-mel of the whole loop
    labels        str     (50,)
    versions      str                    library versions that produced the file
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import scipy.signal

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
PATCH_FRAMES = 187

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "tests" / "golden"
# our model name -> the original's directory / define_model name
ORIGINAL_NAMES = {"msd_musicnn": "MSD_musicnn", "mtt_musicnn": "MTT_musicnn"}


# --- deterministic synthetic audio ---------------------------------------------------------------


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(round(seconds * SR))) / SR


def _note_hz(midi: int) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12.0)


def _saw(freq: float, t: np.ndarray) -> np.ndarray:
    return 2.0 * ((freq * t) % 1.0) - 1.0


def house_loop(seconds: float = 6.0, bpm: float = 124.0, seed: int = 1) -> np.ndarray:
    """Four-on-the-floor kick, off-beat hats, claps on 2 and 4, a saw bass line and minor-seventh pads."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    out = np.zeros(n)
    beat = 60.0 / bpm
    # kick: a 150 -> 45 Hz sine sweep with a fast decay
    kt = _t(0.35)
    kick = np.sin(2 * np.pi * np.cumsum(45.0 + 105.0 * np.exp(-kt * 30.0)) / SR) * np.exp(-kt * 9.0)
    hat_sos = scipy.signal.butter(4, 7000.0, "highpass", fs=SR, output="sos")
    clap_sos = scipy.signal.butter(2, [900.0, 2500.0], "bandpass", fs=SR, output="sos")
    hat = scipy.signal.sosfilt(hat_sos, rng.standard_normal(int(0.08 * SR))) * np.exp(-_t(0.08) * 50.0)
    clap = scipy.signal.sosfilt(clap_sos, rng.standard_normal(int(0.2 * SR))) * np.exp(-_t(0.2) * 18.0)

    def put(sound: np.ndarray, at_s: float, gain: float) -> None:
        i = int(round(at_s * SR))
        j = min(n, i + len(sound))
        if i < n:
            out[i:j] += gain * sound[: j - i]

    bass_notes = [33, 33, 45, 33, 36, 36, 48, 38]          # A1 A1 A2 A1 C2 C2 C3 D2, one per beat
    chords = [[57, 60, 64, 67], [53, 57, 60, 64], [55, 59, 62, 65], [52, 55, 59, 62]]   # Am7 Fmaj7 G7 Em7
    bass_sos = scipy.signal.butter(2, 400.0, "lowpass", fs=SR, output="sos")
    pad_sos = scipy.signal.butter(2, 2500.0, "lowpass", fs=SR, output="sos")
    for b in range(int(seconds / beat) + 1):
        t0 = b * beat
        put(kick, t0, 0.9)
        put(hat, t0 + beat / 2, 0.25)
        if b % 2 == 1:
            put(clap, t0, 0.5)
        bt = _t(beat * 0.45)
        bass = scipy.signal.sosfilt(bass_sos, _saw(_note_hz(bass_notes[b % 8]), bt)) * np.exp(-bt * 4.0)
        put(bass, t0 + beat / 2, 0.5)
        if b % 4 == 0:
            pt = _t(beat * 4)
            pad = sum(_saw(_note_hz(m) * d, pt) for m in chords[(b // 4) % 4] for d in (0.997, 1.003))
            pad = scipy.signal.sosfilt(pad_sos, pad) * np.minimum(1.0, pt / 0.3) * np.exp(-pt * 0.4)
            put(pad, t0, 0.06)
    return (0.8 * out / np.max(np.abs(out))).astype(np.float32)


def noise_burst(seconds: float = 3.0, seed: int = 2) -> np.ndarray:
    """Band-passed noise that swells and cuts off, three times."""
    rng = np.random.default_rng(seed)
    sos = scipy.signal.butter(4, [300.0, 3000.0], "bandpass", fs=SR, output="sos")
    x = scipy.signal.sosfilt(sos, rng.standard_normal(int(seconds * SR)))
    phase = (_t(seconds) % 1.0)
    env = np.where(phase < 0.7, phase / 0.7, 0.0) ** 2
    return (0.7 * x * env / np.max(np.abs(x * env))).astype(np.float32)


def chirp(seconds: float = 3.0) -> np.ndarray:
    """A logarithmic sine sweep from 50 Hz to 7 kHz."""
    return (0.5 * scipy.signal.chirp(_t(seconds), 50.0, seconds, 7000.0, method="logarithmic")).astype(np.float32)


def square_riff(seconds: float = 3.0) -> np.ndarray:
    """A loud, hard-clipped square-wave riff (eighth notes at 124 bpm)."""
    t = _t(seconds)
    riff = [45, 48, 52, 55, 57, 55, 52, 48]
    eighth = 60.0 / 124.0 / 2.0
    midi = np.array(riff)[(t / eighth).astype(int) % len(riff)]
    phase = np.cumsum(440.0 * 2.0 ** ((midi - 69) / 12.0)) / SR
    return np.clip(4.0 * np.sign(np.sin(2 * np.pi * phase)) + 0.3 * np.sin(2 * np.pi * 3 * phase), -1.0, 1.0).astype(np.float32)


def silence(seconds: float = 3.0) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


# --- the original feature recipe, with the float16 log fixed --------------------------------------


def original_log_mel(y: np.ndarray) -> np.ndarray:
    """musicnn's `batch_data` log-mel: (frames, 96) float32.

    librosa < 0.10 padded with 'reflect' by default; librosa 0.10 changed the default to 'constant',
    so the pad mode is spelled out. The float16 cast is the original's (it quantises the mel the network
    was trained on); the log runs in float32 because NumPy 2 would keep it in float16 and overflow.
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y, sr=SR, hop_length=HOP, n_fft=N_FFT, n_mels=N_MELS, pad_mode="reflect"
    ).T
    mel16 = mel.astype(np.float16)
    if not np.all(np.isfinite(mel16)):
        raise ValueError("mel power overflows float16; lower the clip's level")
    return np.log10(1.0 + 10000.0 * mel16.astype(np.float32)).astype(np.float32)


def patches_of(logmel: np.ndarray) -> np.ndarray:
    """Non-overlapping 187-frame patches, as the original's batch_data(overlap=n_frames)."""
    starts = range(0, logmel.shape[0] - PATCH_FRAMES + 1, PATCH_FRAMES)
    return np.stack([logmel[s : s + PATCH_FRAMES] for s in starts]).astype(np.float32)


# --- the original network ---------------------------------------------------------------------------


def run_original(name: str, patches: np.ndarray) -> dict[str, np.ndarray]:
    """Build musicnn's own TF1 graph, restore its checkpoint and run every patch (not `extractor()`,
    which repeats the first batch's features for every later batch)."""
    import tensorflow as tf
    from musicnn import configuration, models

    tf.compat.v1.disable_eager_execution()
    original = ORIGINAL_NAMES[name]
    labels = configuration.MSD_LABELS if original.startswith("MSD") else configuration.MTT_LABELS
    pkg = importlib.util.find_spec("musicnn").submodule_search_locations[0]
    graph = tf.Graph()
    with graph.as_default():
        with tf.name_scope("model"):
            x = tf.compat.v1.placeholder(tf.float32, [None, PATCH_FRAMES, N_MELS])
            is_training = tf.compat.v1.placeholder(tf.bool)
            y, _, _, _, _, _, mean_pool, max_pool, penultimate = models.define_model(
                x, is_training, original, len(labels)
            )
            taggram = tf.nn.sigmoid(y)
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, os.path.join(pkg, original) + "/")
            out = sess.run(
                {"taggram": taggram, "penultimate": penultimate, "max_pool": max_pool, "mean_pool": mean_pool},
                feed_dict={x: patches, is_training: False},
            )
    out = {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
    out["labels"] = np.array(labels)
    return out


def build_inputs() -> dict[str, np.ndarray]:
    clips = {
        "house_loop": house_loop(),
        "noise_burst": noise_burst(),
        "chirp": chirp(),
        "square_riff": square_riff(),
        "silence": silence(),
    }
    patches, names = [], []
    logmels = {}
    for clip, wave in clips.items():
        logmels[clip] = original_log_mel(wave)
        for i, p in enumerate(patches_of(logmels[clip])):
            patches.append(p)
            names.append(f"{clip}[{i}]")
    return {
        "patches": np.stack(patches),
        "patch_names": np.array(names),
        "wave16k": clips["house_loop"],
        "logmel_whole": logmels["house_loop"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite existing golden files")
    parser.add_argument("--out-dir", type=Path, default=GOLDEN_DIR)
    parser.add_argument("--models", nargs="+", default=sorted(ORIGINAL_NAMES), choices=sorted(ORIGINAL_NAMES))
    args = parser.parse_args(argv)

    targets = {name: args.out_dir / f"musicnn_{name}.npz" for name in args.models}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not args.force:
        print(f"refusing to overwrite {', '.join(existing)} (pass --force)", file=sys.stderr)
        return 1
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        print("set TF_USE_LEGACY_KERAS=1: the original graph needs tf.compat.v1.layers (tf-keras)", file=sys.stderr)
        return 2

    import librosa
    import tensorflow as tf

    inputs = build_inputs()
    versions = f"tensorflow {tf.__version__}, numpy {np.__version__}, librosa {librosa.__version__}, scipy {scipy.__version__}"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, path in targets.items():
        out = run_original(name, inputs["patches"])
        np.savez_compressed(path, **inputs, **out, versions=np.array(versions))
        print(f"{path}: {len(inputs['patches'])} patches, {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
