"""Redis faults under load: a crash (SIGKILL, restarted empty), FLUSHALL,
and Redis refusing writes while still serving reads (``maxmemory`` with
``noeviction``). Requests fall back to the store, never a stale accept; the
runner rebuilds the cache; a fill keeps its token pointer as long as the
session."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.session import SessionStatus
from ledger.tokens import hash_token
from projections.redis_cache import RedisSessionCache
from projections.schema import sessions
from tests.support.deployment import PASSWORD, Deployment
from tests.support.faults import Canary, assert_clean, describe, run_scenario
from tests.support.load import Load
from tests.support.redis import RedisProcess


@pytest.fixture
async def redis_admin(fault_redis: RedisProcess) -> Any:
    client: Any = aioredis.from_url(fault_redis.url, socket_connect_timeout=1, socket_timeout=2)
    yield client
    await client.aclose()


async def refuse_writes(client: Any) -> None:
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", "1")
    with pytest.raises(ResponseError, match="maxmemory"):
        await client.set("faults:probe", "x")


async def accept_writes(client: Any) -> None:
    await client.config_set("maxmemory", "0")


async def test_revoked_on_a_never_served_by_b_while_redis_refuses_writes(
    fault_deployment: Deployment, fault_load: Load, redis_admin: Any
) -> None:
    """Issue 14, item 1, as reported: sign in on A, read on B (Redis holds
    the session and B believes it), Redis starts refusing writes, sign out
    on A: B answers null at once, with and without the cookie cache, and
    update-session on B is a 401, not a 503 after 8 conflicting attempts."""
    a, b = fault_deployment.services
    email = fault_load.devices[0].user
    async with httpx.AsyncClient(timeout=10, headers={"origin": a.base}) as browser:
        signed_in = await browser.post(
            f"{a.base}/api/auth/sign-in/email", json={"email": email, "password": PASSWORD}
        )
        assert signed_in.status_code == 200
        for _ in range(3):
            read = await browser.get(f"{b.base}/api/auth/get-session?disableCookieCache=true")
            assert read.json() is not None
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        await refuse_writes(redis_admin)
        try:
            out = await browser.post(f"{a.base}/api/auth/sign-out")
            assert out.status_code == 200
            for query in ("?disableCookieCache=true", ""):
                stale = await browser.get(
                    f"{b.base}/api/auth/get-session{query}", headers={"cookie": cookie}
                )
                assert stale.status_code == 200
                assert stale.json() is None, f"B accepted a revoked session ({query or 'cache'})"
            update = await browser.post(
                f"{b.base}/api/auth/update-session", json={"x": 1}, headers={"cookie": cookie}
            )
            assert update.status_code == 401
        finally:
            await accept_writes(redis_admin)


async def test_redis_refusing_writes_under_load(
    fault_deployment: Deployment,
    fault_load: Load,
    fault_engine: AsyncEngine,
    fault_cache: RedisSessionCache,
    canary: Canary,
    redis_admin: Any,
) -> None:
    outcome = await run_scenario(
        "redis refusing writes (maxmemory, noeviction)",
        fault_deployment,
        fault_load,
        fault_engine,
        canary,
        fault=lambda: refuse_writes(redis_admin),
        heal=lambda: accept_writes(redis_admin),
        hold=2.0,
        cache=fault_cache,
    )
    print(describe(outcome))
    assert_clean(outcome)
    assert outcome.errors_by_kind().keys() <= {"401 UNAUTHORIZED", "404 SESSION_NOT_FOUND"}


async def test_redis_killed(
    fault_redis: RedisProcess,
    fault_deployment: Deployment,
    fault_load: Load,
    fault_engine: AsyncEngine,
    fault_cache: RedisSessionCache,
    canary: Canary,
) -> None:
    async def fault() -> None:
        fault_redis.kill()

    async def heal() -> None:
        await asyncio.to_thread(fault_redis.start)  # same port, empty

    outcome = await run_scenario(
        "redis kill -9 (restarted empty)",
        fault_deployment,
        fault_load,
        fault_engine,
        canary,
        fault=fault,
        heal=heal,
        hold=1.5,
        cache=fault_cache,
    )
    print(describe(outcome))
    assert_clean(outcome)
    assert outcome.transport_errors == {}
    assert not any(status >= 500 for _, status, _ in outcome.errors)


async def test_redis_flushall_and_fills_keep_their_pointers(
    fault_deployment: Deployment,
    fault_load: Load,
    fault_engine: AsyncEngine,
    fault_cache: RedisSessionCache,
    canary: Canary,
    redis_admin: Any,
) -> None:
    async def flush() -> None:
        await redis_admin.flushall()

    async def nothing() -> None:
        pass

    outcome = await run_scenario(
        "redis FLUSHALL",
        fault_deployment,
        fault_load,
        fault_engine,
        canary,
        fault=flush,
        heal=nothing,
        hold=1.0,
        cache=fault_cache,
    )
    print(describe(outcome))
    assert_clean(outcome)
    assert not any(status >= 500 for _, status, _ in outcome.errors)

    # Issue 14, item 4: a fill (a miss read from the store) writes the token
    # pointer with the session's lifetime, not the tombstone's 300 s.
    known = {d.session_id: d for d in fault_load.devices if d.session_id is not None}
    async with fault_engine.connect() as conn:
        row = (
            await conn.execute(
                select(sessions.c.user_id, sessions.c.session_id, sessions.c.token_hash)
                .where(sessions.c.session_id.in_(list(known)))
                .where(sessions.c.status == SessionStatus.ACTIVE.value)
                .limit(1)
            )
        ).one()
    device = known[row.session_id]
    keys = (await fault_cache.write_keys())[0]
    await redis_admin.delete(keys.state(row.user_id, row.session_id), keys.token(row.token_hash))
    response = await device.client.get(
        f"{fault_deployment.services[1].base}/api/auth/get-session?disableCookieCache=true"
    )
    assert response.json() is not None
    assert hash_token(response.json()["session"]["token"]) == row.token_hash
    pointer = await redis_admin.pttl(keys.token(row.token_hash))
    state = await redis_admin.pttl(keys.state(row.user_id, row.session_id))
    assert pointer > fault_cache.tombstone_seconds * 1000
    assert pointer >= state - 5_000


async def test_verify_command_finds_nothing(fault_deployment: Deployment) -> None:
    """After every scenario: ``session-ledger verify --ledger --projections``."""
    verified = await asyncio.to_thread(fault_deployment.cli, "verify", "--ledger", "--projections")
    assert verified.returncode == 0, verified.stdout + verified.stderr
