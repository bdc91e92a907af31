"""Headers of the service: nosniff, a referrer policy, no framing, a
Content-Security-Policy on the demo page (its own scripts only) and on JSON,
and the API documentation off in production unless enabled."""

from __future__ import annotations

from typing import Any

import pytest

from tests.http.conftest import Service


async def test_every_answer_carries_the_basic_headers(sqlite_service: Service) -> None:
    for path in ["/", "/healthz", "/api/auth/get-session", "/static/app.js", "/nope"]:
        response = await sqlite_service.client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "same-origin", path
        assert response.headers["x-frame-options"] == "DENY", path


async def test_the_page_and_json_have_a_content_security_policy(sqlite_service: Service) -> None:
    page = await sqlite_service.client.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "default-src 'none'" in policy
    api = await sqlite_service.client.get("/api/auth/get-session")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


@pytest.mark.parametrize(
    ("overrides", "served"),
    [
        ({"environment": "production"}, False),
        ({"environment": "production", "docs": True}, True),
        ({"environment": "development"}, True),
        ({"environment": "test", "docs": False}, False),
    ],
)
async def test_api_docs_are_off_in_production_unless_enabled(
    make_service: Any, sqlite_url: str, overrides: dict[str, Any], served: bool
) -> None:
    async with make_service(sqlite_url, **overrides) as svc:
        for path in ["/openapi.json", "/docs", "/redoc"]:
            response = await svc.client.get(path)
            assert (response.status_code == 200) is served, (path, response.status_code)
