"""`mlbuild lock` never drops a pin for lack of network, says what went wrong otherwise,
pins offline from the store, and roots what it pins (by the lockfile's path) while holding
the gc lock."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlbuild import lock as lockmod
from tests.core.project import BIG, Project, kill_group, wait_for
from tests.core.test_crash import Slow
from tests.httpserver import Serve, Status


def test_an_unreachable_upstream_never_drops_a_pin(locked: Project) -> None:
    p = locked
    before = p.lock_path.read_bytes()
    p.server.stop()  # connection refused from now on
    for extra in ((), ("--offline",)):
        r = p.lock("--update", "hello", *extra)
        assert "kept the existing pin of `hello`: it could not be re-resolved: needs network" in r.err
        assert p.lock_path.read_bytes() == before
        assert "[[unpinned]]" not in p.lock_path.read_text()
    # every pin at once, too
    r = p.lock("--update", "hello", "--update", "fileset", "--update", "archive")
    assert r.err.count("kept the existing pin of `") == 3
    assert p.lock_path.read_bytes() == before
    # a new artifact that cannot be reached is unpinned (exit 0), and says it is the network
    p.append_manifest('[fetch.later]\nurl = "{base}/files/later.bin"\n')
    r = p.lock()
    assert f"unpinned: `later`: needs network: no mirror holds it and its upstream could not be reached " \
           f"({p.server.base}/files/later.bin)" in r.err
    lock = lockmod.read(p.lock_path)
    assert set(lock.artifacts) == {"hello", "fileset", "archive"} and set(lock.unpinned) == {"later"}


def test_an_http_404_is_an_error_and_the_lock_is_left_as_it_was(locked: Project) -> None:
    p = locked
    before = p.lock_path.read_bytes()
    p.route("/files/hello.txt", Status(404))
    r = p.lock("--update", "hello", expect=6)
    assert r.error == "error: could not fetch `hello`; every source failed:"
    assert f"{p.server.base}/files/hello.txt: HTTP 404" in r.err
    assert "needs network" not in r.err
    assert p.lock_path.read_bytes() == before
    p.append_manifest('[fetch.gone]\nurl = "{base}/files/gone.bin"\n')
    r = p.lock(expect=6)
    assert "`gone`" in r.error and "HTTP 404" in r.err
    assert p.lock_path.read_bytes() == before


def test_a_name_too_long_for_the_store_is_an_error(locked: Project) -> None:
    p = locked
    before = p.lock_path.read_bytes()
    long = "n" * 240 + ".bin"
    p.route(f"/files/{long}", Serve(b"long\n"))
    p.append_manifest(f'[fetch.long]\nurl = "{{base}}/files/{long}"\n')
    r = p.lock(expect=5)
    assert "cannot be a store entry name: it is 244 bytes long" in r.error
    assert "Traceback" not in r.err and "needs network" not in r.err
    assert p.lock_path.read_bytes() == before


def test_offline_lock_pins_what_the_store_holds(project: Project, tmp_path: Path) -> None:
    p = project
    data = b"bytes the user already has\n"
    p.append_manifest(
        f'[fetch.known]\nurl = "{{base}}/files/known.bin"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
    )
    src = tmp_path / "known.bin"
    src.write_bytes(data)
    p.cli("store", "add", str(src))
    r = p.cli("lock", "--offline")
    lock = lockmod.read(p.lock_path)
    assert "known" in lock.artifacts and "known" not in lock.unpinned, r.err
    assert lock.artifacts["known"].files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert set(lock.unpinned) == {"hello", "fileset", "archive"}
    assert p.server.total_requests() == 0
    # and the pinned entry is what realize uses, offline
    out = Path(p.cli("realize", "known", "--offline").out.strip())
    assert out.read_bytes() == data
    assert p.server.total_requests() == 0


def test_lock_roots_what_it_pins(project: Project) -> None:
    p = project
    side = p.root / "lockstore"
    p.lock()
    pinned = p.registered(side)
    assert {n.split("-", 1)[1] for n in pinned} == {"hello.txt", "fileset", "archive", "data.tar.gz"}
    assert p.cli("gc", "--dry-run", store=side).out == ""
    p.cli("gc", store=side)
    assert p.registered(side) == pinned and p.on_disk(side) == pinned
    # the lockfile gone: its pins are garbage
    p.lock_path.unlink()
    removed = {line.split()[1] for line in p.cli("gc", store=side).out.splitlines()}
    assert removed == pinned and p.registered(side) == set()


def test_relocking_keeps_what_was_realized_for_the_lock(locked: Project) -> None:
    p = locked
    p.cli("realize", "bundle")
    everything = p.registered()
    p.append_manifest('[fetch.unrelated]\nurl = "{base}/files/hello.txt"\n')
    p.lock()
    assert p.cli("gc").out == ""
    assert p.registered() == everything
    n = p.server.total_requests()
    p.cli("realize", "bundle")
    assert p.server.total_requests() == n


def test_gc_waits_for_a_running_lock(project: Project) -> None:
    p = project
    side = p.root / "lockstore"
    stray = p.root / "stray.bin"
    stray.write_bytes(b"nobody roots me\n")
    p.cli("store", "add", str(stray), store=side)  # the side store holds an unrooted entry
    p.route("/files/big.bin", Slow(BIG))
    p.append_manifest('[fetch.big]\nurl = "{base}/files/big.bin"\n')
    proc = p.spawn("lock", store=side)
    try:
        wait_for(lambda: p.server.count("/files/big.bin") >= 1, what="the lock's download to start")
        r = p.run("gc", store=side)
        assert r.code == 5 and "is running on this store" in r.err, r.err
    finally:
        kill_group(proc)
    assert "stray.bin" in {n.split("-", 1)[1] for n in p.registered(side)}  # gc took nothing
