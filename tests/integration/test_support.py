"""The shared test helpers do what the other tests rely on them for."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.chain import GENESIS
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.store import EventStore
from tests.support import redis as redis_support
from tests.support.chain import raw_rows, verify_chain
from tests.support.db import PgServer, unique_name
from tests.support.events import created, touched


async def test_delete_prefix_deletes_only_that_prefix(redis_url: str, redis_client: Any) -> None:
    first = unique_name("sltest:a") + ":"
    other = unique_name("sltest:b") + ":"
    try:
        await redis_client.set(f"{first}one", "1")
        await redis_client.hset(f"{first}{{user-1}}:sessions", mapping={"s": "1"})
        await redis_client.set(f"{other}keep", "1")

        assert await redis_support.delete_prefix(redis_url, first) == 2
        assert await redis_client.exists(f"{first}one", f"{first}{{user-1}}:sessions") == 0
        assert await redis_client.get(f"{other}keep") == b"1"
    finally:
        await redis_support.delete_prefix(redis_url, first)
        await redis_support.delete_prefix(redis_url, other)


async def test_redis_prefix_fixture_shape(redis_prefix: str, redis_client: Any) -> None:
    assert redis_prefix.startswith("sltest:")
    assert redis_prefix.endswith(":")
    assert len(redis_prefix) > len("sltest::") + 8
    await redis_client.set(f"{redis_prefix}k", "v")
    assert await redis_client.get(f"{redis_prefix}k") == b"v"


@pytest.mark.parametrize("prefix", ["", "sltest:*", "a?b", "x[1]"])
async def test_delete_prefix_refuses_patterns(redis_url: str, prefix: str) -> None:
    with pytest.raises(ValueError, match="unsafe prefix"):
        await redis_support.delete_prefix(redis_url, prefix)


def test_clock_fixture_is_manual(clock: ManualClock) -> None:
    start = clock.now()
    assert clock.now() == start
    assert clock.advance(seconds=5) - start == (clock.now() - start)
    assert (clock.now() - start).total_seconds() == 5


async def test_each_test_gets_its_own_database(
    pg_server: PgServer, pg_url: str, pg_engine: AsyncEngine
) -> None:
    async with pg_engine.connect() as conn:
        name = await conn.scalar(text("SELECT current_database()"))
        assert await conn.scalar(text("SELECT count(*) FROM ledger_events")) == 0
    assert isinstance(name, str)
    assert name.startswith("sl_t_")
    assert pg_url.endswith(f"/{name}")


async def test_verify_chain_reports_gaps_and_foreign_genesis(engine: AsyncEngine) -> None:
    store = EventStore(engine)
    await store.append("s", 0, [created("s"), touched(), touched()])
    rows = await raw_rows(engine)
    assert verify_chain(rows) == []

    without_middle = [rows[0], rows[2]]
    reasons = {b.reason for b in verify_chain(without_middle)}
    assert reasons == {"version 3, expected 2", "prev_hash does not link to the previous event"}

    without_first = rows[1:]
    assert any(b.stream_version == 2 for b in verify_chain(without_first))

    forged_genesis: list[dict[str, Any]] = [{**rows[0], "prev_hash": GENESIS.replace("0", "1")}]
    assert {b.reason for b in verify_chain(forged_genesis)} == {
        "prev_hash does not link to the previous event",
        "hash does not match the stored content",
    }
