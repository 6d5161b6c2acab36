"""Safe unpacking: happy paths keep content and the executable bit; escapes are refused.

After a refusal ``unpack`` leaves ``dest`` empty (the caller discards it anyway) and, what
matters most, nothing outside ``dest`` was ever written.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from mlbuild.errors import FetchError, UnsafeArchiveError
from mlbuild.unpack import detect_format, unpack

# -- archive builders ----------------------------------------------------------------------


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = 0
    ti.uid = ti.gid = 12345
    ti.uname = ti.gname = "someone"
    return ti, data


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = 0o700
    return ti, None


def _link(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    ti.linkname = target
    return ti, None


def _special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    return ti, None


def make_tar(path: Path, members: list, mode: str = "w") -> Path:
    with tarfile.open(path, mode, format=tarfile.PAX_FORMAT) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return path


def make_zip(path: Path, members: list[tuple[str, bytes, int]]) -> Path:
    """members: (name, data, unix mode incl. file type; 0 for a non-unix entry)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in members:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            if mode:
                zi.create_system = 3
                zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    d = tmp_path / "dest"
    d.mkdir()
    return d


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_bytes(b"keep me")
    return d


def tree(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = oct(stat.S_IMODE(p.stat().st_mode))
    return out


# -- happy paths ---------------------------------------------------------------------------

HAPPY = [
    _dir("pkg/"),
    _file("pkg/model.onnx", b"weights" * 1000, 0o600),
    _file("pkg/bin/run.sh", b"#!/bin/sh\necho hi\n", 0o700),
    _file("pkg/data/labels.txt", b"person\nbicycle\n", 0o664),
    _link("pkg/data/current", "labels.txt"),
    _link("pkg/lib/model-link.onnx", "../model.onnx"),
    _link("pkg/data/labels-hard.txt", "pkg/data/labels.txt", hard=True),
]


@pytest.mark.parametrize("mode,fmt", [("w", "tar"), ("w:gz", "tar.gz"), ("w:xz", "tar.xz"), ("w:bz2", "tar.bz2")])
def test_tar_happy_path(tmp_path: Path, dest: Path, mode: str, fmt: str) -> None:
    archive = make_tar(tmp_path / "a.bin", HAPPY, mode)  # name says nothing: detected by magic
    assert detect_format(archive) == fmt
    before = time.time() - 5
    unpack(archive, dest)
    assert tree(dest) == {
        "pkg": "dir",
        "pkg/bin": "dir",
        "pkg/data": "dir",
        "pkg/lib": "dir",
        "pkg/model.onnx": "0o644",       # 0600 -> 0644: only the x bit survives
        "pkg/bin/run.sh": "0o755",       # 0700 -> 0755
        "pkg/data/labels.txt": "0o644",
        "pkg/data/labels-hard.txt": "0o644",
        "pkg/data/current": "-> labels.txt",
        "pkg/lib/model-link.onnx": "-> ../model.onnx",
    }
    assert (dest / "pkg/model.onnx").read_bytes() == b"weights" * 1000
    assert (dest / "pkg/lib/model-link.onnx").read_bytes() == b"weights" * 1000
    assert (dest / "pkg/data/labels-hard.txt").read_bytes() == b"person\nbicycle\n"
    assert stat.S_IMODE((dest / "pkg").stat().st_mode) == 0o755  # 0700 dir -> 0755
    st = (dest / "pkg/model.onnx").stat()
    assert st.st_mtime > before  # archive times are not restored (mtime 0 in the archive)
    assert st.st_uid == os.getuid()  # nor owners


def test_explicit_format_and_strip_components(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "a.tgz", HAPPY, "w:gz")
    unpack(archive, dest, fmt="tgz", strip_components=1)
    assert (dest / "model.onnx").read_bytes() == b"weights" * 1000
    assert (dest / "data/labels-hard.txt").read_bytes() == b"person\nbicycle\n"
    assert not (dest / "pkg").exists()


def test_zip_happy_path(tmp_path: Path, dest: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", [
        ("ds/", b"", stat.S_IFDIR | 0o755),
        ("ds/img/0001.jpg", b"\xff\xd8jpeg", stat.S_IFREG | 0o600),
        ("ds/tool", b"#!/bin/sh\n", stat.S_IFREG | 0o755),
        ("ds/plain.txt", b"made on another OS", 0),
        ("ds/latest.jpg", b"img/0001.jpg", stat.S_IFLNK | 0o777),
    ])
    assert detect_format(archive) == "zip"
    unpack(archive, dest)
    assert tree(dest) == {
        "ds": "dir",
        "ds/img": "dir",
        "ds/img/0001.jpg": "0o644",
        "ds/tool": "0o755",
        "ds/plain.txt": "0o644",
        "ds/latest.jpg": "-> img/0001.jpg",
    }
    assert (dest / "ds/latest.jpg").read_bytes() == b"\xff\xd8jpeg"


def test_streams_in_constant_memory(tmp_path: Path, dest: Path) -> None:
    big = 48 << 20
    archive = tmp_path / "big.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:
        ti = tarfile.TarInfo("zeros.bin")
        ti.size = big

        class Zeros(io.RawIOBase):
            left = big

            def readable(self) -> bool:
                return True

            def readinto(self, b):  # type: ignore[no-untyped-def]
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        tf.addfile(ti, io.BufferedReader(Zeros()))
    tracemalloc.start()
    try:
        # 48 MiB of zeros from a 0.2 MiB archive is past the pinning expansion bound (200x): this
        # is the realize path, where the lock gives the tree's size.
        unpack(archive, dest, max_bytes=big + 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (dest / "zeros.bin").stat().st_size == big
    assert peak < 8 << 20, f"peak {peak} bytes"


# -- refusals ------------------------------------------------------------------------------


def refused(archive: Path, dest: Path, member: str, **kw: object) -> UnsafeArchiveError:
    with pytest.raises(UnsafeArchiveError) as ei:
        unpack(archive, dest, **kw)  # type: ignore[arg-type]
    msg = str(ei.value)
    assert str(archive) in msg and member in msg, msg
    assert list(dest.iterdir()) == []  # dest is left empty
    return ei.value


def assert_outside_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"keep me"
    assert (outside / "secret").stat().st_nlink == 1  # not hardlinked into dest either


def test_dotdot_member_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", [_file("ok.txt", b"fine"), _file("../outside/evil", b"pwned")])
    refused(archive, dest, "../outside/evil")
    assert_outside_untouched(outside)


def test_dotdot_in_the_middle_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", [_file("a/b/../../../outside/evil", b"pwned")])
    refused(archive, dest, "a/b/../../../outside/evil")
    assert_outside_untouched(outside)


def test_absolute_member_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    target = str(outside / "evil")
    archive = make_tar(tmp_path / "a.tar", [_file(target, b"pwned")])
    refused(archive, dest, target)
    assert_outside_untouched(outside)


def test_symlink_escaping_refused_and_nothing_written_through_it(tmp_path: Path, dest: Path, outside: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", [
        _link("escape", "../outside"),
        _file("escape/evil", b"pwned"),
    ])
    refused(archive, dest, "escape")
    assert_outside_untouched(outside)


def test_absolute_symlink_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", [_link("s", str(outside / "secret")),
                                            _file("s", b"pwned")])
    refused(archive, dest, "s")
    assert_outside_untouched(outside)


def test_writing_through_an_inside_symlink_is_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    # `d/l` -> `..` stays inside; a member written *through* it would not land where its
    # name says, so it is refused (this is how chained-symlink escapes start).
    archive = make_tar(tmp_path / "a.tar", [
        _dir("d/"),
        _link("d/l", ".."),
        _link("d/l/s", "../outside"),
    ])
    refused(archive, dest, "d/l/s")
    assert_outside_untouched(outside)


def test_symlink_made_escaping_by_a_later_member_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    # `s` -> `d/x/../..` looks inside while `d` does not exist; `d` -> `.` then makes it
    # resolve to dest's parent.  The final tree is checked.
    archive = make_tar(tmp_path / "a.tar", [_link("s", "d/x/../.."), _link("d", ".")])
    refused(archive, dest, "s")
    assert_outside_untouched(outside)


def test_file_written_through_symlink_made_escaping_later_refused(
    tmp_path: Path, dest: Path, outside: Path
) -> None:
    # Each link looks inside when created, but after `d` -> `.` the link `s` resolves to
    # dest's parent; the file member must not be written through it before the end.
    archive = make_tar(tmp_path / "a.tar", [
        _link("s", "d/x/../.."),
        _dir("x/"),
        _link("d", "."),
        _file("s/outside/evil", b"pwned"),
    ])
    refused(archive, dest, "s/outside/evil")
    assert_outside_untouched(outside)


def test_hardlink_escaping_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", [_link("h", "../outside/secret", hard=True)])
    refused(archive, dest, "h")
    assert_outside_untouched(outside)

    archive = make_tar(tmp_path / "b.tar", [_link("h", str(outside / "secret"), hard=True)])
    refused(archive, dest, "h")
    assert_outside_untouched(outside)


def test_hardlink_to_symlink_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    # a hardlink to an (inside) symlink must not be turned into a link to its target
    archive = make_tar(tmp_path / "a.tar", [
        _file("f", b"x"),
        _link("s", "f"),
        _link("h", "s", hard=True),
    ])
    refused(archive, dest, "h")


@pytest.mark.parametrize("kind,word", [(tarfile.CHRTYPE, "device"), (tarfile.BLKTYPE, "device"),
                                       (tarfile.FIFOTYPE, "fifo")])
def test_devices_and_fifos_refused(tmp_path: Path, dest: Path, kind: bytes, word: str) -> None:
    archive = make_tar(tmp_path / "a.tar", [_file("ok", b"1"), _special("dev/thing", kind)])
    e = refused(archive, dest, "dev/thing")
    assert word in str(e)


def test_zip_escapes_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    for i, (name, data, mode) in enumerate([
        ("../outside/evil", b"pwned", 0),
        (str(outside / "evil"), b"pwned", 0),
        ("link", b"../outside", stat.S_IFLNK | 0o777),
    ]):
        archive = make_zip(tmp_path / f"z{i}.zip", [("ok.txt", b"fine", 0), (name, data, mode)])
        refused(archive, dest, name)
    assert_outside_untouched(outside)


# -- errors that are not attacks -----------------------------------------------------------


def test_corrupt_archive_is_a_fetch_error(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", HAPPY, "w:gz")
    blob = archive.read_bytes()
    archive.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FetchError) as ei:
        unpack(archive, dest)
    assert not isinstance(ei.value, UnsafeArchiveError)
    assert str(archive) in str(ei.value)
    assert list(dest.iterdir()) == []


def test_tar_cut_at_a_member_boundary_is_a_fetch_error(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", [_file("one", b"1" * 512), _file("two", b"2" * 512)])
    blob = archive.read_bytes()
    archive.write_bytes(blob[: 3 * 512])  # header+data of `one`, header of `two`... cut
    with pytest.raises(FetchError, match=r"truncated|unexpected end"):
        unpack(archive, dest)
    archive.write_bytes(blob[: 2 * 512])  # exactly after `one`: tarfile alone would accept it
    with pytest.raises(FetchError, match="truncated"):
        unpack(archive, dest)
    assert list(dest.iterdir()) == []


def test_dest_must_be_empty(tmp_path: Path, dest: Path) -> None:
    archive = make_tar(tmp_path / "a.tar", HAPPY)
    (dest / "already").write_text("x")
    with pytest.raises(FetchError, match="not empty"):
        unpack(archive, dest)
