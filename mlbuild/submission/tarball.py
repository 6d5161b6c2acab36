"""``<division>.tar.gz``: the submission tree as a byte-stable archive.

The same tree always gives the same bytes: entries in byte order of their paths (each directory
before its contents), mtime 0, uid/gid 0 with empty owner names, modes 0755 (directories) and
0644 (files), POSIX ustar/pax headers without times or devices, and a gzip stream without file
name or timestamp (mtime 0) at a fixed compression level.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

COMPRESS_LEVEL = 9


def _members(top: Path) -> list[Path]:
    out = [top]
    for p in top.rglob("*"):
        if p.is_symlink():
            raise ValueError(f"{p}: a symbolic link has no place in a submission tree")
        out.append(p)
    return sorted(out, key=lambda p: p.relative_to(top.parent).as_posix().encode())


def write(tree: Path, dest: Path) -> str:
    """Archive directory ``tree`` (its name is the archive's top directory) into ``dest``; return its sha256."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for p in _members(tree):
            info = tarfile.TarInfo(p.relative_to(tree.parent).as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if p.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                data = p.read_bytes()
                info.type = tarfile.REGTYPE
                info.mode = 0o644
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=COMPRESS_LEVEL, mtime=0) as gz:
        gz.write(raw.getvalue())
    blob = out.getvalue()
    dest.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()
