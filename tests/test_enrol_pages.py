"""Operators enrol whole artists: a page is listed by yt-dlp (flat, through the egress proxy), and its newest
tracks are fetched as a few windows each, never whole.

The page is a podcast-style RSS feed on the loopback media host (an operator-added host, the generic
extractor), listing long tone tracks whose pitch tells where each window came from; the host counts every
byte it sends, so the tests can see that only the windows were read. Platform pages (SoundCloud, YouTube)
die at the refusing proxy: what matters there is the path they take.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yt_dlp

from classifier import errors
from classifier.settings import Settings
from classifier.sources import listing
from classifier.sources.fetch import fetch_spread, spread_windows
from classifier.sources.links import Page, Source, from_url, page_of
from classifier.sources.listing import list_page
from classifier.store.index import Index
from spy.cli import build_parser
from tests.fakes.media_host import (  # noqa: F401  (fixtures)
    SAMPLE_RATE,
    MediaHost,
    media_dir,
    media_files,
    media_host,
    tone_hz,
)
from tests.fakes.refusing_proxy import RefusingProxy, refusing_proxy  # noqa: F401  (fixture)

# Three tracks, each a loop of the 3-minute test tone (pitch steps every 10 s, wrapping every 500 s), of
# different lengths so their windows fall at different places: (name, loops, published).
TRACKS = [("old.mp3", 5, "Mon, 01 Jan 2024 10:00:00 GMT"), ("newest.mp3", 7, "Wed, 03 Jan 2024 10:00:00 GMT"),
          ("middle.mp3", 6, "Tue, 02 Jan 2024 10:00:00 GMT")]


@pytest.fixture(scope="module")
def long_tracks(media_files: dict[str, Path], media_dir: Path) -> dict[str, Path]:
    """15-, 18- and 21-minute MP3s: the 3-minute tone looped (a stream copy, so it takes milliseconds)."""
    out = {}
    for name, loops, _ in TRACKS:
        path = media_dir / f"loop{loops}-{name}"
        if not path.exists():
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", str(loops - 1),
                            "-i", str(media_files["mp3"]), "-c", "copy", str(path)], check=True)
        out[name] = path
    return out


def feed(host: MediaHost, items: list[tuple[str, str, str, float]], title: str = "DJ X") -> bytes:
    """An RSS feed (the kind podcasts and many music sites publish): title, enclosure, date, itunes:duration."""
    body = "".join(f"<item><title>{t}</title><enclosure url='{url}' type='audio/mpeg' length='1'/>"
                   f"<guid>{url}</guid><pubDate>{date}</pubDate><itunes:duration>{int(dur)}</itunes:duration></item>"
                   for t, url, date, dur in items)
    return (f"<?xml version='1.0'?><rss version='2.0' xmlns:itunes='http://www.itunes.com/dtds/podcast-1.0.dtd'>"
            f"<channel><title>{title}</title>{body}</channel></rss>").encode()


@pytest.fixture
def artist_page(media_host: MediaHost, long_tracks: dict[str, Path]) -> str:
    items = []
    for name, loops, date in TRACKS:
        media_host.add(name, long_tracks[name])
        items.append((name.removesuffix(".mp3").title(), media_host.url(name), date, loops * 180))
    items.append(("Elsewhere", "http://10.255.255.1/other.mp3", "Thu, 04 Jan 2024 10:00:00 GMT", 60))
    return media_host.add("feed.xml", feed(media_host, items), "application/rss+xml")


@pytest.fixture
def settings(tmp_path: Path, media_host: MediaHost, refusing_proxy: RefusingProxy) -> Settings:
    return Settings(data_dir=tmp_path / "data", fetch_extra_hosts=(media_host.hostport,),
                    fetch_proxy_url=refusing_proxy.url, fetch_timeout_s=30.0, batch_size=16)


def _spy(settings: Settings, *argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return args.func(settings, args)


# --- which links are pages (pure) ------------------------------------------------------------------------------

@pytest.mark.parametrize("url, page", [
    ("https://soundcloud.com/dj-x", Page("soundcloud", "https://soundcloud.com/dj-x/tracks")),
    ("https://m.soundcloud.com/dj-x/", Page("soundcloud", "https://soundcloud.com/dj-x/tracks")),
    ("soundcloud.com/dj-x/tracks", Page("soundcloud", "https://soundcloud.com/dj-x/tracks")),
    ("https://soundcloud.com/dj-x/albums", Page("soundcloud", "https://soundcloud.com/dj-x/albums")),
    ("https://soundcloud.com/dj-x/popular-tracks", Page("soundcloud", "https://soundcloud.com/dj-x/popular-tracks")),
    ("https://soundcloud.com/dj-x/sets/summer-2024", Page("soundcloud", "https://soundcloud.com/dj-x/sets/summer-2024")),
    ("https://soundcloud.com/dj-x/sets/summer-2024/s-AbC", Page("soundcloud", "https://soundcloud.com/dj-x/sets/summer-2024/s-AbC")),
    ("https://www.youtube.com/@djx", Page("youtube", "https://www.youtube.com/@djx/videos")),
    ("https://youtube.com/@djx/featured", Page("youtube", "https://www.youtube.com/@djx/videos")),
    ("https://www.youtube.com/@djx/streams", Page("youtube", "https://www.youtube.com/@djx/streams")),
    ("https://www.youtube.com/channel/UC-lHJZR3Gqxm24_Vd_AJ5Yw", Page("youtube", "https://www.youtube.com/channel/UC-lHJZR3Gqxm24_Vd_AJ5Yw/videos")),
    ("https://www.youtube.com/c/DJX/videos", Page("youtube", "https://www.youtube.com/c/DJX/videos")),
    ("https://www.youtube.com/user/djx", Page("youtube", "https://www.youtube.com/user/djx/videos")),
    ("https://www.youtube.com/playlist?list=PL4lCao7KL_QFodcLWhDpGCYnngnHtQ-Xf&si=x",
     Page("youtube", "https://www.youtube.com/playlist?list=PL4lCao7KL_QFodcLWhDpGCYnngnHtQ-Xf")),
    ("https://music.youtube.com/playlist?list=PLRBp0Fe2GpgmgoscNFLxNyBVSFVdYmFkq",
     Page("youtube", "https://www.youtube.com/playlist?list=PLRBp0Fe2GpgmgoscNFLxNyBVSFVdYmFkq")),
    ("http://127.0.0.1:8765/feed.xml", Page("extra", "http://127.0.0.1:8765/feed.xml")),
    ("http://127.0.0.1:8765/artist/", Page("extra", "http://127.0.0.1:8765/artist/")),
    # one track: not a page
    ("https://soundcloud.com/dj-x/a-track", None), ("https://youtu.be/dQw4w9WgXcQ", None),
    ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PL4lCao7KL_QFodcLWhDpGCYnngnHtQ-Xf", None),
    ("http://127.0.0.1:8765/set.mp3", None),
])
def test_page_of(url: str, page: Page | None) -> None:
    assert page_of(url if "://" in url else "https://" + url, ("127.0.0.1:8765",)) == page


@pytest.mark.parametrize("url, error, says", [
    ("https://soundcloud.com/dj-x/likes", errors.EnrolError, "lists other people's tracks"),
    ("https://soundcloud.com/dj-x/reposts", errors.EnrolError, "https://soundcloud.com/dj-x"),
    ("https://www.youtube.com/@djx/community", errors.EnrolError, "not its community"),
    ("https://vimeo.com/djx", errors.NotAllowed, "only fetch audio"),
    ("http://10.0.0.1/feed.xml", errors.NotAllowed, "only fetch audio"),
])
def test_pages_that_cannot_be_enrolled_say_why(url: str, error: type[errors.SpyError], says: str) -> None:
    with pytest.raises(error, match=says):
        page_of(url, ("127.0.0.1:8765",))


@pytest.mark.parametrize("count, window, media, spans", [
    (3, 30.0, 600.0, [(135.0, 30.0), (285.0, 30.0), (435.0, 30.0)]),     # at 1/4, 2/4, 3/4 of the track
    (1, 30.0, 600.0, [(285.0, 30.0)]),
    (3, 30.0, 90.0, [(0.0, 90.0)]),                                      # shorter than the windows: whole
    (3, 30.0, 60.0, [(0.0, 60.0)]),
    (3, 30.0, None, [(0.0, 90.0)]),                                      # length unknown: from the start
    (2, 10.0, 25.0, [(3.333, 10.0), (11.667, 10.0)]),
])
def test_spread_windows(count: int, window: float, media: float | None, spans: list[tuple[float, float]]) -> None:
    assert spread_windows(count, window, media) == spans


# --- listing a page --------------------------------------------------------------------------------------------

def test_a_feed_is_listed_newest_first_without_opening_a_track(artist_page: str, settings: Settings,
                                                               media_host: MediaHost) -> None:
    page = page_of(artist_page, settings.fetch_extra_hosts)
    assert page is not None
    result = list_page(page, settings)
    assert result.title == "DJ X"
    assert [t.title for t in result.tracks] == ["Newest", "Middle", "Old"]          # by date, not feed order
    assert [t.duration_s for t in result.tracks] == [1260.0, 1080.0, 900.0]
    assert result.tracks[0].source == Source("extra", media_host.url("newest.mp3"), None)
    assert len(result.refused) == 1 and "Elsewhere" in result.refused[0] and "only fetch audio" in result.refused[0]
    assert [r.path for r in media_host.requests] == ["/feed.xml"], "listing opens no track"
    assert 0 < result.bytes_read < 10_000


def test_listing_respects_max_entries(artist_page: str, settings: Settings) -> None:
    page = page_of(artist_page, settings.fetch_extra_hosts)
    assert page is not None
    assert len(list_page(page, settings, max_entries=2).tracks) == 2


@pytest.fixture
def ydl_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    class Recording(yt_dlp.YoutubeDL):
        def extract_info(self, url: str, *args: Any, **kwargs: Any) -> Any:
            calls.append({**self.params, "url": url})
            return super().extract_info(url, *args, **kwargs)

    monkeypatch.setattr(listing.yt_dlp, "YoutubeDL", Recording)
    return calls


@pytest.mark.parametrize("url, extractors, first_hop", [
    ("https://soundcloud.com/dj-x", ["soundcloud:user", "soundcloud:set", "soundcloud:playlist"], "soundcloud.com:443"),
    ("https://www.youtube.com/@djx", ["youtube:tab", "youtube:playlist"], "www.youtube.com:443"),
])
def test_platform_pages_are_listed_flat_through_the_proxy(url: str, extractors: list[str], first_hop: str,
                                                          settings: Settings, refusing_proxy: RefusingProxy,
                                                          ydl_calls: list[dict[str, Any]]) -> None:
    page = page_of(url)
    assert page is not None
    with pytest.raises(errors.FetchFailed):
        list_page(page, settings)
    [params] = ydl_calls
    assert params["url"] == page.url and params["allowed_extractors"] == extractors
    assert params["extract_flat"] is True and params["playlist_items"] == "1-500"
    assert not params["remote_components"] and params["cookiefile"] is None
    assert refusing_proxy.hosts and refusing_proxy.hosts[0] == first_hop


# --- fetching a few windows of a track ---------------------------------------------------------------------------

def _pitch(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def test_spread_windows_are_fetched_and_joined(settings: Settings, media_host: MediaHost,
                                               long_tracks: dict[str, Path], tmp_path: Path) -> None:
    media_host.add("old.mp3", long_tracks["old.mp3"])
    source = from_url(media_host.url("old.mp3"), settings.fetch_extra_hosts)
    fetched = fetch_spread(source, settings, tmp_path, count=3, window_s=30.0, duration_hint_s=900.0)
    assert fetched.windows == ((210.0, 30.0), (435.0, 30.0), (660.0, 30.0))
    assert (fetched.start_s, fetched.duration_s) == (210.0, 90.0)
    assert fetched.path == tmp_path / "windows.wav" and sorted(p.name for p in tmp_path.iterdir()) == ["windows.wav"]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(fetched.path), "-ac", "1", "-ar", str(SAMPLE_RATE),
                          "-f", "f32le", "-"], check=True, capture_output=True).stdout
    wave = np.frombuffer(raw, dtype=np.float32)
    assert len(wave) / SAMPLE_RATE == pytest.approx(90.0, abs=1.5)
    for k, (start, _) in enumerate(fetched.windows):              # each part came from its own place
        middle = wave[int((k * 30 + 12) * SAMPLE_RATE):int((k * 30 + 13) * SAMPLE_RATE)]
        assert _pitch(middle) == pytest.approx(tone_hz((start + 12.5) % 180), abs=10)
    size = long_tracks["old.mp3"].stat().st_size
    # The windows are 10 % of the file. What crosses the proxy is more: each open-ended range keeps streaming
    # into loopback socket buffers (autotuned up to megabytes) until ffmpeg has its 30 s and hangs up, and a
    # loaded machine lets more pile up (a full-suite run read 25 %+). Half the file still proves it was not read
    # whole; the ranges themselves are checked exactly in the enrolment test below.
    assert fetched.bytes_read < 0.5 * size, f"{fetched.bytes_read} of {size} bytes"


# --- spy enrol ARTIST PAGE ----------------------------------------------------------------------------------------

def _sent(host: MediaHost, name: str) -> int:
    return sum(r.sent for r in host.requests if r.path == "/" + name)


def test_spy_enrol_an_artist_page(artist_page: str, settings: Settings, media_host: MediaHost,
                                  long_tracks: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings.replace(enrol_window_seconds=10.0)      # three 10-s windows: less for the network to run
    # --dry-run: the listing, and nothing else
    assert _spy(settings, "enrol", "DJ X", artist_page, "--limit", "2", "--dry-run") == 0
    out, err = capsys.readouterr()
    assert "would enrol:" in out and "DJ X / Newest" in out and "DJ X / Middle" in out and "Old" not in out
    assert "2 track(s) would be enrolled; 0 already in" in out
    assert "not a track:" in err and "Elsewhere" in err
    assert {r.path for r in media_host.requests} == {"/feed.xml"}
    if settings.database.exists():
        with Index(settings.database) as index:
            assert index.tracks() == []

    # the newest two, each as three 30-s windows: the host sent a fraction of each file
    media_host.reset()
    assert _spy(settings, "enrol", "DJ X", artist_page, "--limit", "2") == 0
    out = capsys.readouterr().out
    assert "Enrolled 2 track(s) (1.0 min of audio" in out
    with Index(settings.database) as index:
        tracks = {t.title: t for t in index.tracks()}
    assert set(tracks) == {"Newest", "Middle"} and all(t.artist == "DJ X" for t in tracks.values())
    assert tracks["Newest"].source == media_host.url("newest.mp3")
    assert all(t.duration_s == pytest.approx(30.0, abs=1.5) for t in tracks.values())
    media_host.wait_idle()
    for name, loops in (("newest.mp3", 7), ("middle.mp3", 6)):
        size, seconds = long_tracks[name].stat().st_size, loops * 180
        # What the host handed to the kernel, socket buffers included (~0.35 MB a connection on loopback):
        # three windows and a probe, not the file.
        assert _sent(media_host, name) < 0.5 * size, f"{name}: {_sent(media_host, name)} of {size} bytes"
        # and it was asked for each window's bytes: a constant-bitrate MP3 seeks to ~ start/length of the file
        seeks = [int(r.range[6:].split("-")[0]) for r in media_host.requests if r.path == "/" + name and r.range]
        for start, _ in spread_windows(3, 10.0, seconds):
            assert any(abs(b - start / seconds * size) < 0.03 * size for b in seeks), (start, seeks)
    assert _sent(media_host, "old.mp3") == 0

    # resuming: what is in is not fetched again; a higher limit takes the next one
    media_host.reset()
    assert _spy(settings, "enrol", "DJ X", artist_page, "--limit", "2") == 0
    out, err = capsys.readouterr()
    assert "Nothing new to enrol." in err and err.count("duplicate:") == 2
    assert {r.path for r in media_host.requests} == {"/feed.xml"}
    assert _spy(settings, "enrol", "DJ X", artist_page) == 0          # default limit 20: the third one
    assert "Enrolled 1 track(s)" in capsys.readouterr().out
    assert _sent(media_host, "newest.mp3") == 0 and _sent(media_host, "old.mp3") > 0

    # the same page under another artist: every track is a conflict, named, and the exit code says so
    media_host.reset()
    assert _spy(settings, "enrol", "DJ Y", artist_page) == 1
    err = capsys.readouterr().err
    assert err.count("conflict:") == 3 and "already enrolled as DJ X / Newest" in err and "spy forget" in err
    assert {r.path for r in media_host.requests} == {"/feed.xml"}


def test_a_page_that_cannot_be_listed_is_reported(settings: Settings, media_host: MediaHost,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert _spy(settings, "enrol", "DJ X", media_host.url("missing/feed.xml")) == 1
    err = capsys.readouterr().err
    assert "skipped:" in err and "missing/feed.xml" in err
    assert _spy(settings, "enrol", "DJ X", "https://soundcloud.com/dj-x/likes") == 1
    assert "lists other people's tracks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _spy(settings, "enrol", "DJ X", media_host.url("feed.xml"), "--limit", "0")
