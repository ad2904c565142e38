"""An HTTP proxy on loopback that refuses every request and remembers what it was asked for.

Tests route all non-loopback traffic here: a request that shows up in `seen` got as far as the network
edge (and no further); one that does not was stopped earlier, in our code.
"""

from __future__ import annotations

import socketserver
import threading
from typing import Iterator

import pytest

__all__ = ["RefusingProxy", "refusing_proxy"]


class RefusingProxy:
    def __init__(self) -> None:
        self.seen: list[str] = []            # request lines, e.g. "CONNECT www.youtube.com:443 HTTP/1.1"
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="refusing-proxy", daemon=True)

    def __enter__(self) -> "RefusingProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def hosts(self) -> list[str]:
        """The `host:port` (CONNECT) or URL (plain http) of every refused request."""
        with self._lock:
            return [line.split(" ")[1] for line in self.seen if line.count(" ") >= 1]

    def _record(self, line: str) -> None:
        with self._lock:
            self.seen.append(line)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: RefusingProxy


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.request.settimeout(5)
        try:
            line = self.rfile.readline(8192).decode("latin-1").strip()
            while self.rfile.readline(8192).strip():
                pass
        except OSError:
            return
        if line:
            self.server.proxy._record(line)
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
def refusing_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[RefusingProxy]:
    """The proxy, also set as the process's HTTP(S)_PROXY so that any stray client ends up here too."""
    with RefusingProxy() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        yield proxy
