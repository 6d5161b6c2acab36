"""Stat fingerprints of what the plan cache depends on outside the lock: only ``os``.

The no-op ``realize`` computes these on every call, so this module imports nothing beyond
``os`` and ``sys`` (no pathlib, re, shutil or json: each would cost more than the whole check).

- :func:`crate_key`: the LoadGen binding crate's files and the workspace's ``Cargo.lock``.
- :func:`tools_key`: the resolved host compilers' binaries, the rustup state that picks rustc
  and cargo, and ``RUSTUP_TOOLCHAIN`` (an in-place upgrade replaces the binaries).
- :func:`stat`: one file's ``size:mtime:ctime:inode`` (or ``missing``).
"""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The host tools whose versions the lock's [toolchain] records (mlbuild.toolchain.HOST_TOOLS).
TOOL_COMMANDS = {"cargo": "cargo", "cc": "cc", "cxx": "c++", "rustc": "rustc"}


def stat(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def which(cmd: str, environ: os._Environ[str] | dict[str, str] | None = None) -> str | None:
    """The first executable ``cmd`` on ``PATH`` (what ``shutil.which`` answers, without importing it)."""
    env = os.environ if environ is None else environ
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        p = os.path.join(d or ".", cmd)
        if os.access(p, os.X_OK) and not os.path.isdir(p):
            return p
    return None


def walk_files(top: str, skip: tuple[str, ...]) -> list[str]:
    """Every file under ``top`` in sorted order, skipping directories named in ``skip`` and dot-directories."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    return out


def crate_key(root: str = ROOT) -> str:
    parts = []
    for path in walk_files(os.path.join(root, "rust_loadgen_bindings"), ("target", "__pycache__")):
        st = os.stat(path)
        parts.append(f"{os.path.relpath(path, root)}:{st.st_size}:{st.st_mtime_ns}")
    parts.append(stat(os.path.join(root, "Cargo.lock")))
    return "\n".join(parts)


def rustup_home() -> str:
    return os.environ.get("RUSTUP_HOME") or os.path.join(os.path.expanduser("~"), ".rustup")


def tools_key(root: str = ROOT) -> str:
    """Stats of every resolved host tool binary and of the rustup state that picks rustc/cargo."""
    parts = [f"RUSTUP_TOOLCHAIN={os.environ.get('RUSTUP_TOOLCHAIN', '')}"]
    for key in sorted(TOOL_COMMANDS):
        exe = which(TOOL_COMMANDS[key])
        if exe is None:
            parts.append(f"{key}:missing")
            continue
        parts.append(f"{key}:{exe}->{stat(os.path.realpath(exe))}")
    rustup = rustup_home()
    parts.append(stat(os.path.join(rustup, "settings.toml")))  # `rustup default`, directory overrides
    toolchains = os.path.join(rustup, "toolchains")
    try:
        names = sorted(os.listdir(toolchains))
    except OSError:
        names = []
    for name in names:  # an in-place `rustup update` replaces these files
        for rel in ("bin/rustc", "bin/cargo"):
            parts.append(stat(os.path.join(toolchains, name, rel)))
        parts.append(stat(os.path.join(rustup, "update-hashes", name)))
    for f in ("rust-toolchain", "rust-toolchain.toml"):
        parts.append(stat(os.path.join(root, f)))
    return "\n".join(parts)
