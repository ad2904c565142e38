"""charts: one PNG per answer, phone-sized, for verdicts and genre reports, whatever the timeline holds."""

from __future__ import annotations

import dataclasses
import struct
from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.charts import MAX_PNG_BYTES, _runs, render_chart
from classifier.model.verdict import TimelinePoint
from tests.fakes.classifier import canned_genre, canned_verdict


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("result", [
    canned_verdict(), canned_verdict(identified=False), canned_genre(),
    canned_verdict("https://www.youtube.com/watch?v=x", start=3723.0),
], ids=["identified", "unknown", "genre", "an hour in"])
def test_a_square_phone_sized_png(result: object) -> None:
    data = render_chart(result)  # type: ignore[arg-type]
    assert png_size(data) == (864, 864)
    assert 5_000 < len(data) < MAX_PNG_BYTES


def test_empty_results_and_labels_outside_the_top5_still_draw() -> None:
    empty = dataclasses.replace(canned_verdict(), artists=(), timeline=())
    assert png_size(render_chart(empty)) == (864, 864)
    odd = dataclasses.replace(canned_verdict(), timeline=(TimelinePoint(0.0, "Somebody Else"),
                                                          TimelinePoint(3.0, "Deep Pulse")))
    assert png_size(render_chart(odd)) == (864, 864)
    long_names = canned_verdict(names=tuple("An Artist With A Very Long Name Indeed " + c for c in "ABCDE"))
    assert png_size(render_chart(long_names)) == (864, 864)


def test_a_three_hour_set_stays_small() -> None:
    v = canned_verdict(slices=3600)
    data = render_chart(v)
    assert len(data) < 500_000


def test_runs_merge_consecutive_slices() -> None:
    points = [TimelinePoint(t, label) for t, label in [(0, "a"), (3, "a"), (6, "b"), (9, "a")]]
    assert _runs(points) == [("a", 0, 6.0), ("b", 6, 3.0), ("a", 9, 3.0)]
    overlapping = [TimelinePoint(t, "a") for t in (0.0, 1.5, 3.0)]
    assert _runs(overlapping) == [("a", 0.0, 4.5)]


def test_charts_can_be_drawn_from_worker_threads_at_once() -> None:
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(render_chart, [canned_verdict(), canned_genre()] * 2))
    assert len({len(o) for o in outs[::2]}) == 1, "the same verdict draws the same bytes"
