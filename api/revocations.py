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
  transaction by :class:`PgRevocationNotifier` (an inline projection), so a
  notification goes out exactly when, and only if, the revocation commits;
  each process ``LISTEN``s on a dedicated asyncpg connection;
* other processes on SQLite (the embedded default): a poller follows the
  ledger's tail by position on its own engine (SQLite has no NOTIFY; the
  tail is gap-free because SQLite serialises writers);
* SQLite with Redis configured: Redis pub/sub instead of polling.

Until the feed is connected *and* the last window of revocations has been
loaded from the ledger (``caught_up``), and again as soon as the feed is
lost, every cookie-cache hit falls back to the store: a process never
trusts a cache it cannot vouch for.

On PostgreSQL the same LISTEN connection also hears user changes
(:data:`api.users.memo.USERS_CHANNEL`) for the user memo attached with
:meth:`RevocationFeed.attach_users`; the memo is live exactly while the
feed is caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.users.memo import USERS_CHANNEL, UserMemo
from ledger.clock import Clock
from ledger.db import make_engine, pooled
from ledger.events import TERMINAL_EVENT_TYPES, RecordedEvent
from ledger.schema import events as events_table
from ledger.writes import Notify, PendingEvent, Write, WritesFromEvents

log = logging.getLogger(__name__)

CHANNEL = "session_ledger_revocations"
#: Entries are kept this much longer than max_age (clock skew between processes).
MARGIN = timedelta(seconds=60)
#: NOTIFY payloads must stay under 8000 bytes.
NOTIFY_BATCH = 150
RECONNECT_DELAY = 0.5
KEEPALIVE = 5.0
POLL_INTERVAL = 0.05
#: The SQLite feed's poll: the ledger's tail after a position.
_TAIL = (
    f"SELECT position, stream_id, type FROM {events_table.name} "  # noqa: S608 (a name)
    "WHERE position > ? ORDER BY position LIMIT 1000"
)


def ended_session_ids(recorded: Iterable[RecordedEvent | PendingEvent]) -> list[str]:
    return [r.stream_id for r in recorded if r.type in TERMINAL_EVENT_TYPES]


class PgRevocationNotifier(WritesFromEvents):
    """Inline projection: ``pg_notify`` in the append transaction (delivered on commit)."""

    async def apply(self, conn: AsyncConnection, recorded: Sequence[RecordedEvent]) -> None:
        for notify in _notifications(recorded):
            await conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": notify.channel, "payload": notify.payload},
            )

    def new_stream_writes(self, pending: Sequence[PendingEvent]) -> list[Write]:
        """The same notifications for new streams, as data (see ledger.writes)."""
        return list(_notifications(pending))


def _notifications(recorded: Sequence[RecordedEvent | PendingEvent]) -> list[Notify]:
    ids = ended_session_ids(recorded)
    return [
        Notify(CHANNEL, ",".join(ids[i : i + NOTIFY_BATCH]))
        for i in range(0, len(ids), NOTIFY_BATCH)
    ]


class RevocationFeed:
    """The per-process set of recently ended sessions and the feed filling it."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        max_age: int,
        *,
        database_url: str,
        redis_url: str | None = None,
        redis_prefix: str = "",
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.window = timedelta(seconds=max_age) + MARGIN
        self.database_url = database_url
        self.redis_url = redis_url
        self.channel = f"{redis_prefix}{CHANNEL}"
        if engine.dialect.name == "postgresql":
            self.mode = "postgres"
        elif redis_url:
            self.mode = "redis"
        else:
            self.mode = "poll"
        self._ended: dict[str, datetime] = {}
        self._users: UserMemo | None = None
        self._caught_up = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._connected = asyncio.Event()
        # Any: the installed types-redis stubs (redis 4) lack redis 8's aclose().
        self._publisher: Any = None

    # --------------------------------------------------------------- queries

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    def trusts(self, session_id: str) -> bool:
        """Whether a cookie-cache value of this session may be served."""
        return self._caught_up and session_id not in self._ended

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._ended

    def attach_users(self, memo: UserMemo) -> None:
        """Keep ``memo`` strict: live while caught up, entries dropped on user
        changes. Only PostgreSQL carries user changes across processes (the
        NOTIFY is sent by every writer, in its transaction); elsewhere the
        memo stays off and every read goes to the store."""
        if self.mode == "postgres":
            self._users = memo
            memo.set_live(self._caught_up)

    # ----------------------------------------------------------------- input

    def add(self, session_ids: Iterable[str]) -> None:
        now = self.clock.now()
        for sid in session_ids:
            self._ended.pop(sid, None)  # re-insert: keep the dict in receipt order
            self._ended[sid] = now
        self._prune(now)

    async def on_commit(self, recorded: Sequence[RecordedEvent]) -> None:
        """EventStore.after_commit callback: this process's own revocations,
        immediately; with Redis pub/sub, also tell the other processes."""
        ids = ended_session_ids(recorded)
        if not ids:
            return
        self.add(ids)
        if self.mode == "redis" and self._publisher is not None:
            try:
                for i in range(0, len(ids), NOTIFY_BATCH):
                    await self._publisher.publish(self.channel, ",".join(ids[i : i + NOTIFY_BATCH]))
            except (RedisError, OSError):
                # The revocation is durable; other processes learn it when they
                # next catch up, and their cache values expire within max_age.
                log.warning("could not publish a revocation to Redis", exc_info=True)

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
        if self.mode == "redis":
            assert self.redis_url is not None
            self._publisher = aioredis.from_url(self.redis_url)
        runner = {"postgres": self._run_postgres, "redis": self._run_redis, "poll": self._run_poll}
        self._task = asyncio.create_task(runner[self.mode](), name="revocation-feed")
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), wait)

    async def stop(self) -> None:
        self._stopping = True
        self._caught_up = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None

    def _mark(self, caught_up: bool) -> None:
        self._caught_up = caught_up
        if self._users is not None:
            # Changes made while the feed was down were never heard: start empty.
            self._users.set_live(caught_up)
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
                await self._catch_up(self.engine)
                self._mark(True)
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), KEEPALIVE)
                    if not lost.is_set():
                        # A half-open TCP connection never reports termination:
                        # probe it, and treat a slow answer as a lost feed.
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), KEEPALIVE)
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

    # ----------------------------------------------------------------- Redis

    async def _run_redis(self) -> None:
        assert self.redis_url is not None
        while not self._stopping:
            client: Any = aioredis.from_url(self.redis_url, socket_connect_timeout=5)
            pubsub: Any = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                await self._catch_up(self.engine)
                self._mark(True)
                while True:
                    message = await pubsub.get_message(timeout=KEEPALIVE)
                    if message is None:
                        await asyncio.wait_for(pubsub.ping(), KEEPALIVE)
                        continue
                    data = message.get("data")
                    if isinstance(data, bytes):
                        self.add(sid for sid in data.decode().split(",") if sid)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("revocation feed (Redis) lost; reconnecting", exc_info=True)
            finally:
                self._mark(False)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()
            await asyncio.sleep(RECONNECT_DELAY)

    # ------------------------------------------------------- SQLite polling

    async def _run_poll(self) -> None:
        # Its own engine, so the feed's statements never share (or show up
        # in) the request path's connection pool. One pooled connection, kept:
        # a fresh one per poll (NullPool) cost a thread, a connect and four
        # PRAGMAs twenty times a second.
        engine = make_engine(self.database_url, pool_size=1, max_overflow=0)
        try:
            while not self._stopping:
                try:
                    position = await self._catch_up(engine)
                    self._mark(True)
                    while True:
                        await asyncio.sleep(POLL_INTERVAL)
                        position = await self._poll(engine, position)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("revocation feed (ledger tail) failed; retrying", exc_info=True)
                finally:
                    self._mark(False)
                await asyncio.sleep(RECONNECT_DELAY)
        finally:
            await engine.dispose()

    async def _poll(self, engine: AsyncEngine, after: int) -> int:
        # On the driver, in autocommit: one hop to the connection's thread
        # (SQLAlchemy's execute makes four, plus BEGIN and ROLLBACK).
        rows = await pooled(engine, lambda driver: driver.fetch(_TAIL, (after,)))
        self.add(stream_id for _, stream_id, type_ in rows if type_ in TERMINAL_EVENT_TYPES)
        return int(rows[-1][0]) if rows else after
