"""The plan cache: a no-op ``realize`` without parsing manifests or the lock.

Parsing TOML (pure Python) and planning cost far more than the answer "every
entry is already valid".  After a realize, the targets' entries and their
closure are saved under a key that covers everything the plan depends on: the
manifest files' bytes, the lock's bytes, the targets and overrides, the
platform, every file a derivation's code identity can include (mlbuild's
modules, ``native/``, the root ``Cargo.toml`` and ``Cargo.lock``: :func:`code_key`),
the LoadGen crate's file stats and the compilers (:mod:`mlbuild.statkey`), and the
machine (performance results are keyed by it, accuracy results by its ISA).
The saved entries are the targets' *resolved* entries (after early cut-off) and
their closure.  Like Nix's evaluation cache, it is only ever a shortcut: a miss
plans normally.

This module is on the no-op path (:mod:`mlbuild.fastpath`), so it imports only ``os`` and
``sys`` at the top: no typing, pathlib, json, re or hashlib (each costs more than the check).

:func:`code_key` hashes the bytes of ~100 files; a stat fingerprint (size, mtime, ctime,
inode of every file, and the list of files) remembers the digest in the store's
``.mlbuild/plans/`` so that the next call reads no file.  As git's index does, it never trusts
a file modified within :data:`RACY_S` seconds of being fingerprinted (its next edit could keep
size and times): such a fingerprint is not saved.

A plan file is a few ``key<TAB>value`` lines (no JSON on the no-op path)::

    format  3
    store   <store id>  <registry inode>  <generation>
    target  <name>  <entry>  <kind>
    closure <entry>
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path
    from typing import Any

FORMAT = 3
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_SKIP = ("__pycache__", "target")
RACY_S = 2.0


def _sha256() -> Any:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found, unused-ignore]  # 3.11: no OpenSSL load
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]  # Python >= 3.12
        except ImportError:
            from hashlib import sha256  # type: ignore[assignment, unused-ignore]
    return sha256()


def code_files(pkg_dir: str | Path = PACKAGE_DIR) -> list[str]:
    """Every file a derivation's code identity can include (``mlbuild.codeid``), in a fixed order."""
    from .statkey import walk_files

    pkg = os.fspath(pkg_dir)
    root = os.path.dirname(pkg)
    files = [f for f in walk_files(pkg, _SKIP) if f.endswith(".py")]
    files += walk_files(os.path.join(root, "native"), _SKIP)
    files += [os.path.join(root, f) for f in ("Cargo.toml", "Cargo.lock")]
    return files


def _hash_files(h: Any, files: list[tuple[str, str]]) -> None:
    """Feed ``h`` each (label, path): the label, the length and the bytes (a missing file marked)."""
    for label, path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b"\0missing"
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)


def _digest_files(files: list[str], root: str) -> str:
    h = _sha256()
    _hash_files(h, [(os.path.relpath(path, root), path) for path in files])
    return str(h.hexdigest())


def code_key(pkg_dir: str | Path = PACKAGE_DIR, cache_dir: str | Path | None = None) -> str:
    """A digest of every source file any derivation's code identity can include, by relative path and bytes.

    With ``cache_dir``, a stat fingerprint of those files remembers the digest there (see the module's doc)."""
    pkg = os.fspath(pkg_dir)
    root = os.path.dirname(pkg)
    files = code_files(pkg)
    if cache_dir is None:
        return _digest_files(files, root)
    fp = _sha256()
    newest = 0
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            fp.update(f"{path}\0missing\n".encode())
            continue
        newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
        fp.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}\n".encode())
    memo = os.path.join(os.fspath(cache_dir), f"code-{fp.hexdigest()}")
    try:
        with open(memo) as f:
            known = f.read()
        if len(known) == 64:
            return known
    except OSError:
        pass
    digest = _digest_files(files, root)
    import time

    if time.time_ns() - newest > RACY_S * 1e9:
        _write_atomic(memo, digest)
    return digest


def key(manifests: str | Path, lock: str | Path, targets: list[str], overrides: Mapping[str, Any],
        cache_dir: str | Path | None = None) -> str | None:
    """The plan cache key (None: a manifest directory or lockfile that cannot be read: no shortcut)."""
    h = _sha256()
    h.update(f"mlbuild-plan-{FORMAT}\0".encode())
    mdir = os.fspath(manifests)
    try:
        for name in sorted(os.listdir(mdir)):
            if name.endswith(".toml"):
                h.update(f"m/{name}\0".encode())
                with open(os.path.join(mdir, name), "rb") as f:
                    h.update(f.read())
        with open(lock, "rb") as f:
            h.update(b"lock\0" + f.read())
    except OSError:
        return None
    _shipped(h, mdir)
    # repr of sorted items: deterministic for str/int/float/bool values, and no json import
    h.update(repr([list(targets), sorted(overrides.items()), os.uname().machine, sys.version_info[:2]]).encode())
    h.update(code_key(cache_dir=cache_dir).encode())
    # Builders whose identity includes things outside mlbuild's code (the LoadGen crate and the
    # Rust toolchain) contribute a cheap stat key, without importing the builders.
    from .statkey import crate_key, tools_key

    h.update(crate_key().encode())
    h.update(tools_key().encode())
    # Run targets' identities include this machine (performance) and its ISA (accuracy).
    from .harness import system

    h.update(repr([sorted(system.machine_id().items()), system.cpu_isa_features()]).encode())
    return str(h.hexdigest())


def _shipped(h: Any, manifests: str) -> None:
    """A project outside mlbuild's checkout plans with the shipped manifests and their pins too
    (``mlbuild.project``): they are part of its key (the checkout's own are hashed above)."""
    root = os.path.dirname(PACKAGE_DIR)
    shipped = os.path.join(root, "manifests")
    try:
        names = sorted(n for n in os.listdir(shipped) if n.endswith(".toml"))
    except OSError:
        return
    if os.path.realpath(manifests) == os.path.realpath(shipped):
        return
    paths = [*(os.path.join(shipped, n) for n in names), os.path.join(root, "lock", "mlbuild.lock")]
    _hash_files(h, [(f"shipped/{os.path.basename(path)}", path) for path in paths])


def plans_dir(store_meta: str | Path) -> str:
    return os.path.join(os.fspath(store_meta), "plans")


def path_for(store_meta: str | Path, k: str) -> str:
    return os.path.join(plans_dir(store_meta), f"{k}.plan")


def _write_atomic(path: str, text: str) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache: a read-only or full store just doesn't remember


def save(store_meta: str | Path, k: str, targets: Mapping[str, str], kinds: Mapping[str, str],
         closure: list[str], store: tuple[str, int, int]) -> None:
    """Remember a plan: the targets' entries and kinds, their closure, and the store's (id, registry inode,
    generation) it was valid in."""
    lines = [f"format\t{FORMAT}", "store\t" + "\t".join(str(x) for x in store)]
    lines += [f"target\t{t}\t{targets[t]}\t{kinds[t]}" for t in sorted(targets)]
    lines += [f"closure\t{e}" for e in sorted(closure)]
    _write_atomic(path_for(store_meta, k), "\n".join(lines) + "\n")


class Plan:
    """A saved plan: ``targets`` (name -> entry), ``kinds`` (name -> kind), ``closure``, ``store``."""

    __slots__ = ("closure", "kinds", "store", "targets")

    def __init__(self) -> None:
        self.targets: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.closure: list[str] = []
        self.store: tuple[str, int, int] = ("", -1, -1)


def load(store_meta: str | Path, k: str) -> Plan | None:
    try:
        with open(path_for(store_meta, k), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, ValueError):
        return None
    plan = Plan()
    try:
        if lines[0] != f"format\t{FORMAT}":
            return None
        for line in lines[1:]:
            fields = line.split("\t")
            if fields[0] == "target":
                plan.targets[fields[1]] = fields[2]
                plan.kinds[fields[1]] = fields[3]
            elif fields[0] == "closure":
                plan.closure.append(fields[1])
            elif fields[0] == "store":
                plan.store = (fields[1], int(fields[2]), int(fields[3]))
            else:
                return None
    except (IndexError, ValueError):
        return None
    return plan
