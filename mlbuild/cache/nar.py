"""The canonical serialisation ``mlbuild-nar-1`` of a store entry, written and read as a stream.

``"mlbuild-nar-1\\0"`` then one node: ``"F" exec u64le(size) bytes`` (exec ``"x"`` or ``"-"``),
``"L" u64le(len) target``, or ``"D" u64le(count)`` followed by ``u64le(len) name node`` per entry,
names in byte order.  For a directory entry the stream is exactly what the store hashes
(``hashing.hash_tree``), so its sha256 is the entry's content hash; a flat entry is one ``F`` node.
No times, owners or other mode bits: what the store normalises away is not in the stream.

The reader is the untrusted side: it refuses names that are empty, ``.``/``..``, hold ``/`` or NUL,
or are out of order or repeated, bounds depth and total size, and writes only below ``dest``
(every directory it writes into is one it made; it never follows a link it wrote).
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import CacheFormatError

MAGIC = b"mlbuild-nar-1\0"
CHUNK = 1 << 20
MAX_DEPTH = 256
MAX_NAME = 255
_U64 = struct.Struct("<Q")


def _u64(n: int) -> bytes:
    return _U64.pack(n)


def serialise(path: Path) -> Iterator[bytes]:
    """The ``mlbuild-nar-1`` stream of ``path`` (a file, link or directory), in chunks."""
    yield MAGIC
    yield from _node(path)


def _node(path: Path) -> Iterator[bytes]:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        target = os.fsencode(os.readlink(path))
        yield b"L" + _u64(len(target)) + target
    elif stat.S_ISDIR(st.st_mode):
        names = sorted(os.fsencode(n) for n in os.listdir(path))
        yield b"D" + _u64(len(names))
        for name in names:
            yield _u64(len(name)) + name
            yield from _node(path / os.fsdecode(name))
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            yield b"F" + (b"x" if st.st_mode & 0o111 else b"-") + _u64(size)
            left = size
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise CacheFormatError(f"`{path}` shrank while it was being serialised")
                left -= len(chunk)
                yield chunk
    else:
        raise CacheFormatError(f"`{path}` is not a regular file, directory or symlink; it cannot be serialised")


class _Reader:
    """Exact reads from a stream, hashing and counting every byte, refusing to pass ``limit``."""

    def __init__(self, stream: BinaryIO, limit: int, on_bytes: Callable[[int], None] | None) -> None:
        self.stream = stream
        self.limit = limit
        self.count = 0
        self.sha256 = hashlib.sha256()
        self.on_bytes = on_bytes

    def read(self, n: int) -> bytes:
        if self.count + n > self.limit:
            raise CacheFormatError(f"the serialisation is longer than the {self.limit} bytes its metadata gives")
        parts = []
        left = n
        while left:
            chunk = self.stream.read(min(left, CHUNK))
            if not chunk:
                raise CacheFormatError(f"the serialisation ends early, after {self.count + n - left} bytes "
                                       f"(a truncated upload?)")
            parts.append(chunk)
            left -= len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.count += n
        self.sha256.update(data)
        if self.on_bytes is not None:
            self.on_bytes(n)
        return data

    def u64(self) -> int:
        return int(_U64.unpack(self.read(8))[0])


def deserialise(stream: BinaryIO, dest: Path, *, limit: int,
                on_bytes: Callable[[int], None] | None = None) -> tuple[str, int]:
    """Write the entry serialised in ``stream`` at ``dest`` (which must not exist).

    Returns (sha256 of the stream, its length).  ``limit``: the most bytes the stream may hold."""
    r = _Reader(stream, limit, on_bytes)
    if r.read(len(MAGIC)) != MAGIC:
        raise CacheFormatError("not an `mlbuild-nar-1` serialisation (bad magic)")
    _read_node(r, dest, 0)
    if stream.read(1):
        raise CacheFormatError("trailing bytes after the serialised entry")
    return r.sha256.hexdigest(), r.count


def _check_name(name: bytes, previous: bytes | None) -> None:
    if not name or name in (b".", b"..") or b"/" in name or b"\0" in name or len(name) > MAX_NAME:
        raise CacheFormatError(f"refusing the name {name[:80]!r} in a serialised directory")
    if previous is not None and name <= previous:
        raise CacheFormatError(f"names in a serialised directory are not in strict byte order at {name[:80]!r}")


def _read_node(r: _Reader, dest: Path, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CacheFormatError(f"the serialised entry nests deeper than {MAX_DEPTH} directories")
    tag = r.read(1)
    if tag == b"F":
        mode = r.read(1)
        if mode not in (b"x", b"-"):
            raise CacheFormatError(f"bad file mode {mode!r} in the serialisation")
        size = r.u64()
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755 if mode == b"x" else 0o644)
        with os.fdopen(fd, "wb") as f:
            left = size
            while left:
                n = min(CHUNK, left)
                f.write(r.read(n))
                left -= n
    elif tag == b"L":
        n = r.u64()
        if n == 0 or n > 4096:
            raise CacheFormatError(f"a serialised link target of {n} bytes")
        target = r.read(n)
        if b"\0" in target:
            raise CacheFormatError("a serialised link target holds NUL")
        os.symlink(os.fsdecode(target), dest)
    elif tag == b"D":
        count = r.u64()
        os.mkdir(dest, 0o755)
        previous: bytes | None = None
        for _ in range(count):
            n = r.u64()
            if n > MAX_NAME:
                raise CacheFormatError(f"a serialised name of {n} bytes")
            name = r.read(n)
            _check_name(name, previous)
            previous = name
            _read_node(r, dest / os.fsdecode(name), depth + 1)
    else:
        raise CacheFormatError(f"bad node tag {tag!r} in the serialisation")
