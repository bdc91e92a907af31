"""A SessionLedger wired like production with the Redis cache: the SQL table
inline, the Redis projection after commit, the cached read model in front.
Real PostgreSQL / SQLite (the shared ``engine`` fixture) and real Redis."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.config import RedisSettings
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.service import SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.cached_read_model import CachedSessionReadModel
from session_ledger.projections.freshness import CacheFreshness
from session_ledger.projections.redis_cache import RedisCacheProjection, RedisSessionCache
from session_ledger.projections.runner import NotifyAfterCommit, ProjectionRunner
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel
from tests.support.redis import RedisProcess

POLICY = SessionPolicy(expires_in=7 * 86400, update_age=86400, rotation_grace=30)


@dataclass
class Harness:
    engine: AsyncEngine
    store: EventStore
    ledger: SessionLedger
    cache: RedisSessionCache
    projection: RedisCacheProjection
    runner: ProjectionRunner
    sql: SqlSessionReadModel
    read_model: CachedSessionReadModel
    clock: ManualClock
    freshness: CacheFreshness


async def make_harness(
    engine: AsyncEngine,
    client: Any,
    prefix: str,
    clock: ManualClock,
    *,
    policy: SessionPolicy = POLICY,
    dual_write_seconds: float = 0.05,
) -> Harness:
    store = EventStore(engine, clock=clock, inline_projections=[SessionTableProjection()])
    if engine.dialect.name == "postgresql":
        store.after_commit.append(NotifyAfterCommit(engine))
    cache = RedisSessionCache(
        client, RedisSettings(prefix=prefix), clock=clock, dual_write_seconds=dual_write_seconds
    )
    projection = RedisCacheProjection(cache, store)
    freshness = CacheFreshness()
    store.after_commit.append(freshness.after_commit)
    store.after_commit.append(projection.after_commit)
    sql = SqlSessionReadModel(engine)
    read_model = CachedSessionReadModel(cache, sql, freshness)
    ledger = SessionLedger(store=store, read_model=read_model, policy=policy, clock=clock)
    runner = ProjectionRunner(store, projection, batch_size=50, poll_interval=0.05)
    # One process on its own database: its own appends (after commit) are
    # all there is to hear, so that is its change feed; the checkpoint says
    # the (empty) cache covers what came before.
    freshness.connected(await horizon.head(engine))
    with contextlib.suppress(RedisError, OSError):  # some tests start with Redis down
        await cache.init_checkpoint((await cache.write_keys())[0])
    return Harness(
        engine, store, ledger, cache, projection, runner, sql, read_model, clock, freshness
    )


@pytest.fixture
async def harness(
    engine: AsyncEngine, redis_client: Any, redis_prefix: str, clock: ManualClock
) -> Harness:
    return await make_harness(engine, redis_client, redis_prefix, clock)


# ------------------------------------------------------- private Redis servers


@pytest.fixture
async def private_client(private_redis: RedisProcess) -> AsyncIterator[Any]:
    client: Any = aioredis.from_url(private_redis.url, socket_connect_timeout=2, socket_timeout=5)
    yield client
    await client.aclose()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[RedisProcess]]:
    """A real 3-primary Redis Cluster on free loopback ports, torn down after."""
    nodes = [
        RedisProcess(
            tmp_path / f"node{i}",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(tmp_path / f"node{i}" / "nodes.conf"),
        )
        for i in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{n.port}" for n in nodes]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = subprocess.run(
                ["redis-cli", "-p", str(nodes[0].port), "cluster", "info"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            if "cluster_state:ok" in info:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the Redis cluster never reached cluster_state:ok")
        yield nodes
    finally:
        for node in nodes:
            node.stop()
