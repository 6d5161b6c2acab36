"""A threaded loopback HTTP server for tests, with scriptable per-path behaviours.

    srv = LoopbackServer().start()
    srv.route("/a.bin", Serve(b"hello"))
    srv.route("/flaky", FailTimes(2, then=Serve(data)))
    srv.route("/cut", CutShort(data, after=1000))   # first response dies after 1000 bytes
    srv.route("/hang", Hang())                      # accepts, never answers
    srv.route("/loop", Redirect("/loop"))
    srv.url("/a.bin"); srv.count("/a.bin"); srv.requests("/cut")[1].headers["Range"]
    srv.stop()

Unknown paths answer 404.  Every request is recorded per path (method, headers) so tests
can assert "fetched once" or "a Range request was made".  Only binds 127.0.0.1.
The ``http_server`` pytest fixture yields a started server and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

__all__ = [
    "CutShort",
    "FailTimes",
    "Hang",
    "LoopbackServer",
    "Recorded",
    "Redirect",
    "Serve",
    "ServeBlocks",
    "Status",
    "http_server",
]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    peer: tuple[str, int] = ("", 0)  # client address: same port = same (reused) connection


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-[b]`` -> (start, end_exclusive), or None when absent/unsupported."""
    if not value:
        return None
    m = _RANGE.match(value.strip())
    if not m:
        return None
    start = int(m.group(1))
    end = int(m.group(2)) + 1 if m.group(2) else size
    return start, min(end, size)


class Behaviour:
    def respond(self, h: _Handler, server: LoopbackServer) -> None:  # pragma: no cover
        raise NotImplementedError


def _send_body(h: _Handler, data: bytes | memoryview, chunk: int) -> None:
    view = memoryview(data)
    for i in range(0, len(view), chunk):
        h.wfile.write(view[i : i + chunk])


class Serve(Behaviour):
    """Serve ``data`` (200), honouring ``Range: bytes=N-`` with 206 when ``ranges``."""

    def __init__(self, data: bytes, *, ranges: bool = True, chunk: int = 64 * 1024,
                 headers: dict[str, str] | None = None) -> None:
        self.data = data
        self.ranges = ranges
        self.chunk = chunk
        self.headers = headers or {}

    def respond(self, h: _Handler, server: LoopbackServer) -> None:
        size = len(self.data)
        rng = _parse_range(h.headers.get("Range"), size) if self.ranges else None
        if rng is not None and rng[0] >= size:
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{size}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        if rng is not None:
            start, end = rng
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            start, end = 0, size
            h.send_response(200)
        if self.ranges:
            h.send_header("Accept-Ranges", "bytes")
        for k, v in self.headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(end - start))
        h.end_headers()
        _send_body(h, memoryview(self.data)[start:end], self.chunk)


class ServeBlocks(Behaviour):
    """Serve ``block`` repeated ``count`` times, written block by block (no big buffer).

    Without ``content_length`` the body is delimited by closing the connection."""

    def __init__(self, block: bytes, count: int, *, content_length: bool = True) -> None:
        self.block = block
        self.count = count
        self.content_length = content_length

    def respond(self, h: _Handler, server: LoopbackServer) -> None:
        h.send_response(200)
        if self.content_length:
            h.send_header("Content-Length", str(len(self.block) * self.count))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        for _ in range(self.count):
            h.wfile.write(self.block)


class Status(Behaviour):
    """Answer with a bare status (404, 403, 500, ...)."""

    def __init__(self, code: int, body: bytes = b"") -> None:
        self.code = code
        self.body = body

    def respond(self, h: _Handler, server: LoopbackServer) -> None:
        h.send_response(self.code)
        h.send_header("Content-Length", str(len(self.body)))
        h.end_headers()
        h.wfile.write(self.body)


class FailTimes(Behaviour):
    """Answer ``status`` (default 500) the first ``n`` times, then behave like ``then``."""

    def __init__(self, n: int, *, then: Behaviour, status: int = 500) -> None:
        self.remaining = n
        self.then = then
        self.status = status
        self._lock = threading.Lock()

    def respond(self, h: _Handler, server: LoopbackServer) -> None:
        with self._lock:
            fail = self.remaining > 0
            if fail:
                self.remaining -= 1
        if fail:
            Status(self.status, b"try again later").respond(h, server)
        else:
            self.then.respond(h, server)


class CutShort(Behaviour):
    """Announce the full length but drop the connection after ``after`` bytes, the first
    ``times`` times; then serve normally.  ``ranges`` says whether Range is honoured."""

    def __init__(self, data: bytes, *, after: int, times: int = 1, ranges: bool = True) -> None:
        self.data = data
        self.after = after
        self.remaining = times
        self.full = Serve(data, ranges=ranges)
        self.ranges = ranges
        self._lock = threading.Lock()

    def respond(self, h: _Handler, server: LoopbackServer) -> None:
        with self._lock:
            cut = self.remaining > 0
            if cut:
                self.remaining -= 1
        if not cut:
            self.full.respond(h, server)
            return
        h.send_response(200)
        if self.ranges:
            h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(self.data)))
        h.end_headers()
        h.wfile.write(self.data[: self.after])
        h.wfile.flush()
        h.close_connection = True
        with contextlib.suppress(OSError):
            h.connection.shutdown(socket.SHUT_RDWR)


class Hang(Behaviour):
    """Accept the request and never answer (until the server stops or ``max_s`` passes)."""

    def __init__(self, max_s: float = 10.0) -> None:
        self.max_s = max_s

    def respond(self, h: _Handler, server: LoopbackServer) -> None:
        server.stopping.wait(self.max_s)
        h.close_connection = True


class Redirect(Behaviour):
    """Redirect (302 by default) to ``location`` (a path on this server or a full URL)."""

    def __init__(self, location: str, status: int = 302) -> None:
        self.location = location
        self.status = status

    def respond(self, h: _Handler, server: LoopbackServer) -> None:
        loc = self.location if "://" in self.location else server.url(self.location)
        h.send_response(self.status)
        h.send_header("Location", loc)
        h.send_header("Content-Length", "0")
        h.end_headers()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # silence stderr
        pass

    def _dispatch(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path
        owner._record(
            Recorded(self.command, path, dict(self.headers.items()), tuple(self.client_address[:2]))
        )
        behaviour = owner.routes.get(path) or Status(404, b"not found")
        try:
            behaviour.respond(self, owner)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = _dispatch
    do_HEAD = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackServer


class LoopbackServer:
    """An HTTP/1.1 server on 127.0.0.1 (random port), serving scripted behaviours."""

    def __init__(self) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.stopping = threading.Event()
        self._requests: dict[str, list[Recorded]] = defaultdict(list)
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LoopbackServer:
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    def route(self, path: str, behaviour: Behaviour) -> str:
        """Install ``behaviour`` at ``path``; returns the full URL."""
        self.routes[path] = behaviour
        return self.url(path)

    def serve(self, items: dict[str, bytes] | Iterable[tuple[str, bytes]]) -> None:
        pairs = items.items() if isinstance(items, dict) else items
        for path, data in pairs:
            self.route(path, Serve(data))

    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self._requests[rec.path].append(rec)

    def requests(self, path: str) -> list[Recorded]:
        with self._lock:
            return list(self._requests.get(path, ()))

    def count(self, path: str) -> int:
        return len(self.requests(path))

    def total_requests(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._requests.values())


@pytest.fixture
def http_server() -> Iterable[LoopbackServer]:
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()
