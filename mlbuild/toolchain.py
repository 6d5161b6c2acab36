"""Host build tools: what the lock records of them, the check against the host, a cheap stat key.

Build tools come from the lock where they can: pip (the `installer` wheel every `python-env`
runs) and maturin (a locked wheel, installed into the `env-build-tools` environment).  The tools
that cannot (the C++ compiler, the C compiler that rustc links with, rustc and cargo) are
*recorded inputs*: ``mlbuild lock`` writes their exact version strings into the lock's
``[toolchain]`` table, and ``lock --check`` and ``realize`` of a
target whose closure builds the LoadGen wheel compare them with the host's, failing with the
tool, the recorded and the found version.  ``mlbuild lock --accept-toolchain`` records the
host's versions (rewriting only ``[toolchain]``).

``stat_key()`` is what the no-op plan cache needs to notice a toolchain change without running
any tool: file stats of the crate, of the resolved compiler binaries (an in-place upgrade
replaces them) and of the rustup toolchains, plus ``RUSTUP_TOOLCHAIN``.  The locked maturin is
part of the lock's bytes, which the plan cache hashes already.  Imports nothing heavy.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .statkey import TOOL_COMMANDS

ROOT = Path(__file__).resolve().parent.parent

# The lock's [toolchain] key -> the command whose first output line is the exact version.
# `cc` is the linker rustc invokes; `cxx` compiles the LoadGen core and our shim.
HOST_TOOLS: dict[str, tuple[str, ...]] = {key: (cmd, "--version") for key, cmd in TOOL_COMMANDS.items()}
CARGO_LOCK_KEY = "cargo-lock-sha256"
MISSING = "missing"  # the host has no such tool on PATH: never recorded, always a difference
UNKNOWN = "unknown"  # the tool did not answer `--version`: never recorded
# Builders whose outputs depend on the host tools.
BUILDERS = ("loadgen-wheel",)
ACCEPT_HINT = ("if this host's tools are the ones to build with, record them: `mlbuild lock --accept-toolchain` "
               "(rewrites only the lock's [toolchain]; commit it so peers see the change)")


def tool_name(key: str) -> str:
    """The command a [toolchain] key stands for (`cxx` -> `c++`)."""
    return HOST_TOOLS[key][0] if key in HOST_TOOLS else key


def _first_line(cmd: tuple[str, ...]) -> str:
    import subprocess  # only when a plan asks the tools: off the no-op path

    exe = shutil.which(cmd[0])
    if exe is None:
        return MISSING
    try:
        r = subprocess.run([exe, *cmd[1:]], check=False, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    lines = (r.stdout or r.stderr).strip().splitlines()
    return lines[0].strip() if r.returncode == 0 and lines else UNKNOWN


@functools.cache
def _cached_versions(key: str) -> tuple[tuple[str, str], ...]:
    return tuple((k, _first_line(cmd)) for k, cmd in sorted(HOST_TOOLS.items()))


def host_versions() -> dict[str, str]:
    """The host's exact tool versions (`missing` when not on PATH), cached per stat key."""
    return dict(_cached_versions(_tools_stat()))


def cargo_lock_digest(root: Path = ROOT) -> str | None:
    from .hashing import sha256_hex

    p = root / "Cargo.lock"
    return sha256_hex(p.read_bytes()) if p.exists() else None


def manifest_needs_tools(manifest: Any) -> bool:
    # duck-typed (a build declaration has `builder`): importing mlbuild.manifest here would put the
    # manifest reader, and through it every builder, into loadgen-wheel's code identity
    return any(getattr(d, "builder", None) in BUILDERS for d in manifest.decls.values())


def graph_needs_tools(graph: Any) -> list[str]:
    """The nodes of a planned graph's closure that build with the host tools."""
    return [n for n in graph.order() if graph.nodes[n].builder in BUILDERS]


def expected(manifest: Any, root: Path = ROOT) -> dict[str, str]:
    """What the lock's [toolchain] should hold for ``manifest`` on this host (empty: nothing builds with it).

    ``root`` is the tree the LoadGen builder compiles from (mlbuild's own), whose Cargo.lock it uses."""
    if not manifest_needs_tools(manifest):
        return {}
    out = host_versions()
    digest = cargo_lock_digest(root)
    if digest is not None:
        out[CARGO_LOCK_KEY] = digest
    return out


def _recordable(values: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in values.items() if v not in (MISSING, UNKNOWN)}


def for_lock(manifest: Any, previous: Mapping[str, str] | None, root: Path = ROOT) -> dict[str, str]:
    """The [toolchain] a plain `mlbuild lock` writes: recorded tool versions are kept (changing them
    is `--accept-toolchain`'s job), missing ones are recorded from the host, Cargo.lock's digest
    follows the project."""
    now = _recordable(expected(manifest, root))
    if not now:
        return {}
    kept = {k: v for k, v in (previous or {}).items() if k in HOST_TOOLS}
    return dict(sorted({**now, **kept}.items()))


def differences(recorded: Mapping[str, str], found: Mapping[str, str]) -> list[tuple[str, str | None, str]]:
    """(tool, recorded version or None, host version) for each host tool that does not match."""
    out = []
    for key in sorted(HOST_TOOLS):
        if key in found and recorded.get(key) != found[key]:
            out.append((tool_name(key), recorded.get(key), found[key]))
    return out


def _found(tool: str, found: str) -> str:
    return f"no `{tool}` on PATH" if found == MISSING else f"`{found}`"


def describe(diff: tuple[str, str | None, str]) -> str:
    tool, rec, found = diff
    if rec is None:
        return f"`{tool}`: the lock's [toolchain] records no version of it; this host has {_found(tool, found)}"
    return f"`{tool}`: the lock records `{rec}`, this host has {_found(tool, found)}"


def read_recorded(lock_path: Path) -> dict[str, str] | None:
    """The lock's [toolchain] table, parsing only the lock's header (cheap); None without a lock."""
    import tomllib

    try:
        text = lock_path.read_text()
    except OSError:
        return None
    head = text.split("\n[[", 1)[0]
    try:
        data = tomllib.loads(head)
    except tomllib.TOMLDecodeError:
        return None  # the full reader reports a malformed lock with its own error
    table = data.get("toolchain", {})
    return {str(k): str(v) for k, v in table.items()} if isinstance(table, dict) else {}


def check_host(recorded: Mapping[str, str], what: str) -> None:
    """Raise ToolchainMismatchError when a host tool differs from the recorded one."""
    from .errors import ToolchainMismatchError

    diffs = differences(recorded, host_versions())
    if diffs:
        tool, rec, found = diffs[0]
        more = f" (and {len(diffs) - 1} more tool(s), listed below)" if len(diffs) > 1 else ""
        raise ToolchainMismatchError(
            f"{what} builds with the host's `{tool}`: the lock's [toolchain] records "
            f"{f'`{rec}`' if rec is not None else 'no version of it'}, this host has {_found(tool, found)}{more}",
            reasons=[describe(d) for d in diffs],
            hints=[("install the recorded version (for Rust: `rustup toolchain install`, then RUSTUP_TOOLCHAIN or "
                    "`rustup default`), or"), ACCEPT_HINT])


def check_graph(graph: Any, lock_path: Path) -> None:
    """`realize`'s check: only when the targets' closure builds with the host tools."""
    nodes = graph_needs_tools(graph)
    if not nodes:
        return
    recorded = read_recorded(lock_path)
    if recorded is None:
        return  # no lock: planning already failed or nothing is locked to compare with
    check_host(recorded, f"`{nodes[0]}`")


# --------------------------------------------------------------------------- the plan cache's key


def _tools_stat() -> str:
    """Stats of every resolved host tool binary and of the rustup state (``statkey.tools_key``)."""
    from .statkey import tools_key

    return tools_key(str(ROOT))


def stat_key() -> str:
    """The crate's file stats, ``Cargo.lock`` and the host tools' stats: what the plan cache adds for them."""
    from .statkey import crate_key, tools_key

    return crate_key(str(ROOT)) + "\n" + tools_key(str(ROOT))


def accept(lock: Any, manifest: Any) -> tuple[Any, list[str]]:
    """The lock with this host's tool versions in [toolchain] (nothing else changed), and what changed."""
    import dataclasses

    found = expected(manifest)
    now = _recordable(found)
    changes = []
    for key in sorted(HOST_TOOLS):
        if found.get(key) in (MISSING, UNKNOWN) and key in lock.toolchain:  # nothing to record: keep it
            now[key] = lock.toolchain[key]
            changes.append(f"[toolchain] {tool_name(key)}: this host has {_found(tool_name(key), found[key])}; "
                           f"kept `{now[key]}`")
    for key in sorted(set(now) | set(lock.toolchain)):
        old, new = lock.toolchain.get(key), now.get(key)
        if old != new:
            name = tool_name(key)
            if new is None:
                changes.append(f"[toolchain] {name}: dropped `{old}`")
            elif old is None:
                changes.append(f"[toolchain] {name}: recorded `{new}`")
            else:
                changes.append(f"[toolchain] {name}: `{old}` -> `{new}`")
    return dataclasses.replace(lock, toolchain=dict(sorted(now.items()))), changes
