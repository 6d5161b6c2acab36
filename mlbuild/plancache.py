"""The plan cache: a no-op ``realize`` without parsing manifests or the lock.

Parsing TOML (pure Python) and planning cost far more than the answer "every
entry is already valid".  After a realize, the targets' entries and their
closure are saved under a key that covers everything the plan depends on: the
manifest files' bytes, the lock's bytes, the targets and overrides, the
platform, every file a derivation's code identity can include (mlbuild's
modules, ``native/``, the root ``Cargo.toml`` and ``Cargo.lock``: ``code_key``)
and ``toolchain.stat_key()`` (the LoadGen crate's file stats, the compilers).
The saved entries are the targets' *resolved* entries (after early cut-off) and
their closure.  The next realize with the same key checks validity with one
SQLite query and stops.
Like Nix's evaluation cache, it is only ever a shortcut: a miss plans normally.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

FORMAT = 2
PACKAGE_DIR = Path(__file__).resolve().parent
_SKIP = ("__pycache__", "target")


def _walk(d: Path) -> list[str]:
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(d):
        dirnames[:] = sorted(x for x in dirnames if x not in _SKIP and not x.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


def code_key(pkg_dir: Path = PACKAGE_DIR) -> str:
    """A digest of every source file any derivation's code identity can include (``mlbuild.codeid``).

    mlbuild's Python modules, the native extension's sources (``native/``) and the workspace's
    root ``Cargo.toml`` and ``Cargo.lock``, by relative path and bytes."""
    h = hashlib.sha256()
    root = pkg_dir.parent
    files = [f for f in _walk(pkg_dir) if f.endswith(".py")]
    files += _walk(root / "native")
    files += [str(root / f) for f in ("Cargo.toml", "Cargo.lock")]
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b"\0missing"
        h.update(f"{os.path.relpath(path, root)}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def key(manifests: Path, lock: Path, targets: list[str], overrides: dict[str, Any]) -> str | None:
    h = hashlib.sha256(f"mlbuild-plan-{FORMAT}\0".encode())
    try:
        for name in sorted(os.listdir(manifests)):
            if name.endswith(".toml"):
                h.update(f"m/{name}\0".encode())
                with open(manifests / name, "rb") as f:
                    h.update(f.read())
        with open(lock, "rb") as f:
            h.update(b"lock\0" + f.read())
    except OSError:
        return None
    h.update(json.dumps([targets, overrides, os.uname().machine, sys.version_info[:2]], sort_keys=True).encode())
    h.update(code_key().encode())
    # Builders whose identity includes things outside mlbuild's code (the LoadGen crate and
    # the Rust toolchain) contribute a cheap stat-based key, without importing the builders.
    from . import toolchain

    h.update(toolchain.stat_key().encode())
    # Run targets' identities include this machine (performance) and its ISA (accuracy).
    from .harness import system

    h.update(json.dumps([system.machine_id(), system.cpu_isa_features()], sort_keys=True).encode())
    return h.hexdigest()


def path_for(store_meta: Path, k: str) -> Path:
    return store_meta / "plans" / f"{k}.json"


def save(store_meta: Path, k: str, targets: dict[str, str], kinds: dict[str, str], closure: list[str]) -> None:
    p = path_for(store_meta, k)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"targets": targets, "kinds": kinds, "closure": sorted(closure)}, sort_keys=True))
    os.replace(tmp, p)


def load(store_meta: Path, k: str) -> dict[str, Any] | None:
    try:
        with open(path_for(store_meta, k)) as f:
            data: dict[str, Any] = json.load(f)
            return data
    except (OSError, ValueError):
        return None
