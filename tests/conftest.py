"""Shared pytest fixtures."""

import pytest

from tests.httpserver import http_server  # noqa: F401  (fixture: a loopback HTTP server)


@pytest.fixture(scope="session")
def session_store(tmp_path_factory: pytest.TempPathFactory):
    """One mlbuild store for the whole session: environments and the LoadGen wheel are built once."""
    return tmp_path_factory.mktemp("session-store") / "store"


# -- the `needs_index` marker (tests/index_probe.py) ---------------------------------------------
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.index_probe import mark_items

    mark_items(items)


def pytest_runtest_setup(item: pytest.Item) -> None:
    from tests.index_probe import check_item

    check_item(item)
