"""Fixtures of the core tests: a project on a loopback upstream (see project.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.project import Project, core_env  # noqa: F401  (fixture)
from tests.httpserver import LoopbackServer


@pytest.fixture
def project(tmp_path: Path, http_server: LoopbackServer, capsys: pytest.CaptureFixture[str],
            core_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:  # noqa: F811
    monkeypatch.chdir(tmp_path)
    yield Project(tmp_path / "proj", http_server, capsys)


@pytest.fixture
def locked(project: Project) -> Project:
    """A project whose lock is written (into a side store: the project's store is empty)."""
    project.lock()
    project.reset_counts()
    return project
