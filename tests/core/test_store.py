"""The store: verify/--repair, gc roots, store add, mirror export, --offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlbuild import lock as lockmod
from tests.core.project import HELLO, Project


def flip_byte(path: Path, offset: int = 0) -> None:
    mode = path.stat().st_mode
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    os.chmod(path, mode)
    os.utime(path, (1, 1))


@pytest.mark.parametrize("target,suffix,rel", [("hello", "hello.txt", ""), ("greeting", "greeting", "result.txt"),
                                                ("fileset", "fileset", "sub/b.txt")])
def test_verify_names_a_flipped_byte_and_repair_restores_it(locked: Project, target: str, suffix: str,
                                                            rel: str) -> None:
    p = locked
    p.cli("realize", "greeting")
    entry = p.entry(suffix)
    path = p.store_dir / entry / rel if rel else p.store_dir / entry
    good = path.read_bytes()
    p.cli("store", "verify")
    flip_byte(path, 3)
    r = p.cli("store", "verify", expect=5)
    assert f"corrupt: {entry}: content changed: expected sha256" in r.err
    # realize greeting registers hello, fileset and greeting (the lock's side store is not this one)
    assert len(p.registered()) == 3
    assert f"error: 1 of {len(p.registered())} store entries are corrupt" in r.err
    assert [line.split(":", 2)[1].strip() for line in r.err.splitlines() if line.startswith("corrupt:")] == [entry]
    r = p.cli("store", "verify", "--repair")
    assert "repaired 1 entries" in r.err
    assert path.read_bytes() == good
    p.cli("store", "verify")
    assert p.server.count("/files/hello.txt") == (2 if target == "hello" else 1)


def test_verify_repairs_an_archive_entry(locked: Project) -> None:
    p = locked
    p.cli("realize", "archive")
    entry = p.entry("data.tar.gz")
    flip_byte(p.store_dir / entry, 100)
    r = p.cli("store", "verify", expect=5)
    assert f"corrupt: {entry}" in r.err
    p.cli("store", "verify", "--repair")
    p.cli("store", "verify")
    assert p.server.count("/arch/data.tar.gz") == 2


def test_gc_dry_run_lists_but_keeps_and_gc_removes_only_unrooted(locked: Project, tmp_path: Path) -> None:
    p = locked
    p.cli("realize", "bundle")
    rooted = p.registered()
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"nobody needs me\n")
    added = Path(p.cli("store", "add", str(stray)).out.strip()).name
    r = p.cli("gc", "--dry-run")
    assert r.out.splitlines() == [f"would remove {added} (16 bytes)"]
    assert added in p.registered() and (p.store_dir / added).exists()
    r = p.cli("gc")
    assert r.out.splitlines() == [f"removed {added} (16 bytes)"]
    assert p.registered() == rooted and p.on_disk() == rooted
    p.cli("store", "verify")
    assert p.cli("gc").out == ""


def test_gc_follows_lock_changes_and_deletion(locked: Project) -> None:
    p = locked
    p.cli("realize", "bundle")
    everything = p.registered()
    # a new lock (an added declaration): the roots follow the lock's path, so nothing realized is dropped
    p.append_manifest('[fetch.extra]\nurl = "{base}/files/hello.txt"\n')
    p.lock()
    p.cli("realize", "greeting")
    assert p.cli("gc", "--dry-run").out == ""
    p.cli("gc")
    assert p.registered() == everything and p.on_disk() == everything
    # the lock deleted: nothing is rooted any more
    p.lock_path.unlink()
    p.cli("gc")
    assert p.registered() == set() and p.on_disk() == set()


def test_store_add_gives_the_entry_a_fetch_gives(locked: Project, tmp_path: Path) -> None:
    p = locked
    fetched = Path(p.cli("realize", "hello", store=tmp_path / "other").out.strip())
    src = tmp_path / "hello.txt"
    src.write_bytes(HELLO)
    added = Path(p.cli("store", "add", str(src)).out.strip())
    assert added.name == fetched.name and added.read_bytes() == HELLO
    n = p.server.total_requests()
    assert Path(p.cli("realize", "hello").out.strip()) == added
    assert p.server.total_requests() == n
    p.cli("store", "verify")
    # adding again is a no-op; another name is another entry
    assert Path(p.cli("store", "add", str(src)).out.strip()) == added
    assert Path(p.cli("store", "add", str(src), "--name", "x.txt").out.strip()) != added


def test_mirror_export_then_realize_from_the_mirror_alone(locked: Project, tmp_path: Path) -> None:
    p = locked
    first = p.cli("realize", "bundle").out
    cas = tmp_path / "cas"
    r = p.cli("mirror", "export", "bundle", str(cas))
    assert r.out.strip() == str(cas)
    lock = lockmod.read(p.lock_path)
    wanted = [f.sha256 for n in ("hello", "fileset", "archive") for f in lock.artifacts[n].files]
    assert sorted(f.name for f in (cas / "sha256").iterdir()) == sorted(wanted)
    lock_before = p.lock_path.read_bytes()
    p.server.stop()
    fresh = tmp_path / "fresh"
    r = p.cli("realize", "bundle", "--mirror", str(cas), store=fresh)
    assert Path(r.out.strip()).name == Path(first.strip()).name
    assert p.lock_path.read_bytes() == lock_before
    p.cli("store", "verify", store=fresh)
    # exporting again copies nothing new
    assert "exported 0 new file(s)" in p.cli("mirror", "export", "bundle", str(cas)).err


def test_offline_with_nothing_local_lists_what_is_missing_and_makes_no_request(locked: Project) -> None:
    p = locked
    r = p.cli("realize", "bundle", "--offline", expect=6)
    assert "error: --offline: 4 file(s) are neither in the store nor in a local mirror:" in r.err
    for name in ("hello", "fileset/a.txt", "fileset/sub/b.txt", "archive"):
        assert name in r.err
    assert p.server.total_requests() == 0
    assert p.registered() == set()
    # with what's needed local, --offline works and still asks nobody
    p.cli("realize", "bundle")
    n = p.server.total_requests()
    p.cli("realize", "bundle", "--offline")
    assert p.server.total_requests() == n


def test_gc_refuses_while_a_realize_holds_the_store(locked: Project, tmp_path: Path) -> None:
    """What a running realize is about to use is never collected: gc waits its turn."""
    from mlbuild.store import Store

    p = locked
    p.cli("realize", "bundle")
    stray = tmp_path / "stray.bin"
    stray.write_bytes(b"nobody needs me\n")
    added = Path(p.cli("store", "add", str(stray)).out.strip()).name
    held = Store(p.store_dir)
    with held.session():  # what every realize holds while it runs
        r = p.run("gc")
        assert r.code != 0 and "a `realize` is running on this store" in r.err, r.err
        assert added in p.registered()
    held.close()
    assert f"removed {added}" in p.cli("gc").out
