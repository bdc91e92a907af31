"""The cookie cache: answers without any I/O, never outlives a revocation
(in this process, or in another one on the same database), and never
trusts a value that is forged, expired, or for another token."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api import revocations
from session_ledger.api.revocations import RevocationFeed
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.tokens import b64url_decode, b64url_encode
from tests.http.conftest import Service, StatementCounter

DATA = "better-auth.session_data"


async def eventually(condition: Callable[[], bool], what: str, patience: float = 10.0) -> None:
    """Wait (bounded) for an asynchronous feed; fails loudly, never times anything."""
    for _ in range(int(patience / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"gave up waiting: {what}")


def copy_to(service: Service, source: httpx.AsyncClient) -> httpx.AsyncClient:
    """The same browser (same cookies) talking to another app instance."""
    client = service.new_client()
    for cookie in source.cookies.jar:
        client.cookies.set(cookie.name, cookie.value or "")
    return client


async def test_cache_hit_makes_no_database_query(
    service: Service, count_statements: Callable[[AsyncEngine], StatementCounter]
) -> None:
    await service.sign_up()
    assert service.auth.revocations.caught_up
    with count_statements(service.engine) as counter:
        response = await service.client.get("/api/auth/get-session")
    assert response.headers["x-session-source"] == "cookie-cache"
    assert response.json()["user"]["email"] == "ada@example.com"
    assert counter.statements == []
    with count_statements(service.engine) as counter:
        bypass = await service.client.get("/api/auth/get-session?disableCookieCache=true")
    assert bypass.headers["x-session-source"] == "store"
    assert counter.statements  # the store really is read without the cache


async def test_sensitive_endpoints_never_use_the_cache(
    service: Service, count_statements: Callable[[AsyncEngine], StatementCounter]
) -> None:
    await service.sign_up()
    for method, path in [("GET", "/api/auth/list-sessions"), ("POST", "/api/auth/sign-out")]:
        with count_statements(service.engine) as counter:
            response = await service.client.request(method, path)
        assert response.status_code == 200
        assert any("sessions" in s for s in counter.statements)


async def test_revocation_in_this_process_beats_the_cache(service: Service) -> None:
    await service.sign_up()
    laptop = service.new_client()
    await service.sign_in(client=laptop)
    assert (await laptop.get("/api/auth/get-session")).headers["x-session-source"] == (
        "cookie-cache"
    )
    await service.client.post("/api/auth/revoke-other-sessions")
    response = await laptop.get("/api/auth/get-session")
    assert response.json() is None
    assert any("Max-Age=0" in c for c in response.headers.get_list("set-cookie"))


async def test_revocation_in_another_process_beats_the_cache(
    service: Service, make_service: Any, pg_url: str
) -> None:
    """Process A revokes; process B, holding nothing but the cookie cache,
    learns it through LISTEN/NOTIFY and rejects the cached value."""
    async with make_service(pg_url) as other_process:
        await service.sign_up()
        laptop = service.new_client()
        await service.sign_in(client=laptop)
        laptop_on_b = copy_to(other_process, laptop)
        session_id = (await laptop.get("/api/auth/get-session")).json()["session"]["id"]
        await eventually(lambda: other_process.auth.revocations.caught_up, "B's feed connected")
        # B trusts a cache value only for a session it has seen the store vouch for.
        first = await laptop_on_b.get("/api/auth/get-session")
        assert first.headers["x-session-source"] == "store"
        before = await laptop_on_b.get("/api/auth/get-session")
        assert before.headers["x-session-source"] == "cookie-cache"

        await service.client.post("/api/auth/revoke-session", json={"token": session_id})
        await eventually(
            lambda: session_id in other_process.auth.revocations, "NOTIFY reached process B"
        )
        after = await laptop_on_b.get("/api/auth/get-session")
        assert after.json() is None


async def test_a_feed_that_is_not_caught_up_falls_back_to_the_store(
    service: Service, make_service: Any, pg_url: str
) -> None:
    async with make_service(pg_url) as other_process:
        await service.sign_up()
        laptop = service.new_client()
        await service.sign_in(client=laptop)
        session_id = (await laptop.get("/api/auth/get-session")).json()["session"]["id"]
        laptop_on_b = copy_to(other_process, laptop)
        feed = other_process.auth.revocations
        await feed.stop()  # B has lost its feed
        assert not feed.caught_up
        response = await laptop_on_b.get("/api/auth/get-session")
        assert response.headers["x-session-source"] == "store"

        # A revocation while B is deaf is loaded from the ledger when it catches up.
        await service.client.post("/api/auth/revoke-session", json={"token": session_id})
        await feed.start()
        assert feed.caught_up
        assert session_id in feed
        assert (await laptop_on_b.get("/api/auth/get-session")).json() is None


async def test_lost_listen_connection_reconnects_and_catches_up(service: Service) -> None:
    feed = service.auth.revocations
    await eventually(lambda: feed.caught_up, "feed connected")
    async with service.engine.connect() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        )
    assert killed == 1
    await eventually(lambda: not feed.caught_up, "feed noticed the lost connection")
    await eventually(lambda: feed.caught_up, "feed reconnected")
    await service.sign_up()
    other = service.new_client()
    await service.sign_in(client=other)
    # The reconnected listener still hears other processes' notifications.
    async with service.engine.begin() as conn:
        await conn.execute(text("SELECT pg_notify('session_ledger_revocations', 'from-elsewhere')"))
    await eventually(lambda: "from-elsewhere" in feed, "notification after reconnect")


async def test_forged_expired_and_foreign_cache_values_are_ignored(
    service: Service, clock: ManualClock
) -> None:
    await service.sign_up()
    value = service.client.cookies[DATA]
    body = json.loads(b64url_decode(value) or b"")

    body["session"]["user"]["email"] = "root@example.com"  # tampered content
    service.client.cookies.set(DATA, b64url_encode(json.dumps(body).encode()))
    forged = await service.client.get("/api/auth/get-session")
    assert forged.headers["x-session-source"] == "store"
    assert forged.json()["user"]["email"] == "ada@example.com"

    for junk in ["", "not-base64!", b64url_encode(b"[1,2]"), b64url_encode(b"{")]:
        service.client.cookies.set(DATA, junk)
        response = await service.client.get("/api/auth/get-session")
        assert response.status_code == 200
        assert response.headers["x-session-source"] == "store"

    clock.advance(seconds=301)  # past the cache's max_age
    expired = await service.client.get("/api/auth/get-session")
    assert expired.headers["x-session-source"] == "store"

    # Another session's (valid, signed) cache value does not vouch for our token.
    mallory = service.new_client()
    await service.sign_up("mallory@example.com", client=mallory)
    service.client.cookies.set(DATA, mallory.cookies[DATA])
    swapped = await service.client.get("/api/auth/get-session")
    assert swapped.headers["x-session-source"] == "store"
    assert swapped.json()["user"]["email"] == "ada@example.com"


async def test_stop_ends_a_feed_whose_cancellation_was_swallowed(
    pg_url: str, pg_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's asyncio.wait_for returns the awaited result, dropping a
    cancellation that arrives as the awaited call completes. The feed's
    keepalive loop then ran on and stop() (the app's shutdown with it) never
    returned: the fuzz suite hung at lifespan shutdown. Here the race is made
    certain: the first cancellation is swallowed as 3.11 would."""
    real_wait_for = asyncio.wait_for
    swallowed: list[bool] = []

    async def racy_wait_for(*args: Any, **kwargs: Any) -> Any:
        try:
            return await real_wait_for(*args, **kwargs)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)
            return None  # what 3.11 returns when the call had completed

    feed = RevocationFeed(pg_engine, ManualClock(), 300, database_url=pg_url)
    monkeypatch.setattr(revocations, "KEEPALIVE", 0.05)
    await feed.start()
    assert feed.caught_up
    monkeypatch.setattr(asyncio, "wait_for", racy_wait_for)
    await asyncio.sleep(0.3)  # the keepalive loop is now in the racy wait_for
    stopping = asyncio.create_task(feed.stop())
    done, _ = await asyncio.wait({stopping}, timeout=8)
    if not done:  # clean up the runaway feed before failing
        monkeypatch.undo()
        stopping.cancel()
    assert done, "stop() did not return: the swallowed cancellation left the feed running"
    assert swallowed
    assert not feed.caught_up


async def test_revocation_window_is_bounded(clock: ManualClock, pg_engine: AsyncEngine) -> None:
    feed = RevocationFeed(pg_engine, clock, 300, database_url="postgresql+asyncpg://x/y")
    feed.add(["old"])
    clock.advance(seconds=300 + 61)
    feed.add(["new"])
    assert "old" not in feed
    assert "new" in feed


async def test_cache_hit_serves_the_session_callbacks_output_without_running_it(
    service: Service,
) -> None:
    calls: list[str] = []

    async def callback(payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(payload["session"]["id"])
        return {**payload, "user": {**payload["user"], "plan": f"pro-{len(calls)}"}}

    service.container.ledger.session_callback = callback
    await service.sign_up()
    first = await service.client.get("/api/auth/get-session?disableCookieCache=true")
    assert first.json()["user"]["plan"] == f"pro-{len(calls)}"
    written = len(calls)

    hit = await service.client.get("/api/auth/get-session")
    assert hit.headers["x-session-source"] == "cookie-cache"
    assert hit.json()["user"]["plan"] == f"pro-{written}"  # what the cookie was written with
    assert len(calls) == written  # not run again

    bypass = await service.client.get("/api/auth/get-session?disableCookieCache=true")
    assert bypass.json()["user"]["plan"] == f"pro-{written + 1}"


async def test_a_well_signed_value_for_a_pair_never_seen_goes_to_the_store(
    service: Service,
) -> None:
    """Someone holding the secret signs a token cookie and a cache value for
    a user that does not exist, with admin roles: the process has never seen
    the store vouch for that pair, so it asks the store, which knows no such
    token."""
    auth = service.auth
    now = service.clock.now()
    token = "forged-token-0123456789abcdefghijklmnopqrstuvw"
    session = {
        "id": "01900000-0000-7000-8000-000000000000",
        "token": token,
        "userId": "nobody",
        "expiresAt": "2026-02-01T00:00:00.000Z",
    }
    user = {"id": "nobody", "email": "root@example.com", "roles": ["admin"]}
    client = service.new_client()
    client.cookies.set(auth.jar.names.token, auth.signer.sign(token))
    client.cookies.set(auth.jar.names.data, auth.cache.encode(session, user, now))
    assert auth.cache.read(dict(client.cookies.items()), now) is not None  # well signed

    response = await client.get("/api/auth/get-session")
    assert response.json() is None
    assert response.headers.get("x-session-source") is None
    assert len(auth.validated) == 0


async def test_a_process_trusts_the_cache_once_the_store_vouched_for_the_pair(
    service: Service, make_service: Any, pg_url: str
) -> None:
    async with make_service(pg_url) as other_process:
        await service.sign_up()
        assert (await service.client.get("/api/auth/get-session")).headers[
            "x-session-source"
        ] == "cookie-cache"  # written at sign-in in this process
        on_b = copy_to(other_process, service.client)
        await eventually(lambda: other_process.auth.revocations.caught_up, "B caught up")
        sources = [
            (await on_b.get("/api/auth/get-session")).headers["x-session-source"] for _ in range(3)
        ]
        assert sources == ["store", "cookie-cache", "cookie-cache"]
