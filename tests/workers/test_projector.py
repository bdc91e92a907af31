"""The projection worker rides out Redis and PostgreSQL outages: the lag
comes back to zero and the cache equals the ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import text

from session_ledger.api.bootstrap import Container, build
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.db import make_engine
from session_ledger.projections.verify import verify_redis
from session_ledger.workers.leader import PROJECTOR_LOCK_KEY, AdvisoryLockLeader
from session_ledger.workers.metrics import WorkerMetrics
from session_ledger.workers.projector import Backoff, ProjectorWorker, redis_projector
from tests.support.db import unique_name
from tests.support.redis import RedisProcess

pytestmark = [pytest.mark.pg, pytest.mark.redis]

#: Upper bound to wait for catching up; a healthy run needs well under a second.
CATCH_UP_DEADLINE = 60.0


@dataclass
class Running:
    container: Container
    projector: ProjectorWorker
    metrics: WorkerMetrics


@pytest.fixture
async def running(pg_url: str, private_redis: RedisProcess) -> AsyncIterator[Running]:
    settings = load_settings(
        database_url=pg_url,
        redis={"url": private_redis.url, "prefix": unique_name("slw") + ":"},
        worker={"projector_poll_interval": 0.2},
    )
    container = await build(settings)
    assert container.runner is not None
    projector = redis_projector(container.runner, container.store, container.clock, settings)
    projector.backoff = Backoff(initial=0.05, maximum=0.5)
    metrics = WorkerMetrics()
    projector.metrics = metrics
    stop = asyncio.Event()
    task = asyncio.create_task(projector.run(stop))
    try:
        yield Running(container, projector, metrics)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await container.close()


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CATCH_UP_DEADLINE
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.05)


async def _caught_up(r: Running) -> None:
    async def zero_lag() -> bool:
        # Measured now, against the current head: every append so far applied.
        healthy = r.projector.backoff.failures == 0
        return healthy and (await r.projector.measure_lag())["redis"] == (0, 0.0)

    await _until(zero_lag, "projection lag back to zero")
    sample = r.metrics.registry.get_sample_value
    assert sample("session_ledger_projection_lag_events", {"projection": "redis"}) == 0
    assert sample("session_ledger_projection_lag_seconds", {"projection": "redis"}) == 0


async def _traffic(container: Container, n: int, tag: str) -> list[str]:
    ids = []
    for i in range(n):
        view, _token = await container.ledger.create_session(f"{tag}-{i % 3}")
        ids.append(view.id)
    return ids


async def test_redis_restarted_while_events_are_appended(
    running: Running, private_redis: RedisProcess
) -> None:
    c = running.container
    first = await _traffic(c, 20, "before")
    await _caught_up(running)

    private_redis.kill()  # a crash: everything in the cache is gone
    during = await _traffic(c, 20, "during")  # appends never fail for the cache
    for sid in first[:5]:
        await c.ledger.revoke_session(f"before-{first.index(sid) % 3}", sid)
    await _until(
        lambda: _true(running.projector.backoff.failures > 0), "the worker noticing the outage"
    )

    private_redis.start()  # back, empty (no persistence)
    after = await _traffic(c, 20, "after")
    await _caught_up(running)

    assert c.runner is not None
    assert c.runner.rebuilds >= 1  # the lost checkpoint was detected
    assert await verify_redis(c.engine, c.runner.cache) == []
    assert len(first + during + after) == 60


async def test_postgres_connections_dropped_while_events_are_appended(
    running: Running, pg_url: str
) -> None:
    c = running.container
    await _traffic(c, 10, "before")
    await _caught_up(running)

    # Every backend of the database dies (a failover, a restart): pools,
    # the NOTIFY listener, all of it.
    admin = make_engine(pg_url)
    try:
        async with admin.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    finally:
        await admin.dispose()
    await _traffic(c, 10, "after")
    await _caught_up(running)

    assert running.projector.listener is not None
    assert await running.projector.listener.ensure()
    assert c.runner is not None
    assert await verify_redis(c.engine, c.runner.cache) == []


async def _true(value: bool) -> bool:
    return value


async def test_one_projector_leads_and_another_takes_over(
    pg_url: str, private_redis: RedisProcess
) -> None:
    settings = load_settings(
        database_url=pg_url,
        redis={"url": private_redis.url, "prefix": unique_name("slw") + ":"},
        worker={"projector_poll_interval": 0.1},
    )
    containers = [await build(settings) for _ in range(2)]
    projectors = []
    for c in containers:
        assert c.runner is not None
        p = redis_projector(c.runner, c.store, c.clock, settings)
        p.leader = AdvisoryLockLeader(pg_url, PROJECTOR_LOCK_KEY)
        projectors.append(p)
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(p.run(s)) for p, s in zip(projectors, stops, strict=True)]
    try:
        await _traffic(containers[0], 5, "one")
        await _until(lambda: _true(any(p.lag for p in projectors)), "a first catch-up")
        leading = [p.leader.leading for p in projectors]  # type: ignore[union-attr]
        assert sorted(leading) == [False, True]
        first = leading.index(True)
        stops[first].set()  # the leader stops (and lets go of its lock)
        await tasks[first]
        other = projectors[1 - first]
        await _traffic(containers[0], 5, "two")
        await _until(lambda: _true(other.leader.leading), "the standby taking over")  # type: ignore[union-attr]
        await _until(lambda: _measured_zero(other), "the new leader catching up with every event")
    finally:
        for s in stops:
            s.set()
        await asyncio.gather(*tasks)
        for c in containers:
            await c.close()


async def _measured_zero(p: ProjectorWorker) -> bool:
    return (await p.measure_lag())["redis"] == (0, 0.0)


async def test_a_long_transaction_shows_as_horizon_lag_and_the_runner_catches_up_after(
    running: Running,
) -> None:
    """A transaction of the database left open (it wrote) holds the horizon:
    the worker's metrics show the events held back and its age, the runner
    applies nothing past it, and all of it once it ends."""
    container = running.container
    await _caught_up(running)
    async with container.engine.connect() as long_conn:
        txn = await long_conn.begin()
        await long_conn.execute(text("SELECT pg_current_xact_id()"))
        await _traffic(container, 3, "held")

        async def held_back() -> bool:
            await running.projector.measure_lag()
            sample = running.metrics.registry.get_sample_value
            return (sample("session_ledger_ledger_horizon_held_back_events") or 0) > 0

        await _until(held_back, "events held back above the horizon")
        sample = running.metrics.registry.get_sample_value
        assert (sample("session_ledger_ledger_oldest_transaction_seconds") or 0) > 0
        assert running.projector.lag["redis"][0] > 0  # committed, not applied
        await txn.rollback()
    await _caught_up(running)
    assert (
        running.metrics.registry.get_sample_value("session_ledger_ledger_horizon_held_back_events")
        == 0
    )
