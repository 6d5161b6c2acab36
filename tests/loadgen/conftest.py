"""Fixtures for the mlbuild_loadgen tests.

The tests need our wheel: ``mlbuild realize loadgen-pyo3`` builds it into the session's
store from the locked official sdist (``MLBUILD_LOADGEN_WHEEL=/path/to/mlbuild_loadgen-*.whl``
names a prebuilt one instead).  The wheel is unzipped into a temp dir and put on sys.path
(never installed into the venv).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CRATE = REPO / "rust_loadgen_bindings"
SAMPLES = REPO.parent / "shared" / "specs" / "loadgen-samples"
RUNNER = Path(__file__).with_name("_runner.py")


def obtain_wheel(session_store: Path) -> Path:
    """The wheel as users get it: `mlbuild realize loadgen-pyo3`, a store entry built from the
    locked official sdist by the derivation graph (once per session store)."""
    env = os.environ.get("MLBUILD_LOADGEN_WHEEL")
    if env:
        p = Path(env)
        if not p.is_file():
            raise pytest.UsageError(f"MLBUILD_LOADGEN_WHEEL={env} is not a file")
        return p
    r = subprocess.run(
        [sys.executable, "-m", "mlbuild", "realize", "loadgen-pyo3", "--store", str(session_store), "-q"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "MLBUILD_NO_PROGRESS": "1"},
    )
    assert r.returncode == 0, f"mlbuild realize loadgen-pyo3 failed:\n{r.stdout}\n{r.stderr}"
    entry = Path(r.stdout.strip().splitlines()[-1])
    assert entry.parent == session_store, entry
    wheels = sorted(entry.glob("mlbuild_loadgen-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {entry}"
    return wheels[0]


@pytest.fixture(scope="session")
def lg_wheel(session_store) -> Path:
    return obtain_wheel(session_store)


@pytest.fixture(scope="session")
def lg_path(lg_wheel, tmp_path_factory) -> Path:
    """A directory holding the unzipped wheel (importable mlbuild_loadgen)."""
    d = tmp_path_factory.mktemp("mlbuild_loadgen_wheel")
    with zipfile.ZipFile(lg_wheel) as z:
        z.extractall(d)
    return d


@pytest.fixture(scope="session")
def lg(lg_path):
    """Our module, imported in-process."""
    sys.path.insert(0, str(lg_path))
    import mlbuild_loadgen

    return mlbuild_loadgen


@pytest.fixture(scope="session")
def run_backend(lg_path, tmp_path_factory):
    """Runs tests/loadgen/_runner.py in a subprocess (one backend per process,
    a fresh core each time) and returns its JSON result plus the log dir."""

    def run(backend: str, spec: dict, timeout: float = 120) -> dict:
        out = tmp_path_factory.mktemp(f"{backend}-{spec.get('scenario', 'x')}")
        spec = {**spec, "backend": backend, "outdir": str(out)}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(lg_path), os.environ.get("PYTHONPATH", "")])}
        p = subprocess.run(
            [sys.executable, str(RUNNER), json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=out,
        )
        if p.returncode != 0:
            raise AssertionError(f"runner failed ({backend}): {p.stdout}\n{p.stderr}")
        res = json.loads((out / "result.json").read_text())
        res["outdir"] = out
        res["stderr"] = p.stderr
        return res

    return run


def parse_detail(path: Path) -> list[dict]:
    """The :::MLLOG lines of a detail log, as dicts (strict JSON)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.startswith(":::MLLOG "):
            out.append(json.loads(line[len(":::MLLOG "):]))
    return out
