"""sources: every link form people paste, every way they write a time, and the allowlists."""

from __future__ import annotations

import pytest
from hypothesis import given
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
)

ID = "dQw4w9WgXcQ"
WATCH = f"https://www.youtube.com/watch?v={ID}"
EXTRA = ("127.0.0.1:8765",)


@pytest.mark.parametrize("text, seconds", [
    ("3723", 3723), ("3723s", 3723), ("1h2m3s", 3723), ("62m3s", 3723), ("1m30", 90), ("1m30s", 90),
    ("1:02:03", 3723), ("62:03", 3723), ("2:03", 123), ("0:45", 45), ("1h", 3600), ("2m", 120), ("90s", 90),
    ("1h30", 5400), ("1H2M3S", 3723), (" 1h 2m 3s ", 3723), ("1%3A02%3A03", 3723), ("t=90", 90),
    ("1:02:03.5", 3723.5), ("12.5", 12.5), ("0", 0),
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


@given(st.integers(min_value=0, max_value=100 * 3600), st.sampled_from(["youtube", "soundcloud"]))
def test_display_url_round_trips_through_find_source(seconds: int, platform: str) -> None:
    url = WATCH if platform == "youtube" else "https://soundcloud.com/artist/a-track"
    source = Source(platform, url, float(seconds))
    assert find_source(f"what is this? {source.display_url()} thanks") == source


_WORDS = st.text(alphabet=st.characters(categories=["L", "N", "Zs"], exclude_characters="./:#?@"), max_size=30)


@given(_WORDS, _WORDS)
def test_link_is_found_among_any_words(before: str, after: str) -> None:
    found = find_source(f"{before} https://youtu.be/{ID}?t=1m30 {after}")
    assert found == Source("youtube", WATCH, 90.0)


# --- every link form --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, platform, url, start", [
    # YouTube
    (f"https://www.youtube.com/watch?v={ID}", "youtube", WATCH, None),
    (f"https://www.youtube.com/watch?v={ID}&t=3723", "youtube", WATCH, 3723),
    (f"https://www.youtube.com/watch?v={ID}&t=1h2m3s", "youtube", WATCH, 3723),
    (f"https://youtube.com/watch?v={ID}&t=62m3s", "youtube", WATCH, 3723),
    (f"https://m.youtube.com/watch?v={ID}&t=1m30", "youtube", WATCH, 90),
    (f"https://music.youtube.com/watch?v={ID}&t=1:02:03", "youtube", WATCH, 3723),
    (f"https://www.youtube.com/watch?v={ID}&start=90", "youtube", WATCH, 90),
    (f"https://www.youtube.com/watch?v={ID}#t=1m30s", "youtube", WATCH, 90),
    (f"https://youtu.be/{ID}", "youtube", WATCH, None),
    (f"https://youtu.be/{ID}?t=1h2m3s", "youtube", WATCH, 3723),
    (f"https://youtu.be/{ID}?si=AbCdEf&t=3723", "youtube", WATCH, 3723),
    (f"https://www.youtube.com/shorts/{ID}", "youtube", WATCH, None),
    (f"https://www.youtube.com/live/{ID}?t=1:02:03", "youtube", WATCH, 3723),
    (f"https://www.youtube.com/embed/{ID}?start=62", "youtube", WATCH, 62),
    (f"https://www.youtube.com/watch?v={ID}&list=PLabcdef&index=3&t=90s", "youtube", WATCH, 90),  # the track
    (f"youtube.com/watch?v={ID}", "youtube", WATCH, None),                                      # no scheme
    (f"www.youtube.com/watch?v={ID}&t=62m3s.", "youtube", WATCH, 3723),                          # sentence end
    (f"<https://youtu.be/{ID}?t=90>", "youtube", WATCH, 90),                                    # Discord
    (f"[the set](https://youtu.be/{ID}?t=90)", "youtube", WATCH, 90),                            # Markdown
    # SoundCloud
    ("https://soundcloud.com/artist/track", "soundcloud", "https://soundcloud.com/artist/track", None),
    ("https://soundcloud.com/artist/track#t=1:02:03", "soundcloud", "https://soundcloud.com/artist/track", 3723),
    ("https://soundcloud.com/artist/track#t=62:03", "soundcloud", "https://soundcloud.com/artist/track", 3723),
    ("https://m.soundcloud.com/artist/track?utm_source=x#t=0:45", "soundcloud",
     "https://soundcloud.com/artist/track", 45),
    ("https://soundcloud.com/artist/track?in=artist/sets/summer", "soundcloud",
     "https://soundcloud.com/artist/track", None),                                        # a track in a set
    ("https://soundcloud.com/artist/track/s-AbC123", "soundcloud",
     "https://soundcloud.com/artist/track/s-AbC123", None),                              # private share link
    ("soundcloud.com/dj_x/deep-house-mix-2024#t=1:02:03", "soundcloud",
     "https://soundcloud.com/dj_x/deep-house-mix-2024", 3723),
    ("https://on.soundcloud.com/AbC123xyz", "soundcloud", "https://on.soundcloud.com/AbC123xyz", None),
    # operator-added hosts: a #t= fragment works as on SoundCloud
    ("http://127.0.0.1:8765/set.mp3#t=1:02:03", "extra", "http://127.0.0.1:8765/set.mp3", 3723),
    ("http://127.0.0.1:8765/a.mp3?k=v", "extra", "http://127.0.0.1:8765/a.mp3?k=v", None),
])
def test_find_source_understands_every_link_form(text: str, platform: str, url: str, start: float | None) -> None:
    source = find_source(f"hey, who is this? {text} \U0001f525", extra_hosts=EXTRA)
    assert source == Source(platform, url, None if start is None else float(start))


def test_first_supported_link_wins() -> None:
    text = (f"not this https://vimeo.com/1 nor that example.org/x but https://youtu.be/{ID} "
            "and https://soundcloud.com/a/b")
    assert find_source(text).platform == "youtube"


def test_a_later_track_beats_an_earlier_playlist() -> None:
    text = "the set https://soundcloud.com/a/sets/b, the track https://soundcloud.com/a/c#t=1:00"
    assert find_source(text) == Source("soundcloud", "https://soundcloud.com/a/c", 60.0)


@pytest.mark.parametrize("at, expected", [("1:02:03", 3723.0), ("62m3s", 3723.0), (90, 90.0), (12.5, 12.5)])
def test_a_separate_time_overrides_the_link(at: str | float, expected: float) -> None:
    assert find_source(f"https://youtu.be/{ID}?t=5", at=at).start_s == expected
    assert find_source("https://soundcloud.com/a/b#t=0:05", at=at).start_s == expected


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


# --- allowlists ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, allowed", [
    (WATCH, True), (f"http://youtu.be/{ID}", True), ("https://music.youtube.com/x", True),
    ("https://soundcloud.com/a/b", True), ("https://on.soundcloud.com/x", True),
    ("http://127.0.0.1:8765/x.mp3", True),
    ("http://127.0.0.1:8766/x.mp3", False),                 # right host, wrong port
    ("http://localhost:8765/x.mp3", False),                 # names must match as configured
    ("https://www.youtube.com:8443/watch", False),
    ("https://youtube.com.evil.example/watch", False),
    ("https://evilyoutube.com/watch", False),
    ("https://youtube.com@evil.example/watch", False),
    ("https://user@youtube.com/watch", False),
    ("ftp://youtube.com/x", False), ("file:///etc/passwd", False), ("https://vimeo.com/1", False),
    ("http://169.254.169.254/latest/meta-data/", False), ("not a url", False),
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
    ("media.local:443", ("media.local", 443)),
])
def test_split_host_port(entry: str, parsed: tuple[str, int | None]) -> None:
    assert split_host_port(entry) == parsed


def test_extra_hosts_are_off_by_default() -> None:
    with pytest.raises(errors.NotAllowed):
        find_source("http://127.0.0.1:8765/set.mp3")
