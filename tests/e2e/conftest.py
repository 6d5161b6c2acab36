"""End-to-end fixtures: a copy of the project's manifests and lock in a temp directory, one
store shared by the session (environments are built once), and `mlbuild` run as a process
exactly as a user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MIRROR = REPO.parent / "shared" / "mirror"


@dataclass
class Project:
    root: Path
    store: Path

    def run(self, *args: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        full_env = dict(os.environ, MLBUILD_NO_PROGRESS="1", MLBUILD_STORE=str(self.store))
        full_env.update(env or {})
        r = subprocess.run([sys.executable, "-m", "mlbuild", *args], cwd=self.root, env=full_env,
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(
                f"mlbuild {' '.join(args)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
            )
        return r


@pytest.fixture()
def project(tmp_path: Path, session_store: Path) -> Project:
    assert MIRROR.is_dir(), f"the shared mirror is expected at {MIRROR}"
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(REPO / "manifests", root / "manifests")
    shutil.copytree(REPO / "lock", root / "lock")
    return Project(root, session_store)
