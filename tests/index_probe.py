"""The `needs_index` marker: tests that need pip to reach a package index.

Which tests: those marked `@pytest.mark.needs_index`, every end-to-end test (tests/e2e realizes
the real lock's Python environments) and every test that needs our LoadGen wheel built from
the locked sdist (the `lg_wheel` fixture, unless MLBUILD_LOADGEN_WHEEL names a prebuilt one).

Whether the index is reachable is probed once per session: `pip download --no-deps` of the
smallest wheel in lock/mlbuild.lock, with a short timeout. Unreachable: those tests skip with
the reason. Under CI=true the index must be reachable, so they fail instead of skipping.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "lock" / "mlbuild.lock"
PROBE_TIMEOUT_S = 20.0
_WHEEL = re.compile(r'\{ path = "([^"]+\.whl)", package = "([^"]+)", version = "([^"]+)", size = (\d+)')


def probe_requirement(lock_text: str) -> str | None:
    """`package==version` of the smallest locked wheel (any platform tag pip accepts here)."""
    wheels = [(int(size), pkg, ver) for path, pkg, ver, size in _WHEEL.findall(lock_text)
              if path.endswith(("-none-any.whl", "x86_64.whl")) or "manylinux" in path]
    if not wheels:
        return None
    _, pkg, ver = min(wheels)
    return f"{pkg}=={ver}"


@cache
def index_unreachable() -> str | None:
    """None when pip can download from the configured index, else why not (one line)."""
    req = probe_requirement(LOCK.read_text()) if LOCK.exists() else None
    if req is None:
        return f"no locked wheel in {LOCK} to probe the package index with"
    with tempfile.TemporaryDirectory(prefix="mlbuild-index-probe-") as d:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", d,
               "--timeout", "5", "--retries", "0", "--no-input", "--disable-pip-version-check", "-q", req]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"the package index did not deliver {req} within {PROBE_TIMEOUT_S:.0f} s (pip download)"
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            return f"the package index is unreachable: pip download {req} failed: {tail}"
    return None


def needs_index(item: pytest.Item) -> bool:
    if item.get_closest_marker("needs_index") is not None:
        return True
    path = Path(str(item.path))
    if path.is_relative_to(REPO / "tests" / "e2e"):
        return True
    fixtures = getattr(item, "fixturenames", ())
    return "lg_wheel" in fixtures and not os.environ.get("MLBUILD_LOADGEN_WHEEL")


def mark_items(items: list[pytest.Item]) -> None:
    for item in items:
        if needs_index(item) and item.get_closest_marker("needs_index") is None:
            item.add_marker(pytest.mark.needs_index)


def check_item(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_index") is None:
        return
    why = index_unreachable()
    if why is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and this test needs a package index: {why}", pytrace=False)
    pytest.skip(f"needs a package index (offline): {why}")
