"""The checkpointed runner, Redis outages and the revoke-vs-fill race.

FLUSHDB, restarts and outages run against a private redis-server (see
``private_redis``) so that no other test's keys are touched."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.attempts import SignInAttempts
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.events import SignInFailure
from session_ledger.ledger.domain.tokens import hash_token
from session_ledger.ledger.service import RequestContext
from session_ledger.projections.runner import NotifyAfterCommit
from session_ledger.projections.verify import verify_redis
from tests.projections.conftest import Harness, make_harness
from tests.support.redis import RedisProcess, free_port

PREFIX = "sl:"


async def test_run_once_catches_up_missed_writes(harness: Harness) -> None:
    # Writes lost (as if Redis had been unreachable at commit time).
    harness.store.after_commit.clear()
    tokens = [(await harness.ledger.create_session(f"u{i}"))[1] for i in range(5)]
    assert await harness.runner.run_once() == await harness.store.head()
    assert await verify_redis(harness.engine, harness.cache, clock=harness.clock) == []
    assert await harness.runner.run_once() == 0
    assert await harness.runner.checkpoint() == await horizon.head(harness.engine)
    for token in tokens:
        assert await harness.cache.by_token_hash(hash_token(token)) is not None


async def test_failed_sign_ins_pass_through_the_runner(harness: Harness) -> None:
    """SignInFailed streams are no sessions: the runner steps over them (a
    batch of nothing but attempts too) and its checkpoint still reaches the head."""
    harness.store.after_commit.clear()
    attempts = SignInAttempts(harness.store, "runner-secret", harness.clock)
    ctx = RequestContext(ip="203.0.113.9")
    _, token = await harness.ledger.create_session("u1")
    for _ in range(60):  # more than one runner batch (50) of attempts alone
        await attempts.record_failure(SignInFailure.UNKNOWN_EMAIL, "x@example.com", ctx)
    await harness.ledger.create_session("u2")
    assert await harness.runner.run_once() == await harness.store.head()
    assert await harness.runner.checkpoint() == await horizon.head(harness.engine)
    assert await verify_redis(harness.engine, harness.cache, clock=harness.clock) == []
    assert await harness.cache.by_token_hash(hash_token(token)) is not None


async def test_missing_checkpoint_rebuilds_from_zero(harness: Harness) -> None:
    for i in range(4):
        await harness.ledger.create_session(f"u{i}")
    await harness.runner.run_once()
    await harness.cache.drop_namespace((await harness.cache.write_keys())[0])
    assert await harness.runner.run_once() == await harness.store.head()
    assert harness.runner.rebuilds == 1  # the harness initialised the first checkpoint
    assert await verify_redis(harness.engine, harness.cache, clock=harness.clock) == []


async def test_run_forever_wakes_on_notify_or_poll(harness: Harness) -> None:
    """PostgreSQL: woken by the NOTIFY a writer sends after its commit (the
    poll interval is far longer than the wait). SQLite: woken by polling."""
    # Only the runner writes the cache here; the wake-up after commit stays.
    wake = [hook for hook in harness.store.after_commit if isinstance(hook, NotifyAfterCommit)]
    harness.store.after_commit[:] = wake
    postgres = harness.engine.dialect.name == "postgresql"
    if postgres:
        url = harness.engine.url.set(drivername="postgresql")
        harness.runner.listen_dsn = url.render_as_string(hide_password=False)
    harness.runner.poll_interval = 60.0 if postgres else 0.05
    passes: asyncio.Queue[int] = asyncio.Queue()
    original = harness.runner.run_once

    async def run_once() -> int:
        applied = await original()
        await passes.put(applied)
        return applied

    harness.runner.run_once = run_once  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(harness.runner.run_forever(stop))
    try:
        async with asyncio.timeout(20):
            assert await passes.get() == 0  # first pass done, listening
            _, token = await harness.ledger.create_session("u1")
            while await passes.get() == 0:
                pass
        assert await harness.cache.by_token_hash(hash_token(token)) is not None
    finally:
        stop.set()
        await task


async def test_flushdb_during_traffic_restores_cache_and_never_accepts_revoked(
    engine: AsyncEngine, private_client: Any, clock: ManualClock
) -> None:
    h = await make_harness(engine, private_client, PREFIX, clock)
    live: list[str] = []
    revoked: list[str] = []
    for i in range(10):
        live.append((await h.ledger.create_session(f"u{i % 3}"))[1])
    stop = asyncio.Event()
    violations: list[str] = []
    rnd = random.Random(7)

    async def traffic() -> None:
        while not stop.is_set():
            if rnd.random() < 0.3 and len(live) > 2:
                token = live.pop(rnd.randrange(len(live)))
                await h.ledger.sign_out(token)
                revoked.append(token)  # revoke returned: never valid again
            elif rnd.random() < 0.3:
                live.append((await h.ledger.create_session("u-new"))[1])
            for token in list(revoked):
                if await h.ledger.get_session(token) is not None:
                    violations.append(token)
            for token in list(live):
                assert await h.ledger.get_session(token) is not None
            await asyncio.sleep(0)

    async def runner() -> None:
        while not stop.is_set():
            await h.runner.run_once()
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(traffic()), asyncio.create_task(runner())]
    try:
        for _ in range(3):
            await asyncio.sleep(0.2)
            await private_client.flushdb()
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert violations == []
    assert h.runner.rebuilds >= 2
    await h.runner.run_once()
    assert await verify_redis(engine, h.cache, clock=clock) == []


async def test_redis_restart_is_survived(
    engine: AsyncEngine, private_redis: RedisProcess, clock: ManualClock
) -> None:
    client: Any = aioredis.from_url(private_redis.url, socket_connect_timeout=1, socket_timeout=2)
    try:
        h = await make_harness(engine, client, PREFIX, clock)
        _, keep = await h.ledger.create_session("u1")
        _, gone = await h.ledger.create_session("u1")
        await h.runner.run_once()
        private_redis.stop()
        # Down: answers come from SQL; the revoke's cache write fails.
        assert await h.ledger.get_session(keep) is not None
        assert await h.ledger.sign_out(gone)
        assert await h.ledger.get_session(gone) is None
        private_redis.start()  # empty: no persistence
        assert await h.ledger.get_session(gone) is None
        assert await h.ledger.get_session(keep) is not None
        await h.runner.run_once()
        assert await verify_redis(engine, h.cache, clock=clock) == []
    finally:
        await client.aclose()


async def test_redis_down_get_session_answers_from_sql(
    engine: AsyncEngine, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on this port: every Redis call is refused.
    client: Any = aioredis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1, socket_timeout=1
    )
    try:
        h = await make_harness(engine, client, PREFIX, clock)
        with caplog.at_level(logging.WARNING):
            view, token = await h.ledger.create_session("u1")
            validated = await h.ledger.get_session(token)
            assert validated is not None
            assert validated.session.id == view.id
            assert [s.id for s in await h.ledger.list_sessions("u1")] == [view.id]
            assert await h.ledger.sign_out(token)
            assert await h.ledger.get_session(token) is None
            for _ in range(5):
                assert await h.ledger.get_session(token) is None
        assert any("redis" in r.getMessage() for r in caplog.records)
        # Rate-limited: a handful of lines, not one per request.
        assert len([r for r in caplog.records if "serving from SQL" in r.getMessage()]) == 1
    finally:
        await client.aclose()


async def test_revoke_racing_a_cache_fill_never_resurrects(harness: Harness) -> None:
    """Many rounds: a cache miss fills the pre-revoke state while the revoke
    commits; once the revoke returned, the session is never valid again."""
    keys = (await harness.cache.write_keys())[0]
    for round_ in range(40):
        view, token = await harness.ledger.create_session(f"race-{round_}")
        await harness.cache.client.delete(keys.state(f"race-{round_}", view.id))  # force a miss
        revoked = asyncio.Event()

        async def reader(token: str = token, revoked: asyncio.Event = revoked) -> None:
            for _ in range(5):
                # A read that starts after the revoke returned must fail; one
                # already in flight may answer either way (it is concurrent).
                after_revoke = revoked.is_set()
                validated = await harness.ledger.get_session(token, disable_refresh=True)
                if after_revoke:
                    assert validated is None
                await asyncio.sleep(0)

        async def revoker(token: str = token, revoked: asyncio.Event = revoked) -> None:
            await asyncio.sleep(random.random() / 1000)
            assert await harness.ledger.sign_out(token)
            revoked.set()

        await asyncio.gather(reader(), reader(), revoker())
        assert await harness.ledger.get_session(token) is None
        cached = await harness.cache.get_states(keys, [(f"race-{round_}", view.id)])
        assert cached[view.id].is_ended


async def test_slow_fill_after_revoke_is_rejected(harness: Harness) -> None:
    """The fill read the database before the revoke and writes after it."""
    view, token = await harness.ledger.create_session("u1")
    keys = (await harness.cache.write_keys())[0]
    await harness.cache.client.delete(keys.state("u1", view.id))
    stale = await harness.sql.by_token_hash(hash_token(token))
    assert stale is not None
    assert await harness.ledger.sign_out(token)
    await harness.cache.put_states([keys], [stale], {hash_token(token): view.id})
    assert await harness.ledger.get_session(token) is None
