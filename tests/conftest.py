"""Shared pytest fixtures."""

from tests.httpserver import http_server  # noqa: F401  (fixture: a loopback HTTP server)
