"""Fixtures of the cache tests: the core tests' loopback project, a signing key, and real servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cache.servers import DirServer, S3Server
from tests.core.conftest import locked, project  # noqa: F401  (fixtures)
from tests.core.project import core_env  # noqa: F401  (fixture)


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A signing key (MLBUILD_KEYS) whose public half is the only trusted key (MLBUILD_TRUSTED_KEYS)."""
    from mlbuild.provenance import generate_key

    d = tmp_path / "keys"
    _, pub, _ = generate_key(d)
    monkeypatch.setenv("MLBUILD_KEYS", str(d))
    monkeypatch.setenv("MLBUILD_TRUSTED_KEYS", str(pub))
    monkeypatch.setenv("MLBUILD_SUBSTITUTER_TIMEOUT", "1")
    monkeypatch.delenv("MLBUILD_SUBSTITUTERS", raising=False)
    return d


@pytest.fixture
def put_server(tmp_path: Path) -> Iterator[DirServer]:
    srv = DirServer(tmp_path / "http-root")
    (tmp_path / "http-root").mkdir()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    srv = S3Server(tmp_path_factory.mktemp("s3") / "root")
    yield srv
    srv.stop()
