"""HeldConnections (ledger.db): the hot single statements' connections stay
checked out, within the pool's accounting, and every way they can go bad
(a dispose, a killed backend, a server error, a cancelled statement) ends
with the connection closed or back in the pool, never leaked or reused in
an unknown state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from session_ledger.ledger.db import (
    HeldConnections,
    autocommit,
    held_connections,
    make_engine,
    retry_stale,
)


@pytest.fixture
async def admin(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


async def backends(admin: AsyncEngine) -> int:
    """Other connections to this test's database."""
    async with admin.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    return int(count or 0)


def held_of(engine: AsyncEngine) -> HeldConnections:
    held = held_connections(engine)
    assert held is not None
    return held


def pool_of(engine: AsyncEngine) -> QueuePool:
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    return pool


async def test_statements_reuse_a_few_held_connections(pg_engine: AsyncEngine) -> None:
    held = held_of(pg_engine)
    assert held_connections(autocommit(pg_engine)) is held  # one per engine (pool)
    for i in range(20):
        assert [tuple(r) for r in await held.fetch("SELECT $1::int", (i,))] == [(i,)]
    assert held.idle == 1
    assert pool_of(pg_engine).checkedout() == 1

    await asyncio.gather(*(held.fetch("SELECT pg_sleep(0.05)") for _ in range(8)))
    assert held.idle == held.keep
    assert pool_of(pg_engine).checkedout() == held.keep  # the rest went back


async def test_dispose_closes_the_held_connections(
    pg_engine: AsyncEngine, admin: AsyncEngine
) -> None:
    held = held_of(pg_engine)
    await asyncio.gather(*(held.fetch("SELECT pg_sleep(0.05)") for _ in range(3)))
    assert await backends(admin) == 3
    await pg_engine.dispose()
    assert held.idle == 0
    assert await backends(admin) == 0
    assert [tuple(r) for r in await held.fetch("SELECT 1")] == [(1,)]  # usable again


async def test_a_statement_in_flight_during_a_dispose_is_not_kept(
    pg_engine: AsyncEngine, admin: AsyncEngine
) -> None:
    held = held_of(pg_engine)
    slow = asyncio.ensure_future(held.fetch("SELECT pg_sleep(0.3)"))
    await asyncio.sleep(0.1)
    await pg_engine.dispose()
    await slow
    assert held.idle == 0
    assert await backends(admin) == 0


async def test_a_killed_backend_is_replaced(pg_engine: AsyncEngine, admin: AsyncEngine) -> None:
    held = held_of(pg_engine)
    await held.fetch("SELECT 1")
    async with admin.connect() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    with pytest.raises(DBAPIError) as lost:
        await held.fetch("SELECT 1")
    assert lost.value.connection_invalidated
    assert held.idle == 0
    # What the read paths do (retry_stale): the next try gets a new connection.
    rows = await retry_stale(lambda: held.fetch("SELECT 2"))
    assert [tuple(r) for r in rows] == [(2,)]


async def test_a_server_error_returns_a_healthy_connection_to_the_pool(
    pg_engine: AsyncEngine, admin: AsyncEngine
) -> None:
    held = held_of(pg_engine)
    with pytest.raises(DBAPIError) as failed:
        await held.fetch("SELECT 1 / 0")
    assert not failed.value.connection_invalidated
    assert held.idle == 0
    assert pool_of(pg_engine).checkedout() == 0
    assert pool_of(pg_engine).checkedin() == 1  # back in the pool, not closed
    assert await backends(admin) == 1


async def test_pools_that_cannot_lend_a_connection_get_none(tmp_path: Path) -> None:
    memory = create_async_engine("sqlite+aiosqlite://")  # one shared connection
    nullpool = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db", poolclass=NullPool)
    try:
        assert held_connections(memory) is None
        assert held_connections(nullpool) is None
    finally:
        await memory.dispose()
        await nullpool.dispose()


async def test_sqlite_files_hold_connections_too(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        held = held_of(engine)
        for i in range(5):
            assert [tuple(r) for r in await held.fetch("SELECT ?", (i,))] == [(i,)]
        assert held.idle == 1
        await engine.dispose()
        assert held.idle == 0
    finally:
        await engine.dispose()


async def test_a_cancelled_statement_closes_its_connection(
    pg_engine: AsyncEngine, admin: AsyncEngine
) -> None:
    held = held_of(pg_engine)
    slow = asyncio.ensure_future(held.fetch("SELECT pg_sleep(30)"))
    await asyncio.sleep(0.2)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert held.idle == 0
    assert pool_of(pg_engine).checkedout() == 0
    for _ in range(100):  # the server notices the closed socket asynchronously
        if await backends(admin) == 0:
            break
        await asyncio.sleep(0.05)
    assert await backends(admin) == 0
    assert [tuple(r) for r in await held.fetch("SELECT 3")] == [(3,)]
