"""Tempo variants and synthetic mixes, through the real ffmpeg: durations, pitch, crossfades, ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier.training import augment, demo, mixes

SR = 16000


def _tone(path: Path, freq: float, seconds: float) -> Path:
    t = np.arange(int(seconds * demo.SR)) / demo.SR
    return demo.write_wav(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32))


def _pitch(wave: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.argmax(spec) * SR / wave.size)


@pytest.mark.parametrize("stretcher", ["atempo", "rubberband"])
def test_key_lock_changes_tempo_and_keeps_pitch(tmp_path: Path, stretcher: str) -> None:
    if stretcher == "rubberband" and not augment.has_rubberband():
        pytest.skip("this ffmpeg has no rubberband filter")
    src = _tone(tmp_path / "a.wav", 440.0, 10.0)
    out = augment.render(src, augment.Variant("lock+6", tempo=1.06, key_lock=True), SR, stretcher=stretcher)
    assert out.size / SR == pytest.approx(10.0 / 1.06, rel=0.01)
    assert _pitch(out[SR:-SR]) == pytest.approx(440.0, abs=3.0)


def test_vinyl_moves_tempo_and_pitch_together(tmp_path: Path) -> None:
    src = _tone(tmp_path / "a.wav", 440.0, 10.0)
    out = augment.render(src, augment.Variant("vinyl-6", tempo=0.94, key_lock=False), SR)
    assert out.size / SR == pytest.approx(10.0 / 0.94, rel=0.01)
    assert _pitch(out[SR:-SR]) == pytest.approx(440.0 * 0.94, abs=3.0)


def test_eq_and_excerpts(tmp_path: Path) -> None:
    src = _tone(tmp_path / "a.wav", 100.0, 10.0)
    clean = augment.render(src, augment.CLEAN, SR, start_s=2.0, duration_s=5.0)
    cut = augment.render(src, augment.Variant("hp", eq="highpass=f=1000:poles=2"), SR, start_s=2.0, duration_s=5.0)
    assert clean.size == pytest.approx(5 * SR, abs=2)
    assert np.sqrt(np.mean(cut ** 2)) < 0.05 * np.sqrt(np.mean(clean ** 2))   # a 100-Hz tone two decades down


def test_parse_variants() -> None:
    vs = augment.parse_variants("vinyl-6, lock+4")
    assert [(v.name, v.tempo, v.key_lock) for v in vs] == [("vinyl-6", 0.94, False), ("lock+4", 1.04, True)]
    assert augment.parse_variants("") == ()
    for bad in ("fast", "vinyl", "lock+0", "vinyl+60"):
        with pytest.raises(ValueError):
            augment.parse_variants(bad)


def test_write_leaves_a_wav_and_fails_cleanly(tmp_path: Path) -> None:
    src = _tone(tmp_path / "a.wav", 440.0, 3.0)
    out = augment.write(src, augment.Variant("v", tempo=1.5, key_lock=False), tmp_path / "v.wav", SR)
    assert out.stat().st_size > 40_000
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all" * 100)
    from classifier import errors

    with pytest.raises(errors.Undecodable):
        augment.write(bad, augment.CLEAN, tmp_path / "x.wav", SR)
    with pytest.raises(errors.Undecodable):
        augment.render(bad, augment.CLEAN, SR)


def test_plan_mix_draws_what_it_says() -> None:
    sources = [mixes.Source(Path(f"/x/{i}.mp3"), f"artist {i % 4}", str(i), 150.0 + 30 * i) for i in range(20)]
    plan = mixes.plan_mix(sources, np.random.default_rng(1), n_tracks=12)
    assert len(plan) == 12 and len({e.source.path for e in plan}) == 12
    assert sum(e.key_lock for e in plan) == 6
    assert plan[0].fade_in_s == 0 and all(8.0 <= e.fade_in_s <= 32.0 for e in plan[1:])
    for e in plan:
        assert 120.0 <= e.seconds <= 240.0 and 0 <= e.start_s and e.start_s + e.seconds <= e.source.duration_s + 1e-3
        assert 0.94 <= e.tempo <= 1.06
    with pytest.raises(ValueError):
        mixes.plan_mix(sources, np.random.default_rng(1), n_tracks=21)


def test_render_mix_truth(tmp_path: Path) -> None:
    tones = [mixes.Source(_tone(tmp_path / f"{f}.wav", f, 20.0), f"A{f}", str(f), 20.0) for f in (200, 400, 800)]
    plan = [mixes.Excerpt(tones[0], 0.0, 20.0), mixes.Excerpt(tones[1], 0.0, 20.0, tempo=1.25, key_lock=False,
                                                               fade_in_s=4.0),
            mixes.Excerpt(tones[2], 5.0, 10.0, fade_in_s=2.0)]
    mix = mixes.render_mix(plan, tmp_path / "mix.wav", sr=SR)
    a, b, c = mix.tracks
    assert mix.seconds == pytest.approx(20 + 16 + 10 - 4 - 2, abs=1e-3)
    assert (a.start_s, b.start_s, c.start_s) == pytest.approx((0.0, 16.0, 30.0))
    assert (b.boundary_s, c.boundary_s) == pytest.approx((18.0, 31.0))
    assert (a.solo_end_s, b.solo_start_s, b.solo_end_s, c.solo_start_s) == pytest.approx((16.0, 20.0, 30.0, 32.0))
    np.testing.assert_allclose(mix.intervals(), [[0.0, 18.0], [18.0, 31.0], [31.0, 40.0]], atol=1e-6)
    from classifier.audio import decode

    wave = decode.load(mix.path, SR)
    assert wave.size / SR == pytest.approx(mix.seconds, abs=0.01)
    # the vinyl-sped 400-Hz tone sounds at 500 Hz in its solo part; the crossfade holds both tones
    assert _pitch(wave[int(21 * SR): int(29 * SR)]) == pytest.approx(500.0, abs=3.0)
    assert mixes.Mix.load(mix.save(tmp_path / "mix.json")) == mix


@pytest.mark.slow
def test_enrolment_with_tempo_variants_keeps_one_track(tmp_path: Path, backbone, settings) -> None:  # noqa: ANN001
    import tempfile

    from classifier.store.index import Index
    from classifier.training.enrol import Report, enrol_items, items_from_sources

    track = demo.write_wav(tmp_path / "t.wav", demo.render("Deep Pulse", 12.0, seed=3))
    variants = augment.parse_variants("vinyl-6,lock+8")
    before = set(Path(tempfile.gettempdir()).glob("spy-augment-*"))
    with Index(tmp_path / "i.sqlite3") as index:
        plain = enrol_items(items_from_sources("A", [str(track)], Report()), index, backbone, settings, hop_s=1.5)
        index.forget("A")
        rep = enrol_items(items_from_sources("A", [str(track)], Report()), index, backbone, settings, hop_s=1.5,
                          variants=variants)
        ds = index.dataset()
    n_plain = plain.outcomes[0].track.n_slices  # type: ignore[union-attr]
    info = rep.outcomes[0].track
    assert rep.outcomes[0].status == "added" and info is not None
    # 12 s at 1.5 s: 7 slices; at 0.94x about 12.8 s: 7-8; at 1.08x about 11.1 s: 6
    assert n_plain == 7 and 7 + 6 <= info.n_slices - n_plain <= 8 + 7
    assert len(set(ds.track.tolist())) == 1 and len(ds.y) == info.n_slices     # all copies are one track
    assert ds.starts.min() >= 0.0 and ds.starts.max() + 2.976 <= 12.0 + 0.2     # on the recording's own clock
    assert set(Path(tempfile.gettempdir()).glob("spy-augment-*")) == before       # nothing left on disk
