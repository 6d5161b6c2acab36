"""Safe, streaming unpacking of tar (plain/gz/xz/bz2) and zip archives.

Every member is checked explicitly before anything is written (Python's tarfile filters
are not relied upon): a member is refused with :class:`UnsafeArchiveError` when its name
is absolute or has a ``..`` component, when it would be written through a symlink, when
it is a symlink or hardlink that points outside the destination, or when it is a device
file or fifo.  Only the executable bit is kept (files 0o644 or 0o755, directories 0o755);
owners and times are not.  Members are streamed in constant memory.

On any error the destination is emptied again (the caller discards it anyway); nothing
is ever written outside it.

Archive bombs: what is written is counted as it is written (file bytes, hardlinked and
symlink targets, plus 17 bytes and the name per member: a lower bound of the entry's
``mlbuild-nar-1`` size), and unpacking stops with :class:`ArchiveBombError` once it exceeds
``max_bytes`` (``realize`` passes the lock's size of the tree).  When pinning (no locked
size) the bound is the expansion limit: ``MAX_RATIO`` (200) times the archive's size, at
least ``MIN_LIMIT`` (16 MiB), at most ``MAX_LIMIT`` (64 GiB); ``MLBUILD_UNPACK_MAX_RATIO``
and ``MLBUILD_UNPACK_MAX_BYTES`` override the ratio and the cap.  The decompressed stream
of a tar is bounded the same way (so is a zip's declared size), so nothing
is unpacked in full before the bound is noticed.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import math
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from mlbuild.errors import ArchiveBombError, FetchError, UnsafeArchiveError, UsageError

__all__ = ["MAX_LIMIT", "MAX_RATIO", "MIN_LIMIT", "Format", "detect_format", "expansion_limit", "unpack"]

MAX_RATIO = 200.0  # an archive may expand to this many times its own size when pinning ...
MIN_LIMIT = 16 << 20  # ... and always to this many bytes (small archives of zeros are fine) ...
MAX_LIMIT = 64 << 30  # ... but never past this many (MLBUILD_UNPACK_MAX_BYTES)
_MEMBER_COST = 17  # bytes per member, beyond its name: less than any member's mlbuild-nar-1 size

Format = Literal["tar", "tar.gz", "tgz", "tar.xz", "tar.bz2", "zip", "auto"]

_CHUNK = 1 << 20
_CORRUPT = (
    tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError, gzip.BadGzipFile,
    RuntimeError, NotImplementedError, lzma.LZMAError, zlib.error,
)
_TAR_FORMATS = ("tar", "tar.gz", "tgz", "tar.xz", "tar.bz2")


def detect_format(archive: Path) -> str:
    """Guess the format from the first bytes (falls back to the file name)."""
    with open(archive, "rb") as f:
        head = f.read(512)
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "tar.xz"
    if head.startswith(b"BZh"):
        return "tar.bz2"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    name = archive.name.lower()
    for suffix, fmt in ((".tar.gz", "tar.gz"), (".tgz", "tar.gz"), (".tar.xz", "tar.xz"),
                        (".tar.bz2", "tar.bz2"), (".zip", "zip"), (".tar", "tar")):
        if name.endswith(suffix):
            return fmt
    raise FetchError(
        f"cannot tell the archive format of {archive}",
        hints=("declare the format (tar, tar.gz, tar.xz, tar.bz2, zip) in the manifest",),
    )


def _env_number(env: Mapping[str, str], var: str, conv: type, low: float, high: float) -> float | None:
    raw = env.get(var, "").strip()
    if not raw:
        return None
    try:
        value = conv(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not low <= value <= high:
        raise UsageError(f"${var}={raw!r}: expected a number from {low:g} to {high:g}",
                         hints=(f"unset {var} for the default",))
    return float(value)


def expansion_limit(archive_size: int, environ: Mapping[str, str] | None = None) -> int:
    """How many bytes an archive of ``archive_size`` bytes may unpack to when pinning."""
    env = os.environ if environ is None else environ
    ratio = _env_number(env, "MLBUILD_UNPACK_MAX_RATIO", float, 1.0, 1e9) or MAX_RATIO
    cap = _env_number(env, "MLBUILD_UNPACK_MAX_BYTES", int, 1, float(1 << 60))
    top = int(cap) if cap is not None else MAX_LIMIT
    return min(max(int(ratio * archive_size), MIN_LIMIT), top)


@dataclass
class _Member:
    name: str
    kind: Literal["file", "dir", "symlink", "hardlink"]
    executable: bool = False
    link: str = ""  # symlink target, or hardlink target (archive path)


class _Extractor:
    def __init__(self, archive: Path, dest: Path, strip: int, limit: int, why: str) -> None:
        self.archive = archive
        self.dest = dest
        self.root = os.path.realpath(dest)
        self.strip = strip
        self.safe_dirs: set[str] = {""}  # relative dirs known to be real directories
        self.symlinks: list[tuple[str, str]] = []  # (relative path, member name)
        self.limit = limit  # bytes (counted as in `charge`) the unpacked tree may have
        self.why = why  # where the limit comes from, for the error
        self.written = 0

    def bomb(self, what: str) -> ArchiveBombError:
        return ArchiveBombError(
            f"refusing to unpack {self.archive}: {what} past {self.limit} bytes ({self.why})",
            hints=("the archive may be an archive bomb, or not the one that was locked; check where it came from",
                   "if it really is this large, raise MLBUILD_UNPACK_MAX_RATIO / MLBUILD_UNPACK_MAX_BYTES "
                   "(when pinning) or relock it"),
        )

    def charge(self, n: int) -> None:
        self.written += n
        if self.written > self.limit:
            raise self.bomb("its contents grow")

    # -- checks ----------------------------------------------------------------------

    def refuse(self, member: str, why: str) -> UnsafeArchiveError:
        return UnsafeArchiveError(
            f"refusing to unpack {self.archive}: member `{member}` {why}",
            hints=("the archive may be malicious or broken; check where it came from",),
        )

    def relpath(self, name: str, member: str) -> str | None:
        """Checked relative path for an archive name (None: stripped away entirely)."""
        if "\x00" in name:
            raise self.refuse(member, "has a NUL byte in its name")
        if name.startswith("/") or name.startswith("\\"):
            raise self.refuse(member, "has an absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise self.refuse(member, "has a `..` path component")
        if len(parts) <= self.strip:
            return None
        return "/".join(parts[self.strip :])

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def parent_dir(self, rel: str, member: str) -> str:
        """Make sure every directory above ``rel`` is a real directory (not a symlink)."""
        parent = posixpath.dirname(rel)
        if parent in self.safe_dirs:
            return parent
        cur = ""
        for part in parent.split("/"):
            cur = f"{cur}/{part}" if cur else part
            if cur in self.safe_dirs:
                continue
            full = os.path.join(self.dest, cur)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                os.mkdir(full, 0o755)
                os.chmod(full, 0o755)
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise self.refuse(member, f"would be written through the symlink `{cur}`")
                if not stat.S_ISDIR(st.st_mode):
                    raise self.refuse(member, f"needs `{cur}` to be a directory, but it is a file")
            self.safe_dirs.add(cur)
        return parent

    def clear(self, rel: str, member: str, *, for_dir: bool) -> None:
        """Remove what sits at ``rel`` so a later member can replace it (tar semantics)."""
        full = os.path.join(self.dest, rel)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if for_dir:
                return
            raise self.refuse(member, "would replace a directory")
        os.unlink(full)

    def symlink_target_ok(self, rel: str, target: str) -> bool:
        if not target or target.startswith("/") or "\x00" in target:
            return False
        lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        if lexical == ".." or lexical.startswith("../") or lexical.startswith("/"):
            return False
        full = os.path.join(self.dest, posixpath.dirname(rel), target)
        return self.inside(os.path.realpath(full))

    # -- writing ---------------------------------------------------------------------

    def add(self, m: _Member, data: IO[bytes] | None) -> None:
        rel = self.relpath(m.name, m.name)
        if rel is None:
            return
        if m.kind == "hardlink":
            target = self.relpath(m.link, m.name)
            if target is None:
                raise self.refuse(m.name, f"is a hardlink to `{m.link}`, which is stripped away")
        self.charge(_MEMBER_COST + len(posixpath.basename(rel).encode("utf-8", "surrogateescape"))
                    + (len(m.link.encode("utf-8", "surrogateescape")) if m.kind == "symlink" else 0))
        self.parent_dir(rel, m.name)
        full = os.path.join(self.dest, rel)
        if m.kind == "dir":
            self.clear(rel, m.name, for_dir=True)
            if not os.path.isdir(full):
                os.mkdir(full, 0o755)
            os.chmod(full, 0o755, follow_symlinks=False)
            self.safe_dirs.add(rel)
        elif m.kind == "file":
            assert data is not None
            self.clear(rel, m.name, for_dir=False)
            mode = 0o755 if m.executable else 0o644
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                while chunk := data.read(_CHUNK):
                    self.charge(len(chunk))
                    out.write(chunk)
            os.chmod(full, mode)
        elif m.kind == "symlink":
            if not self.symlink_target_ok(rel, m.link):
                raise self.refuse(m.name, f"is a symlink pointing outside the destination (`{m.link}`)")
            self.clear(rel, m.name, for_dir=False)
            os.symlink(m.link, full)
            self.symlinks.append((rel, m.name))
        elif m.kind == "hardlink":
            assert target is not None
            tfull = os.path.join(self.root, target)
            if os.path.realpath(tfull) != tfull:
                raise self.refuse(m.name, f"is a hardlink to `{m.link}`, which goes through a symlink")
            try:
                st = os.lstat(tfull)
            except FileNotFoundError:
                raise self.refuse(
                    m.name, f"is a hardlink to `{m.link}`, which is not in the archive before it"
                ) from None
            if not stat.S_ISREG(st.st_mode):
                raise self.refuse(m.name, f"is a hardlink to `{m.link}`, which is not a regular file")
            if rel == target:
                return
            self.charge(st.st_size)  # the tree's hash reads a hardlinked file's bytes again
            self.clear(rel, m.name, for_dir=False)
            os.link(tfull, full, follow_symlinks=False)

    def final_check(self) -> None:
        """Symlinks made early may escape through ones made later; check the final tree."""
        for rel, member in self.symlinks:
            full = os.path.join(self.dest, rel)
            if not self.inside(os.path.realpath(full)):
                raise self.refuse(member, f"is a symlink resolving outside the destination (`{os.readlink(full)}`)")


def _tar_members(tf: tarfile.TarFile, ex: _Extractor) -> Iterator[tuple[_Member, IO[bytes] | None]]:
    for ti in tf:
        name = ti.name
        if ti.isdir():
            yield _Member(name, "dir"), None
        elif ti.issym():
            yield _Member(name, "symlink", link=ti.linkname), None
        elif ti.islnk():
            yield _Member(name, "hardlink", link=ti.linkname), None
        elif ti.ischr() or ti.isblk():
            raise ex.refuse(name, "is a device file")
        elif ti.isfifo():
            raise ex.refuse(name, "is a fifo")
        elif ti.isreg():
            f = tf.extractfile(ti)
            assert f is not None
            yield _Member(name, "file", executable=bool(ti.mode & 0o111)), f
        else:
            raise ex.refuse(name, f"has an unsupported type {ti.type!r}")


def _zip_members(zf: zipfile.ZipFile, ex: _Extractor) -> Iterator[tuple[_Member, IO[bytes] | None]]:
    for zi in zf.infolist():
        name = zi.filename
        unix_mode = (zi.external_attr >> 16) & 0xFFFF if zi.create_system == 3 else 0
        ftype = stat.S_IFMT(unix_mode)
        if zi.is_dir() or ftype == stat.S_IFDIR:
            yield _Member(name, "dir"), None
        elif ftype == stat.S_IFLNK:
            if zi.file_size > 4096:
                raise ex.refuse(name, "is a symlink with an oversized target")
            target = zf.read(zi).decode("utf-8", "surrogateescape")
            yield _Member(name, "symlink", link=target), None
        elif ftype in (stat.S_IFCHR, stat.S_IFBLK):
            raise ex.refuse(name, "is a device file")
        elif ftype == stat.S_IFIFO:
            raise ex.refuse(name, "is a fifo")
        elif ftype in (0, stat.S_IFREG):
            with zf.open(zi) as f:
                yield _Member(name, "file", executable=bool(unix_mode & 0o111)), f
        else:
            raise ex.refuse(name, f"has an unsupported file type {oct(ftype)}")


class _Counting:
    """A read-only stream wrapper counting the bytes read through it, up to ``limit``."""

    def __init__(self, inner: IO[bytes], ex: _Extractor, limit: int) -> None:
        self.inner = inner
        self.n = 0
        self.ex = ex
        self.limit = limit

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK
        data = self.inner.read(min(size, self.limit + 1 - self.n) if self.n <= self.limit else 1)
        self.n += len(data)
        if self.n > self.limit:
            raise ArchiveBombError(
                f"refusing to unpack {self.ex.archive}: it decompresses past {self.limit} bytes ({self.ex.why})",
                hints=("the archive may be an archive bomb; check where it came from",
                       "if it really is this large, raise MLBUILD_UNPACK_MAX_RATIO / MLBUILD_UNPACK_MAX_BYTES"),
            )
        return data


def _decompressed(raw: IO[bytes], fmt: str) -> IO[bytes]:
    if fmt in ("tar.gz", "tgz"):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]  # a BufferedIOBase: reads as IO
    if fmt == "tar.xz":
        return lzma.LZMAFile(raw, mode="rb")
    if fmt == "tar.bz2":
        return bz2.BZ2File(raw, mode="rb")
    return contextlib.nullcontext(raw)  # type: ignore[return-value]


def _empty(dest: Path) -> None:
    for entry in os.scandir(dest):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def unpack(archive: Path, dest: Path, fmt: Format = "auto", strip_components: int = 0, *,
           max_bytes: int | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Unpack ``archive`` into the existing, empty directory ``dest``.

    Raises :class:`UnsafeArchiveError` (naming the archive and the member) for members that
    would escape ``dest`` or are devices/fifos, :class:`ArchiveBombError` (one) when the
    contents grow past ``max_bytes`` (the locked size of the tree), or, without it, past
    :func:`expansion_limit`, and :class:`FetchError` for unreadable or corrupt archives.
    On error ``dest`` is left empty.
    """
    archive = Path(archive)
    dest = Path(dest)
    if not dest.is_dir() or dest.is_symlink():
        raise FetchError(f"unpack destination {dest} is not a directory")
    if any(os.scandir(dest)):
        raise FetchError(f"unpack destination {dest} is not empty")
    if strip_components < 0:
        raise ValueError("strip_components must be >= 0")
    if fmt == "auto":
        fmt = detect_format(archive)  # type: ignore[assignment]
    if fmt not in _TAR_FORMATS and fmt != "zip":
        raise FetchError(f"unknown archive format `{fmt}` for {archive}")
    try:
        archive_size = archive.stat().st_size
    except OSError as e:
        raise FetchError(f"cannot read archive {archive}: {e.strerror or e}") from None
    expand = expansion_limit(archive_size, environ)
    if max_bytes is not None:
        limit, why = max(0, max_bytes), "the size the lock records for its contents"
        # the tar stream is larger than the tree (512-byte headers): bound it loosely
        stream_limit = max(expand, 32 * limit + (1 << 20))
    else:
        limit, why = expand, f"the expansion limit for a {archive_size}-byte archive"
        stream_limit = expand
    ex = _Extractor(archive, dest, strip_components, limit, why)
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                declared = sum(zi.file_size + _MEMBER_COST for zi in infos)
                if declared > limit:
                    raise ex.bomb(f"its {len(infos)} members declare {declared} bytes,")
                for member, data in _zip_members(zf, ex):
                    ex.add(member, data)
        else:
            with open(archive, "rb") as raw, _decompressed(raw, fmt) as plain:
                counted = _Counting(plain, ex, stream_limit)
                with tarfile.open(fileobj=counted, mode="r|") as tf:  # type: ignore[call-overload]
                    for member, data in _tar_members(tf, ex):
                        ex.add(member, data)
                    end = tf.offset
                # Read to the end: checks the compressed stream is complete (gzip CRC etc.),
                # and that an end-of-archive block follows the last member (tarfile itself
                # silently accepts an archive cut at a member boundary).
                while counted.read(_CHUNK):
                    pass
                if counted.n < end + tarfile.BLOCKSIZE:
                    raise FetchError(
                        f"cannot unpack {archive} ({fmt}): archive is truncated "
                        f"(no end-of-archive marker after {end} bytes)",
                        hints=("the file may be corrupt or cut short",),
                    )
        ex.final_check()
    except BaseException as e:
        with contextlib.suppress(OSError):
            _empty(dest)
        if isinstance(e, FetchError):
            raise
        if isinstance(e, _CORRUPT):
            raise FetchError(
                f"cannot unpack {archive} ({fmt}): {type(e).__name__}: {e}",
                hints=("the file may be corrupt or not in the declared format",),
            ) from e
        raise
