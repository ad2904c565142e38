"""fetch: real media through real yt-dlp and ffmpeg, on loopback; platform links die at a refusing proxy."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yt_dlp

from classifier import errors
from classifier.settings import Settings
from classifier.sources import fetch
from classifier.sources.egress import Egress
from classifier.sources.fetch import (
    Fetched,
    Fetcher,
    choose_window,
    fetch_window,
    resolve_redirects,
    ydl_options,
)
from classifier.sources.links import (
    Source,
    egress_allowed,
    find_source,
    is_allowed_url,
    split_host_port,
)
from tests.fakes.media_host import (  # noqa: F401  (fixtures)
    SAMPLE_RATE,
    MediaHost,
    audio_page,
    media_dir,
    media_files,
    media_host,
    tone_hz,
)
from tests.fakes.refusing_proxy import RefusingProxy, refusing_proxy  # noqa: F401  (fixture)


@pytest.fixture
def settings(tmp_path: Path, media_host: MediaHost, refusing_proxy: RefusingProxy) -> Settings:
    """Loopback media allowed; everything else goes to the refusing proxy."""
    return Settings(data_dir=tmp_path / "data", fetch_extra_hosts=(media_host.hostport,),
                    fetch_proxy_url=refusing_proxy.url, fetch_timeout_s=20.0)


def link(host: MediaHost, name: str, fragment: str = "") -> Source:
    return find_source(f"what is this {host.url(name)}{fragment} ?", extra_hosts=(host.hostport,))


def decode(path: Path, seconds: float = 1.0) -> np.ndarray:
    """The first `seconds` of a file as mono float32 at the test media's rate."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-t", str(seconds), "-ac", "1",
                          "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype=np.float32)


def pitch(path: Path) -> float:
    """The dominant frequency of a file's first second: tells where in the test media a window came from."""
    wave = decode(path)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def media_seconds(path: Path) -> float:
    return len(decode(path, 1e6)) / SAMPLE_RATE


# --- choosing the window (pure) ------------------------------------------------------------------------

@pytest.mark.parametrize("start, media, expected", [
    (65.0, 180.0, (65.0, 30.0, None)),                    # the asked-for time
    (170.0, 180.0, (150.0, 30.0, None)),                  # moved back so the window fits
    (65.0, None, (65.0, 30.0, None)),                     # unknown length: trust the link
    (None, 180.0, (75.0, 30.0, None)),                    # a track: its middle
    (None, 20.0, (0.0, 20.0, None)),                      # shorter than the window: all of it
    (None, None, (0.0, 30.0, None)),                      # nothing known: the start
    (None, 20 * 60.0, (585.0, 30.0, None)),               # 20 min is still a (long) track
])
def test_choose_window(start: float | None, media: float | None, expected: tuple) -> None:
    assert choose_window(start, 30.0, media) == expected


@pytest.mark.parametrize("platform, how", [("youtube", "?t=1h02m03s"), ("soundcloud", "#t=1:02:03")])
def test_a_long_set_without_a_time_starts_at_its_start_with_a_hint(platform: str, how: str) -> None:
    start, duration, hint = choose_window(None, 30.0, 2 * 3600.0, platform)
    assert (start, duration) == (0.0, 30.0)
    assert hint is not None and "2-hour set" in hint and how in hint


def test_a_time_past_the_end_is_refused() -> None:
    with pytest.raises(errors.BadSource, match="asks for 5:00, but the recording is only 3:00 long"):
        choose_window(300.0, 30.0, 180.0)


# --- the yt-dlp call --------------------------------------------------------------------------------

@pytest.mark.parametrize("source, extractors, ie_keys", [
    (Source("youtube", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", 3723.0), ["youtube", "youtube:clip"],
     ["Youtube", "YoutubeClip"]),
    (Source("soundcloud", "https://soundcloud.com/artist/track", 3723.0), ["soundcloud"], ["Soundcloud"]),
    (Source("extra", "http://127.0.0.1:8765/set.mp3", None), ["generic"], ["Generic"]),
])
def test_ydl_options_are_locked_down(source: Source, extractors: list[str], ie_keys: list[str],
                                     tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    job = fetch._Job(source, settings, 30.0, time.monotonic() + 60, threading.Event(),
                     egress=None)  # type: ignore[arg-type]
    opts = ydl_options(source, settings, tmp_path, proxy="http://127.0.0.1:1", job=job)
    assert opts["allowed_extractors"] == extractors
    assert opts["noplaylist"] is True and opts["extract_flat"] == "in_playlist"
    assert opts["format"] == "bestaudio/best"
    assert opts["outtmpl"] == {"default": "window.%(ext)s"}
    assert opts["paths"] == {"home": str(tmp_path), "temp": str(tmp_path)}
    assert opts["proxy"] == "http://127.0.0.1:1"
    assert opts["download_ranges"] == job.ranges and opts["force_keyframes_at_cuts"] is False
    assert opts["match_filter"] == job.check and opts["progress_hooks"] == [job.progress]
    assert opts["external_downloader_args"]["ffmpeg_i"][:2] == ["-fflags", "+fastseek"]
    assert opts["cookiefile"] is None and opts["usenetrc"] is False and opts["enable_file_urls"] is False
    assert opts["postprocessors"] == [] and opts["fixup"] == "never"
    assert not {"cookiesfrombrowser", "exec_cmd", "external_downloader", "netrc_cmd", "username"} & opts.keys()
    assert Path(opts["cachedir"]).is_relative_to(settings.data_dir)
    # YouTube's challenge solver: the installed runtime by path, never a script fetched from npm or GitHub
    assert opts["remote_components"] == []
    assert Path(opts["js_runtimes"]["deno"]["path"]).is_file()
    # yt-dlp accepts them, and loads exactly those extractors
    with yt_dlp.YoutubeDL(opts) as ydl:
        assert list(ydl._ies) == ie_keys


@pytest.fixture
def ydl_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], str]]:
    """Every YoutubeDL built by fetch.py (params) and every URL it was asked to extract; still the real thing."""
    calls: list[tuple[dict[str, Any], str]] = []

    class Recording(yt_dlp.YoutubeDL):
        def extract_info(self, url: str, *args: Any, **kwargs: Any) -> Any:
            calls.append((self.params, url))
            return super().extract_info(url, *args, **kwargs)

    monkeypatch.setattr(fetch.yt_dlp, "YoutubeDL", Recording)
    return calls


@pytest.mark.parametrize("text, url, extractor, first_hop", [
    ("spy identify https://youtu.be/dQw4w9WgXcQ?t=1h2m3s", "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
     ["youtube", "youtube:clip"], "www.youtube.com:443"),
    ("spy identify https://soundcloud.com/artist/track#t=1:02:03", "https://soundcloud.com/artist/track",
     ["soundcloud"], "soundcloud.com:443"),
    ("who is this at 1:02:03? https://api.soundcloud.com/tracks/123998367?secret_token=s-8Pjrp",
     "https://api.soundcloud.com/tracks/123998367?secret_token=s-8Pjrp", ["soundcloud"], "soundcloud.com:443"),
])
def test_platform_links_take_the_right_path_and_die_at_the_proxy(
        text: str, url: str, extractor: list[str], first_hop: str, settings: Settings, tmp_path: Path,
        refusing_proxy: RefusingProxy, media_host: MediaHost, ydl_calls: list) -> None:
    source = find_source(text)
    assert source.start_s == 3723.0
    with pytest.raises(errors.FetchFailed) as caught:
        fetch_window(source, settings, tmp_path)
    assert type(caught.value) is errors.FetchFailed           # a network failure, not a misread refusal
    [(params, asked)] = ydl_calls
    assert asked == url and params["allowed_extractors"] == extractor
    assert refusing_proxy.hosts and refusing_proxy.hosts[0] == first_hop
    assert all(egress_allowed(source.platform, *split_host_port(h)) for h in refusing_proxy.hosts)
    assert media_host.requests == []
    assert list(tmp_path.glob("window.*")) == []


def test_a_share_link_is_resolved_through_the_proxy(settings: Settings, tmp_path: Path,
                                                    refusing_proxy: RefusingProxy, ydl_calls: list) -> None:
    with pytest.raises(errors.FetchFailed):
        fetch_window(find_source("https://on.soundcloud.com/AbC123"), settings, tmp_path)
    assert refusing_proxy.hosts == ["on.soundcloud.com:443"]
    assert ydl_calls == []                                     # yt-dlp never saw the unresolved link


# --- real media on loopback ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mp3", "m4a", "ogg"])
def test_fetches_just_the_window_of_real_media(kind: str, settings: Settings, tmp_path: Path,
                                               media_host: MediaHost, media_files: dict[str, Path],
                                               refusing_proxy: RefusingProxy) -> None:
    fetched = fetch_window(link(media_host, f"tone.{kind}", "#t=1:05"), settings, tmp_path, window_s=10)
    assert fetched.path.parent == tmp_path and fetched.path.name.startswith("window.")
    assert (fetched.start_s, fetched.duration_s, fetched.hint) == (65.0, 10.0, None)
    assert media_seconds(fetched.path) == pytest.approx(10.0, abs=1.0)         # stream copy cuts on packets
    assert pitch(fetched.path) == pytest.approx(tone_hz(65), abs=10)           # audio from 1:05, not 0:00
    size = media_files[kind].stat().st_size
    assert fetched.bytes_read > 0 and media_host.bytes_sent > 0
    if kind != "ogg":                        # the ogg file (200 kB) is about the size of the socket buffers
        # What the host sent also counts its own and our kernel's socket buffers (~0.3 MB per connection on
        # loopback, see bench/bench_fetch.py); what we read is the honest measure for a file this small.
        assert fetched.bytes_read < size / 2
        assert any(r.range and int(r.range[6:].split("-")[0]) > size / 4 for r in media_host.requests)  # it seeked
    assert refusing_proxy.seen == []


def test_a_page_with_a_duration_gets_the_middle_of_the_track(settings: Settings, tmp_path: Path,
                                                             media_host: MediaHost) -> None:
    media_host.add("track.html", audio_page(media_host.url("tone.mp3"), 180, "A loopback track"))
    fetched = fetch_window(link(media_host, "track.html"), settings, tmp_path, window_s=10)
    assert (fetched.start_s, fetched.duration_s, fetched.media_duration_s) == (85.0, 10.0, 180.0)
    assert fetched.title == "A loopback track" and fetched.hint is None
    assert pitch(fetched.path) == pytest.approx(tone_hz(85), abs=10)


def test_a_long_set_without_a_time_gets_its_start_and_a_hint(settings: Settings, tmp_path: Path,
                                                             media_host: MediaHost) -> None:
    media_host.add("set.html", audio_page(media_host.url("tone.m4a"), 3600))   # claims an hour
    fetched = fetch_window(link(media_host, "set.html"), settings, tmp_path, window_s=5)
    assert (fetched.start_s, fetched.duration_s) == (0.0, 5.0)
    assert fetched.hint is not None and "60-minute set" in fetched.hint and "#t=1:02:03" in fetched.hint


def test_redirects_within_allowed_hosts_are_followed(settings: Settings, tmp_path: Path,
                                                     media_host: MediaHost) -> None:
    media_host.redirects["/moved.mp3"] = media_host.url("tone.mp3")
    fetched = fetch_window(link(media_host, "moved.mp3", "#t=0:30"), settings, tmp_path, window_s=5)
    assert pitch(fetched.path) == pytest.approx(tone_hz(30), abs=10)


def test_resolve_redirects_checks_every_hop_before_following_it(media_host: MediaHost) -> None:
    extras = (media_host.hostport,)
    media_host.redirects["/a"] = "/b"
    media_host.redirects["/b"] = media_host.url("tone.mp3")
    media_host.redirects["/out"] = "http://10.255.255.1:9/secret"
    permit = lambda host, port: egress_allowed("extra", host, port, extras)  # noqa: E731
    with Egress(permit=permit, upstream=None, max_bytes=10**6, io_timeout_s=5) as egress:
        def resolve(url: str) -> str:
            return resolve_redirects(url, proxy_url=egress.url, allowed=lambda u: is_allowed_url(u, extras),
                                     done=lambda u: u.endswith(".mp3"), timeout_s=5)
        assert resolve(media_host.url("a")) == media_host.url("tone.mp3")
        with pytest.raises(errors.NotAllowed):
            resolve(media_host.url("out"))
    assert egress.refused == []                               # refused by the hop check, before any connection
    assert [r.path for r in media_host.requests] == ["/a", "/b", "/out"]


# --- limits ------------------------------------------------------------------------------------------

def test_the_byte_cap_stops_a_download(settings: Settings, tmp_path: Path, media_host: MediaHost) -> None:
    with pytest.raises(errors.DownloadTooLarge):
        fetch_window(link(media_host, "tone.mp3", "#t=1:00"), settings.replace(max_fetch_bytes=40_000), tmp_path)
    assert media_host.bytes_sent < 40_000 + 1_000_000          # cut off: not the whole window, let alone the file


def test_the_wall_clock_abandons_a_stalled_fetch(settings: Settings, tmp_path: Path, media_host: MediaHost) -> None:
    media_host.slow["/tone.mp3"] = 0.05                         # 20 KiB/s
    started = time.monotonic()
    with pytest.raises(errors.FetchTimeout):
        fetch_window(link(media_host, "tone.mp3", "#t=1:00"), settings.replace(fetch_timeout_s=1.5), tmp_path)
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("info, error", [
    ({"is_live": True}, errors.LiveStream),
    ({"live_status": "is_upcoming"}, errors.LiveStream),
    ({"live_status": "post_live", "duration": 60}, errors.LiveStream),
    ({"duration": 6 * 3600 + 1}, errors.MediaTooLong),
])
def test_the_filter_refuses_live_and_overlong_media(info: dict, error: type, tmp_path: Path) -> None:
    job = fetch._Job(Source("youtube", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", None), Settings(), 30.0,
                     time.monotonic() + 60, threading.Event(), egress=None)  # type: ignore[arg-type]
    assert job.check({"id": "x", "title": "t", **info}) == error.code         # yt-dlp skips the download
    assert isinstance(job.refusal, error)
    job.refusal = None
    assert job.check({"id": "x", "duration": 2 * 3600, "live_status": "was_live"}) is None


def test_overlong_media_is_refused_before_its_bytes_are_read(settings: Settings, tmp_path: Path,
                                                             media_host: MediaHost) -> None:
    media_host.add("marathon.html", audio_page(media_host.url("tone.mp3"), 7 * 3600))
    with pytest.raises(errors.MediaTooLong):
        fetch_window(link(media_host, "marathon.html"), settings, tmp_path)
    assert [r.path for r in media_host.requests] == ["/marathon.html"]


# --- the async front -----------------------------------------------------------------------------------

async def test_window_yields_audio_and_removes_its_folder(settings: Settings, media_host: MediaHost) -> None:
    async with Fetcher(settings).window(link(media_host, "tone.m4a", "#t=0:20"), window_s=5) as fetched:
        assert isinstance(fetched, Fetched) and fetched.path.is_file()
        workdir = fetched.path.parent
    assert not workdir.exists()


async def test_window_removes_its_folder_when_the_caller_fails(settings: Settings, media_host: MediaHost) -> None:
    with pytest.raises(RuntimeError, match="the caller failed"):
        async with Fetcher(settings).window(link(media_host, "tone.mp3"), window_s=5) as fetched:
            workdir = fetched.path.parent
            raise RuntimeError("the caller failed")
    assert not workdir.exists()


@pytest.fixture
def workdirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folder of every fetch_window call the Fetcher makes."""
    seen: list[Path] = []
    real = fetch.fetch_window

    def recording(source: Source, settings: Settings, workdir: Path, **kwargs: Any) -> Fetched:
        seen.append(workdir)
        return real(source, settings, workdir, **kwargs)

    monkeypatch.setattr(fetch, "fetch_window", recording)
    return seen


async def test_window_times_out_and_removes_its_folder(settings: Settings, media_host: MediaHost,
                                                       workdirs: list[Path]) -> None:
    media_host.slow["/tone.mp3"] = 0.05
    started = time.monotonic()
    with pytest.raises(errors.FetchTimeout):
        async with Fetcher(settings.replace(fetch_timeout_s=1.0)).window(link(media_host, "tone.mp3", "#t=1:00")):
            pytest.fail("no audio expected")
    assert time.monotonic() - started < 4.0
    assert workdirs and not workdirs[0].exists()


async def test_a_cancelled_window_stops_its_thread_and_removes_its_folder(
        settings: Settings, media_host: MediaHost, workdirs: list[Path]) -> None:
    media_host.slow["/tone.mp3"] = 0.05

    async def listen() -> None:
        async with Fetcher(settings).window(link(media_host, "tone.mp3", "#t=1:00")):
            pytest.fail("no audio expected")

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.7)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 2.0                   # the thread stopped: it did not run to 20 s
    assert workdirs and not workdirs[0].exists()


async def test_fetches_run_off_the_loop_at_most_n_at_once(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    running, most = 0, 0
    lock = threading.Lock()

    def slow_fetch(source: Source, settings: Settings, workdir: Path, **kwargs: Any) -> Fetched:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)                                        # blocking, like yt-dlp
        with lock:
            running -= 1
        (workdir / "window.mp3").write_bytes(b"x")
        return Fetched(workdir / "window.mp3", 0.0, 30.0, None, None, 1, None)

    monkeypatch.setattr(fetch, "fetch_window", slow_fetch)
    fetcher = Fetcher(settings.replace(max_concurrent_fetches=2))
    ticks = 0

    async def one() -> None:
        async with fetcher.window(Source("youtube", "https://www.youtube.com/watch?v=dQw4w9WgXcQ", None)):
            pass

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    clock = asyncio.create_task(ticker())
    await asyncio.gather(*(one() for _ in range(5)))
    clock.cancel()
    assert most == 2
    assert ticks >= 30                                         # ~0.6 s of fetching never blocked the loop
