"""The key layout and the Lua scripts on a real 3-node Redis Cluster: every
script touches one hash slot, so nothing raises CROSSSLOT, and the whole
projection (writes, fills, index, runner, replay, verify) works there."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.tokens import hash_token
from session_ledger.projections.replay import replay_redis
from session_ledger.projections.verify import verify_redis
from tests.projections.conftest import make_harness
from tests.support.redis import RedisProcess


@pytest.fixture
async def cluster_client(redis_cluster: list[RedisProcess]) -> AsyncIterator[Any]:
    client: Any = RedisCluster(host="127.0.0.1", port=redis_cluster[0].port)
    await client.initialize()
    yield client
    await client.aclose()


async def test_projection_works_on_a_cluster(
    sqlite_engine: AsyncEngine, cluster_client: Any, clock: ManualClock
) -> None:
    h = await make_harness(sqlite_engine, cluster_client, "sl:", clock)
    users = [f"user-{i}" for i in range(6)]
    tokens = [(await h.ledger.create_session(users[i % 6]))[1] for i in range(30)]
    keys = (await h.cache.write_keys())[0]
    # The keys really are spread over the three nodes.
    slots = {cluster_client.keyslot(keys.state(users[i % 6], f"s{i}")) for i in range(30)}
    nodes = {
        cluster_client.get_node_from_key(keys.state(users[i % 6], "s")).name for i in range(30)
    }
    assert len(slots) > 3  # a slot per user: sessions, index and record together
    assert len(nodes) == 3
    # Hits, rotation, revocation, the user index.
    clock.advance(days=2)
    for i, token in enumerate(tokens):
        validated = await h.ledger.get_session(token)
        assert validated is not None
        tokens[i] = validated.token
    for token in tokens[:10]:
        assert await h.ledger.sign_out(token)
        assert await h.ledger.get_session(token) is None
    active = await h.cache.active_session_ids(keys, users[0], clock.now())
    assert len(active) == 5 - 2  # sessions 0..29 step 6 minus the two revoked
    # A miss fills; the runner rebuilds; a replay switches generation.
    missed = await h.sql.by_token_hash(hash_token(tokens[20])) or _no()
    await cluster_client.delete(keys.state(missed.user_id, missed.session_id))
    assert await h.ledger.get_session(tokens[20]) is not None
    assert await h.runner.run_once() > 0
    await replay_redis(h.store, h.projection, batch_size=16)
    assert (await h.cache.write_keys())[0].generation == 1
    assert await verify_redis(sqlite_engine, h.cache, clock=clock) == []


def _no() -> Any:
    raise AssertionError("session not found")
