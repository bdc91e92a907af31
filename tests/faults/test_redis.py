"""Redis faults under load: a crash (SIGKILL, restarted empty), FLUSHALL,
and Redis refusing writes while still serving reads (``maxmemory`` with
``noeviction``). Requests fall back to the store, never a stale accept; the
runner rebuilds the cache; a fill keeps its token pointer as long as the
session."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import select

from session_ledger.ledger.domain.state import SessionStatus
from session_ledger.ledger.domain.tokens import hash_token
from session_ledger.projections.schema import sessions
from tests.support.deployment import PASSWORD
from tests.support.faults import assert_clean, describe
from tests.support.scenarios import (
    Rig,
    accept_writes,
    redis_flushall,
    redis_killed,
    redis_refusing_writes,
    refuse_writes,
)


async def test_revoked_on_a_never_served_by_b_while_redis_refuses_writes(fault_rig: Rig) -> None:
    """Issue 14, item 1, as reported: sign in on A, read on B (Redis holds
    the session and B believes it), Redis starts refusing writes, sign out
    on A: B answers null at once, with and without the cookie cache, and
    update-session on B is a 401, not a 503 after 8 conflicting attempts."""
    a, b = fault_rig.dep.services
    email = fault_rig.load.devices[0].user
    async with httpx.AsyncClient(timeout=10, headers={"origin": a.base}) as browser:
        signed_in = await browser.post(
            f"{a.base}/api/auth/sign-in/email", json={"email": email, "password": PASSWORD}
        )
        assert signed_in.status_code == 200
        for _ in range(3):
            read = await browser.get(f"{b.base}/api/auth/get-session?disableCookieCache=true")
            assert read.json() is not None
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
        await refuse_writes(fault_rig.redis_admin)
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
            await accept_writes(fault_rig.redis_admin)


async def test_redis_refusing_writes_under_load(fault_rig: Rig) -> None:
    outcome = await redis_refusing_writes(fault_rig)
    print(describe(outcome))
    assert_clean(outcome)
    assert not any(status >= 500 for _, status, _ in outcome.errors)


async def test_redis_killed(fault_rig: Rig) -> None:
    outcome = await redis_killed(fault_rig)
    print(describe(outcome))
    assert_clean(outcome)
    assert outcome.transport_errors == {}
    assert not any(status >= 500 for _, status, _ in outcome.errors)


async def test_redis_flushall_and_fills_keep_their_pointers(fault_rig: Rig) -> None:
    outcome = await redis_flushall(fault_rig)
    print(describe(outcome))
    assert_clean(outcome)
    assert not any(status >= 500 for _, status, _ in outcome.errors)

    # Issue 14, item 4: a fill (a miss read from the store) writes the token
    # pointer with the session's lifetime, not the tombstone's 300 s.
    redis, cache = fault_rig.redis_admin, fault_rig.cache
    known = {d.session_id: d for d in fault_rig.load.devices if d.session_id is not None}
    async with fault_rig.engine.connect() as conn:
        row = (
            await conn.execute(
                select(sessions.c.user_id, sessions.c.session_id, sessions.c.token_hash)
                .where(sessions.c.session_id.in_(list(known)))
                .where(sessions.c.status == SessionStatus.ACTIVE.value)
                .limit(1)
            )
        ).one()
    keys = (await cache.write_keys())[0]
    await redis.delete(keys.state(row.user_id, row.session_id), keys.token(row.token_hash))
    response = await known[row.session_id].client.get(
        f"{fault_rig.dep.services[1].base}/api/auth/get-session?disableCookieCache=true"
    )
    assert response.json() is not None
    assert hash_token(response.json()["session"]["token"]) == row.token_hash
    pointer = await redis.pttl(keys.token(row.token_hash))
    state = await redis.pttl(keys.state(row.user_id, row.session_id))
    assert pointer > cache.tombstone_seconds * 1000
    assert pointer >= state - 5_000


async def test_verify_command_finds_nothing(fault_rig: Rig) -> None:
    """After every scenario: ``session-ledger verify --ledger --projections``."""
    acks = fault_rig.load.acks  # the load did acknowledge every kind of write
    assert acks.sign_ins
    assert acks.updates
    assert acks.ended
    verified = await asyncio.to_thread(fault_rig.dep.cli, "verify", "--ledger", "--projections")
    assert verified.returncode == 0, verified.stdout + verified.stderr
