"""Cookie names, attributes and values exactly as configured (the reference's
"Cookies" section)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import unquote

import pytest

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.domain.errors import ConfigError
from tests.http.conftest import SECRET, Service, cookie_named, set_cookies

TOKEN = "better-auth.session-token"
DATA = "better-auth.session_data"
DONT_REMEMBER = "better-auth.dont_remember"


def attributes(header: str) -> dict[str, str]:
    parts = [p.strip() for p in header.split(";")[1:]]
    return {p.split("=", 1)[0]: (p.split("=", 1)[1] if "=" in p else "") for p in parts}


async def test_token_cookie_attributes_and_signed_value(service: Service) -> None:
    response = await service.sign_up()
    header = cookie_named(response, TOKEN)
    assert header is not None
    attrs = attributes(header)
    assert attrs["Max-Age"] == str(30 * 24 * 3600)
    assert attrs["Path"] == "/"
    assert "HttpOnly" in attrs
    assert attrs["SameSite"] == "Lax"
    assert "Secure" not in attrs
    value = unquote(header.split(";")[0].split("=", 1)[1])
    token, _, signature = value.rpartition(".")
    assert token == response.json()["token"]
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), token.encode(), hashlib.sha256).digest()
    ).decode()
    assert signature == expected
    assert len(signature) == 44
    assert "%3D" in header  # URL-encoded like encodeURIComponent
    data = cookie_named(response, DATA)
    assert data is not None
    assert attributes(data)["Max-Age"] == "300"
    assert cookie_named(response, DONT_REMEMBER) is None


async def test_remember_me_off_gives_a_browser_session_cookie(service: Service) -> None:
    response = await service.sign_up(remember_me=False)
    header = cookie_named(response, TOKEN)
    assert header is not None
    assert "Max-Age" not in attributes(header)
    marker = cookie_named(response, DONT_REMEMBER)
    assert marker is not None
    assert "HttpOnly" in attributes(marker)
    session = (await service.client.get("/api/auth/get-session")).json()["session"]
    assert session["expiresAt"].startswith("2026-01-02")  # one day, not thirty


async def test_configured_cookie_name_and_options(make_service: Any, pg_url: str) -> None:
    overrides = {
        "cookie": {"name": "app.sid", "options": {"same_site": "strict", "domain": "example.com"}}
    }
    async with make_service(pg_url, **overrides) as svc:
        response = await svc.sign_up()
        header = cookie_named(response, "app.sid")
        assert header is not None
        assert attributes(header)["SameSite"] == "Strict"
        assert attributes(header)["Domain"] == "example.com"
        assert cookie_named(response, "app.session_data") is not None


async def test_dead_but_signed_token_gives_null_and_clears_all_three(
    service: Service, clock: ManualClock
) -> None:
    await service.sign_up()
    clock.advance(days=31)
    response = await service.client.get("/api/auth/get-session")
    assert response.json() is None
    cleared = {c.split("=", 1)[0]: attributes(c) for c in set_cookies(response)}
    assert set(cleared) == {TOKEN, DATA, DONT_REMEMBER}
    assert all(a["Max-Age"] == "0" for a in cleared.values())


async def test_large_sessions_chunk_the_cookie_cache(service: Service) -> None:
    await service.sign_up()
    big = {"notes": "x" * 3000}
    response = await service.client.post("/api/auth/update-session", json=big)
    assert response.status_code == 200
    names = [c.split("=", 1)[0] for c in set_cookies(response) if "Max-Age=300" in c]
    assert names == [f"{DATA}.0", f"{DATA}.1"]
    cached = await service.client.get("/api/auth/get-session")
    assert cached.headers["x-session-source"] == "cookie-cache"
    assert cached.json()["session"]["notes"] == big["notes"]
    # Too large for a cookie: not cached at all, the store answers.
    await service.client.post("/api/auth/update-session", json={"notes": "y" * 7000})
    after = await service.client.get("/api/auth/get-session")
    assert after.headers["x-session-source"] == "store"
    assert after.json()["session"]["notes"] == "y" * 7000


@pytest.mark.parametrize(
    ("host_prefix", "prefix"), [(False, "__Secure-"), (True, "__Host-")], ids=["secure", "host"]
)
async def test_https_base_url_gives_prefixed_secure_cookies(
    make_service: Any, sqlite_url: str, host_prefix: bool, prefix: str
) -> None:
    """``__Secure-`` on https; ``__Host-`` (one host, no Domain, Path=/) when asked."""
    overrides = {"base_url": "https://auth.example.com", "cookie": {"host_prefix": host_prefix}}
    async with make_service(sqlite_url, **overrides) as svc:
        client = svc.new_client(origin="https://auth.example.com")
        response = await client.post(
            "/api/auth/sign-up/email",
            json={"email": "h@example.com", "password": "long enough pw", "rememberMe": False},
        )
        assert response.status_code == 200, response.text
        names = {c.split("=", 1)[0] for c in set_cookies(response)}
        assert names == {
            f"{prefix}better-auth.session-token",
            f"{prefix}better-auth.session_data",
            f"{prefix}better-auth.dont_remember",
        }
        for cookie in set_cookies(response):
            assert "Secure" in attributes(cookie)
            assert attributes(cookie)["Path"] == "/"
            assert "Domain" not in attributes(cookie)
        # The prefixed cookie is what the service reads back (sent by hand:
        # the test client keeps Secure cookies for https only).
        token = cookie_named(response, f"{prefix}better-auth.session-token")
        assert token is not None
        browser = svc.new_client(cookie=token.split(";")[0])
        session = (await browser.get("/api/auth/get-session")).json()
        assert session["user"]["email"] == "h@example.com"


@pytest.mark.parametrize(
    "overrides",
    [
        {"cookie": {"host_prefix": True}},  # http base URL, not production: not secure
        {
            "base_url": "https://auth.example.com",
            "cookie": {"host_prefix": True, "options": {"domain": "example.com"}},
        },
        {
            "base_url": "https://auth.example.com",
            "cookie": {"host_prefix": True, "options": {"path": "/app"}},
        },
    ],
)
def test_host_prefix_refuses_what_browsers_would_reject(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"cookie\.host_prefix"):
        load_settings(secrets=[SECRET], **overrides)
