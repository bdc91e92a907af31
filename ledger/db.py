"""Engines and the ways statements reach the two supported databases.

Engine construction (SQLite's and PostgreSQL's settings), statements sent
straight to the driver (:func:`pooled`, :class:`HeldConnections`,
:func:`fetch_standalone`, :func:`read_standalone`, SQLite transactions in
the connection's thread), retries of reads on a connection that died, and
what counts as "database unavailable". The store still chooses per dialect
which of these to use.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Column, event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from sqlalchemy.util import await_only, greenlet_spawn

from session_ledger.ledger.sqlite_reads import DirectReads, plain_file

T = TypeVar("T")
#: ``execute(sql, params)`` inside :meth:`Driver.sqlite_transaction`: the rows.
SqliteExecute = Callable[[str, Sequence[Any]], list[Any]]

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


def sqlite_threads() -> set[Any]:
    """aiosqlite's worker threads alive now (see ``settle_sqlite_threads``)."""
    import threading

    # aiosqlite names no thread; Python names it after its target.
    return {
        t
        for t in threading.enumerate()
        if t.name.endswith("(_connection_worker_thread)") and t.is_alive()
    }


async def settle_sqlite_threads(before: set[Any], wait: float = 1.0) -> None:
    """Let aiosqlite's worker threads started since ``before`` finish while
    the event loop still runs.

    A connection that fails to open (a missing directory) queues its own
    stop and returns at once; its thread then reports to the loop. Had the
    loop closed by then (``asyncio.run`` ending on that very error), the
    thread dies with a traceback on stderr. Await this before such a loop
    closes; threads of connections still open elsewhere are left alone.
    """
    import asyncio

    for thread in sqlite_threads() - before:
        await asyncio.to_thread(thread.join, wait)


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


class Driver:
    """A pooled connection's driver object (asyncpg or aiosqlite), used
    directly; see :func:`pooled`."""

    __slots__ = ("_connection", "_driver", "_engine", "_fairy", "_postgres")

    def __init__(
        self, engine: Engine, fairy: PoolProxiedConnection, connection: Connection | None = None
    ) -> None:
        self._engine = engine
        self._fairy = fairy
        self._driver: Any = fairy.driver_connection
        self._postgres = engine.dialect.name == "postgresql"
        #: The SQLAlchemy Connection statement observers are given (built
        #: on first need when the fairy was checked out without one).
        self._connection = connection

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one statement (``$1`` placeholders on PostgreSQL, ``?`` on
        SQLite); its rows. Driver errors become SQLAlchemy's (see
        :func:`_translate`)."""
        self._observe(sql, params)
        try:
            if self._postgres:
                return list(await self._driver.fetch(sql, *params))
            return list(await self._driver.execute_fetchall(sql, params))
        except _DRIVER_ERRORS as exc:
            raise _translate(sql, exc) from exc

    def _observe(self, sql: str, params: Sequence[Any]) -> None:
        if self._engine.dispatch.before_cursor_execute:
            # Observers of SQLAlchemy's statements (statement counters,
            # tracing) still see this one. A Connection over the same pooled
            # connection is built only for them; there is no cursor or
            # execution context (None).
            if self._connection is None:
                self._connection = Connection(self._engine, self._fairy)
            self._engine.dispatch.before_cursor_execute(
                self._connection, None, sql, params, None, False
            )

    def release(self) -> None:
        """Return the connection to the pool (in a greenlet: it may do I/O)."""
        self._fairy.close()

    def invalidate(self, exc: BaseException | None = None) -> None:
        """Close the connection for good (in a greenlet)."""
        self._fairy.invalidate(exc if isinstance(exc, Exception) else None)
        self._fairy.close()

    @property
    def in_transaction(self) -> bool:
        """SQLite only: whether a transaction is open on this connection."""
        return bool(self._driver.in_transaction)

    async def sqlite_transaction(self, work: Callable[[SqliteExecute], T]) -> T:
        """SQLite: run ``work`` in the connection's own thread, between BEGIN
        IMMEDIATE and COMMIT (ROLLBACK when it raises; nothing when ``work``
        ended the transaction itself). ``work`` gets ``execute(sql,
        params)``, which returns the statement's rows.

        Every aiosqlite call is a hop from the event loop to the
        connection's thread and back, which costs more than SQLite needs for
        an INSERT (bench/README.md); a transaction of four statements made four.
        Here it is one, whatever the number of statements. aiosqlite has no
        public call for "run this function in your thread": this uses its
        queue (``_execute``) and the sqlite3 connection it owns (``_conn``),
        as SQLAlchemy's own aiosqlite adapter does, and touches the latter
        only inside that thread. Statement observers are told after the
        hop, in the event loop's thread."""
        sent: list[tuple[str, Sequence[Any]]] = []

        def run() -> T:
            conn: sqlite3.Connection = self._driver._conn

            def execute(sql: str, params: Sequence[Any] = ()) -> list[Any]:
                sent.append((sql, params))
                return conn.execute(sql, params).fetchall()

            execute("BEGIN IMMEDIATE")
            try:
                result = work(execute)
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            if conn.in_transaction:
                execute("COMMIT")
            return result

        try:
            result: T = await self._driver._execute(run)
        except _DRIVER_ERRORS as exc:
            raise _translate(sent[-1][0] if sent else "BEGIN IMMEDIATE", exc) from exc
        finally:
            for sql, params in sent:
                self._observe(sql, params)
        return result


async def pooled(engine: AsyncEngine, work: Callable[[Driver], Awaitable[T]]) -> T:
    """Run ``work`` on a connection from ``engine``'s pool, on its driver.

    For the hottest paths (an append, a session or user lookup by key),
    where SQLAlchemy's async layers cost more than the database: an
    ``AsyncConnection`` hops into SQLAlchemy's greenlet three times per use
    (connect, each execute, close) and builds a Connection with its
    execution options; aiosqlite through SQLAlchemy makes four hops to the
    connection's thread per statement (cursor, execute, fetchall, close)
    where the driver makes one; and on asyncpg SQLAlchemy's execute adds
    about as much Python time as the round trip itself. Here the checkout,
    ``work`` and the return to the pool share one greenlet hop, and every
    statement goes straight to the driver.

    The connection is SQLAlchemy's pooled one: the same pool, limits and
    reset on return (a rollback when a transaction was left open). It is
    in autocommit: each statement stands alone unless ``work`` sends BEGIN.
    A lost connection is invalidated and the rest of the pool dropped, as
    SQLAlchemy itself does on a disconnect; the error is a
    ``DBAPIError(connection_invalidated=True)`` (see :func:`retry_stale`)."""
    return await greenlet_spawn(_pooled, engine.sync_engine, work)


def _pooled(engine: Engine, work: Callable[[Driver], Awaitable[T]]) -> T:
    # Runs inside SQLAlchemy's greenlet: the checkout may connect (await_only
    # inside the pool), and await_only hands ``work`` to the event loop.
    fairy = engine.raw_connection()
    try:
        return await_only(work(Driver(engine, fairy)))
    except DBAPIError as exc:
        if exc.connection_invalidated:
            fairy.invalidate(exc.orig)
            # The other pooled connections most likely died with this one.
            engine.dispose(close=False)
        raise
    finally:
        fairy.close()


class HeldConnections:
    """A few of the pool's connections, kept checked out for the
    single statements of the hottest paths (a session by token, a user by
    id, a sign-in's one-statement append): such a statement then costs what
    the driver's call costs.

    :func:`pooled` still pays a greenlet hop and a pool checkout and return
    per call, about half as much Python time again as asyncpg's own fetch
    (bench/README.md). Here a read takes an idle held connection, runs the
    statement on its driver and puts it back, with no greenlet and no pool
    in between. When none is idle it checks one out (one greenlet hop, as
    :func:`pooled`) and keeps it afterwards, up to ``keep``.

    The held connections stay inside SQLAlchemy's pool accounting (they
    count as checked out), and every path back to the pool runs in a
    greenlet. ``engine.dispose()`` closes them (the ``engine_disposed``
    event), and a statement in flight meanwhile closes its connection when
    it finishes. After an error: a lost connection is invalidated and the
    pool dropped, as in :func:`pooled`; a server error returns the healthy
    connection to the pool; any other failure (a cancellation) closes the
    connection, its protocol state being unknown. Only for statements that
    stand alone (autocommit): nothing here ever opens a transaction. Callers
    use :func:`fetch_standalone`.
    """

    def __init__(self, engine: Engine, keep: int = 4) -> None:
        self.keep = keep
        self._sync = engine
        self._idle: list[Driver] = []
        #: Bumped by every dispose: a connection of an older pool is not kept.
        self._generation = 0
        event.listen(engine, "engine_disposed", self._on_dispose)

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        generation = self._generation
        if self._idle:
            driver = self._idle.pop()
        else:
            driver = await greenlet_spawn(self._checkout)
        try:
            rows = await driver.fetch(sql, params)
        except BaseException as exc:
            await greenlet_spawn(_give_back, self._sync, driver, exc)
            raise
        if generation != self._generation:
            await greenlet_spawn(driver.invalidate)  # its pool was disposed meanwhile
        elif len(self._idle) < self.keep:
            self._idle.append(driver)
        else:
            await greenlet_spawn(driver.release)
        return rows

    def _checkout(self) -> Driver:
        return Driver(self._sync, self._sync.raw_connection())

    def _on_dispose(self, _engine: Engine) -> None:
        # Inside the dispose's greenlet (closing is I/O). Closed, not returned:
        # a checked-out connection returned to a disposed pool is never closed.
        self._generation += 1
        idle, self._idle = self._idle, []
        for driver in idle:
            driver.invalidate()


def _root(engine: Engine) -> Engine:
    """The engine an execution-options copy proxies (its events reach both)."""
    while isinstance(engine, OptionEngine):
        engine = engine._proxied
    return engine


def _give_back(engine: Engine, driver: Driver, exc: BaseException) -> None:
    """Return the connection after a failed statement (in a greenlet)."""
    if isinstance(exc, DBAPIError) and not exc.connection_invalidated:
        driver.release()  # an error from the server: the connection is fine
        return
    driver.invalidate(exc)
    if isinstance(exc, DBAPIError):
        # The other pooled connections most likely died with this one.
        engine.dispose(close=False)


_HELD_ATTRIBUTE = "_ledger_held_connections"


def held_connections(engine: AsyncEngine) -> HeldConnections | None:
    """The :class:`HeldConnections` of ``engine``'s pool (one per engine, kept
    on the engine itself, so it lives and dies with it); None when the pool
    cannot lend connections for keeps (a NullPool, or the single connection
    of a StaticPool, which closing after a cancelled statement would lose)."""
    root = _root(engine.sync_engine)
    if not isinstance(root.pool, QueuePool):
        return None
    held = getattr(root, _HELD_ATTRIBUTE, None)
    if not isinstance(held, HeldConnections):
        held = HeldConnections(root)
        setattr(root, _HELD_ATTRIBUTE, held)
    return held


async def fetch_standalone(engine: AsyncEngine, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """One statement that stands alone (autocommit), on the driver: on a
    held connection when the pool lends one, else in one :func:`pooled` hop."""
    held = held_connections(engine)
    if held is not None:
        return await held.fetch(sql, params)
    return await pooled(engine, lambda driver: driver.fetch(sql, params))


_DIRECT_ATTRIBUTE = "_ledger_sqlite_reads"


def direct_reads(engine: AsyncEngine) -> DirectReads | None:
    """The :class:`~ledger.sqlite_reads.DirectReads` of ``engine`` (one per
    engine, kept on the engine itself, as :func:`held_connections`), or None
    when it is not a SQLite file named plainly in the URL."""
    root = _root(engine.sync_engine)
    reads = getattr(root, _DIRECT_ATTRIBUTE, None)
    if reads is None:
        path = plain_file(root.url)
        reads = False if path is None else DirectReads(root, path)
        setattr(root, _DIRECT_ATTRIBUTE, reads)
    return reads if isinstance(reads, DirectReads) else None


async def read_standalone(engine: AsyncEngine, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    """A read that stands alone: on SQLite files in the calling thread when
    SQLite can answer at once (:mod:`ledger.sqlite_reads`), else as
    :func:`fetch_standalone`."""
    reads = direct_reads(engine)
    if reads is not None:
        rows = reads.fetch(sql, params)
        if rows is not None:
            return rows
    return await fetch_standalone(engine, sql, params)


async def driver_fetch(conn: AsyncConnection, sql: str, params: Sequence[Any]) -> list[Any]:
    """:meth:`Driver.fetch` on the connection of an open ``AsyncConnection``
    (inside SQLAlchemy's transaction when there is one)."""
    fairy = await conn.get_raw_connection()
    driver = Driver(conn.sync_engine, fairy, conn.sync_connection)
    try:
        return await driver.fetch(sql, params)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            await conn.invalidate()
            # The other pooled connections most likely died with this one.
            await conn.engine.dispose(close=False)
        raise


_DRIVER_ERRORS = (asyncpg.PostgresError, sqlite3.Error, *_DISCONNECTS)

#: Driver errors of a server that cannot serve now, besides a lost connection.
_PG_UNAVAILABLE = (
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a failover's standby
)
#: SQLite's primary result codes that say "not now", not "wrong": busy or
#: locked, full, I/O error (a full disk, a file-size limit), cannot open,
#: read-only, out of memory, lock protocol.
_SQLITE_UNAVAILABLE = {5, 6, 7, 8, 10, 13, 14, 15}


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached or cannot serve
    right now (answer 503 and let the client retry), as opposed to a bug.

    A refused or lost connection surfaces as OSError (asyncpg connecting),
    as asyncpg's own errors, or wrapped by SQLAlchemy; SQLite's "full",
    "I/O error" and "busy" come as OperationalError with their result code.
    """
    if isinstance(exc, PoolTimeoutError | DisconnectionError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    # SQLAlchemy wraps the driver's error (``orig``), its asyncpg adapter
    # wraps it once more (the adapter's error is caused by asyncpg's).
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, (OSError, *_DISCONNECTS, *_PG_UNAVAILABLE)):
            return True
        if isinstance(seen, sqlite3.Error):
            code = getattr(seen, "sqlite_errorcode", None)
            return code is not None and code & 0xFF in _SQLITE_UNAVAILABLE
        seen = seen.orig if isinstance(seen, DBAPIError) else seen.__cause__
    return False


def _translate(sql: str, exc: BaseException) -> DBAPIError:
    """The SQLAlchemy error its callers handle for a driver error: a unique
    violation IntegrityError, a lost connection DBAPIError with
    connection_invalidated, SQLite's "database is locked" OperationalError."""
    if isinstance(exc, asyncpg.UniqueViolationError | sqlite3.IntegrityError):
        return IntegrityError(sql, None, exc)
    if isinstance(exc, _DISCONNECTS):
        return DBAPIError(sql, None, exc, connection_invalidated=True)
    if isinstance(exc, sqlite3.OperationalError):
        return OperationalError(sql, None, exc)
    return DBAPIError(sql, None, exc)


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
        except BaseException:
            # Cancelled while the BEGIN waited in aiosqlite's queue: the BEGIN
            # still runs, later, in the connection's thread, after the
            # connection is back in the pool (whose release read "no
            # transaction" and skipped the rollback, see do_rollback), and
            # the next user finds a transaction open. SQLAlchemy invalidates
            # on cancellation inside its own execute, but not for an error
            # raised by a begin listener; do it here. The close is queued
            # behind the BEGIN.
            conn.invalidate()
            raise
