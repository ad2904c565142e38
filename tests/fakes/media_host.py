"""A loopback media host: generated audio over HTTP with Range support, counting every byte it sends.

The audio is a tone whose pitch steps every 10 s (`tone_hz(t)`), so a test can tell from a downloaded
window *where* in the media it came from.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.server
import io
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["MediaHost", "Request", "generate_media", "tone_hz", "audio_page", "media_dir", "media_files",
           "media_host"]

SAMPLE_RATE = 22050
_STEP_S = 10
_CODECS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k"],
    "m4a": ["-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart"],
    "ogg": ["-c:a", "libvorbis", "-q:a", "2"],
}
_MIME = {"mp3": "audio/mpeg", "m4a": "audio/mp4", "ogg": "audio/ogg", "html": "text/html; charset=utf-8"}


def tone_hz(t: float) -> float:
    """The tone's pitch at `t` seconds: 200 Hz, +40 Hz every 10 s, wrapping every 500 s."""
    return 200.0 + 40.0 * ((int(t) // _STEP_S) % 50)


def generate_media(directory: Path, kind: str, seconds: int) -> Path:
    """`directory/tone-<seconds>s.<kind>` (mp3, m4a or ogg), made with ffmpeg once and then reused."""
    path = directory / f"tone-{seconds}s.{kind}"
    if path.is_file():
        return path
    directory.mkdir(parents=True, exist_ok=True)
    # One sine source per 10-s step, concatenated: several times faster to render than one expression.
    steps = range(0, seconds, _STEP_S)
    graph = ";".join(f"sine=f={tone_hz(t):.0f}:d={min(_STEP_S, seconds - t)}:sample_rate={SAMPLE_RATE},"
                     f"volume=0.3[s{i}]" for i, t in enumerate(steps))
    graph += ";" + "".join(f"[s{i}]" for i in range(len(steps))) + f"concat=n={len(steps)}:v=0:a=1"
    part = path.with_suffix(".part" + path.suffix)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-filter_complex", graph,
                    *_CODECS[kind], str(part)], check=True)
    part.replace(path)
    return path


def audio_page(media_url: str, seconds: float, title: str = "Loopback set") -> bytes:
    """An HTML page describing the audio with JSON-LD, as many sites do: yt-dlp's generic extractor then
    learns the media's duration (a bare media URL gives it none)."""
    data = json.dumps({"@context": "https://schema.org", "@type": "AudioObject", "name": title,
                       "contentUrl": media_url, "encodingFormat": content_type(Path(media_url)),
                       "duration": f"PT{int(seconds)}S"})
    return (f'<!doctype html><html><head><title>{title}</title><script type="application/ld+json">{data}'
            f'</script></head><body><p>{title}</p></body></html>').encode()


def content_type(path: Path) -> str:
    return _MIME.get(path.suffix.lstrip("."), "application/octet-stream")


@dataclasses.dataclass
class Request:
    """One request, recorded when its response starts (`sent` grows while the body goes out), so a test
    that looks right after the client hung up sees it even if the server has not noticed yet."""

    method: str
    path: str
    range: str | None
    sent: int                       # body bytes this response handed to the kernel


class MediaHost:
    """A threaded HTTP server on 127.0.0.1 serving files (with `Range`), redirects and a slow trickle.

    `sndbuf` fixes each connection's kernel send buffer. The host counts the bytes it hands to the kernel;
    with Linux's autotuned loopback buffers (up to 4 MiB) that count would include megabytes that a client
    which hangs up never receives. A fixed 64 KiB keeps "bytes sent" within 64 KiB of what crossed the wire.
    """

    def __init__(self, *, sndbuf: int | None = 64 * 1024) -> None:
        self.files: dict[str, tuple[Path | bytes, str]] = {}
        self.redirects: dict[str, str] = {}
        self.slow: dict[str, float] = {}          # path -> seconds between 1 KiB chunks
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._active = 0                          # responses still sending a body
        self._idle = threading.Condition(self._lock)
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.host, self._server.sndbuf = self, sndbuf
        self.port = self._server.server_address[1]
        self.hostport = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="media-host", daemon=True)

    def __enter__(self) -> "MediaHost":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def add(self, name: str, body: Path | bytes, mime: str | None = None) -> str:
        """Serve a file (or bytes) at `/name`; returns its URL."""
        self.files["/" + name] = (body, mime or content_type(Path(name)))
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://{self.hostport}/{name}"

    @property
    def bytes_sent(self) -> int:
        with self._lock:
            return sum(r.sent for r in self.requests)

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until no response is still sending (a client that hung up is noticed on the next write)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout_s)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    host: MediaHost
    sndbuf: int | None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        if self.server.sndbuf:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.server.sndbuf)
        super().setup()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def do_GET(self) -> None:
        self._respond(body=True)

    def _respond(self, *, body: bool) -> None:
        host = self.server.host
        path = self.path.split("?", 1)[0]
        if path in host.redirects:
            host._record(Request(self.command, path, None, 0))
            self.send_response(302)
            self.send_header("Location", host.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path not in host.files:
            host._record(Request(self.command, path, None, 0))
            self.send_error(404)
            return
        body_or_file, mime = host.files[path]
        size = len(body_or_file) if isinstance(body_or_file, bytes) else body_or_file.stat().st_size
        start, end = 0, size - 1
        asked = self.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", asked or "")
        if match and (match[1] or match[2]):
            if match[1]:
                start, end = int(match[1]), min(int(match[2]), size - 1) if match[2] else size - 1
            else:                                               # suffix range: the last N bytes
                start = max(0, size - int(match[2]))
            if start >= size:
                host._record(Request(self.command, path, asked, 0))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        request = Request(self.command, path, asked, 0)
        with host._lock:
            host.requests.append(request)
            host._active += 1
        self.end_headers()
        delay = host.slow.get(path)
        try:
            if body:
                with (io.BytesIO(body_or_file) if isinstance(body_or_file, bytes) else body_or_file.open("rb")) as f:
                    f.seek(start)
                    left = end - start + 1
                    while left > 0:
                        chunk = f.read(min(1024 if delay else 16 * 1024, left))
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        with host._lock:
                            request.sent += len(chunk)
                        left -= len(chunk)
                        if delay:
                            time.sleep(delay)
        except OSError:                                         # the client hung up: normal for windowed reads
            self.close_connection = True
        finally:
            with host._idle:
                host._active -= 1
                host._idle.notify_all()


# --- pytest fixtures (import them into a test module to use them) -----------------------------------

@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to generate test media")
    return tmp_path_factory.getbasetemp() / "media"


@pytest.fixture(scope="session")
def media_files(media_dir: Path) -> dict[str, Path]:
    """Three-minute tones as MP3, M4A and OGG, generated once per session (in parallel: ffmpeg is the wait)."""
    kinds = ("mp3", "m4a", "ogg")
    with concurrent.futures.ThreadPoolExecutor(len(kinds)) as pool:
        paths = pool.map(lambda kind: generate_media(media_dir, kind, 180), kinds)
        return dict(zip(kinds, paths))


@pytest.fixture
def media_host(media_files: dict[str, Path]) -> Iterator[MediaHost]:
    with MediaHost() as host:
        for kind, path in media_files.items():
            host.add(f"tone.{kind}", path)
        yield host
