"""Strict revocation for cookie-cache hits, without per-request I/O.

Every service process keeps an in-memory set of the sessions revoked or
expired within the last ``cookie_cache.max_age`` seconds (plus a margin for
clock skew). A cookie-cache value is at most ``max_age`` old, so a session
that ended earlier than that cannot have a live cache value left: the set
stays small and complete. A cookie-cache hit for a session in the set is
refused and the request falls back to the store.

How revocations reach the set:

* this process: directly, from :attr:`EventStore.after_commit`;
* other processes on PostgreSQL: ``NOTIFY`` sent *inside* the append
  transaction by :class:`~projections.revocation_notify.RevocationNotifier`
  (an inline projection), so a
  notification goes out exactly when, and only if, the revocation commits;
  each process ``LISTEN``s on a dedicated asyncpg connection;
* other processes on SQLite (the embedded default): a poller follows the
  ledger's tail by position (SQLite has no NOTIFY; the tail is gap-free
  because SQLite serialises writers). It looks every POLL_INTERVAL (5 ms)
  with ``PRAGMA data_version``, which changes only when another connection
  committed, and reads the tail only then: a look costs microseconds, and
  the revocation reaches the other processes within about POLL_INTERVAL
  (``bench.revocation_latency --backend sqlite``).

Until the feed is connected *and* the last window of revocations has been
loaded from the ledger (``caught_up``), and again as soon as the feed is
lost, every cookie-cache hit falls back to the store: a process never
trusts a cache it cannot vouch for.

On PostgreSQL the same LISTEN connection also hears user changes
(:data:`api.users.memo.USERS_CHANNEL`) for the user memo it is built with;
the memo is live exactly while the feed is caught up.

With the Redis cache, the feed also tells its
:class:`~projections.freshness.CacheFreshness` (a constructor argument)
of *every* append, not only the ends: on PostgreSQL read from the ledger
(:class:`~projections.change_feed.LedgerChanges`) on every ``NOTIFY
ledger_events`` (a wake-up each writer sends after its commit) and every
``change_feed.POLL_INTERVAL``; the whole tail on SQLite. Redis is believed
exactly while the feed is caught up, and only for what it heard of. The
revocation NOTIFY stays inside the append transaction: it is rare (ends
only), and the cookie cache has no other way to hear of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api.users.memo import USERS_CHANNEL, UserMemo
from session_ledger.ledger import horizon
from session_ledger.ledger.clock import Clock
from session_ledger.ledger.db import Driver, make_engine, pooled
from session_ledger.ledger.domain.events import TERMINAL_EVENT_TYPES, RecordedEvent
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.sqlite_reads import DataVersionWatch, plain_file
from session_ledger.projections.change_feed import POLL_INTERVAL as CHANGES_POLL_INTERVAL
from session_ledger.projections.change_feed import LedgerChanges
from session_ledger.projections.freshness import CacheFreshness
from session_ledger.projections.revocation_notify import CHANNEL, ended_session_ids
from session_ledger.projections.runner import CHANNEL as CHANGES_CHANNEL

log = logging.getLogger(__name__)

#: Entries are kept this much longer than max_age (clock skew between processes).
MARGIN = timedelta(seconds=60)
RECONNECT_DELAY = 0.5
KEEPALIVE = 5.0
# stop(): cancel, wait up to STOP_GRACE s, again (see stop).
STOP_GRACE = 0.5
STOP_ATTEMPTS = 10
#: How often the SQLite feed looks for commits (PRAGMA data_version).
POLL_INTERVAL = 0.005
#: SQLite databases that cannot be watched so (in-memory, URL options) are
#: polled through the engine, less often.
ENGINE_POLL_INTERVAL = 0.05
TAIL_LIMIT = 1000
#: The SQLite feed's poll: the ledger's tail after a position.
_TAIL = (
    f"SELECT position, stream_id, stream_version, type FROM {events_table.name} "  # noqa: S608
    f"WHERE position > ? ORDER BY position LIMIT {TAIL_LIMIT}"
)


class RevocationFeed:
    """The per-process set of recently ended sessions and the feed filling it."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        max_age: int,
        *,
        database_url: str,
        users: UserMemo | None = None,
        freshness: CacheFreshness | None = None,
    ) -> None:
        """``users``: a memo to keep strict, live while caught up, entries
        dropped on user changes. Only PostgreSQL carries user changes across
        processes (the NOTIFY is sent by every writer, in its transaction);
        elsewhere the memo is not kept and stays off: every read goes to the
        store. ``freshness``: told of every append, and whether the feed is
        live."""
        self.engine = engine
        self.clock = clock
        self.window = timedelta(seconds=max_age) + MARGIN
        self.database_url = database_url
        self.mode = "postgres" if engine.dialect.name == "postgresql" else "poll"
        self._ended: dict[str, datetime] = {}
        self._users = users if self.mode == "postgres" else None
        self._freshness = freshness
        self._caught_up = False
        if self._users is not None:
            self._users.set_live(False)  # until the feed has caught up
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()

    # --------------------------------------------------------------- queries

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    def trusts(self, session_id: str) -> bool:
        """Whether a cookie-cache value of this session may be served."""
        return self._caught_up and session_id not in self._ended

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._ended

    # ----------------------------------------------------------------- input

    def add(self, session_ids: Iterable[str]) -> None:
        now = self.clock.now()
        for sid in session_ids:
            self._ended.pop(sid, None)  # re-insert: keep the dict in receipt order
            self._ended[sid] = now
        self._prune(now)

    async def on_commit(self, recorded: Sequence[RecordedEvent]) -> None:
        """EventStore.after_commit callback: this process's own revocations,
        immediately."""
        ids = ended_session_ids(recorded)
        if ids:
            self.add(ids)

    def _prune(self, now: datetime) -> None:
        cutoff = now - self.window
        # Insertion order is receipt order, so the stale entries come first.
        while self._ended:
            sid, seen = next(iter(self._ended.items()))
            if seen >= cutoff:
                break
            del self._ended[sid]

    # ------------------------------------------------------------- lifecycle

    async def start(self, wait: float | None = 5.0) -> None:
        """Start the feed; wait (up to ``wait`` s) until it has caught up."""
        if self._task is not None:
            return
        self._stopping = False
        runner = self._run_postgres if self.mode == "postgres" else self._run_poll
        self._task = asyncio.create_task(runner(), name="revocation-feed")
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), wait)

    async def stop(self) -> None:
        self._stopping = True
        self._caught_up = False
        task, self._task = self._task, None
        if task is None:
            return
        # Python 3.11's asyncio.wait_for swallows a cancellation that arrives
        # as the awaited call completes (the keepalive probe, the lost-feed
        # wait): one cancel() may be lost. The loops also check _stopping at
        # every wake-up; cancelling again until the task ends makes stop (and
        # with it the app's shutdown) bounded either way.
        for _ in range(STOP_ATTEMPTS):
            task.cancel()
            done, _pending = await asyncio.wait({task}, timeout=STOP_GRACE)
            if done:
                break
        else:
            log.warning("revocation feed did not stop within %.1f s", STOP_ATTEMPTS * STOP_GRACE)
            return
        with contextlib.suppress(asyncio.CancelledError, Exception):
            task.result()

    def _mark(self, caught_up: bool, head: horizon.Mark = horizon.ORIGIN) -> None:
        """Caught up (appends after ``head`` will be heard), or lost."""
        self._caught_up = caught_up
        if self._users is not None:
            # Changes made while the feed was down were never heard: start empty.
            self._users.set_live(caught_up)
        if self._freshness is not None:
            if caught_up:
                self._freshness.connected(head)
            else:
                self._freshness.lost()
        if caught_up:
            self._connected.set()
        else:
            self._connected.clear()

    async def _catch_up(self, engine: AsyncEngine) -> int:
        """Load the window's revocations from the ledger; returns the ledger head.

        Called only after the live feed is attached, so an end that commits
        meanwhile is seen by one or the other (or both: the set is idempotent).
        """
        cutoff = self.clock.now() - self.window
        query = (
            select(events_table.c.stream_id)
            .where(events_table.c.type.in_(sorted(TERMINAL_EVENT_TYPES)))
            .where(events_table.c.recorded_at >= cutoff)
        )
        async with engine.connect() as conn:
            ids = list((await conn.execute(query)).scalars())
            head = await conn.scalar(select(func.coalesce(func.max(events_table.c.position), 0)))
        self.add(ids)
        return int(head or 0)

    # ------------------------------------------------------------ PostgreSQL

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str):
            self.add(sid for sid in payload.split(",") if sid)

    def _on_users_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        if isinstance(payload, str) and self._users is not None:
            self._users.invalidate(uid for uid in payload.split(",") if uid)

    def _on_changes_notify(self, *_args: object) -> None:
        self._wake.set()

    async def _run_postgres(self) -> None:
        url = make_url(self.database_url).set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self._stopping:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(dsn, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                await conn.add_listener(USERS_CHANNEL, self._on_users_notify)
                changes, start = None, horizon.ORIGIN
                if self._freshness is not None:
                    await conn.add_listener(CHANGES_CHANNEL, self._on_changes_notify)
                    # Listening first: an append committed after this head
                    # is read by the first pass or wakes a later one.
                    start = await horizon.head(self.engine)
                    changes = LedgerChanges(self.engine, self._freshness, start)
                    await changes.read_pass()
                await self._catch_up(self.engine)
                self._mark(True, start)
                await self._listen(conn, lost, changes)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("revocation feed (LISTEN) lost; reconnecting", exc_info=True)
            finally:
                self._mark(False)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(RECONNECT_DELAY)

    async def _listen(
        self, conn: asyncpg.Connection, lost: asyncio.Event, changes: LedgerChanges | None
    ) -> None:
        """Until the connection is lost: read the ledger's changes on every
        wake-up (and every CHANGES_POLL_INTERVAL), probe the connection
        every KEEPALIVE."""
        wait = KEEPALIVE if changes is None else CHANGES_POLL_INTERVAL
        probed = asyncio.get_running_loop().time()
        # _stopping checked at every wake-up: a cancellation may be lost (see stop).
        while not lost.is_set() and not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken(lost), wait)
            if lost.is_set() or self._stopping:
                return
            if changes is not None:
                # Cleared before reading: a wake-up during the pass asks for another.
                self._wake.clear()
                await changes.read_pass()
            now = asyncio.get_running_loop().time()
            if now - probed >= KEEPALIVE:
                # A half-open TCP connection never reports termination:
                # probe it, and treat a slow answer as a lost feed.
                await asyncio.wait_for(conn.fetchval("SELECT 1"), KEEPALIVE)
                probed = now

    async def _woken(self, lost: asyncio.Event) -> None:
        """Until the connection is lost or a wake-up came."""
        waiters = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    # ------------------------------------------------------- SQLite polling

    async def _run_poll(self) -> None:
        # Its own engine, so the feed's statements never share (or show up
        # in) the request path's connection pool. One pooled connection, kept:
        # a fresh one per poll (NullPool) cost a thread, a connect and four
        # PRAGMAs twenty times a second.
        engine = make_engine(self.database_url, pool_size=1, max_overflow=0)
        path = plain_file(make_url(self.database_url))
        try:
            while not self._stopping:
                watch = None if path is None else DataVersionWatch(path)
                try:
                    position = await self._catch_up(engine)
                    self._mark(True, (0, position))
                    if watch is not None:
                        await self._watch(watch, position)
                    else:
                        await self._poll(engine, position)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("revocation feed (ledger tail) failed; retrying", exc_info=True)
                finally:
                    self._mark(False)
                    if watch is not None:
                        watch.close()
                await asyncio.sleep(RECONNECT_DELAY)
        finally:
            await engine.dispose()

    async def _watch(self, watch: DataVersionWatch, position: int) -> None:
        """Look every POLL_INTERVAL; read the tail when another connection
        committed (or the last read was cut at TAIL_LIMIT). In the event
        loop's thread: both statements take microseconds and never wait
        (busy timeout 0: SQLITE_BUSY means look again next time)."""
        seen = None
        more = True
        while not self._stopping:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                # The version before the tail: a commit after it is read now
                # or changes the version for the next look.
                version = watch.version()
                if version == seen and not more:
                    continue
                rows = watch.fetch(_TAIL, (position,))
            except sqlite3.OperationalError:
                continue  # busy (a WAL recovery, an exclusive lock): look again
            seen, more = version, len(rows) == TAIL_LIMIT
            position = self._take(rows, position)

    async def _poll(self, engine: AsyncEngine, position: int) -> None:
        """The fallback: the tail through the engine, every ENGINE_POLL_INTERVAL."""
        while not self._stopping:
            await asyncio.sleep(ENGINE_POLL_INTERVAL)
            # On the driver, in autocommit: one hop to the connection's thread.
            rows = await pooled(engine, _tail_after(position))
            position = self._take(rows, position)

    def _take(self, rows: Sequence[Any], after: int) -> int:
        """Tail rows (position, stream id, version, type): the ends go into
        the set, every change to the cache's freshness; the new position."""
        if not rows:
            return after
        self.add(stream_id for _, stream_id, _, type_ in rows if type_ in TERMINAL_EVENT_TYPES)
        last = int(rows[-1][0])
        if self._freshness is not None:
            self._freshness.heard(
                (0, last), ((stream_id, version) for _, stream_id, version, _ in rows)
            )
        return last


def _tail_after(position: int) -> Callable[[Driver], Awaitable[list[Any]]]:
    return lambda driver: driver.fetch(_TAIL, (position,))
