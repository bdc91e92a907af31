"""Leader election for jobs that one process at a time should run.

PostgreSQL: a *session-level* advisory lock (``pg_try_advisory_lock``) held
on a dedicated connection, outside the engine's pool. The lock lives exactly
as long as that connection: when the leader process dies (even ``kill -9``)
the server closes its backend and releases the lock, and the next worker
that tries becomes leader. The connection is opened with asyncpg directly
because a pooled connection would go back to the pool still holding the lock.
It must reach PostgreSQL directly or through a session-mode pooler; a
transaction-mode pooler (pgbouncer ``pool_mode=transaction``) breaks
session-level locks.

Leadership only avoids duplicate work. Correctness never depends on it: a
leader that lost its connection may still be finishing a batch while a new
leader starts, and the event store's optimistic concurrency then makes one
of the two appends fail (the sweep re-reads and skips the session).

SQLite: one worker process per database file is assumed (the embedded
deployment). ``SingleProcessLeader`` always leads; two processes on one
file would still be correct (SQLite serialises writers and the version check
rejects the loser) but would do the same work twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import asyncpg
from sqlalchemy.engine import make_url

from session_ledger.workers.logging import get_logger

#: Advisory lock key of the expiry / maintenance leader (PostgreSQL's
#: advisory locks share one bigint key space).
MAINTENANCE_LOCK_KEY = 0x5E55_E0E1
#: Advisory lock key of the projector leader (the Redis cache catch-up).
PROJECTOR_LOCK_KEY = 0x5E55_E0E2
CONNECT_TIMEOUT = 5.0
CHECK_TIMEOUT = 5.0
#: What a lost server looks like on the dedicated connection. InternalClientError
#: included: when the backend is terminated while the connection is idle,
#: asyncpg can be left mid-protocol and refuses the next query with it
#: ("cannot switch to state ...; another operation is in progress").
CONNECTION_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


class Leadership(Protocol):
    async def acquire(self) -> bool:
        """Try to lead (or confirm we still do); never raises for a lost server."""
        ...

    #: Why the last ``acquire`` could not tell (the server was unreachable);
    #: None when it answered, yes or no.
    error: BaseException | None

    async def release(self) -> None: ...


class SingleProcessLeader:
    """Always the leader (SQLite: one worker process per database is assumed)."""

    error: BaseException | None = None

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        return None


class AdvisoryLockLeader:
    """Leads while it holds ``pg_try_advisory_lock(key)`` on its own connection."""

    def __init__(self, database_url: str, key: int = MAINTENANCE_LOCK_KEY) -> None:
        url = make_url(database_url).set(drivername="postgresql")
        self._dsn = url.render_as_string(hide_password=False)
        self._key = key
        self._conn: asyncpg.Connection | None = None
        self._leading = False
        self.error: BaseException | None = None
        # One coroutine at a time on the dedicated connection.
        self._lock = asyncio.Lock()
        self._log = get_logger("workers.leader", key=key)

    @property
    def leading(self) -> bool:
        return self._leading

    async def acquire(self) -> bool:
        async with self._lock:
            try:
                leading = await self._acquire()
            except CONNECTION_ERRORS as exc:
                # The connection (and with it any lock) is gone: not leader
                # until a new connection wins the lock again.
                if self._leading:
                    self._log.warning("leader.lost", error=f"{type(exc).__name__}: {exc}")
                self.error = exc
                await self._drop()
                return False
            self.error = None
            return leading

    async def _acquire(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            self._leading = False
            self._conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
        if self._leading:
            # Session-level locks last as long as the backend: a round trip on
            # the same connection proves we still hold it.
            await self._conn.fetchval("SELECT 1", timeout=CHECK_TIMEOUT)
            return True
        got = bool(
            await self._conn.fetchval(
                "SELECT pg_try_advisory_lock($1)", self._key, timeout=CHECK_TIMEOUT
            )
        )
        if got:
            self._leading = True
            self._log.info("leader.acquired")
        return got

    async def release(self) -> None:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed() and self._leading:
                # Closing the connection below releases the lock anyway.
                with contextlib.suppress(*CONNECTION_ERRORS):
                    await self._conn.fetchval(
                        "SELECT pg_advisory_unlock($1)", self._key, timeout=CHECK_TIMEOUT
                    )
            if self._leading:
                self._log.info("leader.released")
            await self._drop()

    async def _drop(self) -> None:
        self._leading = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), CHECK_TIMEOUT)
            except CONNECTION_ERRORS:
                conn.terminate()


def leadership_for(database_url: str, key: int = MAINTENANCE_LOCK_KEY) -> Leadership:
    """An advisory-lock leader on PostgreSQL; always-leader on SQLite."""
    if database_url.startswith("postgresql"):
        return AdvisoryLockLeader(database_url, key)
    return SingleProcessLeader()
