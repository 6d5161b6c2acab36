"""The `needs_index` marker: offline, tests that need a package index skip with the reason;
under CI=true they fail; online they run. The "index" offline is a closed loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.index_probe import LOCK, probe_requirement

REPO = Path(__file__).resolve().parents[1]
# A test that needs our LoadGen wheel (the lg_wheel fixture) built from the locked sdist.
NEEDS_WHEEL = "tests/loadgen/test_api.py::test_wheel_layout"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_pytest(*, ci: bool, index: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "MLBUILD_LOADGEN_WHEEL", "PIP_FIND_LINKS")}
    env.update(PIP_INDEX_URL=index, PIP_NO_INDEX="", PIP_CONFIG_FILE=os.devnull, NO_PROXY="127.0.0.1")
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", NEEDS_WHEEL],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_probe_downloads_the_smallest_locked_wheel() -> None:
    req = probe_requirement(LOCK.read_text())
    assert req is not None and "==" in req
    name = req.split("==")[0]
    assert f'package = "{name}"' in LOCK.read_text()


def test_offline_a_test_needing_the_index_skips_with_the_reason() -> None:
    r = run_pytest(ci=False, index=f"http://127.0.0.1:{closed_port()}/simple")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout, r.stdout
    assert "needs a package index (offline)" in r.stdout and "pip download" in r.stdout, r.stdout


def test_offline_under_ci_a_test_needing_the_index_fails() -> None:
    r = run_pytest(ci=True, index=f"http://127.0.0.1:{closed_port()}/simple")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 error" in r.stdout and "CI=true and this test needs a package index" in r.stdout, r.stdout
