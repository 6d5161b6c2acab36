"""A throw-away mlbuild project for the core tests: manifests, lock, store, loopback upstream.

``Project`` lays out ``<tmp>/manifests/test.toml`` (single files, a file set, a tar.gz
archive unpacked with ``strip_components``, and ``concat`` builds over them) whose URLs
point at a :class:`tests.httpserver.LoopbackServer`, and drives ``mlbuild`` either
in-process (``cli``: ``mlbuild.cli.main`` with stdout/stderr captured by capsys) or as
a subprocess (``spawn``/``run``: ``python -m mlbuild``).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.httpserver import Behaviour, LoopbackServer, Serve

REPO = Path(__file__).resolve().parents[2]

HELLO = b"hello from the loopback upstream\n"
SET_A = b"file set member a\n"
SET_B = b"file set member b (in a subdirectory)\n"
BIG = bytes(range(256)) * 800  # 200 KiB, served slowly by the crash tests

# Environment for every mlbuild the tests start: short timeouts, no proxies, no host mirrors.
TEST_ENV = {
    "MLBUILD_CONNECT_TIMEOUT": "1",
    "MLBUILD_READ_TIMEOUT": "2",
    "MLBUILD_RETRIES": "3",
    "MLBUILD_RETRY_BACKOFF": "0.01",
    "MLBUILD_NO_PROGRESS": "1",
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
CLEARED = ("MLBUILD_STORE", "MLBUILD_MIRRORS", "MLBUILD_MANIFESTS", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
           "http_proxy", "https_proxy", "all_proxy")


def make_tar_gz(members: list[tuple[str, str, bytes | str, int]]) -> bytes:
    """A deterministic tar.gz: (name, type "f"|"d"|"l", data or link target, mode)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, typ, data, mode in members:
            ti = tarfile.TarInfo(name)
            ti.mtime = 1_600_000_000
            ti.mode = mode
            ti.uname = ti.gname = ""
            if typ == "d":
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            elif typ == "l":
                ti.type = tarfile.SYMTYPE
                ti.linkname = str(data)
                tf.addfile(ti)
            else:
                assert isinstance(data, bytes)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


ARCHIVE = make_tar_gz([
    ("data", "d", b"", 0o755),
    ("data/x.txt", "f", b"archived x\n", 0o644),
    ("data/bin", "d", b"", 0o755),
    ("data/bin/run.sh", "f", b"#!/bin/sh\necho run\n", 0o755),
    ("data/link", "l", "x.txt", 0o777),
])

MANIFEST = """\
# The core tests' own manifest: every URL is the loopback server.

[fetch.hello]
description = "one flat file"
url = "{base}/files/hello.txt"

[fetch.fileset]
description = "a file set"
base_url = "{base}/set/"
files = ["a.txt", "sub/b.txt"]

[fetch.archive]
description = "a tar.gz unpacked into a tree"
url = "{base}/arch/data.tar.gz"
unpack = "tar.gz"
strip_components = 1

[build.greeting]
builder = "concat"
inputs = {{ a = "hello", b = "fileset" }}
params = {{ sep = " | " }}

[build.bundle]
description = "depends on everything"
builder = "concat"
inputs = {{ a = "greeting", b = "archive" }}
"""


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The rendered `error:` line."""
        return next(line for line in self.err.splitlines() if line.startswith("error: "))


class Project:
    def __init__(self, root: Path, server: LoopbackServer, capsys: Any = None) -> None:
        self.root = root
        self.server = server
        self.capsys = capsys
        (root / "manifests").mkdir(parents=True, exist_ok=True)
        (root / "lock").mkdir(exist_ok=True)
        self.serve_defaults()
        self.write_manifest(MANIFEST)

    # -- layout ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifests" / "test.toml"

    @property
    def lock_path(self) -> Path:
        return self.root / "lock" / "mlbuild.lock"

    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    def serve_defaults(self) -> None:
        self.server.route("/files/hello.txt", Serve(HELLO))
        self.server.route("/set/a.txt", Serve(SET_A))
        self.server.route("/set/sub/b.txt", Serve(SET_B))
        self.server.route("/arch/data.tar.gz", Serve(ARCHIVE))

    def write_manifest(self, text: str, name: str = "test.toml") -> None:
        (self.root / "manifests" / name).write_text(text.format(base=self.server.base))

    def append_manifest(self, text: str) -> None:
        with open(self.manifest_path, "a") as f:
            f.write("\n" + text.format(base=self.server.base))

    def reset_counts(self) -> None:
        """Forget the requests recorded so far (e.g. the lock's own fetches)."""
        with self.server._lock:
            self.server._requests.clear()

    def route(self, path: str, behaviour: Behaviour) -> None:
        self.server.route(path, behaviour)

    # -- running mlbuild ----------------------------------------------------------------
    def args(self, argv: tuple[str, ...], store: Path | None) -> list[str]:
        return [*argv, "--manifests", str(self.root / "manifests"), "--lock", str(self.lock_path),
                "--store", str(store or self.store_dir)]

    def cli(self, *argv: str, store: Path | None = None, expect: int | None = 0) -> Result:
        """``mlbuild ARGV`` in-process; asserts the exit code unless ``expect`` is None."""
        from mlbuild.cli import main

        assert self.capsys is not None
        self.capsys.readouterr()
        code = main(self.args(argv, store))
        cap = self.capsys.readouterr()
        r = Result(code, cap.out, cap.err)
        if expect is not None:
            assert code == expect, f"mlbuild {' '.join(argv)} exited {code}, expected {expect}\n{cap.err}"
        return r

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(TEST_ENV)
        env["PYTHONPATH"] = str(REPO)
        return env

    def spawn(self, *argv: str, store: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "mlbuild", *self.args(argv, store)], cwd=self.root,
                                env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def run(self, *argv: str, store: Path | None = None, timeout: float = 60) -> Result:
        p = self.spawn(*argv, store=store)
        out, err = p.communicate(timeout=timeout)
        return Result(p.returncode, out, err)

    def lock(self, *extra: str, expect: int | None = 0) -> Result:
        """Lock into a side store, so that the project's store starts empty for realize."""
        return self.cli("lock", *extra, store=self.root / "lockstore", expect=expect)

    # -- looking at the store ---------------------------------------------------------------
    def registered(self, store: Path | None = None) -> set[str]:
        db = (store or self.store_dir) / ".mlbuild" / "db.sqlite"
        if not db.exists():
            return set()
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return {r[0] for r in con.execute("SELECT name FROM entries")}
        finally:
            con.close()

    def on_disk(self, store: Path | None = None) -> set[str]:
        d = store or self.store_dir
        if not d.exists():
            return set()
        return {p.name for p in d.iterdir() if not p.name.startswith(".") and p.name not in ("CACHEDIR.TAG",)}

    def entry(self, suffix: str, store: Path | None = None) -> str:
        found = [n for n in self.registered(store) if n.split("-", 1)[1] == suffix]
        assert len(found) == 1, f"{suffix}: {found}"
        return found[0]

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every path under the project's lock and store with (size, mtime_ns)."""
        out = {}
        for base in (self.root / "lock", self.store_dir):
            if base.exists():
                for p in sorted(base.rglob("*")):
                    st = p.lstat()
                    out[str(p)] = (st.st_size, st.st_mtime_ns)
        return out


def kill_group(p: subprocess.Popen[str]) -> None:
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=10)


def wait_for(pred: Any, timeout: float = 20, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def read_json(text: str) -> Any:
    return json.loads(text)


@pytest.fixture
def core_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in CLEARED:
        monkeypatch.delenv(k, raising=False)
    for k, v in TEST_ENV.items():
        monkeypatch.setenv(k, v)
