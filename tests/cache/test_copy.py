"""`mlbuild copy --to/--from`: closures through a directory, HTTP with PUT and S3 (rclone serve s3),
identical entries on the other side, `store verify` clean, idempotent re-uploads."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mlbuild.cache import nar
from mlbuild.hashing import hash_tree
from tests.cache.servers import DirServer, S3Server
from tests.core.project import Project


def entries(store: Path) -> dict[str, tuple[str, str, str, str]]:
    """entry -> (kind, method, sha256, deriver) from the registry."""
    con = sqlite3.connect(f"file:{store / '.mlbuild' / 'db.sqlite'}?mode=ro", uri=True)
    try:
        return {r[0]: r[1:] for r in con.execute("SELECT name, kind, method, sha256, deriver FROM entries")}
    finally:
        con.close()


def refs(store: Path) -> set[tuple[str, str]]:
    con = sqlite3.connect(f"file:{store / '.mlbuild' / 'db.sqlite'}?mode=ro", uri=True)
    try:
        return set(con.execute("SELECT referrer, reference FROM refs"))
    finally:
        con.close()


def test_nar_stream_is_the_store_hash(tmp_path: Path) -> None:
    d = tmp_path / "t"
    (d / "sub").mkdir(parents=True)
    (d / "a").write_bytes(b"x" * 3000)
    (d / "sub" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (d / "sub" / "run.sh").chmod(0o755)
    (d / "l").symlink_to("a")
    stream = b"".join(nar.serialise(d))
    h = hash_tree(d)
    import hashlib
    import io

    assert hashlib.sha256(stream).hexdigest() == h.sha256 and len(stream) == h.size
    out = tmp_path / "back"
    sha, size = nar.deserialise(io.BytesIO(stream), out, limit=len(stream))
    assert (sha, size) == (h.sha256, h.size)
    assert hash_tree(out).sha256 == h.sha256
    assert (out / "sub" / "run.sh").stat().st_mode & 0o111 and (out / "l").is_symlink()


def _round_trip(locked: Project, url: str, tmp_path: Path) -> None:
    locked.cli("realize", "bundle")
    src = locked.store_dir
    up = locked.cli("copy", "--to", url, "bundle")
    assert "uploaded 6 entries" in up.err, up.err
    again = locked.cli("copy", "--to", url, "bundle")
    assert "uploaded 0 entries" in again.err and "skipped 6" in again.err, again.err
    other = tmp_path / "other-store"
    down = locked.cli("copy", "--from", url, "bundle", store=other)
    assert "downloaded 6 entries" in down.err, down.err
    assert entries(other) == entries(src)
    assert refs(other) == refs(src)
    for name in entries(src):
        assert hash_tree(other / name).sha256 == hash_tree(src / name).sha256 if (src / name).is_dir() \
            else (other / name).read_bytes() == (src / name).read_bytes()
    verify = locked.cli("store", "verify", store=other)
    assert verify.code == 0
    # the build traces came along: the other store resolves the target without building
    r = locked.cli("realize", "bundle", store=other)
    assert "built" not in r.err and "fetched" not in r.err, r.err
    assert locked.server.count("/files/hello.txt") == 1  # only the first realize fetched


def test_round_trip_directory(locked: Project, keys: Path, tmp_path: Path) -> None:
    _round_trip(locked, str(tmp_path / "dircache"), tmp_path)
    info = json.loads((tmp_path / "dircache" / "mlbuild-cache.json").read_text())
    assert info == {"format": "mlbuild-cache-1"}


def test_round_trip_http_put(locked: Project, keys: Path, tmp_path: Path, put_server: DirServer) -> None:
    _round_trip(locked, put_server.url, tmp_path)
    puts = [p for m, p in put_server.log if m == "PUT"]
    metas = [i for i, p in enumerate(puts) if "/entries/" in p]
    nars = [i for i, p in enumerate(puts) if "/nar/" in p]
    assert max(nars) < max(metas) and all(any(n < m for n in nars) for m in metas)


def test_round_trip_s3(locked: Project, keys: Path, tmp_path: Path, s3_server: S3Server,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    (s3_server.root / "bucket").mkdir(exist_ok=True)
    _round_trip(locked, "s3://bucket/team/cache", tmp_path)
    assert (s3_server.root / "bucket" / "team" / "cache" / "mlbuild-cache.json").is_file()


def test_http_without_put_says_so(locked: Project, keys: Path, tmp_path: Path) -> None:
    srv = DirServer(tmp_path / "ro", writable=False)
    try:
        locked.cli("realize", "bundle")
        r = locked.cli("copy", "--to", srv.url, "bundle", expect=None)
        assert r.code == 11
        assert "PUT" in r.error and "HTTP 405" in r.error
    finally:
        srv.stop()


def test_copy_from_requires_trusted_signatures(locked: Project, keys: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    locked.cli("realize", "bundle")
    cache = tmp_path / "c"
    locked.cli("copy", "--to", str(cache), "bundle")
    from mlbuild.provenance import generate_key

    _, other_pub, _ = generate_key(tmp_path / "other-keys")
    monkeypatch.setenv("MLBUILD_TRUSTED_KEYS", str(other_pub))
    other = tmp_path / "other-store"
    r = locked.cli("copy", "--from", str(cache), "bundle", store=other, expect=None)
    assert r.code == 11 and "untrusted key" in r.error, r.err
    assert locked.registered(other) == set()


def test_progress_line_has_bytes_rate_and_eta() -> None:
    from mlbuild.reporter import TransferMeter

    now = [100.0]
    m = TransferMeter(300 << 20, clock=lambda: now[0])
    assert m.line().endswith("ETA ?")
    now[0] = 102.0
    m.add(100 << 20)
    assert m.line() == "100.0 MiB / 300.0 MiB, 50.0 MiB/s, ETA 4 s"


@pytest.mark.parametrize("name", [b"..", b"a/b", b"", b"."])
def test_hostile_stream_names_are_refused(tmp_path: Path, name: bytes) -> None:
    import io
    import struct

    from mlbuild.errors import CacheFormatError

    u64 = struct.Struct("<Q").pack
    stream = nar.MAGIC + b"D" + u64(1) + u64(len(name)) + name + b"F-" + u64(1) + b"x"
    with pytest.raises(CacheFormatError, match="refusing the name"):
        nar.deserialise(io.BytesIO(stream), tmp_path / "out", limit=len(stream))
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_stream_longer_than_its_metadata_is_refused(tmp_path: Path) -> None:
    import io

    from mlbuild.errors import CacheFormatError

    (tmp_path / "f").write_bytes(b"y" * 1000)
    stream = b"".join(nar.serialise(tmp_path / "f"))
    with pytest.raises(CacheFormatError, match="longer than the 100 bytes"):
        nar.deserialise(io.BytesIO(stream), tmp_path / "out", limit=100)
