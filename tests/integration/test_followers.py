"""Randomized interleavings of concurrent appends across processes: a
follower reads every committed event exactly once, none twice, none missed,
each stream in version order.

Two writer processes, four writers each, append through the public
``EventStore`` API (new streams, existing streams, two-stream batches, and
races for shared streams that some lose), while the database holds every
append's transaction open for a random 0-15 ms after its INSERT (a test
trigger): transactions commit out of position order, and some abort after
drawing positions. The follower runs in this process, live. The seed is in
every failure message.

The follower is the horizon reader (``ledger.horizon``: ``(xid, position)``
order below the oldest running transaction), and so are the projection
runner and replay, which must converge to a fresh fold of the ledger. The
same load followed by position misses events (the control experiment).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.config import RedisSettings
from session_ledger.ledger.store import EventStore
from session_ledger.projections.redis_cache import RedisCacheProjection, RedisSessionCache
from session_ledger.projections.replay import replay_redis, replay_table
from session_ledger.projections.runner import ProjectionRunner
from session_ledger.projections.verify import verify_redis, verify_table
from tests.support.follow import (
    HorizonFollower,
    PositionFollower,
    WriterProcesses,
    follow_writers,
    install_commit_delays,
    plans,
)


async def test_follower_reads_every_event_of_concurrent_processes_once(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    seed = random.randrange(1 << 30)
    await install_commit_delays(pg_engine, max_ms=15)

    result = await follow_writers(pg_url, HorizonFollower, seed=seed)

    context = f"seed={seed}"
    assert len(result.committed) > 80, context
    assert result.problems() == [], context
    # It really followed the writers, not only read everything at the end.
    assert result.seen_live >= len(result.committed) // 4, (result.seen_live, context)


async def test_a_follower_by_position_misses_events_of_parallel_appends(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    """Control experiment: the same load catches a reader without the horizon."""
    await install_commit_delays(pg_engine, max_ms=15)
    outcomes: list[tuple[int, list[str]]] = []
    for _ in range(3):
        seed = random.randrange(1 << 30)
        result = await follow_writers(pg_url, PositionFollower, seed=seed)
        outcomes.append((seed, result.problems()))
        if any(problem.startswith("missed") for problem in outcomes[-1][1]):
            return
    raise AssertionError(f"the position follower never missed an event: {outcomes}")


async def test_runner_and_replay_agree_with_the_ledger_after_a_concurrent_load(
    pg_url: str, pg_engine: AsyncEngine, redis_client: Any, redis_prefix: str
) -> None:
    """The Redis runner follows the same load live (the writers' appends
    carry the inline ``sessions`` projection); afterwards the table and the
    cache equal a fresh fold of the ledger, and so do both replays."""
    seed = random.randrange(1 << 30)
    context = f"seed={seed}"
    await install_commit_delays(pg_engine, max_ms=15)
    store = EventStore(pg_engine)
    # Replay's switch to the new generation waits for this window of dual writes.
    cache = RedisSessionCache(
        redis_client, RedisSettings(prefix=redis_prefix), dual_write_seconds=0.05
    )
    runner = ProjectionRunner(store, RedisCacheProjection(cache, store), batch_size=20)

    applied_live = 0
    async with WriterProcesses(plans(pg_url, seed=seed, project_sessions=True)) as writers:
        while not writers.finished:
            applied_live += await runner.run_once()
            await asyncio.sleep(0.005)
        committed = await writers.committed()
    await runner.run_once()

    assert applied_live >= len(committed) // 4, (applied_live, context)
    assert await runner.checkpoint() == await horizon.head(pg_engine), context
    assert await verify_table(pg_engine) == [], context
    assert await verify_redis(pg_engine, cache) == [], context

    await replay_table(pg_engine, store, batch_size=17)
    await replay_redis(store, RedisCacheProjection(cache, store), batch_size=17)
    assert await verify_table(pg_engine) == [], context
    assert await verify_redis(pg_engine, cache) == [], context
