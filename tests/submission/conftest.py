"""The end-to-end fixtures of tests/e2e (a project copy, the session store), for the package tests."""

from tests.e2e.conftest import project  # noqa: F401  (fixture)
