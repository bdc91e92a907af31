"""The HTTP service fixtures of tests/http, for the abuse-resistance tests."""

from tests.http.conftest import make_service, service, sqlite_service

__all__ = ["make_service", "service", "sqlite_service"]
