"""A cheap key for what the `loadgen-wheel` builder depends on outside mlbuild's own code.

The builder's real identity (``fingerprint_extra``) hashes the crate's contents and asks
rustc, c++ and maturin for their versions - tens of milliseconds.  The plan cache only
needs to know whether any of that *may* have changed, so it uses file stats instead.
Imports nothing heavy.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def stat_key() -> str:
    parts = []
    crate = ROOT / "rust_loadgen_bindings"
    for dirpath, dirnames, filenames in os.walk(crate):
        dirnames[:] = sorted(d for d in dirnames if d not in ("target", "__pycache__"))
        for f in sorted(filenames):
            path = os.path.join(dirpath, f)
            st = os.stat(path)
            parts.append(f"{os.path.relpath(path, ROOT)}:{st.st_size}:{st.st_mtime_ns}")
    rustup = Path(os.environ.get("RUSTUP_HOME", Path.home() / ".rustup")) / "toolchains"
    for extra in (ROOT / "Cargo.lock", rustup):
        try:
            st = os.stat(extra)
            parts.append(f"{extra.name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{extra.name}:missing")
    parts.append(shutil.which("rustc") or "no-rustc")
    parts.append(shutil.which("c++") or "no-c++")
    return "\n".join(parts)
