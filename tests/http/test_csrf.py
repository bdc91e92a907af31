"""CSRF: non-GET requests carrying cookies (or Sec-Fetch-* headers) need a
trusted Origin or Referer."""

from __future__ import annotations

from typing import Any

import httpx

from tests.http.conftest import BASE_URL, PASSWORD, Service


def client_without_origin(service: Service, **headers: str) -> httpx.AsyncClient:
    client = service.new_client(**headers)
    del client.headers["origin"]
    return client


async def test_cookie_bearing_post_needs_an_origin(service: Service) -> None:
    await service.sign_up()
    bare = client_without_origin(service)
    bare.cookies = service.client.cookies
    before = await service.head()
    missing = await bare.post("/api/auth/sign-out")
    assert (missing.status_code, missing.json()["code"]) == (403, "MISSING_OR_NULL_ORIGIN")
    null = await bare.post("/api/auth/sign-out", headers={"origin": "null"})
    assert null.json()["code"] == "MISSING_OR_NULL_ORIGIN"
    evil = await bare.post("/api/auth/sign-out", headers={"origin": "https://evil.example"})
    assert (evil.status_code, evil.json()["code"]) == (403, "INVALID_ORIGIN")
    lookalike = await bare.post("/api/auth/sign-out", headers={"origin": BASE_URL + ".evil.io"})
    assert lookalike.json()["code"] == "INVALID_ORIGIN"
    assert await service.head() == before
    referer = await bare.post("/api/auth/sign-out", headers={"referer": f"{BASE_URL}/account"})
    assert referer.json() == {"success": True}


async def test_get_is_never_checked(service: Service) -> None:
    await service.sign_up()
    bare = client_without_origin(service)
    bare.cookies = service.client.cookies
    assert (await bare.get("/api/auth/get-session")).json() is not None


async def test_sec_fetch_headers_without_cookies_are_checked(service: Service) -> None:
    browser = client_without_origin(service, **{"sec-fetch-site": "cross-site"})
    response = await browser.post(
        "/api/auth/sign-up/email", json={"email": "x@example.com", "password": PASSWORD}
    )
    assert (response.status_code, response.json()["code"]) == (403, "MISSING_OR_NULL_ORIGIN")
    script = client_without_origin(service)  # no cookies, no Sec-Fetch: not a browser
    ok = await script.post(
        "/api/auth/sign-up/email", json={"email": "x@example.com", "password": PASSWORD}
    )
    assert ok.status_code == 200


async def test_trusted_origins_and_wildcards(make_service: Any, pg_url: str) -> None:
    trusted = ["https://app.example.com", "https://*.preview.example.com"]
    async with make_service(pg_url, trusted_origins=trusted) as svc:
        await svc.sign_up()
        for origin, status in [
            ("https://app.example.com", 200),
            ("https://pr-7.preview.example.com", 200),
            ("https://preview.example.com.evil.io", 403),
            ("http://app.example.com", 403),
        ]:
            response = await svc.client.post(
                "/api/auth/update-session", json={"k": 1}, headers={"origin": origin}
            )
            assert response.status_code == status, origin
