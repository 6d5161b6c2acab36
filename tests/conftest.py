"""Shared pytest fixtures."""

from tests.httpserver import http_server  # noqa: F401  (fixture: a loopback HTTP server)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def session_store(tmp_path_factory: pytest.TempPathFactory):
    """One mlbuild store for the whole session: environments and the LoadGen wheel are built once."""
    return tmp_path_factory.mktemp("session-store") / "store"
