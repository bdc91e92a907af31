"""ledger.sqlite_reads: SQLite's hot reads in the calling thread. They see
every commit, never wait (a read SQLite cannot answer at once goes through
aiosqlite and waits there), keep nothing open, and leave observed engines,
in-memory databases and URLs with options alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from session_ledger.ledger.db import autocommit, direct_reads, make_engine, read_standalone
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.service import SessionLedger
from session_ledger.ledger.sqlite_reads import DataVersionWatch, DirectReads
from session_ledger.ledger.store import EventStore
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel

COUNT_EVENTS = "SELECT count(*) FROM ledger_events"


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(sqlite_url)
    yield engine
    await engine.dispose()


def reads_of(engine: AsyncEngine) -> DirectReads:
    reads = direct_reads(engine)
    assert reads is not None
    return reads


def ledger_on(engine: AsyncEngine) -> SessionLedger:
    store = EventStore(engine, inline_projections=[SessionTableProjection()])
    return SessionLedger(store, SqlSessionReadModel(engine), policy=SessionPolicy())


async def test_reads_see_every_commit(engine: AsyncEngine) -> None:
    ledger = ledger_on(engine)
    reads = reads_of(engine)
    assert direct_reads(autocommit(engine)) is reads  # one per engine
    for i in range(5):
        session, token = await ledger.create_session(f"user-{i}")
        validated = await ledger.get_session(token)
        assert validated is not None
        assert validated.session.id == session.id
        await ledger.sign_out(token)
        assert await ledger.get_session(token) is None  # the revoke, seen at once
    assert (await read_standalone(engine, COUNT_EVENTS))[0][0] == 10
    assert reads.answered > 0
    assert reads.passed_on == 0


async def test_a_read_that_would_wait_goes_through_aiosqlite_and_waits(
    engine: AsyncEngine, sqlite_url: str
) -> None:
    await ledger_on(engine).create_session("user-1")
    reads = reads_of(engine)
    # Another connection holds the database in exclusive locking mode: every
    # other connection's read must wait for it (SQLITE_BUSY without waiting).
    # It can take that lock only while no other connection is open.
    await engine.dispose()
    holder = sqlite3.connect(str(reads.path), isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("DELETE FROM projection_checkpoints")  # takes the lock for good
    holder.execute("COMMIT")

    async def release_soon() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(holder.close)

    release = asyncio.create_task(release_soon())
    # Without the way back to aiosqlite this raised "database is locked".
    assert (await read_standalone(engine, COUNT_EVENTS))[0][0] == 1
    assert reads.passed_on == 1
    assert release.done()  # it really waited for the lock
    await release
    assert (await read_standalone(engine, COUNT_EVENTS))[0][0] == 1
    assert reads.passed_on == 1  # and answers directly again


async def test_an_error_is_raised_as_on_the_usual_path(engine: AsyncEngine) -> None:
    with pytest.raises(OperationalError, match="no such table"):
        await read_standalone(engine, "SELECT * FROM no_such_table")


async def test_reads_cannot_write(engine: AsyncEngine) -> None:
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reads_of(engine)._connection().execute("DELETE FROM ledger_events")


async def test_dispose_closes_them_and_the_engine_reads_on(engine: AsyncEngine) -> None:
    assert (await read_standalone(engine, COUNT_EVENTS))[0][0] == 0
    before = reads_of(engine)._connection()
    await engine.dispose()
    with pytest.raises(sqlite3.ProgrammingError):
        before.execute("SELECT 1")
    assert (await read_standalone(engine, COUNT_EVENTS))[0][0] == 0


async def test_observed_engines_read_through_sqlalchemy(engine: AsyncEngine) -> None:
    seen: list[str] = []

    def observe(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", observe)
    assert (await read_standalone(engine, COUNT_EVENTS))[0][0] == 0
    assert seen == [COUNT_EVENTS]
    assert reads_of(engine).answered == 0


async def test_only_plain_file_urls(tmp_path: Path) -> None:
    engines = [
        create_async_engine("sqlite+aiosqlite://"),
        create_async_engine("sqlite+aiosqlite:///:memory:"),
        create_async_engine(f"sqlite+aiosqlite:///file:{tmp_path}/x.db?mode=rwc&uri=true"),
    ]
    try:
        assert [direct_reads(e) for e in engines] == [None, None, None]
    finally:
        for e in engines:
            await e.dispose()


async def test_data_version_changes_exactly_when_another_connection_commits(
    engine: AsyncEngine, sqlite_url: str
) -> None:
    """What the SQLite revocation feed looks at every 5 ms (issue 14, item 7):
    unchanged while nobody commits, so an idle look costs no read of the tail."""
    path = Path(sqlite_url.removeprefix("sqlite+aiosqlite:///"))
    watch = DataVersionWatch(path)
    try:
        seen = watch.version()
        assert [watch.version() for _ in range(3)] == [seen] * 3
        store = EventStore(engine, inline_projections=[SessionTableProjection()])
        ledger = SessionLedger(store=store, read_model=SqlSessionReadModel(engine))
        await ledger.create_session("u1")
        assert watch.version() != seen
        seen = watch.version()
        assert watch.fetch(COUNT_EVENTS) == [(1,)]
        assert watch.version() == seen  # its own reads change nothing
    finally:
        watch.close()


async def test_a_stream_is_read_directly_and_as_through_aiosqlite(engine: AsyncEngine) -> None:
    ledger = ledger_on(engine)
    session, token = await ledger.create_session("user-1", fields={"theme": "dark"})
    await ledger.update_session(token, {"theme": "light"})
    store = ledger.store
    reads = reads_of(engine)
    before = reads.answered
    direct = await store.read_stream(session.id)
    assert reads.answered == before + 1  # one statement, in the calling thread
    assert [e.stream_version for e in await store.read_stream(session.id, 2)] == [2]

    event.listen(engine.sync_engine, "before_cursor_execute", lambda *_: None)
    usual = await store.read_stream(session.id)  # observed: through aiosqlite
    assert reads.answered == before + 2
    assert usual == direct
    assert [e.stream_version for e in direct] == [1, 2]
