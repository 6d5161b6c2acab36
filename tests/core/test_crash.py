"""Crash safety and concurrency, with real processes: kill -9 mid-fetch and mid-build,
two realizes at once."""

from __future__ import annotations

import time
from pathlib import Path

from tests.core.project import BIG, HELLO, SET_A, SET_B, Project, kill_group, wait_for
from tests.httpserver import Behaviour, Serve


class Slow(Behaviour):
    """Serve ``data`` in ``parts`` pieces, ``delay`` seconds apart."""

    def __init__(self, data: bytes, parts: int = 40, delay: float = 0.1) -> None:
        self.data, self.parts, self.delay = data, parts, delay

    def respond(self, h, server) -> None:  # type: ignore[no-untyped-def]
        h.send_response(200)
        h.send_header("Content-Length", str(len(self.data)))
        h.end_headers()
        step = -(-len(self.data) // self.parts)
        for i in range(0, len(self.data), step):
            if server.stopping.wait(self.delay):
                return
            h.wfile.write(self.data[i:i + step])
            h.wfile.flush()


def no_incomplete_entry(p: Project, suffix: str) -> None:
    """Nothing named like the entry is visible or registered."""
    assert not [n for n in p.on_disk() if n.endswith("-" + suffix)]
    assert not [n for n in p.registered() if n.endswith("-" + suffix)]


def consistent(p: Project) -> None:
    """Every registered entry is on disk and every entry on disk is registered."""
    assert p.on_disk() == p.registered()


def test_kill_9_during_a_fetch_then_realize_completes(project: Project) -> None:
    p = project
    p.route("/files/big.bin", Serve(BIG))
    p.append_manifest('[fetch.big]\nurl = "{base}/files/big.bin"\n')
    p.lock()
    p.route("/files/big.bin", Slow(BIG))
    proc = p.spawn("realize", "big")
    try:
        wait_for(lambda: p.server.count("/files/big.bin") >= 1, what="the download to start")
        tmp = p.store_dir / ".mlbuild" / "tmp"
        wait_for(lambda: any(f.is_file() and f.stat().st_size > 0 for f in tmp.rglob("*")), what="bytes on disk")
        for _ in range(5):
            no_incomplete_entry(p, "big.bin")
            time.sleep(0.05)
    finally:
        kill_group(proc)
    no_incomplete_entry(p, "big.bin")
    consistent(p)
    p.route("/files/big.bin", Serve(BIG))
    r = p.run("realize", "big")
    assert r.code == 0, r.err
    assert Path(r.out.strip()).read_bytes() == BIG
    assert p.run("store", "verify").code == 0
    consistent(p)
    assert not list((p.store_dir / ".mlbuild" / "tmp").iterdir())


def test_kill_9_during_a_build_then_realize_completes(locked: Project) -> None:
    p = locked
    p.append_manifest('[build.slowcat]\nbuilder = "concat"\ninputs = {{ a = "hello", b = "fileset" }}\n'
                      'params = {{ sleep = 1.0 }}\n')
    assert p.run("realize", "hello", "fileset").code == 0
    proc = p.spawn("realize", "slowcat")
    logs = p.store_dir / ".mlbuild" / "logs"
    try:
        wait_for(lambda: any("sleeping" in f.read_text() for f in logs.glob("*-slowcat.log")),
                 what="the builder to start sleeping")
        half = list((p.store_dir / ".mlbuild" / "tmp").rglob("result.txt"))
        assert half, "the builder writes into a staging directory"
        no_incomplete_entry(p, "slowcat")
    finally:
        kill_group(proc)
    no_incomplete_entry(p, "slowcat")
    consistent(p)
    r = p.run("realize", "slowcat")
    assert r.code == 0, r.err
    out = Path(r.out.strip())
    assert (out / "result.txt").read_bytes() == HELLO + b"\n" + SET_A + SET_B
    assert p.run("store", "verify").code == 0
    consistent(p)
    assert not list((p.store_dir / ".mlbuild" / "tmp").iterdir())


def test_two_concurrent_realizes_share_the_work(locked: Project) -> None:
    p = locked
    p.route("/set/a.txt", Slow(SET_A, parts=3, delay=0.2))
    procs = [p.spawn("realize", "bundle") for _ in range(2)]
    results = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    assert results[0][0] == results[1][0]
    for path in ("/files/hello.txt", "/set/a.txt", "/set/sub/b.txt", "/arch/data.tar.gz"):
        assert p.server.count(path) == 1, path
    assert p.run("store", "verify").code == 0
    consistent(p)
