"""Engine construction for the two supported databases.

SQLite (embedded default) and PostgreSQL differ in how writers are
serialised; this module hides that so the store has one implementation.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Column, event
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import await_only

T = TypeVar("T")

#: Execution option that marks a connection as a writer.
WRITE = "ledger_write"
#: Execution option for single-statement work: no transaction around it.
AUTOCOMMIT = "ledger_autocommit"


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine for ``url`` with the ledger's connection settings."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 10)
    # No pre-ping: it costs a round trip on every checkout, the hot path's
    # largest avoidable cost. A connection that died (server restart) fails
    # its next statement once; SQLAlchemy then invalidates it and the whole
    # pool, and the caller (request, worker back-off) retries.
    kwargs.setdefault("pool_pre_ping", False)
    return create_async_engine(url, **kwargs)


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) with connections marked as writers."""
    return engine.execution_options(**{WRITE: True})


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) for work whose every statement stands
    alone (a lookup by key, a single-statement append): no BEGIN / COMMIT /
    ROLLBACK round trips. Each statement is still atomic and sees one
    consistent snapshot; two statements may see two."""
    if is_sqlite(engine):
        return engine.execution_options(**{AUTOCOMMIT: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def retry_stale(read: Callable[[], Awaitable[T]]) -> T:
    """Run a read; run it once more if it failed on a connection that had
    died in the pool (the failure makes SQLAlchemy drop the stale pool, so
    the second try gets a fresh connection). Only for reads: a write may
    have committed before the connection dropped."""
    try:
        return await read()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return await read()


#: Driver errors that mean the connection is gone (see driver_fetch).
_DISCONNECTS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InternalClientError,
)


async def driver_fetch(conn: AsyncConnection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Run one statement (``$1`` placeholders on PostgreSQL, ``?`` on SQLite)
    on the pooled connection's driver object; its rows.

    For the hottest paths only (an append, a session lookup by token), where
    SQLAlchemy's async adapters cost more than the database: aiosqlite
    through SQLAlchemy makes four hops to the connection's thread per
    statement (cursor, execute, fetchall, close) where ``execute_fetchall``
    makes one, and on asyncpg SQLAlchemy's execute adds about as much Python
    time as the round trip itself. The connection still comes from, and goes
    back to, SQLAlchemy's pool, inside SQLAlchemy's transaction when there is
    one. Driver errors become the SQLAlchemy errors the callers handle: a
    unique violation IntegrityError, a lost connection
    DBAPIError(connection_invalidated) after dropping the stale pool, as
    SQLAlchemy itself does on a disconnect."""
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    # Observers of SQLAlchemy's statements (statement counters, tracing)
    # still see this one; there is no SQLAlchemy cursor or context (None).
    sync_conn = conn.sync_connection
    if sync_conn is not None:
        sync_conn.dispatch.before_cursor_execute(sync_conn, None, sql, params, None, False)
    try:
        if conn.dialect.name == "postgresql":
            return list(await driver.fetch(sql, *params))
        return list(await driver.execute_fetchall(sql, params))
    except (asyncpg.UniqueViolationError, sqlite3.IntegrityError) as exc:
        raise IntegrityError(sql, None, exc) from exc
    except _DISCONNECTS as exc:
        await conn.invalidate()
        # The other pooled connections most likely died with this one.
        await conn.engine.dispose(close=False)
        raise DBAPIError(sql, None, exc, connection_invalidated=True) from exc


RowDecoder = Callable[[Sequence[Any]], dict[str, Any]]


@functools.cache
def row_decoder(dialect: Dialect, columns: tuple[Column[Any], ...]) -> RowDecoder:
    """Turn a row read by :func:`driver_fetch` (values in ``columns`` order)
    into ``{name: value}`` with SQLAlchemy's own conversions for this
    dialect (SQLite's text timestamps, JSON text, integer booleans)."""
    processors = [
        (c.key, c.type.dialect_impl(dialect).result_processor(dialect, None)) for c in columns
    ]

    def decode(values: Sequence[Any]) -> dict[str, Any]:
        return {
            name: value if process is None else process(value)
            for (name, process), value in zip(processors, values, strict=True)
        }

    return decode


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so that BEGIN
        # is ours to emit (see _on_begin); the module's implicit BEGIN is
        # DEFERRED, which upgrades to a write lock mid-transaction and then
        # fails with "database is locked" instead of waiting.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the single writer and vice versa.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    dialect = engine.sync_engine.dialect
    rollback = dialect.do_rollback

    def do_rollback(dbapi_connection: Any) -> None:
        # Every aiosqlite call is a hop to the connection's thread and back.
        # SQLAlchemy rolls back on every release, also after autocommit
        # statements and after COMMIT; skip it when SQLite has no open
        # transaction (a flag read, no I/O: the connection is idle here).
        if dbapi_connection.driver_connection.in_transaction:
            rollback(dbapi_connection)

    dialect.do_rollback = do_rollback  # type: ignore[method-assign]

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the database write lock up front (IMMEDIATE): SQLite
        # then serialises appends, so positions are assigned in commit order
        # and a reader following positions can never skip an event.
        options = conn.get_execution_options()
        if options.get(WRITE):
            _begin(conn, "BEGIN IMMEDIATE")
        elif not options.get(AUTOCOMMIT):
            _begin(conn, "BEGIN")

    def _begin(conn: Connection, sql: str) -> None:
        # On the driver: one hop to aiosqlite's thread instead of the three
        # (cursor, execute, close) of SQLAlchemy's execute. This runs inside
        # SQLAlchemy's greenlet, where await_only is how its own adapters
        # wait on aiosqlite.
        driver = conn.connection.driver_connection
        assert driver is not None
        try:
            await_only(driver.execute(sql))
        except sqlite3.OperationalError as exc:  # "database is locked" after busy_timeout
            raise OperationalError(sql, None, exc) from exc
