"""The typed stub (rust_loadgen_bindings/python/mlbuild_loadgen/__init__.pyi) matches the
built module: mypy's stubtest compares every runtime name, signature and class property of
our wheel's mlbuild_loadgen with the repository's .pyi."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import CRATE

STUB = CRATE / "python" / "mlbuild_loadgen" / "__init__.pyi"


def stubtest(lg_path: Path, stub: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """stubtest over a copy of the unzipped wheel whose .pyi is ``stub``."""
    tree = tmp_path / "wheel"
    shutil.copytree(lg_path, tree)
    shutil.copy(stub, tree / "mlbuild_loadgen" / "__init__.pyi")
    env = {**os.environ, "PYTHONPATH": str(tree), "MYPYPATH": str(tree)}
    # alias-dir/mlperf_loadgen.py (python -m mlbuild_loadgen.run) replaces itself with mlbuild_loadgen
    # at import; it is no module of the package, and the package itself is checked in full.
    allow = tmp_path / "allowlist.txt"
    allow.write_text(r"mlbuild_loadgen\.alias-dir\..*" + "\n")
    return subprocess.run([sys.executable, "-m", "mypy.stubtest", "mlbuild_loadgen", "--mypy-config-file", os.devnull,
                           "--allowlist", str(allow)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def test_stub_matches_the_built_module(lg_path: Path, tmp_path: Path) -> None:
    r = stubtest(lg_path, STUB, tmp_path)
    assert r.returncode == 0, f"stubtest found differences between {STUB.name} and the module:\n{r.stdout}{r.stderr}"
    assert "Success: no issues found" in r.stdout


def test_stubtest_catches_a_signature_the_module_does_not_have(lg_path: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.pyi"
    wrong.write_text(STUB.read_text().replace("def DestroyQSL(qsl: int) -> None: ...",
                                              "def DestroyQSL(qsl: int, force: bool) -> None: ..."))
    assert wrong.read_text() != STUB.read_text()
    r = stubtest(lg_path, wrong, tmp_path / "w")
    assert r.returncode == 1
    assert "mlbuild_loadgen.DestroyQSL is inconsistent" in r.stdout
