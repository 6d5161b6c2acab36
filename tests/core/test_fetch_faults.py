"""Fetch faults seen through `mlbuild realize`, and unsafe archives."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from mlbuild import lock as lockmod
from mlbuild._native import Hasher
from mlbuild.hashing import ContentHash
from tests.core.project import HELLO, Project, make_tar_gz
from tests.httpserver import CutShort, FailTimes, Hang, LoopbackServer, Redirect, Serve, Status

WRONG = b"these are not the bytes you locked\n"


def nothing_for(p: Project, suffix: str) -> None:
    assert not [n for n in p.registered() if n.endswith("-" + suffix)]
    assert not [n for n in p.on_disk() if n.endswith("-" + suffix)]
    tmp = p.store_dir / ".mlbuild" / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir())


@pytest.mark.parametrize("wrong", [HELLO.upper(), WRONG], ids=["same-size", "other-size"])
def test_wrong_bytes_upstream_name_artifact_url_and_both_hashes(locked: Project, wrong: bytes) -> None:
    p = locked
    p.route("/files/hello.txt", Serve(wrong))
    r = p.cli("realize", "hello", expect=6)
    url = p.server.url("/files/hello.txt")
    want = hashlib.sha256(HELLO).hexdigest()
    assert r.error.startswith(f"error: hash mismatch for `hello` from {url}: expected sha256:{want}, got ")
    if len(wrong) == len(HELLO):
        assert r.error.endswith(f"got sha256:{hashlib.sha256(wrong).hexdigest()}")
    else:  # refused on the announced length, before any body byte is kept
        assert r.error.endswith(f"size expected {len(HELLO)} bytes, got {len(wrong)}")
    assert "lock --update hello" in r.err
    nothing_for(p, "hello.txt")


def test_wrong_bytes_on_a_mirror_then_the_next_source_is_tried(locked: Project) -> None:
    p = locked
    want = hashlib.sha256(HELLO).hexdigest()
    with LoopbackServer() as bad:
        bad.route(f"/sha256/{want}", Serve(WRONG))
        r = p.cli("realize", "hello", "--mirror", bad.base)
        assert bad.count(f"/sha256/{want}") == 1
    assert Path(r.out.strip()).read_bytes() == HELLO
    assert p.server.count("/files/hello.txt") == 1


def test_500_twice_then_success(locked: Project) -> None:
    p = locked
    p.route("/files/hello.txt", FailTimes(2, then=Serve(HELLO)))
    r = p.cli("realize", "hello")
    assert Path(r.out.strip()).read_bytes() == HELLO
    assert p.server.count("/files/hello.txt") == 3


def test_body_cut_short_is_resumed(locked: Project) -> None:
    p = locked
    p.route("/files/hello.txt", CutShort(HELLO, after=10))
    r = p.cli("realize", "hello")
    assert Path(r.out.strip()).read_bytes() == HELLO
    reqs = p.server.requests("/files/hello.txt")
    assert len(reqs) == 2 and reqs[1].headers.get("Range") == "bytes=10-"


def test_never_answering_server_times_out(locked: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    p = locked
    monkeypatch.setenv("MLBUILD_READ_TIMEOUT", "0.3")
    monkeypatch.setenv("MLBUILD_RETRIES", "1")
    p.route("/files/hello.txt", Hang(max_s=5))
    t0 = time.monotonic()
    r = p.cli("realize", "hello", expect=6)
    assert time.monotonic() - t0 < 4
    assert "error: could not fetch `hello`; every source failed:" in r.err
    assert p.server.url("/files/hello.txt") in r.err and "imeout" in r.err
    nothing_for(p, "hello.txt")


def test_redirect_loop_is_an_error(locked: Project) -> None:
    p = locked
    p.route("/files/hello.txt", Redirect("/loop"))
    p.route("/loop", Redirect("/files/hello.txt"))
    r = p.cli("realize", "hello", expect=6)
    assert "error: could not fetch `hello`" in r.err and "redirect" in r.err.lower()
    assert p.server.count("/loop") <= 11
    nothing_for(p, "hello.txt")


def test_404_on_one_mirror_but_not_the_next(locked: Project) -> None:
    p = locked
    want = hashlib.sha256(HELLO).hexdigest()
    p.route("/files/hello.txt", Status(500))
    with LoopbackServer() as m1, LoopbackServer() as m2:
        m2.route(f"/sha256/{want}", Serve(HELLO))
        r = p.cli("realize", "hello", "--mirror", m1.base, "--mirror", m2.base)
        assert m1.count(f"/sha256/{want}") == 1 and m2.count(f"/sha256/{want}") == 1
    assert Path(r.out.strip()).read_bytes() == HELLO
    assert p.server.count("/files/hello.txt") == 0


# --------------------------------------------------------------------------- unsafe archives

EVIL = {
    "dotdot": [("data", "d", b"", 0o755), ("data/../../escaped.txt", "f", b"gotcha\n", 0o644)],
    "absolute": [("data", "d", b"", 0o755), ("/tmp/mlbuild-test-absolute-escape.txt", "f", b"gotcha\n", 0o644)],
    "symlink-out": [("data", "d", b"", 0o755), ("data/out", "l", "../../../../etc", 0o777),
                    ("data/inside.txt", "f", b"x\n", 0o644)],
    "through-symlink": [("data", "d", b"", 0o755), ("data/up", "l", "..", 0o777),
                        ("data/up/escaped.txt", "f", b"gotcha\n", 0o644)],
}


REFUSAL = {
    "dotdot": "member `data/../../escaped.txt` has a `..` path component",
    "absolute": "member `/tmp/mlbuild-test-absolute-escape.txt` has an absolute path",
    "symlink-out": "member `data/out` is a symlink pointing outside the destination",
    "through-symlink": "member `data/up` is a symlink pointing outside the destination",
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_unsafe_archive_is_refused_through_realize(locked: Project, case: str, tmp_path: Path) -> None:
    p = locked
    evil = make_tar_gz(EVIL[case])
    p.route("/arch/data.tar.gz", Serve(evil))
    # a lock that pins the evil archive's bytes (as if upstream had shipped it when locked)
    lock = lockmod.read(p.lock_path)
    a = lock.artifacts["archive"]
    h = hashlib.sha256(evil).hexdigest()
    b3 = Hasher()
    b3.update(evil)
    # the archive's real hashes (every hash the lock records is checked); a tree size that lets
    # unpacking reach the evil member (the locked size bounds what is unpacked)
    f = lockmod.LockedFile("", len(evil), h, b3.finish()[2], a.files[0].urls)
    arts = dict(lock.artifacts)
    arts["archive"] = lockmod.LockedArtifact(a.name, a.kind, a.decl,
                                             ContentHash("tree", 1 << 20, "1" * 64, "2" * 64),
                                             (f,), a.unpack, a.strip_components)
    p.lock_path.write_text(lockmod.dumps(lockmod.Lock(lock.manifests, lock.platform, lock.python, arts)))
    r = p.cli("realize", "archive", expect=6)
    assert r.error.startswith("error: refusing to unpack ") and "-data.tar.gz: member `" in r.error
    assert REFUSAL[case] in r.error
    nothing_for(p, "archive")
    assert not (p.root / "escaped.txt").exists() and not (p.store_dir / "escaped.txt").exists()
    assert not Path("/tmp/mlbuild-test-absolute-escape.txt").exists()
    assert not list(p.store_dir.rglob("escaped.txt"))
    # `lock` refuses it as well: an error, and the lock is left as it was
    before = p.lock_path.read_bytes()
    r = p.lock("--update", "archive", expect=6)
    assert r.error.startswith("error: refusing to unpack ")
    assert p.lock_path.read_bytes() == before
