"""A host application's own routes (examples/protected_app.py): CSRF on
unsafe methods when the session comes from a cookie, an opt-out, and
no-store on every response that sets a session cookie."""

from __future__ import annotations

import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote

import httpx
import pytest
from fastapi import FastAPI

from tests.http.conftest import BASE_URL, PASSWORD, SECRET

EVIL = {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}


@pytest.fixture
async def example(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FastAPI]:
    monkeypatch.setenv("SESSION_LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("SESSION_LEDGER_ENVIRONMENT", "test")
    monkeypatch.setenv("SESSION_LEDGER_BASE_URL", BASE_URL)
    monkeypatch.setenv("SESSION_LEDGER_SECRETS", f'["{SECRET}"]')
    monkeypatch.setenv("SESSION_LEDGER_SESSION__FRESH_AGE", "0")
    sys.modules.pop("examples.protected_app", None)
    module = importlib.import_module("examples.protected_app")
    app: FastAPI = module.app
    async with app.router.lifespan_context(app):
        yield app
    sys.modules.pop("examples.protected_app", None)


@asynccontextmanager
async def signed_in(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        response = await client.post(
            "/api/auth/sign-up/email",
            json={"email": "ada@example.com", "password": PASSWORD},
            headers={"origin": BASE_URL},
        )
        assert response.status_code == 200, response.text
        yield client


@pytest.mark.parametrize("path", ["/api/preferences", "/api/change-email"])
async def test_cross_site_posts_with_the_session_cookie_are_refused(
    example: FastAPI, path: str
) -> None:
    """A host route using RequiredSession / FreshSession answered 200 to a
    cross-site POST carrying the session cookie before."""
    async with signed_in(example) as client:
        refused = await client.post(path, headers=EVIL)
        assert (refused.status_code, refused.json()["code"]) == (403, "INVALID_ORIGIN")
        no_origin = await client.post(path)
        assert (no_origin.status_code, no_origin.json()["code"]) == (
            403,
            "MISSING_OR_NULL_ORIGIN",
        )
        same_site = await client.post(path, headers={"origin": BASE_URL})
        assert same_site.status_code == 200, same_site.text
        # Reads are not state-changing: no Origin needed.
        assert (await client.get("/api/protected", headers=EVIL)).status_code == 200


async def test_bearer_requests_and_exempt_routes_skip_the_check(example: FastAPI) -> None:
    async with signed_in(example) as client:
        signed = client.cookies.get("better-auth.session-token")
        assert signed is not None
        bearer = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=example),
            base_url=BASE_URL,
            headers={"authorization": f"Bearer {unquote(signed)}"},
        )
        async with bearer:
            response = await bearer.post("/api/preferences", headers={"origin": "https://x.test"})
            assert response.status_code == 200, response.text
        exempt = await client.post("/api/hooks/ping", headers=EVIL)
        assert exempt.json() == {"pong": True, "signedIn": True}


async def test_responses_setting_session_cookies_are_no_store(example: FastAPI) -> None:
    async with signed_in(example) as client:
        # Without the cache cookie the store answers and a fresh one is set.
        for name in [n for n in client.cookies if n.endswith("session_data")]:
            client.cookies.delete(name)
        response = await client.get("/api/protected")
        assert response.status_code == 200
        assert any("session_data" in c for c in response.headers.get_list("set-cookie"))
        assert response.headers["cache-control"] == "no-store"
        # A dead session's clearing cookies, on a host route's 401.
        token = client.cookies["better-auth.session-token"]
        await client.post("/api/auth/sign-out", headers={"origin": BASE_URL})
        client.cookies.set("better-auth.session-token", token)
        dead = await client.get("/api/protected")
        assert dead.status_code == 401
        assert any("Max-Age=0" in c for c in dead.headers.get_list("set-cookie"))
        assert dead.headers["cache-control"] == "no-store"
