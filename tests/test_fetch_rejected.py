"""Rejected input for links and fetches: each bad input, its error code, and what the chat user reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifier import errors
from classifier.settings import Settings
from classifier.sources import fetch
from classifier.sources.fetch import Fetcher, classify_error, fetch_window
from classifier.sources.links import Source, find_source, parse_time
from tests.fakes.media_host import (  # noqa: F401
    MediaHost,
    audio_page,
    media_dir,
    media_files,
    media_host,
)
from tests.fakes.refusing_proxy import RefusingProxy, refusing_proxy  # noqa: F401

ID = "dQw4w9WgXcQ"


@pytest.fixture
def settings(tmp_path: Path, media_host: MediaHost, refusing_proxy: RefusingProxy) -> Settings:
    return Settings(data_dir=tmp_path / "data", fetch_extra_hosts=(media_host.hostport,),
                    fetch_proxy_url=refusing_proxy.url, fetch_timeout_s=20.0)


# --- links: refused before any connection is made (find_source is pure) ---------------------------------

@pytest.mark.parametrize("text, code, says", [
    ("who made this?", "bad_source", "I could not find a YouTube or SoundCloud link"),
    ("", "bad_source", "I could not find a YouTube or SoundCloud link"),
    ("a file.mp3 I like", "bad_source", "I could not find"),
    ("https://vimeo.com/12345", "not_allowed", "I only fetch audio from YouTube and SoundCloud"),
    ("https://open.spotify.com/track/abc", "not_allowed", "I only fetch audio from YouTube and SoundCloud"),
    ("http://169.254.169.254/latest/meta-data/", "not_allowed", "I only fetch audio"),
    ("http://127.0.0.1:8765/set.mp3", "not_allowed", "I only fetch audio"),   # extra hosts are opt-in
    ("https://youtube.com.evil.example/watch?v=" + ID, "not_allowed", "I only fetch audio"),
    ("https://youtube.com@evil.example/watch?v=" + ID, "not_allowed", "I only fetch audio"),
    ("file:///etc/passwd", "bad_source", "I could not find"),
    ("https://www.youtube.com/playlist?list=PL0123456789", "playlist", "That is a playlist or a set"),
    ("https://soundcloud.com/artist/sets/summer-2024", "playlist", "That is a playlist or a set"),
    ("https://soundcloud.com/artist/tracks", "playlist", "That is a playlist or a set"),
    ("https://soundcloud.com/artist/likes", "playlist", "That is a playlist or a set"),
    ("https://soundcloud.com/artist", "playlist", "That is a SoundCloud profile, not a track"),
    ("https://www.youtube.com/@somechannel", "playlist", "That is a YouTube channel, not a video"),
    ("https://www.youtube.com/channel/UC123", "playlist", "That is a YouTube channel, not a video"),
    ("https://www.youtube.com/", "bad_source", "That YouTube link does not point at a video"),
    ("https://www.youtube.com/feed/trending", "bad_source", "That YouTube link does not point at a video"),
    ("https://youtu.be/dQw4w9", "bad_source", "That YouTube link looks cut off"),
    ("https://soundcloud.com/discover", "bad_source", "That SoundCloud link is not a track"),
    ("https://on.soundcloud.com/", "bad_source", "That SoundCloud share link looks cut off"),
    (f"https://youtu.be/{ID}?t=soon", "bad_time", "I could not read the time \u201csoon\u201d"),
    ("https://soundcloud.com/a/b#t=1:75", "bad_time", "I could not read the time \u201c1:75\u201d"),
])
def test_rejected_links(text: str, code: str, says: str, refusing_proxy: RefusingProxy) -> None:
    with pytest.raises(errors.BadSource) as caught:
        find_source(text)
    assert caught.value.code == code
    assert says in caught.value.user_message
    assert refusing_proxy.seen == []


@pytest.mark.parametrize("at", ["tomorrow", "1:02:75", "-5", "1s2m", -1.0, float("nan"), float("inf")])
def test_rejected_times_given_separately(at: str | float) -> None:
    with pytest.raises(errors.BadSource, match="Write it like 1:02:03"):
        find_source(f"https://youtu.be/{ID}", at=at)


@pytest.mark.parametrize("text", ["", "abc", "1:60", "1:02:60", "1h2h", "1m2h", "1.2.3", "1e3", "0x10", "1::2"])
def test_parse_time_refuses_garbage_with_a_friendly_sentence(text: str) -> None:
    with pytest.raises(errors.BadSource) as caught:
        parse_time(text)
    assert caught.value.code == "bad_time" and "Write it like 1:02:03, 62:03 or 1h2m3s." in caught.value.user_message


# --- fetches: refused at our edge, never at the network -----------------------------------------------------

@pytest.mark.parametrize("source", [
    Source("extra", "http://10.0.0.1:8765/x.mp3", None),                 # not an operator-added host
    Source("youtube", "https://evil.example/watch?v=" + ID, None),       # platform and host disagree
    Source("extra", "https://www.youtube.com/watch?v=" + ID, None),      # generic extractor on YouTube: no
    Source("soundcloud", "file:///etc/passwd", None),
])
def test_fetch_refuses_a_source_outside_the_allowlist(source: Source, settings: Settings, tmp_path: Path,
                                                      refusing_proxy: RefusingProxy, media_host: MediaHost) -> None:
    with pytest.raises(errors.NotAllowed):
        fetch_window(source, settings, tmp_path)
    assert refusing_proxy.seen == [] and media_host.requests == []


@pytest.mark.parametrize("target", [
    "http://10.255.255.1:8765/secret.mp3",             # a private address
    "http://127.0.0.1:1/other-port.mp3",               # loopback, but not the allowed port
    f"https://www.youtube.com/watch?v={ID}",           # a platform host, from an operator host
])
def test_a_redirect_off_the_allowlist_is_refused_at_the_edge(target: str, settings: Settings, tmp_path: Path,
                                                             media_host: MediaHost,
                                                             refusing_proxy: RefusingProxy) -> None:
    media_host.redirects["/jump.mp3"] = target
    with pytest.raises(errors.NotAllowed) as caught:
        fetch_window(find_source(media_host.url("jump.mp3"), extra_hosts=settings.fetch_extra_hosts),
                     settings, tmp_path)
    assert "refused egress" in (caught.value.detail or "")
    assert refusing_proxy.seen == []                    # the egress proxy refused it; nothing left the machine


def test_a_feed_of_several_tracks_is_not_expanded(settings: Settings, tmp_path: Path, media_host: MediaHost) -> None:
    items = "".join(f'<item><title>{kind}</title><guid>{kind}</guid><enclosure url="{media_host.url("tone." + kind)}" '
                    f'type="audio/mpeg" length="1"/></item>' for kind in ("mp3", "m4a"))
    feed = f'<?xml version="1.0"?><rss version="2.0"><channel><title>A podcast</title>{items}</channel></rss>'
    media_host.add("feed.xml", feed.encode(), "application/rss+xml")
    with pytest.raises(errors.PlaylistRefused):
        fetch_window(find_source(media_host.url("feed.xml"), extra_hosts=settings.fetch_extra_hosts),
                     settings, tmp_path)
    assert [r.path for r in media_host.requests] == ["/feed.xml"]


def test_a_time_past_the_end_is_refused_before_the_media_is_read(settings: Settings, tmp_path: Path,
                                                                 media_host: MediaHost) -> None:
    media_host.add("track.html", audio_page(media_host.url("tone.mp3"), 180))
    with pytest.raises(errors.BadSource) as caught:
        fetch_window(find_source(media_host.url("track.html") + "#t=5:00", extra_hosts=settings.fetch_extra_hosts),
                     settings, tmp_path)
    assert caught.value.user_message == "That link asks for 5:00, but the recording is only 3:00 long."
    assert [r.path for r in media_host.requests] == ["/track.html"]


def test_a_missing_file_is_removed(settings: Settings, tmp_path: Path, media_host: MediaHost) -> None:
    with pytest.raises(errors.Removed) as caught:
        fetch_window(find_source(media_host.url("gone.mp3"), extra_hosts=settings.fetch_extra_hosts),
                     settings, tmp_path)
    assert caught.value.user_message == "That track is gone: it was removed or never existed."


async def test_the_async_front_refuses_too_and_cleans_up(settings: Settings, refusing_proxy: RefusingProxy) -> None:
    with pytest.raises(errors.NotAllowed):
        async with Fetcher(settings).window(Source("extra", "http://10.0.0.1/x.mp3", None)):
            pytest.fail("no audio expected")
    assert refusing_proxy.seen == []


def test_no_ffmpeg_is_a_clear_failure(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    with pytest.raises(errors.FetchFailed, match="I could not get the audio"):
        fetch_window(Source("youtube", f"https://www.youtube.com/watch?v={ID}", None), settings, tmp_path)


# --- what yt-dlp says, and what the user reads ----------------------------------------------------------

_COOKIES = (" Use --cookies-from-browser or --cookies for the authentication. See  "
            "https://github.com/yt-dlp/yt-dlp/wiki/FAQ")


@pytest.mark.parametrize("message, code", [
    (f"ERROR: [youtube] {ID}: Private video. Sign in if you've been granted access to this video.{_COOKIES}",
     "private"),
    (f"ERROR: [youtube] {ID}: This video is private", "private"),
    (f"ERROR: [youtube] {ID}: Join this channel to get access to members-only content like this video, and other "
     "exclusive perks.", "private"),
    (f"ERROR: [youtube] {ID}: Video unavailable", "removed"),
    (f"ERROR: [youtube] {ID}: Video unavailable. This video has been removed by the uploader", "removed"),
    (f"ERROR: [youtube] {ID}: Video unavailable. This video is no longer available because the YouTube account "
     "associated with this video has been terminated.", "removed"),
    ("ERROR: [soundcloud] artist/track: Unable to download JSON metadata: HTTP Error 404: Not Found", "removed"),
    (f"ERROR: [youtube] {ID}: Sign in to confirm your age. This video may be inappropriate for some users.{_COOKIES}",
     "age_restricted"),
    (f"ERROR: [youtube] {ID}: The uploader has not made this video available in your country\nThis video is "
     "available in Germany.\nYou might want to use a VPN or a proxy server (with --proxy) to workaround.",
     "geo_blocked"),
    (f"ERROR: [youtube] {ID}: Video unavailable. The uploader has not made this video available in your country",
     "geo_blocked"),
    ("ERROR: [soundcloud] 123: This video is not available from your location due to geo restriction",
     "geo_blocked"),
    (f"ERROR: [youtube] {ID}: Sign in to confirm you\u2019re not a bot.{_COOKIES}", "bot_check"),
    (f"ERROR: [youtube] {ID}: Sign in to confirm you're not a bot. This helps protect our community.", "bot_check"),
    (f"ERROR: [youtube] {ID}: This content isn\u2019t available, try again later.", "bot_check"),
    ("ERROR: [soundcloud] artist/track: Unable to download JSON metadata: HTTP Error 429: Too Many Requests",
     "bot_check"),
    (f"ERROR: [youtube] {ID}: This live event will begin in 3 hours.", "live"),
    (f"ERROR: [youtube] {ID}: Premieres in 10 hours", "live"),
    (f"ERROR: [youtube] {ID}: Unable to download API page: <urlopen error timed out> (caused by "
     "TransportError('timed out'))", "fetch_timeout"),
    (f"ERROR: [youtube] {ID}: Unable to download webpage: The read operation timed out", "fetch_timeout"),
    ("ERROR: Unsupported URL: https://vimeo.com/12345", "not_allowed"),
    ("ERROR: No suitable extractor (Generic) found for URL https://example.org/x", "not_allowed"),
    (f"ERROR: [youtube] {ID}: Requested format is not available. Use --list-formats for a list of available "
     "formats", "fetch_failed"),
    ("ERROR: ffmpeg exited with code 1", "fetch_failed"),
    ("ERROR: [generic] Unable to download webpage: HTTP Error 403: Forbidden", "fetch_failed"),
    ("ERROR: [youtube] x: Unable to download API page: ('Unable to connect to proxy', OSError('Tunnel connection "
     "failed: 502 Bad Gateway'))", "fetch_failed"),
])
def test_yt_dlp_messages_map_to_errors_people_understand(message: str, code: str) -> None:
    error = classify_error(message)
    assert error.code == code
    assert error.user_message == errors.by_code(code).default_message   # a sentence, not a stack trace
    assert error.detail == message                                       # the technical text stays for logs
