"""A task cancelled while its SQLite BEGIN waits in aiosqlite's queue.

aiosqlite runs each connection's statements in that connection's own
thread, one after another; cancelling the awaiting task does not take a
queued statement back. The BEGIN then runs after the connection was given
back to the pool, and the next user of that connection found a
transaction already open ("cannot start a transaction within a
transaction"; seen once in CI when a replay cancelled its read-ahead).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.db import make_engine, writer
from session_ledger.ledger.store import EventStore
from tests.support.events import created


@pytest.fixture
async def one_connection(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(sqlite_url, pool_size=1, max_overflow=0)
    yield engine
    await engine.dispose()


async def block_thread(engine: AsyncEngine, seconds: float) -> asyncio.Future[None]:
    """Keep the pool's only connection's aiosqlite thread busy for
    ``seconds``; the connection itself goes back to the pool at once."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        busy: asyncio.Future[None] = asyncio.ensure_future(
            driver._execute(lambda: time.sleep(seconds))
        )
        await asyncio.sleep(0.01)  # the sleep is now running in the thread
    return busy


async def read(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:  # BEGIN (deferred), then the SELECT
        await conn.execute(text("SELECT 1"))


async def write(engine: AsyncEngine) -> None:
    async with writer(engine).begin() as conn:  # BEGIN IMMEDIATE
        await conn.execute(text("SELECT 1"))


async def append_new(engine: AsyncEngine) -> None:
    # One hop for the whole transaction (Driver.sqlite_transaction).
    await EventStore(engine).append("cancelled-new", 0, [created("cancelled-new")])


Work = Callable[[AsyncEngine], Coroutine[Any, Any, None]]


@pytest.mark.parametrize("work", [read, write, append_new], ids=["read", "write", "append"])
async def test_cancelled_begin_leaves_no_transaction_behind(
    one_connection: AsyncEngine, work: Work
) -> None:
    busy = await block_thread(one_connection, 0.3)
    task = asyncio.create_task(work(one_connection))
    await asyncio.sleep(0.1)  # its BEGIN waits behind the sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await busy
    # The next writer gets a usable connection: its BEGIN IMMEDIATE works.
    async with writer(one_connection).begin() as conn:
        assert await conn.scalar(text("SELECT 1")) == 1
    async with one_connection.connect() as conn:
        raw = await conn.get_raw_connection()
        assert raw.driver_connection is not None
        assert not raw.driver_connection.in_transaction
    # And the ledger still takes appends.
    await EventStore(one_connection).append("after", 0, [created("after")])
