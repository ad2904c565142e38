"""A loopback HTTP proxy for one fetch job: the host allowlist per connection, a byte cap, a byte count.

yt-dlp and the ffmpeg it runs for section downloads both follow redirects by themselves, and ffmpeg reports
no progress, so neither a URL check up front nor a progress hook can hold them to the rules. Every
connection of a job goes through one `Egress` instead (fetch.py points yt-dlp's and ffmpeg's proxy at it),
and it is closed by the job's watchdog or a cancel, which cuts whatever is still downloading.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable

from classifier.sources.links import split_host_port

__all__ = ["Egress"]

log = logging.getLogger(__name__)

# A small send buffer toward yt-dlp/ffmpeg keeps the proxy's read-ahead near what they consume: once ffmpeg
# has its window it hangs up, and every byte buffered past that point was downloaded for nothing. The
# upstream side keeps the kernel's autotuning, which sizes it to the real link: a fixed small receive buffer
# caps throughput on high-latency links (bytes per round trip), and at 16 KiB it stalled even on loopback.
_CHUNK = 16 * 1024
_CLIENT_SNDBUF = 16 * 1024
_JOIN_S = 5.0   # how long close() waits for each connection's thread


class Refused(Exception):
    """A request the egress proxy answers itself (bad request, refused host, unreachable upstream)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class Egress:
    """A loopback HTTP proxy for one job: host allowlist per connection, a byte cap, and a byte count.

    Handles `CONNECT host:port` (https, tunnelled) and absolute-form `GET http://...` (plain http). Platform
    hosts go to `upstream` (another HTTP proxy) when given; everything else connects directly.
    """

    def __init__(self, *, permit: Callable[[str, int], bool], upstream: tuple[str, int] | None,
                 max_bytes: int, io_timeout_s: float) -> None:
        self._permit, self._upstream = permit, upstream
        self._max_bytes, self._timeout = max_bytes, io_timeout_s
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.bytes_read = 0
        self.over_cap = False
        self.refused: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.5)      # a fallback: shutdown() below normally wakes accept() at once
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="spy-egress", daemon=True)
        self._acceptor.start()

    def __enter__(self) -> "Egress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._acceptor.join()
        for thread in list(self._threads):
            thread.join(timeout=_JOIN_S)

    def close(self) -> None:
        """Refuse new connections and cut every open one (safe from any thread, any number of times)."""
        with self._lock:
            self._closed = True
            open_sockets = list(self._sockets)
        _shutdown(self._listener)
        for sock in open_sockets:
            _shutdown(sock)

    def _track(self, sock: socket.socket) -> bool:
        with self._lock:
            if not self._closed:
                self._sockets.add(sock)
                return True
        return False

    def _accept_loop(self) -> None:
        try:
            while not self._closed:
                try:
                    conn, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not self._track(conn):
                    conn.close()
                    break
                thread = threading.Thread(target=self._serve, args=(conn,), name="spy-egress-conn", daemon=True)
                self._threads.append(thread)
                thread.start()
        finally:
            self._listener.close()

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            client.settimeout(self._timeout)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _CLIENT_SNDBUF)
            head, rest = _read_head(client)
            method, target, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            tunnel = method.upper() == "CONNECT"
            if tunnel:
                host, port = split_host_port(target)
            else:
                parts = urllib.parse.urlsplit(target)
                if parts.scheme != "http" or not parts.hostname:
                    raise Refused("400 Bad Request")
                host, port = parts.hostname, parts.port or 80
            if port is None:
                raise Refused("400 Bad Request")
            if not self._permit(host, port):
                self.refused.append(f"{host}:{port}")
                log.warning("egress refused: %s:%d", host, port)
                raise Refused("403 Forbidden")
            upstream, via_proxy = self._connect(host, port, tunnel)
            if tunnel:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                first = rest
            else:
                first = _forwarded_head(head, keep_absolute=via_proxy) + rest
            if first:
                upstream.sendall(first)
            if not tunnel:
                # Tell the client this connection ends with the response, or it may send its next request
                # (a redirect, say) down a connection that the origin is about to close.
                head, rest = _read_head(upstream)
                if not self._count(len(head) + 4 + len(rest)):
                    return
                client.sendall(_closing_head(head) + rest)
            to_upstream = threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True)
            to_upstream.start()
            self._pump(upstream, client, True)
            to_upstream.join()
        except Refused as refusal:
            with contextlib.suppress(OSError):
                client.sendall(f"HTTP/1.1 {refusal.status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                               .encode())
        except (OSError, ValueError, IndexError):
            pass                            # the client or the site hung up, or we cut the job: nothing to say
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._sockets.discard(sock)
                    _shutdown(sock)
                    sock.close()

    def _connect(self, host: str, port: int, tunnel: bool) -> tuple[socket.socket, bool]:
        address, via_proxy = (self._upstream, True) if self._upstream else ((host, port), False)
        try:
            sock = socket.create_connection(address, timeout=min(self._timeout, 15.0))
        except OSError:
            raise Refused("502 Bad Gateway") from None
        if not self._track(sock):
            sock.close()
            raise Refused("502 Bad Gateway")
        sock.settimeout(self._timeout)
        if via_proxy and tunnel:
            target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            try:
                sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
                head, _ = _read_head(sock)
                ok = head.split(b" ", 2)[1] == b"200"
            except (OSError, ValueError, IndexError):
                ok = False
            if not ok:
                with self._lock:
                    self._sockets.discard(sock)
                sock.close()
                raise Refused("502 Bad Gateway")
        return sock, via_proxy

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while True:
                data = src.recv(_CHUNK)
                if not data:
                    break
                if count and not self._count(len(data)):
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:                            # one side is done: so is the exchange (HTTP and TLS never half-close)
            _shutdown(src)
            _shutdown(dst)

    def _count(self, n: int) -> bool:
        with self._lock:
            self.bytes_read += n
            over = self.bytes_read > self._max_bytes
        if over:
            self.over_cap = True
            log.warning("egress byte cap reached: %d > %d", self.bytes_read, self._max_bytes)
            self.close()
        return not over


def _read_head(sock: socket.socket, limit: int = 64 * 1024) -> tuple[bytes, bytes]:
    """An HTTP message head (without the blank line) and whatever arrived after it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        if not data or len(buf) > limit:
            raise ValueError("no HTTP head")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def _forwarded_head(head: bytes, *, keep_absolute: bool) -> bytes:
    """A request head for the origin (origin-form target) or the next proxy, asking to close after the response."""
    request_line, *headers = head.split(b"\r\n")
    method, target, version = request_line.split(b" ", 2)
    if not keep_absolute:
        parts = urllib.parse.urlsplit(target.decode("latin-1"))
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")).encode("latin-1")
    kept = [h for h in headers if h and not h.lower().startswith((b"proxy-", b"connection:", b"keep-alive:"))]
    return b"\r\n".join([b" ".join((method, target, version)), *kept, b"Connection: close"]) + b"\r\n\r\n"


def _closing_head(head: bytes) -> bytes:
    """A response head that announces `Connection: close` (the proxy serves one request per connection)."""
    status_line, *headers = head.split(b"\r\n")
    dropped = (b"proxy-connection:", b"connection:", b"keep-alive:")
    kept = [h for h in headers if h and not h.lower().startswith(dropped)]
    return b"\r\n".join([status_line, *kept, b"Connection: close"]) + b"\r\n\r\n"


def _shutdown(sock: socket.socket) -> None:
    # shutdown (not close) wakes a thread blocked in recv/accept on this socket; its owner closes it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
