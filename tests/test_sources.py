"""sources: every way people write a time, wherever they put it; link forms; replies; the allowlists.

The full table of link texts (through `spy link --json`) is tests/test_links_table.py; this file holds the
grids and the Hypothesis properties of the pieces (timecodes, platforms, links.understand).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from classifier import errors
from classifier.sources.links import (
    Source,
    egress_allowed,
    find_source,
    format_time,
    is_allowed_url,
    parse_time,
    split_host_port,
    understand,
)
from classifier.sources.timecodes import find_times

ID = "dQw4w9WgXcQ"
WATCH = f"https://www.youtube.com/watch?v={ID}"
YT = f"https://youtu.be/{ID}"
SC = "https://soundcloud.com/dj/set"
EXTRA = ("127.0.0.1:8765",)


# --- one time field (--at, Discord's at:, a link's t=) ------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("3723", 3723), ("3723s", 3723), ("1h2m3s", 3723), ("62m3s", 3723), ("1m30", 90), ("1m30s", 90),
    ("1:02:03", 3723), ("62:03", 3723), ("2:03", 123), ("0:45", 45), ("1h", 3600), ("2m", 120), ("90s", 90),
    ("1h30", 5400), ("1H2M3S", 3723), (" 1h 2m 3s ", 3723), ("1%3A02%3A03", 3723), ("t=90", 90),
    ("1:02:03.5", 3723.5), ("12.5", 12.5), ("0", 0), ("90sec", 90), ("2mins", 120), ("1 hour 2 min 3 sec", 3723),
    ("1hr30min", 5400), ("1 hours 2 minutes 3 seconds", 3723),
])
def test_parse_time_reads_every_form(text: str, seconds: float) -> None:
    assert parse_time(text) == seconds


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (59, "0:59"), (123, "2:03"), (3599, "59:59"),
                                           (3600, "1:00:00"), (3723, "1:02:03"), (3723.9, "1:02:03"),
                                           (36000, "10:00:00")])
def test_format_time(seconds: float, text: str) -> None:
    assert format_time(seconds) == text


@given(st.integers(min_value=0, max_value=400 * 3600))
def test_timestamps_round_trip(seconds: int) -> None:
    assert parse_time(format_time(seconds)) == seconds
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    assert parse_time(f"{h}h{m}m{s}s") == seconds
    assert parse_time(f"{h * 60 + m}m{s}") == seconds                  # "62m3", minutes past 59, no "s"
    assert parse_time(f"{seconds}s") == seconds


@pytest.mark.parametrize("text", ["1" * 5000, "t=" + "9" * 4400, "9" * 41, "1:" + "0" * 5000, "%3A" * 1000])
def test_a_time_of_thousands_of_digits_is_a_sentence_not_a_crash(text: str) -> None:
    with pytest.raises(errors.BadTime, match="Write it like 1:02:03"):
        parse_time(text)


# --- times typed in a message ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, start", [
    # the examples, each once analysed from the start of the set
    (f"{SC} 1:02:03", 3723), (f"who is this at 62:03? {YT}", 3723), (f"1:02:03 {YT}", 3723),
    (f"{YT} at 1:02:03", 3723), (f"{YT} 1:02:03 please", 3723), (f"{YT} 90sec", 90),
    (f"/identify {YT} 1h 2m 3s", 3723),
    # words around it, every format
    (f"{YT} @1:02:03", 3723), (f"{YT} @ 62:03", 3723), (f"from 1h02m03s {YT}", 3723), (f"{YT} t=3723", 3723),
    (f"{YT} 1m30", 90), (f"{YT} 90s", 90), (f"{YT} 3723", 3723), (f"3723 {YT}", 3723), (f"{YT} at 3723", 3723),
    (f"{YT} around 1 hour 2 minutes", 3720), (f"{YT} at 90 sec", 90), (f"**1:02:03** {YT}", 3723),
    (f"{YT}\nthe one at (1:02:03)!", 3723), (f"这首歌1:02:03是谁的 {YT}", 3723), (f"{YT} 1:02:03🔥", 3723),
    (f"/identify@DeepHouseSpyBot {YT} 62:03", 3723), (f"{YT}?t=5 at 1:00", 60),        # typed beats the link's
    (f"at 1:00 and again at 60s {YT}", 60),                                               # one time, twice
    # not times: numbers people write for other reasons
    (f"top 10 tracks of 2024 {YT}", None), (f"that 90s vibe {YT}", None), (f"track 2 of 3 {YT}", None),
    (f"this 2 hour set {YT}", None), (f"3:1 win, {YT}", None), (f"4:3 video {YT}", None),
    (f"<@123456789> <#987654321> <:pepe:112233> <t:1700000000:R> {YT}", None), (f"v1.2.3 {YT}", None),
    (f"2024-01-02 {YT}", None), (f"{YT}?t=1h", 3600),
])
def test_a_typed_time_is_read_wherever_it_is(text: str, start: float | None) -> None:
    source = understand(text)
    assert source.start_s == (None if start is None else float(start))
    assert source.url in (WATCH, SC)


@pytest.mark.parametrize("text, quoted", [(f"{YT} at 1:99", "1:99"), (f"1:02:75 {YT}", "1:02:75"),
                                          (f"{YT} 1s2m", "1s2m"), (f"{YT} at {'9' * 5000}", "999")])
def test_a_word_shaped_like_a_time_but_not_one_gets_a_sentence(text: str, quoted: str) -> None:
    with pytest.raises(errors.BadTime) as caught:
        understand(text)
    assert caught.value.code == "bad_time"
    assert f"\u201c{quoted}" in caught.value.user_message and "Write it like 1:02:03" in caught.value.user_message


def test_two_different_times_ask_which() -> None:
    with pytest.raises(errors.TwoTimes) as caught:
        understand(f"at 1:02:03 or maybe 5:00? {YT}?t=9")
    exc = caught.value
    assert exc.code == "two_times" and exc.times_s == (3723.0, 300.0)
    assert exc.source == Source("youtube", WATCH, None), "the link, so a bot can offer one button per time"
    assert "1:02:03 and 5:00" in exc.user_message and "Which one" in exc.user_message
    assert exc.to_dict()["times_s"] == [3723.0, 300.0]


def test_an_explicit_time_wins_and_silences_the_text() -> None:
    assert understand(f"{YT}?t=5 at 1:00", at="2:00").start_s == 120.0
    assert understand(f"at 1:00 or 2:00 {YT}", at=90).start_s == 90.0        # no question: the option decided
    assert understand(f"{YT} at 1:99", at="0:30").start_s == 30.0
    assert understand(f"{YT}?t=5", at="   ").start_s == 5.0                  # an empty option is no option


@pytest.mark.parametrize("at", ["tomorrow", "1:02:75", "-5", "1s2m", -1.0, float("nan"), float("inf"), "9" * 5000])
def test_an_explicit_bad_time_is_refused(at: str | float) -> None:
    with pytest.raises(errors.BadTime, match="Write it like 1:02:03"):
        understand(YT, at=at)


# --- replies: "/identify 1:02:03" answering a message with the link ------------------------------------------

def test_a_reply_uses_that_link_and_the_commands_time() -> None:
    assert understand("/identify 1:02:03", reply_text=f"check this {YT}?t=5") == Source("youtube", WATCH, 3723.0)
    assert understand("/identify", reply_text=f"check this {YT}?t=5").start_s == 5.0
    assert understand("/identify", reply_text=f"check this at 62:03 {YT}").start_s == 3723.0
    assert understand("/identify 1:00", reply_text=f"check this at 62:03 {YT}").start_s == 60.0
    # its own link wins over the message it answers
    assert understand(f"/identify {SC}", reply_text=YT).url == SC
    # the reply's hidden links come appended to its text
    assert understand("/identify 90s", reply_text=f"this one {YT}").start_s == 90.0


def test_a_time_without_any_link_says_what_to_do() -> None:
    with pytest.raises(errors.BadSource) as caught:
        understand("/identify 1:02:03")
    assert caught.value.code == "bad_source"
    assert "I see the time 1:02:03 but no link" in caught.value.user_message
    assert "as a reply to the message with the link" in caught.value.user_message
    with pytest.raises(errors.PlaylistRefused):
        understand("/identify 1:02:03", reply_text="https://soundcloud.com/dj/sets/summer")
    with pytest.raises(errors.NotAllowed):                     # its own link, refused, beats the one it answers
        understand("/identify https://vimeo.com/1", reply_text=YT)


def test_hidden_links_come_after_the_visible_ones() -> None:
    assert understand("this one at 1:00", extra_urls=[YT]) == Source("youtube", WATCH, 60.0)
    assert understand(f"{SC} this one", extra_urls=[YT]).url == SC


# --- the limits come before any parsing ------------------------------------------------------------------------

def test_limits_come_first() -> None:
    with pytest.raises(errors.TextTooLong) as caught:
        understand("x" * 8193)
    assert caught.value.code == "text_too_long" and "8,193 characters" in caught.value.user_message
    with pytest.raises(errors.TextTooLong):
        understand("/identify 1:00", reply_text="y" * 9000)
    with pytest.raises(errors.TextTooLong):
        understand("hi", max_chars=1)
    with pytest.raises(errors.TextTooLong, match="link is 5,0"):
        understand(f"{YT}?t={'9' * 5000}")
    with pytest.raises(errors.TextTooLong):
        understand("", extra_urls=[YT + "&x=" + "a" * 3000])


# --- Hypothesis: a typed time round-trips in any format, placed anywhere ------------------------------------

_FORMATS = {
    # clear on its own
    "clock": lambda s: format_time(s),
    "minutes_past_60": lambda s: f"{s // 60}:{s % 60:02d}",
    "hms": lambda s: f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s",
    "h_m_s": lambda s: f"{s // 3600}h {s // 60 % 60}m {s % 60}s",
    "m_then_s": lambda s: f"{s // 60}m{s % 60}",
    "sec": lambda s: f"{s}sec",
    "words": lambda s: f"{s // 3600} hours {s // 60 % 60} minutes {s % 60} seconds",
    # need a word in front or nothing else around: "90s" may be a decade, "3723" any number
    "s": lambda s: f"{s}s",
    "bare": lambda s: f"{s}",
}
_NEED_CONTEXT = {"s", "bare", "words"}
_UNITS = {"h", "hr", "hrs", "hour", "hours", "m", "min", "mins", "minute", "minutes", "s", "sec", "secs", "second",
          "seconds"}
# Words around the time: any ASCII word but a unit (which would extend the time: "at 90 min"), or CJK.
_FILLER = st.one_of(st.from_regex(r"[A-Za-z?!,]{1,8}", fullmatch=True).filter(lambda w: w.lower() not in _UNITS),
                    st.sampled_from(["谁的", "これは", "🔥", "（", "？", "thanks!", "pls"]))


@hsettings(max_examples=300, deadline=None)
@given(seconds=st.integers(min_value=0, max_value=16 * 3600), form=st.sampled_from(sorted(_FORMATS)),
       context=st.sampled_from(["", "at ", "@", "from ", "t=", "@ "]), after=st.booleans(),
       words_before=st.lists(_FILLER, max_size=4), words_after=st.lists(_FILLER, max_size=4),
       link=st.sampled_from([YT + "?t=5", SC + "#t=0:05", WATCH, "soundcloud.com/dj/set"]))
@example(seconds=3723, form="h_m_s", context="", after=True, words_before=[], words_after=["please"], link=YT)
def test_a_typed_time_round_trips_in_any_format_anywhere(seconds: int, form: str, context: str, after: bool,
                                                          words_before: list[str], words_after: list[str],
                                                          link: str) -> None:
    if form in _NEED_CONTEXT and (words_before or words_after) and not context:
        context = "at "            # "3723" or "90s" among other words is a time only with a word in front
    typed = context + _FORMATS[form](seconds)
    parts = [*words_before, link, typed, *words_after] if after else [*words_before, typed, link, *words_after]
    source = understand(" ".join(parts))
    assert source.start_s == float(seconds), (parts, source)


@hsettings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=100 * 3600), st.sampled_from(["youtube", "soundcloud"]))
def test_display_url_round_trips_through_understand(seconds: int, platform: str) -> None:
    url = WATCH if platform == "youtube" else "https://soundcloud.com/artist/a-track"
    source = Source(platform, url, float(seconds))
    assert understand(f"what is this? {source.display_url()} thanks") == source


_WORDS = st.text(alphabet=st.characters(categories=["L", "Zs"], exclude_characters="./:#?@"), max_size=30)


@given(_WORDS, _WORDS)
def test_link_is_found_among_any_words(before: str, after: str) -> None:
    found = understand(f"{before} https://youtu.be/{ID}?t=1m30 {after}")
    assert found == Source("youtube", WATCH, 90.0)


# --- Hypothesis: any text parses or raises a named error ------------------------------------------------------

_PIECES = st.sampled_from([
    "https://", "http://", "youtu.be/", "www.youtube.com/watch?v=", "youtube.com/", "soundcloud.com/", "on.",
    "api.soundcloud.com/tracks/", "m.", "/", "?", "&", "#", "#!", "=", "v=", "t=", "list=", "embed/", "shorts/",
    "clip/", "attribution_link?u=", "%2F", "%3A", "%0d%0a", "@", "[", "](", ")", "(", "<", ">", "<@1>", "_", "*",
    "1:", "02", ":03", "1h", "2m", "3s", "90s", "sec", " at ", " ", "\n", "\r\n", "🔥", "。", "，", ID, "dj", "-",
    "s-AbC", "sets/", "tracks", "127.0.0.1:8765", "[::1]", "xn--", "yоutube.com", "\u200b", "\x00", "9" * 60,
])
_MESSY = st.one_of(st.text(max_size=200), st.lists(_PIECES, max_size=30).map("".join),
                   st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=20).map("".join))
_CODES = {"bad_source", "not_allowed", "playlist", "bad_time", "two_times", "text_too_long"}


def _assert_understood_or_named(call: Callable[[], Source]) -> None:
    try:
        source = call()
    except errors.SpyError as exc:
        assert exc.code in _CODES and isinstance(exc, errors.BadSource), exc.code
        assert exc.user_message and len(exc.user_message) < 300
        return
    assert isinstance(source, Source) and source.platform in ("youtube", "soundcloud", "extra")
    assert is_allowed_url(source.url, EXTRA), source.url
    assert not any(c in source.url for c in " \r\n\t\x00"), source.url
    assert source.start_s is None or (math.isfinite(source.start_s) and 0 <= source.start_s <= 1e7)


@hsettings(max_examples=500, deadline=None)
@given(_MESSY, st.one_of(st.none(), _MESSY), st.one_of(st.none(), st.text(max_size=12), st.floats()))
def test_any_text_parses_or_raises_a_named_error(text: str, reply: str | None, at: str | float | None) -> None:
    _assert_understood_or_named(lambda: understand(text, at=at, reply_text=reply, extra_hosts=EXTRA))


@hsettings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_find_times_never_raises_anything_but_bad_time(text: str) -> None:
    try:
        mentions, _ = find_times(text)
    except errors.BadTime:
        return
    assert all(math.isfinite(m.seconds) and m.seconds >= 0 for m in mentions)


def test_understanding_is_fast_on_ordinary_chat() -> None:
    """1,000 messages of ordinary chat text, most with no link, in well under a second per hundred."""
    lines = [f"hey {i}, did you hear the set at 1:{i % 60:02d}? {YT}" if i % 3 == 0 else
             f"lol that drop at the {i % 9}0s mark was insane, see you at 10 tonight" for i in range(1000)]
    started = time.perf_counter()
    for line in lines:
        try:
            understand(line)
        except errors.BadSource:
            pass
    assert time.perf_counter() - started < 5.0      # 0.5 s per hundred on a loaded 2-core box; ~0.1 s measured


# --- allowlists ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, allowed", [
    (WATCH, True), (f"http://youtu.be/{ID}", True), ("https://music.youtube.com/x", True),
    ("https://soundcloud.com/a/b", True), ("https://on.soundcloud.com/x", True),
    ("https://api.soundcloud.com/tracks/1", True),
    ("http://127.0.0.1:8765/x.mp3", True),
    ("http://127.0.0.1:8766/x.mp3", False),                 # right host, wrong port
    ("http://localhost:8765/x.mp3", False),                 # names must match as configured
    ("http://127.1:8765/x.mp3", False),
    ("https://www.youtube.com:8443/watch", False),
    ("https://youtube.com.evil.example/watch", False),
    ("https://evilyoutube.com/watch", False),
    ("https://youtube.com@evil.example/watch", False),
    ("https://user@youtube.com/watch", False),
    ("ftp://youtube.com/x", False), ("file:///etc/passwd", False), ("https://vimeo.com/1", False),
    ("http://169.254.169.254/latest/meta-data/", False), ("not a url", False),
    ("https://youtube.com/" + "a" * 3000, False),           # longer than any link
])
def test_is_allowed_url(url: str, allowed: bool) -> None:
    assert is_allowed_url(url, EXTRA) is allowed


@pytest.mark.parametrize("platform, host, port, allowed", [
    ("youtube", "www.youtube.com", 443, True),
    ("youtube", "rr3---sn-abc.googlevideo.com", 443, True),
    ("youtube", "i.ytimg.com", 443, True),
    ("youtube", "youtubei.googleapis.com", 443, True),
    ("youtube", "soundcloud.com", 443, False),              # each platform only reaches its own hosts
    ("youtube", "www.youtube.com", 22, False),
    ("youtube", "googlevideo.com.evil.example", 443, False),
    ("youtube", "142.250.1.1", 443, False),
    ("soundcloud", "api-v2.soundcloud.com", 443, True),
    ("soundcloud", "cf-hls-media.sndcdn.com", 443, True),
    ("soundcloud", "playback.media-streaming.soundcloud.cloud", 443, True),
    ("soundcloud", "www.youtube.com", 443, False),
    ("extra", "127.0.0.1", 8765, True),
    ("extra", "127.0.0.1", 8766, False),
    ("extra", "www.youtube.com", 443, False),
    ("extra", "10.0.0.1", 8765, False),
])
def test_egress_allowed(platform: str, host: str, port: int, allowed: bool) -> None:
    assert egress_allowed(platform, host, port, EXTRA) is allowed


@pytest.mark.parametrize("entry, parsed", [
    ("127.0.0.1:8765", ("127.0.0.1", 8765)), ("Example.ORG", ("example.org", None)), ("[::1]:80", ("::1", 80)),
    ("media.local:443", ("media.local", 443)), ("host:" + "9" * 5000, ("host:" + "9" * 5000, None)),
])
def test_split_host_port(entry: str, parsed: tuple[str, int | None]) -> None:
    assert split_host_port(entry) == parsed


def test_extra_hosts_are_off_by_default() -> None:
    with pytest.raises(errors.NotAllowed):
        find_source("http://127.0.0.1:8765/set.mp3")


def test_first_supported_link_wins() -> None:
    text = (f"not this https://vimeo.com/1 nor that example.org/x but https://youtu.be/{ID} "
            "and https://soundcloud.com/a/b")
    assert find_source(text).platform == "youtube"


def test_a_later_track_beats_an_earlier_playlist() -> None:
    text = "the set https://soundcloud.com/a/sets/b, the track https://soundcloud.com/a/c#t=1:00"
    assert find_source(text) == Source("soundcloud", "https://soundcloud.com/a/c", 60.0)


@pytest.mark.parametrize("source, shown", [
    (Source("youtube", WATCH, 3723.0), f"{WATCH}&t=3723s"),
    (Source("youtube", WATCH, None), WATCH),
    (Source("soundcloud", "https://soundcloud.com/a/b", 3723.0), "https://soundcloud.com/a/b#t=1:02:03"),
    (Source("soundcloud", "https://soundcloud.com/a/b", 123.0), "https://soundcloud.com/a/b#t=2:03"),
    (Source("extra", "http://127.0.0.1:8765/x.mp3", 60.0), "http://127.0.0.1:8765/x.mp3#t=1:00"),
])
def test_display_url(source: Source, shown: str) -> None:
    assert source.display_url() == shown


def test_with_start_returns_a_copy() -> None:
    source = Source("youtube", WATCH, None)
    assert source.with_start(5.0) == Source("youtube", WATCH, 5.0)
    assert source.start_s is None
