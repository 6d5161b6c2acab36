"""Fixed-output artifacts: getting exact bytes into a staging directory.

Shared by ``lock`` (hashes not known yet: pin what arrives) and ``realize``
(hashes known: every file is checked and a mismatch never enters the store).
Sources, in order: content-addressed mirrors (by sha256), URL-layout mirrors,
then upstream URLs (files) or pip's configured index (Python packages).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import pypi
from .errors import FetchError, OfflineError
from .hashing import hash_file
from .lock import LockedFile

if TYPE_CHECKING:
    from .store import Store


@dataclass(frozen=True)
class FileReq:
    path: str
    urls: tuple[str, ...]
    sha256: str | None = None
    size: int | None = None
    md5: str | None = None
    package: str | None = None
    version: str | None = None
    blake3: str | None = None  # the lock's blake3: checked too

    @classmethod
    def locked(cls, f: LockedFile) -> FileReq:
        """What the lock says of ``f``: every hash it records is checked."""
        return cls(f.path, f.urls, f.sha256, f.size, f.md5, blake3=f.blake3)


def fetch_files(name: str, reqs: Sequence[FileReq], out: Path, fetcher: Any, *, jobs: int = 4) -> list[LockedFile]:
    """Fetch URL files into ``out`` (a file when there is one unnamed file, else a directory)."""
    from .fetch import FileSpec

    def one(req: FileReq) -> LockedFile:
        dest = out if req.path == "" else out / req.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        spec = FileSpec(artifact=name if req.path == "" else f"{name}/{req.path}", urls=req.urls,
                        sha256=req.sha256, size=req.size, md5=req.md5, blake3=req.blake3)
        got = fetcher.fetch(spec, dest)
        return LockedFile(req.path, got.size, got.sha256, got.blake3, req.urls, req.md5)

    if len(reqs) == 1:
        return [one(reqs[0])]
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, reqs))


def fetch_python_files(name: str, files: Sequence[LockedFile], out: Path, fetcher: Any, *, offline: bool,
                       sdist: bool = False) -> None:
    """Locked wheels/sdists into ``out/``: from content-addressed mirrors, else through pip."""
    from .fetch import FileSpec

    out.mkdir(parents=True, exist_ok=True)
    missing: list[LockedFile] = []
    for f in files:
        try:
            fetcher.fetch(FileSpec(artifact=f"{name}/{f.path}", urls=(), sha256=f.sha256, size=f.size, md5=None,
                                   blake3=f.blake3), out / f.path)
        except FetchError:
            (out / f.path).unlink(missing_ok=True)
            missing.append(f)
    if not missing:
        return
    if offline:
        raise OfflineError(
            f"`{name}` needs {len(missing)} Python package file(s) that no mirror holds: "
            + ", ".join(f.path for f in missing),
            hints=["drop `--offline` so pip can fetch them, or `mlbuild mirror export` them on a connected machine"],
        )
    pypi.download_exact([(f.path, f.package or "", f.version or "", f.sha256, f.size) for f in missing], out,
                        sdist=sdist)


def unpack_into(archive: Path, out: Path, fmt: str, strip: int, *, max_bytes: int | None = None) -> None:
    """Unpack ``archive`` into ``out``.  ``max_bytes``: the lock's size of the tree (realize);
    without it (pinning) the expansion bound of :func:`mlbuild.unpack.expansion_limit` applies."""
    from .unpack import unpack

    out.mkdir(parents=True, exist_ok=True)
    unpack(archive, out, fmt, strip_components=strip, max_bytes=max_bytes)  # type: ignore[arg-type]


def lock_python(name: str, requirements: Sequence[str], out: Path, *, platform: str | None = None,
                python: str | None = None) -> list[LockedFile]:
    """Resolve requirements into wheels in ``out`` (for this machine or ``platform``); describe each."""
    files = []
    for p in pypi.resolve_wheels(requirements, out, platform=platform, python=python):
        pkg, ver = pypi.parse_filename(p.name)
        h = hash_file(p)
        files.append(LockedFile(p.name, h.size, h.sha256, h.blake3, (), None, pkg, ver))
    return files


def lock_sdist(package: str, specifier: str, scratch: Path) -> tuple[Path, LockedFile]:
    p = pypi.resolve_sdist(package, specifier, scratch)
    pkg, ver = pypi.parse_filename(p.name)
    h = hash_file(p)
    return p, LockedFile(p.name, h.size, h.sha256, h.blake3, (), None, pkg, ver)


def copy_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)


def ensure_archive(store: Store, name: str, f: LockedFile, kind: str, fetcher: Any, *, offline: bool,
                   have: Path | None = None) -> Path:
    """Make the archive ``f`` a valid flat store entry of its own; return its path.

    ``have``: the bytes already fetched (while locking).  Keeping the archive
    lets ``mirror export`` hand out the exact bytes a fetch would get.
    """
    from .graph import file_entry
    from .hashing import ContentHash

    entry = file_entry(f)
    with store.entry_lock(entry):
        if store.is_valid(entry):
            return store.path(entry)
        with store.staging(entry) as staging:
            out = staging / "out"
            if have is not None:
                shutil.copyfile(have, out)
            elif kind == "sdist":
                fetch_python_files(name, [f], staging / "dl", fetcher, offline=offline, sdist=True)
                (staging / "dl" / f.path).rename(out)
            else:
                fetch_files(name, [FileReq("", f.urls, f.sha256, f.size, f.md5, blake3=f.blake3)], out, fetcher)
            store.commit(out, entry, kind="fixed", method="flat",
                         deriver={"type": "fixed", "artifact": name, "kind": "archive"},
                         expected=ContentHash("flat", f.size, f.sha256, f.blake3))
    return store.path(entry)
