"""The embedded default (SQLite): the same service end to end, with the
revocation feed following the ledger's tail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.http.conftest import Service, StatementCounter
from tests.http.test_cookie_cache import copy_to, eventually


async def test_sign_up_list_revoke_sign_out(sqlite_service: Service) -> None:
    svc = sqlite_service
    await svc.sign_up()
    phone = svc.new_client()
    await svc.sign_in(client=phone)
    listed = (await svc.client.get("/api/auth/list-sessions")).json()
    assert len(listed) == 2
    assert (await svc.client.post("/api/auth/revoke-other-sessions")).json() == {"status": True}
    assert (await phone.get("/api/auth/get-session")).json() is None
    assert (await svc.client.post("/api/auth/sign-out")).json() == {"success": True}
    assert (await svc.client.get("/api/auth/get-session")).json() is None


async def test_cache_hit_without_query(
    sqlite_service: Service, count_statements: Callable[[AsyncEngine], StatementCounter]
) -> None:
    await sqlite_service.sign_up()
    with count_statements(sqlite_service.engine) as counter:
        response = await sqlite_service.client.get("/api/auth/get-session")
    assert response.headers["x-session-source"] == "cookie-cache"
    assert counter.statements == []


async def test_revocation_reaches_another_process_through_the_ledger_tail(
    sqlite_service: Service, make_service: Any, sqlite_url: str
) -> None:
    async with make_service(sqlite_url) as other_process:
        await sqlite_service.sign_up()
        laptop = sqlite_service.new_client()
        await sqlite_service.sign_in(client=laptop)
        session_id = (await laptop.get("/api/auth/get-session")).json()["session"]["id"]
        laptop_on_b = copy_to(other_process, laptop)
        await eventually(lambda: other_process.auth.revocations.caught_up, "B caught up")
        await laptop_on_b.get("/api/auth/get-session")  # B sees the store vouch for it
        cached = await laptop_on_b.get("/api/auth/get-session")
        assert cached.headers["x-session-source"] == "cookie-cache"
        await sqlite_service.client.post("/api/auth/revoke-session", json={"token": session_id})
        await eventually(lambda: session_id in other_process.auth.revocations, "tail polled")
        assert (await laptop_on_b.get("/api/auth/get-session")).json() is None


async def test_sqlite_with_redis_follows_the_ledger_tail_too(
    make_service: Any, sqlite_url: str, redis_url: str, redis_prefix: str
) -> None:
    """SQLite + Redis: the feed follows the ledger's tail as without Redis,
    and also tells the cache's freshness of every append."""
    redis = {"url": redis_url, "prefix": redis_prefix}
    async with (
        make_service(sqlite_url, redis=redis) as process_a,
        make_service(sqlite_url, redis=redis) as process_b,
    ):
        assert process_a.auth.revocations.mode == process_b.auth.revocations.mode == "poll"
        freshness = process_b.container.freshness
        assert freshness is not None
        await process_a.sign_up()
        laptop = process_a.new_client()
        await process_a.sign_in(client=laptop)
        session_id = (await laptop.get("/api/auth/get-session")).json()["session"]["id"]
        laptop_on_b = copy_to(process_b, laptop)
        await eventually(lambda: process_b.auth.revocations.caught_up, "B caught up")
        await laptop_on_b.get("/api/auth/get-session")  # B sees the store vouch for it
        cached = await laptop_on_b.get("/api/auth/get-session")
        assert cached.headers["x-session-source"] == "cookie-cache"

        await process_a.client.post("/api/auth/revoke-session", json={"token": session_id})
        await eventually(lambda: session_id in process_b.auth.revocations, "tail polled")
        assert freshness.newest >= (0, 3)  # sign-up, sign-in, revoke: all heard
        assert (await laptop_on_b.get("/api/auth/get-session")).json() is None
        store = await laptop_on_b.get("/api/auth/get-session?disableCookieCache=true")
        assert store.json() is None
