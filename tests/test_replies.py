"""replies: verdicts, genre reports, progress and errors as chat text, the same on every platform."""

from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot import replies
from bot.replies import HTML, MARKDOWN, PLAIN
from classifier import errors
from classifier.model.voting import Candidate
from tests.fakes.classifier import FIVE_ARTISTS, canned_genre, canned_verdict

YT = "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=3723s"


def test_an_identified_verdict_reads_well_as_plain_text() -> None:
    text = replies.identify_answer(canned_verdict(YT, start=3723.0)).render(PLAIN)
    assert text.splitlines() == [
        "🎧 I think this is Deep Pulse.",
        "1. █████░░░  62%  Deep Pulse",
        "2. █░░░░░░░  17%  Broken Glass",
        "3. █░░░░░░░  10%  Slow Tide",
        "4. █░░░░░░░   7%  Iron Riff",
        "5. ░░░░░░░░   4%  Chip Tune",
        "Confidence: 62% · 7 of 10 slices voted Deep Pulse",
        "Genre: house 41% · electronic 30% · dance 12%",
        f"Source: {YT} · 1:02:03–1:02:33",
    ]


def test_unknown_says_so_and_still_lists_the_weak_candidates() -> None:
    answer = replies.identify_answer(canned_verdict(identified=False))
    assert not answer.identified and answer.subject is None
    lines = answer.render().splitlines()
    assert lines[0] == "🤷 I don't know this one."
    assert lines[1] == "It doesn't sound enough like any of the 5 artists I know. The nearest, all weak:"
    assert [line.split("  ")[-1] for line in lines[2:7]] == list(FIVE_ARTISTS)
    assert "Confidence: 31%, too low to name anyone" in lines


def test_html_escapes_names_and_links_the_source() -> None:
    names = ("<Tag> & Co", "B", "C", "D", "E")
    verdict = canned_verdict(YT, names=names)
    text = replies.identify_answer(verdict).render(HTML)
    assert text.startswith("🎧 I think this is <b>&lt;Tag&gt; &amp; Co</b>.")
    assert "1. █████░░░  62%  &lt;Tag&gt; &amp; Co" in text
    assert f'Source: <a href="{YT.replace("&", "&amp;")}">youtube.com/watch?v=dQw4w9WgXcQ&amp;t=3723s</a>' in text
    assert "<Tag>" not in text


def test_markdown_escapes_what_discord_would_format() -> None:
    verdict = canned_verdict(YT, names=("DJ *Star*_x", "B", "C", "D", "E"))
    text = replies.identify_answer(verdict).render(MARKDOWN)
    assert "I think this is **DJ \\*Star\\*\\_x**." in text
    assert "](<https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=3723s>)" in text


def test_the_answer_exposes_fields_for_an_embed() -> None:
    a = replies.identify_answer(canned_verdict(YT, start=3723.0))
    assert (a.kind, a.identified, a.subject) == ("identify", True, "Deep Pulse")
    assert [(r.rank, r.label, r.percent, r.votes, r.slices) for r in a.rows][:2] == [
        (1, "Deep Pulse", "62%", 7, 10), (2, "Broken Glass", "17%", 2, 10)]
    assert a.rows[0].bar == "█████░░░"
    assert a.source_url == YT and a.source_where == "youtube.com/watch?v=dQw4w9WgXcQ&t=3723s"
    assert a.confidence and a.confidence.startswith("Confidence: 62%")
    assert a.fields["confidence"] == pytest.approx(0.62) and a.fields["start"] == 3723.0


def test_genre_answer_and_notes() -> None:
    a = replies.genre_answer(canned_genre(), note="I listened to the first 2 min.")
    lines = a.render().splitlines()
    assert lines[0] == "🎛 Genre: house"
    assert lines[1] == "1. ███░░░░░  41%  house"
    assert "Sounds: beat · electronic" in lines
    assert lines[-1] == "I listened to the first 2 min."
    assert replies.answer_for(canned_genre()).kind == "genre"
    assert replies.answer_for(canned_verdict()).kind == "identify"


def test_a_fetch_hint_and_the_bots_note_both_show() -> None:
    v = dataclasses.replace(canned_verdict(), hint="That looks like a long set: add ?t= for a moment.")
    assert replies.identify_answer(v, note="Also this.").note == \
        "That looks like a long set: add ?t= for a moment. Also this."


def test_long_names_are_cut_and_empty_results_still_read() -> None:
    v = canned_verdict(names=("A" * 80, "B", "C", "D", "E"))
    assert "A" * 39 + "…" in replies.identify_answer(v).render()
    empty = dataclasses.replace(canned_verdict(identified=False), artists=(), genres=())
    text = replies.identify_answer(empty).render()
    assert "It doesn't sound like any of the 5 artists I know." in text and "Genre:" not in text
    g = dataclasses.replace(canned_genre(), genres=(), descriptors=())
    assert replies.genre_answer(g).title == "🎛 I can't tell the genre of this one."


@pytest.mark.parametrize("stage, done, total, expected", [
    ("listening", 0, 0, "🎧 Listening…"),
    ("downloading", 0, 0, "⬇️ Downloading your audio…"),
    ("fetching", 0, 0, "⬇️ Fetching the audio from the link…"),
    ("analysing", 4, 10, "🔎 Analysing… 4/10 slices"),
    ("analysing", 12, 10, "🔎 Analysing… 10/10 slices"),
    ("analysing", 1, 1, "🔎 Analysing… 1/1 slice"),
    ("analysing", 7, 0, "🔎 Analysing… 7 slices"),
    ("analysing", 0, 0, "🔎 Analysing…"),
    ("done", 10, 10, "✅ Done. Writing the answer…"),
    ("something new", 0, 0, "🎧 Listening…"),
])
def test_progress_lines(stage: str, done: int, total: int, expected: str) -> None:
    assert replies.progress_text(stage, done, total) == expected


def test_error_sentences() -> None:
    assert replies.error_text(errors.NotAllowed()) == errors.NotAllowed.default_message
    assert replies.error_text(errors.TooShort("custom sentence")) == "custom sentence"
    assert replies.error_text(errors.Busy(retry_after_s=12.2)) == "I'm busy right now. Try again in 13 s."
    assert replies.error_text(errors.Busy(replies.slow_down(5), retry_after_s=75)) == \
        "Slow down a little: I listen 5 times a minute for each person. Try again in 1 min 15 s."
    assert replies.error_text(RuntimeError("secret internals")) == replies.GENERIC_ERROR
    assert replies.error_text(KeyError("x")) == "Something went wrong on my side. Please try again in a moment."


@pytest.mark.parametrize("seconds, text", [(0, "1 s"), (0.2, "1 s"), (59.0, "59 s"), (59.01, "1 min"),
                                           (60, "1 min"), (61, "1 min 1 s"), (3600, "60 min")])
def test_format_wait_never_rounds_down(seconds: float, text: str) -> None:
    assert replies.format_wait(seconds) == text


@given(st.floats(-1.0, 2.0, allow_nan=False), st.integers(1, 20))
def test_bars_have_a_fixed_width_and_grow_with_the_share(x: float, cells: int) -> None:
    b = replies.bar(x, cells)
    assert len(b) == cells and set(b) <= {"█", "░"}
    assert b.count("█") <= replies.bar(min(1.0, max(x, 0.0) + 0.2), cells).count("█")


@given(st.floats(0.0, 1.0))
def test_percent_is_a_whole_number_within_0_and_100(x: float) -> None:
    assert re.fullmatch(r"(\d|[1-9]\d|100)%", replies.percent(x))


def test_refusal_sentences() -> None:
    assert replies.file_too_big(25 << 20, 20 << 20) == \
        "That file is 25 MB; I can download up to 20 MB. Send a shorter piece, or a link."
    assert replies.file_too_big(None, 20 << 20).startswith("That file is too big; I can download up to 20 MB.")
    assert replies.file_too_big(21_500_000, 20 << 20).startswith("That file is 20.5 MB;")
    assert replies.not_audio("setlist.pdf", "application/pdf").startswith("“setlist.pdf” (application/pdf) is not audio.")
    assert replies.chat_busy(1) == "I'm already listening to a clip from this chat. Let me finish first."
    assert replies.slow_down(1) == "Slow down a little: I listen once a minute for each person."
    assert replies.usage("genre").startswith("Send /genre with a link, like /genre https://youtu.be/… 1:02:03")
    assert replies.usage("identify", prefix="!").startswith("Send !identify with a link")


def test_help_has_examples_and_platform_notes() -> None:
    text = replies.help_text(HTML, max_file_bytes=20 << 20, max_clip_seconds=120, groups="Mention me in groups.")
    assert "<b>/identify &lt;link&gt; [time]</b>" in text
    assert "/identify https://youtu.be/dQw4w9WgXcQ 1:02:03" in text
    assert "(up to 20 MB, I listen to 2:00 at most)" in text
    assert text.endswith("Mention me in groups.")
    assert replies.start_text(PLAIN).startswith("Hi! I'm Deep House Spy.\nSend me music")


def test_about_lists_the_model_and_its_artists() -> None:
    about = {"backbones": ["msd_musicnn"], "model": {"id": "head-1", "artists": list(FIVE_ARTISTS),
                                                     "created": "2025-01-01T00:00:00Z"}}
    text = replies.about_text(about, HTML)
    assert text.startswith("<b>Model head-1</b>: 5 artists")
    assert "Deep Pulse, Broken Glass, Slow Tide, Iron Riff, Chip Tune" in text
    many = {"model": {"id": "m", "artists": [f"artist {i}" for i in range(60)]}}
    assert "and 10 more" in replies.about_text(many)
    assert replies.about_text({"backbones": ["msd_musicnn"], "model": None}).startswith("No artists are enrolled")


def test_rows_come_from_candidates_in_order() -> None:
    v = dataclasses.replace(canned_verdict(), artists=(Candidate("X", 0.5, 3), Candidate("Y", 0.25, 1)))
    assert [r.render() for r in replies.identify_answer(v).rows] == ["1. ████░░░░  50%  X", "2. ██░░░░░░  25%  Y"]


def test_clipped_note_says_which_part_was_heard() -> None:
    assert replies.clipped_note(120.0) == "I listened to the first 2 min."
    assert replies.clipped_note(120.0, 3723.0) == "I listened to 2 min from 1:02:03."


def test_about_says_what_fetching_links_needs() -> None:
    tools = {"ytdlp_version": "2026.10.26", "solver_version": "0.8.0", "runtime": "deno",
             "runtime_path": "/v/bin/deno", "runtime_version": "2.9.8", "runtime_ok": True}
    text = replies.about_text({"backbones": ["msd_musicnn"], "model": None, "fetch": tools})
    assert text.endswith("Links: yt-dlp 2026.10.26; YouTube challenges: deno 2.9.8 with yt-dlp-ejs 0.8.0.")
    missing = replies.about_text({"model": None, "fetch": {**tools, "runtime_ok": False, "runtime_path": None}})
    assert "NO JavaScript runtime" in missing.splitlines()[-1]
    assert "Links:" not in replies.about_text({"model": None, "fetch": {"from": "a newer service"}})
