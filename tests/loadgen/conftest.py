"""Fixtures for the mlbuild_loadgen tests.

The tests need our wheel. ``MLBUILD_LOADGEN_WHEEL=/path/to/mlbuild_loadgen-*.whl``
names a prebuilt one; otherwise it is built once with maturin from the
official sdist (fetched with ``pip download``), both cached under the pytest
cache (keyed by a hash of rust_loadgen_bindings/). The wheel is unzipped into
a temp dir and put on sys.path (never installed into the venv).
Swap ``obtain_wheel`` for the store's wheel when the core provides it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CRATE = REPO / "rust_loadgen_bindings"
SAMPLES = REPO.parent / "shared" / "specs" / "loadgen-samples"
RUNNER = Path(__file__).with_name("_runner.py")
SDIST_REQ = "mlcommons-loadgen==6.0.17"
SDIST_DIR = "mlcommons_loadgen-6.0.17"


def _crate_key() -> str:
    h = hashlib.sha256()
    for p in sorted(CRATE.rglob("*")):
        rel = p.relative_to(CRATE)
        if not p.is_file() or rel.parts[0] in ("target", "dist") or "__pycache__" in rel.parts:
            continue
        h.update(str(rel).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _sdist_root(cache: Path) -> Path:
    root = cache / "sdist" / SDIST_DIR
    if (root / "loadgen.cc").is_file():
        return root
    dl = cache / "sdist-download"
    dl.mkdir(parents=True, exist_ok=True)
    tars = list(dl.glob("mlcommons_loadgen-*.tar.gz"))
    if not tars:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST_REQ, "-d", str(dl)],
            check=True,
        )
        tars = list(dl.glob("mlcommons_loadgen-*.tar.gz"))
    with tarfile.open(tars[0]) as t:
        t.extractall(cache / "sdist", filter="data")
    return root


def obtain_wheel(request) -> Path:
    env = os.environ.get("MLBUILD_LOADGEN_WHEEL")
    if env:
        p = Path(env)
        if not p.is_file():
            raise pytest.UsageError(f"MLBUILD_LOADGEN_WHEEL={env} is not a file")
        return p
    cache = Path(request.config.cache.mkdir("mlbuild-loadgen"))
    out = cache / "wheels" / _crate_key()
    found = sorted(out.glob("mlbuild_loadgen-*.whl"))
    if found:
        return found[-1]
    src = _sdist_root(cache)
    maturin = shutil.which("maturin") or str(Path(sys.executable).with_name("maturin"))
    subprocess.run(
        [maturin, "build", "--release", "-m", str(CRATE / "Cargo.toml"), "-o", str(out)],
        check=True,
        cwd=REPO,
        env={**os.environ, "MLPERF_LOADGEN_SRC": str(src)},
    )
    return sorted(out.glob("mlbuild_loadgen-*.whl"))[-1]


@pytest.fixture(scope="session")
def lg_wheel(request) -> Path:
    return obtain_wheel(request)


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
