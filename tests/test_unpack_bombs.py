"""Archive bombs: unpacking stops at the locked size, or at the expansion bound when pinning."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from mlbuild.errors import ArchiveBombError, FetchError, TooLargeError, UnsafeArchiveError, UsageError
from mlbuild.hashing import hash_path
from mlbuild.unpack import MAX_LIMIT, MAX_RATIO, MIN_LIMIT, expansion_limit, unpack

ZEROS = 32 << 20  # 32 MiB of zeros compress to about 32 KiB: a 1000x archive


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def zeros_tar_gz(path: Path, size: int = ZEROS, name: str = "zeros.bin") -> Path:
    with tarfile.open(path, "w:gz", compresslevel=9) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = size
        tf.addfile(ti, io.BufferedReader(_Zeros(size)))
    return path


def small_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    return d


def used(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def test_stops_at_the_locked_size(tmp_path: Path, dest: Path) -> None:
    # A lock that says the tree has 1000 bytes: a 64 KiB archive expanding to 64 MiB is refused
    # as soon as it passes 1000 bytes, and nothing is left behind.
    archive = zeros_tar_gz(tmp_path / "bomb.tar.gz")
    with pytest.raises(ArchiveBombError) as ei:
        unpack(archive, dest, max_bytes=1000)
    e = ei.value
    assert isinstance(e, UnsafeArchiveError) and isinstance(e, TooLargeError)
    assert "past 1000 bytes" in str(e) and "the size the lock records" in str(e) and str(archive) in str(e)
    assert list(dest.iterdir()) == []


def test_the_locked_size_of_a_real_tree_is_enough(tmp_path: Path, dest: Path) -> None:
    # The bound is a lower bound of the tree's mlbuild-nar-1 size: the exact locked size passes.
    members = {"pkg/a.txt": b"a" * 5000, "pkg/sub/b.bin": os.urandom(3000), "pkg/c": b""}
    archive = small_tar_gz(tmp_path / "ok.tar.gz", members)
    probe = tmp_path / "probe"
    probe.mkdir()
    unpack(archive, probe)
    exact = hash_path(probe, "tree").size
    unpack(archive, dest, max_bytes=exact)
    assert (dest / "pkg" / "a.txt").read_bytes() == b"a" * 5000
    d2 = tmp_path / "d2"
    d2.mkdir()
    with pytest.raises(ArchiveBombError):
        unpack(archive, d2, max_bytes=8000)  # the file bytes alone are 8000: less than the tree
    assert list(d2.iterdir()) == []


def test_pinning_bounds_the_expansion_ratio(tmp_path: Path, dest: Path) -> None:
    archive = zeros_tar_gz(tmp_path / "bomb.tar.gz")
    size = archive.stat().st_size
    limit = expansion_limit(size, {})
    assert limit == max(int(MAX_RATIO * size), MIN_LIMIT) < ZEROS
    with pytest.raises(ArchiveBombError) as ei:
        unpack(archive, dest, environ={})
    assert f"past {limit} bytes" in str(ei.value) and f"{size}-byte archive" in str(ei.value)
    assert list(dest.iterdir()) == []
    # ... overridable: a larger ratio lets it through
    unpack(archive, dest, environ={"MLBUILD_UNPACK_MAX_RATIO": "5000"})
    assert (dest / "zeros.bin").stat().st_size == ZEROS


def test_absolute_cap_and_its_override(tmp_path: Path, dest: Path) -> None:
    assert expansion_limit(1 << 40, {}) == MAX_LIMIT
    archive = small_tar_gz(tmp_path / "a.tar.gz", {"x": os.urandom(20_000)})
    with pytest.raises(ArchiveBombError):
        unpack(archive, dest, environ={"MLBUILD_UNPACK_MAX_BYTES": "10000"})
    unpack(archive, dest, environ={})
    assert (dest / "x").stat().st_size == 20_000


@pytest.mark.parametrize("var, value", [("MLBUILD_UNPACK_MAX_RATIO", "nan"), ("MLBUILD_UNPACK_MAX_RATIO", "inf"),
                                        ("MLBUILD_UNPACK_MAX_RATIO", "0"), ("MLBUILD_UNPACK_MAX_BYTES", "-5"),
                                        ("MLBUILD_UNPACK_MAX_BYTES", "lots")])
def test_bad_limit_settings_are_usage_errors(var: str, value: str) -> None:
    with pytest.raises(UsageError) as ei:
        expansion_limit(1000, {var: value})
    assert var in str(ei.value)


def test_many_empty_members_are_counted(tmp_path: Path, dest: Path) -> None:
    # No file bytes at all, but thousands of entries: the tree is not free either.
    archive = small_tar_gz(tmp_path / "many.tar.gz", {f"d/e{i}": b"" for i in range(3000)})
    with pytest.raises(ArchiveBombError):
        unpack(archive, dest, max_bytes=10_000)
    assert list(dest.iterdir()) == []


def test_zip_bomb_is_refused_from_its_declared_sizes_before_writing(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            with zf.open(f"z{i}.bin", "w", force_zip64=True) as f:
                for _ in range(ZEROS // (4 << 20)):
                    f.write(bytes(4 << 20))
    assert archive.stat().st_size < ZEROS // 100
    with pytest.raises(ArchiveBombError) as ei:
        unpack(archive, dest, environ={})
    assert "declare" in str(ei.value)
    assert list(dest.iterdir()) == []


def test_zip_member_lying_about_its_size_is_still_stopped(tmp_path: Path, dest: Path) -> None:
    # The sizes in the central directory are written small; the stream decompresses to more.
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.bin", bytes(2 << 20))
    raw = bytearray(archive.read_bytes())
    # patch the uncompressed size (local header offset 22, central directory offset 24) to 10 bytes
    cd = raw.rfind(b"PK\x01\x02")
    raw[22:26] = (10).to_bytes(4, "little")
    raw[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    with pytest.raises(FetchError, match=r"corrupt|Bad CRC|BadZipFile"):
        unpack(archive, dest, max_bytes=1000)
    assert used(dest) == 0


def test_trailing_decompressed_junk_is_bounded(tmp_path: Path, dest: Path) -> None:
    # A valid small tar followed by 64 MiB of zeros inside the gzip stream.
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        ti = tarfile.TarInfo("x")
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"x"))
    archive = tmp_path / "tail.tar.gz"
    with gzip.open(archive, "wb", compresslevel=9) as gz:
        gz.write(raw.getvalue())
        for _ in range(ZEROS // (4 << 20)):
            gz.write(bytes(4 << 20))
    with pytest.raises(ArchiveBombError) as ei:
        unpack(archive, dest, environ={})
    assert "decompresses past" in str(ei.value)
    assert list(dest.iterdir()) == []


# --------------------------------------------------------------------------- through realize and lock

from mlbuild import lock as lockmod  # noqa: E402
from mlbuild._native import Hasher  # noqa: E402
from mlbuild.hashing import ContentHash  # noqa: E402
from tests.core.conftest import locked, project  # noqa: E402, F401  (fixtures)
from tests.core.project import Project, core_env  # noqa: E402, F401  (fixture)
from tests.httpserver import Serve  # noqa: E402


def test_realize_stops_at_the_locked_tree_size(locked: Project, tmp_path: Path) -> None:  # noqa: F811  (pytest fixture)
    p = locked
    bomb = zeros_tar_gz(tmp_path / "bomb.tar.gz", name="data/zeros.bin").read_bytes()
    p.route("/arch/data.tar.gz", Serve(bomb))
    lock = lockmod.read(p.lock_path)
    a = lock.artifacts["archive"]
    h = Hasher()
    h.update(bomb)
    size, sha, b3 = h.finish()
    f = lockmod.LockedFile("", size, sha, b3, a.files[0].urls)
    arts = dict(lock.artifacts)
    arts["archive"] = lockmod.LockedArtifact(a.name, a.kind, a.decl, ContentHash("tree", 1000, "1" * 64, "2" * 64),
                                             (f,), a.unpack, a.strip_components)
    p.lock_path.write_text(lockmod.dumps(lockmod.Lock(lock.manifests, lock.platform, lock.python, arts)))
    r = p.cli("realize", "archive", expect=6)
    assert r.error.startswith("error: refusing to unpack ") and "past 1000 bytes" in r.error
    assert not [n for n in p.registered() if n.endswith("-archive")]
    assert not list(p.store_dir.rglob("zeros.bin"))


def test_lock_refuses_to_pin_a_bomb(project: Project, tmp_path: Path) -> None:  # noqa: F811  (pytest fixture)
    p = project
    p.route("/arch/data.tar.gz", Serve(zeros_tar_gz(tmp_path / "bomb.tar.gz", name="data/zeros.bin").read_bytes()))
    r = p.lock(expect=None)
    assert "Traceback" not in r.err
    text = p.lock_path.read_text() if p.lock_path.exists() else ""
    assert "[[artifact]]\nname = \"archive\"" not in text
    assert not list((p.root / "lockstore").rglob("zeros.bin"))
