"""Substituters: `realize --substituter URL` / MLBUILD_SUBSTITUTERS take signed, verified entries from
binary caches instead of building; everything else is refused with a reason, then built; a cache
that hangs costs one short timeout for the whole run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import zstandard

from mlbuild.graph import Node
from mlbuild.hashing import hash_path
from mlbuild.substitute import never_substituted, urls_from
from tests.cache.servers import hanging_server
from tests.core.project import Project

UPSTREAM = ("/files/hello.txt", "/set/a.txt", "/set/sub/b.txt", "/arch/data.tar.gz")


def fetched(p: Project) -> int:
    return sum(p.server.count(u) for u in UPSTREAM)


def pushed(locked: Project, tmp_path: Path) -> Path:
    """Realize `bundle` into a first store and push it to a directory cache; returns the cache."""
    cache = tmp_path / "cache"
    first = tmp_path / "first-store"
    r = locked.cli("realize", "bundle", "--push", str(cache), store=first)
    assert "uploaded 6 entries" in r.err, r.err
    locked.reset_counts()
    return cache


def cache_meta(cache: Path, suffix: str) -> Path:
    (path,) = [p for p in (cache / "entries").iterdir() if p.name.endswith(f"-{suffix}.json")]
    return path


def test_substitutes_whole_closure_without_building(locked: Project, keys: Path, tmp_path: Path) -> None:
    cache = pushed(locked, tmp_path)
    r = locked.cli("realize", "bundle", "--substituter", str(cache))
    assert "substituted 5 entries" in r.err, r.err
    assert "built " not in r.err and "fetched " not in r.err, r.err
    assert fetched(locked) == 0
    assert len(locked.registered()) == 6
    assert locked.cli("store", "verify").code == 0
    # the same entries, with the same content, as the store that built them
    out = Path(r.out.strip())
    first = tmp_path / "first-store" / out.name
    assert out.parent == locked.store_dir.resolve() or out.parent == locked.store_dir
    assert hash_path(out, "tree").sha256 == hash_path(first, "tree").sha256
    assert locked.registered() == locked.registered(tmp_path / "first-store")


def test_environment_variable_and_order(locked: Project, keys: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cache = pushed(locked, tmp_path)
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    monkeypatch.setenv("MLBUILD_SUBSTITUTERS", f"{empty} {cache}")
    assert urls_from([]) == [str(empty), str(cache)]
    r = locked.cli("realize", "bundle")
    assert "substituted 5 entries" in r.err, r.err
    assert fetched(locked) == 0


def test_hanging_cache_costs_one_timeout(locked: Project, keys: Path, tmp_path: Path) -> None:
    cache = pushed(locked, tmp_path)
    with hanging_server() as hang:
        t0 = time.monotonic()
        r = locked.cli("realize", "bundle", "--substituter", hang, "--substituter", str(cache), "-j", "1")
        elapsed = time.monotonic() - t0
    assert f"substituter {hang} skipped for this run" in r.err, r.err
    assert r.err.count("skipped for this run") == 1
    assert "substituted 5 entries" in r.err
    assert elapsed < 4, f"a hanging cache cost {elapsed:.1f} s (timeout 1 s, asked once)"


def test_unsigned_entries_are_refused_and_built(locked: Project, keys: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLBUILD_KEYS", str(tmp_path / "no-keys"))  # no signing key: the push is unsigned
    cache = pushed(locked, tmp_path)
    r = locked.cli("realize", "bundle", "--substituter", str(cache))
    assert "is not signed; refusing it" in r.err, r.err
    assert "substituted" not in r.err
    assert "built bundle" in r.err and fetched(locked) == 4
    assert locked.cli("store", "verify").code == 0


def test_untrusted_key_is_refused(locked: Project, keys: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cache = pushed(locked, tmp_path)
    from mlbuild.provenance import generate_key

    _, pub, _ = generate_key(tmp_path / "stranger")
    monkeypatch.setenv("MLBUILD_TRUSTED_KEYS", str(pub))
    r = locked.cli("realize", "bundle", "--substituter", str(cache))
    assert "signed only by untrusted key(s)" in r.err, r.err
    assert "built greeting" in r.err and fetched(locked) == 4


def test_tampered_metadata_fails_its_signature(locked: Project, keys: Path, tmp_path: Path) -> None:
    cache = pushed(locked, tmp_path)
    meta = cache_meta(cache, "greeting")
    doc = json.loads(meta.read_text())
    doc["sandbox"] = "none-at-all"  # any signed field
    meta.write_text(json.dumps(doc))
    r = locked.cli("realize", "greeting", "--substituter", str(cache))
    assert "does not verify" in r.err and "built greeting" in r.err, r.err


def _rewrite_payload(cache: Path, suffix: str, data: bytes) -> None:
    doc = json.loads(cache_meta(cache, suffix).read_text())
    nar = cache / "nar" / f"{doc['nar']['sha256']}.nar.zst"
    os.chmod(nar, 0o644)
    nar.write_bytes(data)


def test_tampered_payload_is_refused(locked: Project, keys: Path, tmp_path: Path) -> None:
    cache = pushed(locked, tmp_path)
    doc = json.loads(cache_meta(cache, "greeting").read_text())
    nar = cache / "nar" / f"{doc['nar']['sha256']}.nar.zst"
    raw = zstandard.ZstdDecompressor().decompress(nar.read_bytes(), max_output_size=1 << 20)
    evil = raw.replace(b"hello", b"HELLO")
    assert evil != raw
    _rewrite_payload(cache, "greeting", zstandard.ZstdCompressor().compress(evil))
    r = locked.cli("realize", "greeting", "--substituter", str(cache))
    assert "tampered or damaged" in r.err, r.err
    assert "built greeting" in r.err
    entry = locked.entry("greeting")
    assert b"HELLO" not in (locked.store_dir / entry).read_bytes() if (locked.store_dir / entry).is_file() \
        else all(b"HELLO" not in p.read_bytes() for p in (locked.store_dir / entry).rglob("*") if p.is_file())
    assert locked.cli("store", "verify").code == 0
    assert not any((locked.store_dir / ".mlbuild" / "tmp").iterdir())


def test_truncated_upload_is_refused(locked: Project, keys: Path, tmp_path: Path) -> None:
    cache = pushed(locked, tmp_path)
    doc = json.loads(cache_meta(cache, "greeting").read_text())
    nar = cache / "nar" / f"{doc['nar']['sha256']}.nar.zst"
    _rewrite_payload(cache, "greeting", nar.read_bytes()[: doc["nar"]["file_size"] // 2])
    r = locked.cli("realize", "greeting", "--substituter", str(cache))
    assert "(a truncated upload)" in r.err, r.err
    assert "built greeting" in r.err
    # a new push repairs the cache: the payload that does not match is uploaded again
    locked.cli("copy", "--to", str(cache), "greeting", "--no-closure")
    other = tmp_path / "third"
    r = locked.cli("realize", "greeting", "--substituter", str(cache), store=other)
    assert "substituted 3 entries" in r.err, r.err


def test_nothing_unverified_enters_the_store_on_copy(locked: Project, keys: Path, tmp_path: Path) -> None:
    cache = pushed(locked, tmp_path)
    doc = json.loads(cache_meta(cache, "hello.txt").read_text())
    nar = cache / "nar" / f"{doc['nar']['sha256']}.nar.zst"
    _rewrite_payload(cache, "hello.txt", nar.read_bytes()[:-3])
    other = tmp_path / "other"
    r = locked.cli("copy", "--from", str(cache), "greeting", store=other, expect=None)
    assert r.code == 11 and "truncated upload" in r.error
    assert not any(n.endswith("-hello.txt") for n in locked.registered(other))
    assert not any(n.endswith("-hello.txt") for n in locked.on_disk(other))


def test_performance_is_never_substituted() -> None:
    def node(**kw: object) -> Node:
        base: dict[str, object] = dict(name="r", kind="run", drv="0" * 32 + "-r", entry=None, method="tree",
                                       fingerprint={}, builder="mlperf-run")
        base.update(kw)
        return Node(**base)  # type: ignore[arg-type]

    assert never_substituted(node(fingerprint={"part": "performance"})) is not None
    assert never_substituted(node(builder="mlperf-result")) is not None
    assert never_substituted(node(fingerprint={"part": "accuracy"})) is None
    assert never_substituted(node(kind="build", builder="concat")) is None
