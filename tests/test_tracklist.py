"""The tracklist on a procedural DJ mix, through the real network and a small trained head."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from classifier import pipeline
from classifier.model.heads import Head
from classifier.model.segment import SegmentParams
from classifier.model.setlist import Tracklist
from classifier.store import registry
from classifier.tracklist import TracklistBuilder, TracklistParams, tracklist
from classifier.training import demo, mixes

pytestmark = pytest.mark.slow

# 50-s tracks, so the minimum length and the guard shrink with them (the product's are 60 s and 15 s), and so
# does the penalty: a boundary between two 16-slice tracks lowers the cost by 8 D, not the 30 D of two
# 60-slice ones (segment.py's docstring)
PARAMS = TracklistParams(segment=SegmentParams(min_track_s=24.0, guard_s=6.0, penalty=2.0))
SEGMENT_KEYS = {"start_s", "end_s", "artists", "verdict", "confidence", "genres", "boundary_strength"}


@pytest.fixture(scope="module")
def mix(tmp_path_factory: pytest.TempPathFactory) -> mixes.Mix:
    """Four 50-s excerpts, never heard in training (other seeds): Deep Pulse, Iron Riff twice (two different
    tracks by one artist, back to back), Slow Tide; tempo shifted with and without key lock, 8-s crossfades."""
    d = tmp_path_factory.mktemp("mix")

    def src(artist: str, seed: int) -> mixes.Source:
        path = demo.write_wav(d / f"{artist.replace(' ', '')}-{seed}.wav", demo.render(artist, 50.0, seed=seed))
        return mixes.Source(path, artist, f"{artist} {seed}", 50.0)

    plan = [mixes.Excerpt(src("Deep Pulse", 7), 0.0, 50.0, tempo=1.04, key_lock=True),
            mixes.Excerpt(src("Iron Riff", 7), 0.0, 50.0, tempo=0.96, key_lock=False, fade_in_s=8.0),
            mixes.Excerpt(src("Iron Riff", 8), 0.0, 50.0, tempo=1.0, key_lock=True, fade_in_s=8.0),
            mixes.Excerpt(src("Slow Tide", 7), 0.0, 50.0, tempo=1.02, key_lock=False, fade_in_s=8.0)]
    return mixes.render_mix(plan, d / "mix.mp3", sr=22050)


@pytest.fixture(scope="module")
def head(trained) -> Head:  # noqa: ANN001
    h = registry.current_head(trained.database)
    assert h is not None
    return h


@pytest.fixture(scope="module")
def analysis(mix: mixes.Mix, backbone) -> pipeline.Analysis:  # noqa: ANN001
    return pipeline.analyse(mix.path, [backbone], hop_s=3.0, keep_pooled=True)


def test_the_mix_is_cut_at_its_crossfades_and_each_track_named(mix: mixes.Mix, analysis: pipeline.Analysis,
                                                               head: Head) -> None:
    tl = tracklist(analysis, head, "mix.mp3", PARAMS)
    truth = [t.boundary_s for t in mix.tracks[1:]]
    found = [s.start_s for s in tl.segments[1:]]
    assert len(found) == len(truth), (found, truth)
    for got, want in zip(found, truth):
        assert abs(got - want) <= 6.0, (found, truth)     # two 3-s slices from the middle of an 8-s crossfade
    assert [s.artists[0].label for s in tl.segments] == [t.artist for t in mix.tracks]
    # two Iron Riff tracks in a row stay two tracks: the boundary between them is strong
    assert tl.segments[2].boundary_strength is not None and tl.segments[2].boundary_strength >= PARAMS.merge_below


def test_segments_tile_the_set_and_carry_the_heads_verdict(analysis: pipeline.Analysis, head: Head) -> None:
    tl = tracklist(analysis, head, "mix.mp3", PARAMS)
    assert tl.segments[0].start_s == 0.0 and tl.segments[-1].end_s == pytest.approx(analysis.seconds)
    assert all(a.end_s == b.start_s for a, b in zip(tl.segments, tl.segments[1:]))
    assert tl.segments[0].boundary_strength is None
    for s in tl.segments:
        assert 1 <= len(s.artists) <= 5 and len({c.label for c in s.artists}) == len(s.artists)
        assert [c.score for c in s.artists] == sorted((c.score for c in s.artists), reverse=True)
        assert s.confidence == s.artists[0].score
        assert s.verdict == ("identified" if s.confidence >= head.threshold else "unknown")
        assert s.genres and len(s.genres) <= 3
    assert tl.model_id == head.id and tl.model_artists == len(head.labels)
    assert {"decode", "network", "head", "segment"} <= set(tl.timings)


def test_json_has_exactly_the_documented_shape(analysis: pipeline.Analysis, head: Head) -> None:
    d = json.loads(json.dumps(tracklist(analysis, head, "mix.mp3", PARAMS).to_dict()))
    assert set(d) == {"source", "seconds", "segments", "model", "timings"}
    assert set(d["model"]) == {"id", "artists"}
    for s in d["segments"]:
        assert set(s) == SEGMENT_KEYS
        assert all(set(a) == {"name", "score"} for a in s["artists"])
        assert s["verdict"] in ("identified", "unknown")
    assert Tracklist.from_dict(d).to_dict() == d


def test_a_weak_same_artist_boundary_merges_a_strong_one_does_not(analysis: pipeline.Analysis, head: Head) -> None:
    kept = tracklist(analysis, head, "mix.mp3", replace(PARAMS, merge_below=0.0))
    merged = tracklist(analysis, head, "mix.mp3", replace(PARAMS, merge_below=1.0))   # every boundary is "weak"
    assert [s.artists[0].label for s in kept.segments] == ["Deep Pulse", "Iron Riff", "Iron Riff", "Slow Tide"]
    assert [s.artists[0].label for s in merged.segments] == ["Deep Pulse", "Iron Riff", "Slow Tide"]
    assert merged.segments[1].start_s == kept.segments[1].start_s and merged.segments[1].end_s == kept.segments[2].end_s


def test_chunks_fed_one_by_one_give_the_same_tracklist(analysis: pipeline.Analysis, head: Head) -> None:
    whole = tracklist(analysis, head, "mix.mp3", PARAMS).to_dict()
    b = TracklistBuilder(head, PARAMS)
    cuts = [0, 17, 40, analysis.n_slices]
    edges = [0.0, float(analysis.starts_s[17]), float(analysis.starts_s[40]), analysis.seconds]  # chunk k's audio
    for k, (lo, hi) in enumerate(zip(cuts, cuts[1:])):
        assert analysis.pooled is not None
        b.add(replace(analysis, starts_s=analysis.starts_s[lo:hi], embedding=analysis.embedding[lo:hi],
                      pooled=analysis.pooled[lo:hi], tags={key: v[lo:hi] for key, v in analysis.tags.items()},
                      offset_s=edges[k], seconds=edges[k + 1] - edges[k]))
    chunked = b.finish("mix.mp3").to_dict()
    for d in (whole, chunked):
        d.pop("timings")
    assert chunked["segments"] == whole["segments"]
    with pytest.raises(ValueError, match="time order"):
        b.add(replace(analysis, starts_s=analysis.starts_s[:3], embedding=analysis.embedding[:3],
                      pooled=analysis.pooled[:3] if analysis.pooled is not None else None,
                      tags={k: v[:3] for k, v in analysis.tags.items()}))


def test_a_set_streamed_from_disk_in_chunks(mix: mixes.Mix, backbone, head: Head) -> None:  # noqa: ANN001
    """What the engine will do for a long set: analyse consecutive windows of the file and feed each."""
    b = TracklistBuilder(head, PARAMS)
    for start in np.arange(0.0, mix.seconds, 60.0):
        b.add(pipeline.analyse(mix.path, [backbone], hop_s=3.0, start_s=float(start), duration_s=60.0,
                               keep_pooled=True, min_seconds=0.0))
    tl = b.finish("mix.mp3")
    assert [s.artists[0].label for s in tl.segments] == [t.artist for t in mix.tracks]
    assert tl.seconds == pytest.approx(mix.seconds, abs=0.1)


def test_one_track_is_one_segment(demo_lib: dict[str, list[Path]], backbone, head: Head) -> None:  # noqa: ANN001
    a = pipeline.analyse(demo_lib["Slow Tide"][0], [backbone], hop_s=3.0, keep_pooled=True)
    tl = tracklist(a, head, "one.wav", TracklistParams())      # 24 s: shorter than two 60-s tracks
    assert len(tl.segments) == 1
    s = tl.segments[0]
    assert (s.start_s, s.end_s, s.boundary_strength) == (0.0, pytest.approx(a.seconds), None)
    assert s.artists[0].label == "Slow Tide"


def test_finishing_without_audio_is_refused(head: Head) -> None:
    with pytest.raises(ValueError, match="no analysed slices"):
        TracklistBuilder(head).finish("nothing")
