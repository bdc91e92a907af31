"""Sliding refresh with token rotation over HTTP, the grace window, token
reuse, and bearer clients (``set-auth-token``)."""

from __future__ import annotations

import httpx

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.events import SessionRevoked
from tests.http.conftest import BASE_URL, Service, cookie_named

TOKEN = "better-auth.session-token"


def token_cookie_value(response: httpx.Response) -> str:
    header = cookie_named(response, TOKEN)
    assert header is not None
    return header.split(";")[0].split("=", 1)[1]


async def test_refresh_rotates_the_token_cookie_then_reuse_revokes(
    service: Service, clock: ManualClock
) -> None:
    signed_up = await service.sign_up()
    old_cookie = token_cookie_value(signed_up)
    session_id = (await service.client.get("/api/auth/get-session")).json()["session"]["id"]

    clock.advance(days=1, seconds=1)  # past update_age
    refreshed = await service.client.get("/api/auth/get-session")
    assert refreshed.headers["x-session-source"] == "store"  # refresh due: cache bypassed
    new_cookie = token_cookie_value(refreshed)
    assert new_cookie != old_cookie
    assert refreshed.json()["session"]["token"] != signed_up.json()["token"]
    assert refreshed.json()["session"]["expiresAt"].startswith("2026-02-01")

    # Within the grace window a racing request with the old token still works.
    stale = service.new_client(cookie=f"{TOKEN}={old_cookie}")
    clock.advance(seconds=5)
    assert (await stale.get("/api/auth/get-session?disableCookieCache=true")).json() is not None

    # After it, the old token is reuse: 401 / null, and the session is revoked.
    clock.advance(seconds=60)
    reused = await stale.get("/api/auth/list-sessions")
    assert (reused.status_code, reused.json()["code"]) == (401, "UNAUTHORIZED")
    last = (await service.container.store.read_stream(session_id))[-1].event
    assert isinstance(last, SessionRevoked)
    assert (last.reason, last.actor) == ("token_reuse", "system")
    # ...for the legitimate holder of the new token as well.
    assert (await service.client.get("/api/auth/get-session")).json() is None


async def test_disable_refresh_keeps_the_token(service: Service, clock: ManualClock) -> None:
    await service.sign_up()
    clock.advance(days=2)
    response = await service.client.get("/api/auth/get-session", params={"disableRefresh": "true"})
    assert response.json() is not None
    assert cookie_named(response, TOKEN) is None
    assert response.json()["session"]["expiresAt"].startswith("2026-01-31")


async def test_bearer_token_and_rotation_header(service: Service, clock: ManualClock) -> None:
    signed_up = await service.sign_up()
    bearer = signed_up.headers["set-auth-token"]
    api = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app),
        base_url=BASE_URL,
        headers={"authorization": f"Bearer {bearer}"},
    )
    async with api:
        first = await api.get("/api/auth/get-session")
        assert first.json()["user"]["email"] == "ada@example.com"
        assert first.headers["x-session-source"] == "store"  # bearer never uses the cookie cache
        assert "set-auth-token" not in first.headers
        assert (await api.get("/api/auth/list-sessions")).status_code == 200
        # Non-browser POST without cookies: no Origin needed.
        assert (await api.post("/api/auth/update-session", json={"a": 1})).status_code == 200

        clock.advance(days=1, seconds=1)
        rotated = await api.get("/api/auth/get-session")
        new_bearer = rotated.headers["set-auth-token"]
        assert new_bearer != bearer
        assert "set-cookie" not in rotated.headers
        api.headers["authorization"] = f"Bearer {new_bearer}"
        assert (await api.get("/api/auth/get-session")).json() is not None

        forged = bearer[:-3] + "AA="
        api.headers["authorization"] = f"Bearer {forged}"
        assert (await api.get("/api/auth/get-session")).json() is None
        assert (await api.get("/api/auth/list-sessions")).status_code == 401
        api.headers["authorization"] = f"Bearer {new_bearer}"
        assert (await api.post("/api/auth/sign-out")).json() == {"success": True}
        assert (await api.get("/api/auth/get-session")).json() is None
