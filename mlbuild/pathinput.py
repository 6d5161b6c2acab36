"""`path` inputs: a local file or directory, pinned by content as Nix's `path` inputs are.

A ``[path.NAME]`` declaration names a file or directory relative to its manifest.  ``mlbuild lock``
copies it into the store and records its hash (``flat`` for a file, ``tree`` for a directory: the
store's own ``mlbuild-nar-1`` stream) and, for a directory, every file's size and hashes, so that
``lock --check`` names the file that changed.  ``realize`` takes the locked bytes from the store,
from any store entry with the same content (``mlbuild store add``), or from the path itself, whose
bytes must still match the lock.  Directories hold regular files and directories only: a symbolic
link is refused (it would make the input depend on what lies outside it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ManifestError, StaleLockError
from .hashing import ContentHash, hash_file, hash_path
from .lock import LockedArtifact, LockedFile, decl_digest
from .manifest import PathDecl

if TYPE_CHECKING:
    from .store import Store

LOCK_HINT = "run `mlbuild lock` to pin the new contents"


def _where(d: PathDecl) -> str:
    return f"{d.where.file}:{d.where.line}" if d.where.line else d.where.file


def _missing(d: PathDecl, what: str) -> ManifestError:
    return ManifestError(
        f"path input `{d.name}`: `{d.path}` {what} (looked for `{d.source}`)",
        file=d.where.file, line=d.where.line, key=f"path.{d.name}.path",
        hints=["`path` is relative to the directory of the manifest file that declares it",
               "create the file, or correct `path`"])


def method_of(d: PathDecl) -> str:
    """``flat`` for a file, ``tree`` for a directory; a clear error naming the path otherwise."""
    src = d.source
    if src.is_file():
        return "flat"
    if src.is_dir():
        return "tree"
    if os.path.lexists(src):
        raise _missing(d, "is neither a regular file nor a directory")
    raise _missing(d, "does not exist")


def _walk_files(d: PathDecl, root: Path) -> list[str]:
    """Relative paths of every file under ``root``, sorted; symbolic links are refused."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise ManifestError(
                    f"path input `{d.name}`: `{d.path}/{rel}` is a symbolic link; a `path` directory holds "
                    "regular files and directories only",
                    file=d.where.file, line=d.where.line, key=f"path.{d.name}.path",
                    hints=["replace the link by a copy of what it points to, or declare that file on its own"])
            if name in filenames:
                if not p.is_file():
                    raise _missing(d, f"holds `{rel}`, which is neither a regular file nor a directory")
                out.append(rel)
    return sorted(out)


def describe(d: PathDecl, root: Path, method: str) -> list[LockedFile]:
    """The lock's per-file records of a copy at ``root`` (one unnamed file for a flat input)."""
    if method == "flat":
        h = hash_file(root)
        return [LockedFile("", h.size, h.sha256, h.blake3)]
    files = []
    for rel in _walk_files(d, root):
        h = hash_file(root / rel)
        files.append(LockedFile(rel, h.size, h.sha256, h.blake3))
    return files


def _copy(d: PathDecl, src: Path, dest: Path, method: str) -> None:
    if method == "flat":
        shutil.copyfile(src, dest)
        return
    _walk_files(d, src)  # refuses links before anything is copied
    shutil.copytree(src, dest, symlinks=True, copy_function=shutil.copy2)


def pin(d: PathDecl, store: Store) -> LockedArtifact:
    """Copy the input into the store and describe it for the lock (what is stored is what is hashed)."""
    src = d.source
    from_store: str | None = None
    if not os.path.lexists(src) and d.sha256 is not None:
        from_store = store.find_by_sha256(d.sha256, "flat")  # `mlbuild store add` of the same bytes
        if from_store is None:
            raise _missing(d, f"does not exist, and no store entry has its declared sha256 {d.sha256[:16]}...")
        method = "flat"
    else:
        method = method_of(d)
        if d.sha256 is not None and method != "flat":
            raise ManifestError(f"path input `{d.name}`: `sha256` applies to a file, but `{d.path}` is a directory",
                                file=d.where.file, line=d.where.line, key=f"path.{d.name}.sha256")
    with store.staging(f"lock-{d.name}") as staging:
        out = staging / "out"
        _copy(d, store.path(from_store) if from_store else src, out, method)
        h: ContentHash = hash_path(out, method)  # type: ignore[arg-type]
        if d.sha256 is not None and h.sha256 != d.sha256:
            raise ManifestError(
                f"path input `{d.name}`: `{d.path}` has sha256 {h.sha256}, the manifest declares {d.sha256}",
                file=d.where.file, line=d.where.line, key=f"path.{d.name}.sha256",
                hints=["correct or remove `sha256` in the manifest, or restore the file"])
        files = tuple(describe(d, out, method))
        art = LockedArtifact(d.name, "path", decl_digest(d), h, files, source=d.path)
        from .resolve import _keep

        _keep(store, out, art)
        return art


def changes(art: LockedArtifact, d: PathDecl) -> list[str]:
    """How the input on disk differs from its pin, naming each file (empty when it does not)."""
    src = d.source
    where = _where(d)
    label = f"path input `{d.name}` ({where})"
    if not os.path.lexists(src):
        if d.sha256 is not None and d.sha256 == art.hash.sha256:
            return []  # declared by content: the store supplies it
        return [f"{label}: `{d.path}` does not exist any more"]
    method = "tree" if src.is_dir() else "flat"
    if method != art.hash.method:
        return [f"{label}: `{d.path}` was a {'file' if art.hash.method == 'flat' else 'directory'} when locked, "
                f"now it is a {'file' if method == 'flat' else 'directory'}"]
    if method == "flat":
        size = src.stat().st_size
        if size == art.hash.size and hash_file(src).sha256 == art.hash.sha256:
            return []
        return [f"{label}: `{d.path}` changed since it was locked"]
    locked = {f.path: f for f in art.files}
    try:
        now = _walk_files(d, src)
    except ManifestError as e:
        return [f"{label}: {e.message}"]
    out = []
    for rel in now:
        f = locked.get(rel)
        if f is None:
            out.append(f"{label}: `{d.path}/{rel}` was added since it was locked")
        elif (src / rel).stat().st_size != f.size or hash_file(src / rel).sha256 != f.sha256:
            out.append(f"{label}: `{d.path}/{rel}` changed since it was locked")
    gone = sorted(set(locked) - set(now))
    out.extend(f"{label}: `{d.path}/{rel}` was removed since it was locked" for rel in gone)
    if not out and hash_path(src, "tree").sha256 != art.hash.sha256:
        out.append(f"{label}: `{d.path}` changed since it was locked (empty directories or executable bits)")
    return out


def realize_into(name: str, art: LockedArtifact, source: str | None, out: Path, store: Store) -> None:
    """The locked bytes of a `path` input into ``out``: from a store entry with the same content,
    else from the path (checked against the lock: a change since it was locked is an error)."""
    entry = store.find_by_sha256(art.hash.sha256, art.hash.method)
    if entry is not None and store.is_valid(entry):
        src = store.path(entry)
        if art.hash.method == "flat":
            shutil.copyfile(src, out)
        else:
            shutil.copytree(src, out, symlinks=True)
        return
    if source is None or not os.path.lexists(source):
        raise StaleLockError(
            f"path input `{name}`: `{art.source}` is not on this machine and the store has no entry with its "
            f"locked content", reasons=[f"`{art.source}` (sha256 {art.hash.sha256[:16]}...) is missing"],
            hints=["restore the file, or `mlbuild store add FILE` the same bytes"])
    src = Path(source)
    if art.hash.method == "flat":
        if not src.is_file():
            raise StaleLockError(f"path input `{name}`: `{art.source}` is not a file any more",
                                 reasons=[f"`{art.source}` was a file when locked"], hints=[LOCK_HINT])
        shutil.copyfile(src, out)
    else:
        if not src.is_dir():
            raise StaleLockError(f"path input `{name}`: `{art.source}` is not a directory any more",
                                 reasons=[f"`{art.source}` was a directory when locked"], hints=[LOCK_HINT])
        shutil.copytree(src, out, symlinks=True)
    h = hash_path(out, art.hash.method)
    if h.sha256 != art.hash.sha256:
        reasons = [f"`{art.source}` changed since it was locked"]
        if art.hash.method == "tree":
            locked = {f.path: f for f in art.files}
            now = {p.relative_to(out).as_posix(): p for p in sorted(out.rglob("*")) if p.is_file()}
            named = [f"`{art.source}/{r}` changed since it was locked" for r, p in now.items()
                     if r in locked and hash_file(p).sha256 != locked[r].sha256]
            named += [f"`{art.source}/{r}` was added since it was locked" for r in now if r not in locked]
            named += [f"`{art.source}/{r}` was removed since it was locked" for r in locked if r not in now]
            reasons = named or reasons
        raise StaleLockError(f"path input `{name}` does not match its pin in the lock", reasons=reasons,
                             hints=[LOCK_HINT])
