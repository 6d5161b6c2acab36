"""The plan cache: a no-op ``realize`` without parsing manifests or the lock.

Parsing TOML (pure Python) and planning cost far more than the answer "every
entry is already valid".  After a realize, the targets' entries and their
closure are saved under a key that covers everything the plan depends on: the
manifest files' bytes, the lock's bytes, the targets and overrides, the
platform, mlbuild's own code, and each builder's cheap ``fingerprint_key()``
(e.g. the LoadGen crate's file stats and the Rust toolchain).  The next
realize with the same key checks validity with one SQLite query and stops.
Like Nix's evaluation cache, it is only ever a shortcut: a miss plans normally.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

FORMAT = 1


def _code_digest(h: Any) -> None:
    pkg = Path(__file__).parent
    for sub in ("", "builders", "harness"):
        d = pkg / sub if sub else pkg
        for name in sorted(os.listdir(d)):
            if name.endswith(".py"):
                h.update(f"{sub}/{name}\0".encode())
                with open(d / name, "rb") as f:
                    h.update(f.read())


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
    _code_digest(h)
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
