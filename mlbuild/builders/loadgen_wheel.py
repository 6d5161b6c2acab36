"""`loadgen-wheel`: the official LoadGen core compiled through our pyo3 binding.

Input ``source`` is the unpacked official ``mlcommons-loadgen`` sdist (a locked
`sdist` artifact).  The crate ``rust_loadgen_bindings`` (with the Cargo
workspace and Cargo.lock) is copied into the build directory and built by
maturin into ``out/mlbuild_loadgen-*.whl``.  maturin is not the host's: input
``tools`` is a `python-env` of locked wheels holding it (``site-packages/bin/maturin``),
so its version is part of the inputs' identity.  The crate's sources' digest,
Cargo.lock and the exact versions of the host tools that cannot be locked (c++,
cc, rustc, cargo; recorded in the lock's [toolchain] and checked by `realize`,
see ``mlbuild.toolchain``) are part of the derivation's identity
(``fingerprint_extra``).  Crates come from the Cargo registry pinned by
Cargo.lock checksums, so this builder keeps network access; build paths are
remapped so the wheel does not depend on where it was built.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlbuild.builders import BuildContext, Param
from mlbuild.errors import BuildError

NAME = "loadgen-wheel"
VERSION = 2
INPUTS = {
    "source": "the unpacked official mlcommons-loadgen sdist",
    "tools": "a `python-env` with the locked maturin (`site-packages/bin/maturin`)",
}
PARAMS = {"profile": Param(str, "release", "cargo profile", choices=("release", "dev"))}
NEEDS_ENV = False
NEEDS_NETWORK = True
TOOLS = ("cargo", "rustc", "c++", "cc")
PASS_ENV = ("CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN")


def extra_env() -> dict[str, str]:
    """Where the host's Rust toolchain and crate cache live (the sandbox's HOME is empty)."""
    home = Path.home()
    return {
        "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", str(home / ".rustup")),
        "CARGO_HOME": os.environ.get("CARGO_HOME", str(home / ".cargo")),
    }

WORKSPACE_FILES = ("Cargo.toml", "Cargo.lock")
MEMBERS = ("rust_loadgen_bindings", "native")


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def _ignore(_dir: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("target", "__pycache__", ".pytest_cache") or n.endswith(".so")]


@functools.cache
def _crate_digest() -> str:
    from mlbuild.hashing import hash_tree

    root = project_root()
    if not (root / "rust_loadgen_bindings" / "Cargo.toml").exists():
        raise BuildError("the `rust_loadgen_bindings` crate is not beside this mlbuild package",
                         hints=["install mlbuild from its source tree (`pip install -e .`)"])
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "crate"
        shutil.copytree(root / "rust_loadgen_bindings", copy, ignore=_ignore, symlinks=True)
        return hash_tree(copy).sha256


def fingerprint_extra() -> dict[str, Any]:
    """What of the host the wheel's bytes depend on: the crate, Cargo.lock and the exact versions of
    the host tools the lock's [toolchain] records (maturin is an input: the locked `tools` env)."""
    from mlbuild import toolchain
    from mlbuild.hashing import hash_file

    root = project_root()
    return {
        "crate_sources": _crate_digest(),
        "cargo_lock": hash_file(root / "Cargo.lock").sha256 if (root / "Cargo.lock").exists() else "none",
        "host_tools": toolchain.host_versions(),
    }


def build(ctx: BuildContext) -> None:
    src = ctx.inputs["source"]
    if not (src / "loadgen.cc").exists():
        raise BuildError(f"`{src}` is not an unpacked mlcommons-loadgen source distribution (no `loadgen.cc`)")
    maturin = ctx.inputs["tools"] / "site-packages" / "bin" / "maturin"
    if not maturin.is_file():
        raise BuildError(f"the `tools` input `{ctx.inputs['tools'].name}` holds no `site-packages/bin/maturin`",
                         hints=[("give `tools` a `python-env` built from a locked set that requires maturin "
                                 "(`env-build-tools` in manifests/python.toml)")])
    root = project_root()
    work = ctx.tmp / "build"
    work.mkdir(parents=True)
    for f in WORKSPACE_FILES:
        if (root / f).exists():
            shutil.copy2(root / f, work / f)
    for m in MEMBERS:
        shutil.copytree(root / m, work / m, ignore=_ignore, symlinks=True)
    env = dict(os.environ)
    env["CARGO_TARGET_DIR"] = str(ctx.tmp / "target")
    env["MLPERF_LOADGEN_SRC"] = str(src)
    cargo_home = env.get("CARGO_HOME", str(Path.home() / ".cargo"))
    remap = [f"{work}=/build", f"{src}=/loadgen-src", f"{cargo_home}=/cargo", f"{ctx.tmp}=/tmp"]
    env["RUSTFLAGS"] = " ".join(f"--remap-path-prefix={r}" for r in remap)
    # The LoadGen's own source directory is mapped by the crate's build.rs, so its logs name
    # files as the official build does (`version.cc`); the rest is mapped here.
    env["CFLAGS"] = env["CXXFLAGS"] = " ".join(f"-ffile-prefix-map={r}" for r in remap if not r.startswith(f"{src}="))
    python = os.environ.get("MLBUILD_PYTHON", sys.executable)
    cmd = [str(maturin), "build", "--locked", "-m", str(work / "rust_loadgen_bindings" / "Cargo.toml"),
           "-o", str(ctx.out), "-i", python]
    cmd += ["--release"] if ctx.params.get("profile", "release") == "release" else []
    ctx.log("compiling the LoadGen core and the pyo3 binding (a few minutes on 2 cores)")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        ctx.log(line.rstrip())
    if proc.wait() != 0:
        raise BuildError("maturin failed to build the LoadGen wheel")
    wheels = sorted(ctx.out.glob("*.whl"))
    if len(wheels) != 1:
        raise BuildError(f"expected one wheel from maturin, found {[w.name for w in wheels]}")
