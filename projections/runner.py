"""The checkpointed runner: keeps the Redis cache caught up with the ledger.

The after-commit hook writes the cache right after each append; this runner
is the safety net. It reads the ledger in commit-safe order
(:mod:`ledger.horizon`) from the checkpoint stored in Redis (a mark: xid and
position), applies each batch (idempotent, version-checked writes) and moves
the checkpoint forward. A missing checkpoint (first start, FLUSHDB, a Redis
restart without persistence, eviction) means the cache may have lost
anything: the runner rebuilds it from the start.

``run_forever`` wakes on PostgreSQL ``NOTIFY ledger_events`` and polls as a
fallback (SQLite, the listening connection lost, a wake-up lost). The
notification is only a wake-up: each writer sends it right after its commit
(:class:`NotifyAfterCommit`, not inside the transaction, where PostgreSQL's
notification queue lock would serialise every commit), and the runner reads
the ledger itself. Losing one (a writer that dies between its commit and
its NOTIFY) costs a poll interval, never an event. Every service process's
change feed wakes on the same notifications (:mod:`api.revocations`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.db import fetch_standalone
from session_ledger.ledger.domain.events import RecordedEvent
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.store import EventStore
from session_ledger.projections.redis_cache import Keys, RateLimitedWarning, RedisCacheProjection

log = logging.getLogger(__name__)

CHANNEL = "ledger_events"


class NotifyAfterCommit:
    """EventStore.after_commit hook (PostgreSQL): ``NOTIFY ledger_events``
    once the append has committed, to wake the runner and every process's
    change feed (api.revocations), which then read the ledger themselves.

    Not inside the append transaction: PostgreSQL queues notifications in
    commit order under one cluster-wide lock, held by a notifying
    transaction from before its commit record to its end, fsync included, so
    a NOTIFY in every append serialises every commit as a global lock would
    (``bench/README.md``, "appends in parallel"). A NOTIFY of its own writes
    no WAL before its commit and so waits for no fsync under that lock.

    Sent in the background, at most one at a time per process: appends that
    commit while one is on its way are covered by the next (a wake-up says
    "read the ledger", not what to read). Losing one (the process dies
    between a commit and its NOTIFY, the connection fails) costs the
    readers a poll interval, never an event."""

    def __init__(self, engine: AsyncEngine, channel: str = CHANNEL) -> None:
        self.engine = engine
        self.channel = channel
        self.sent = 0
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        self._warnings = RateLimitedWarning(log, 30.0)
        self._newest = 0

    async def __call__(self, recorded: Sequence[RecordedEvent]) -> None:
        if not recorded:
            return
        self._newest = max(self._newest, recorded[-1].position)
        self._pending = True
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self._pending:
            self._pending = False
            try:
                await fetch_standalone(
                    self.engine, "SELECT pg_notify($1, $2)", (self.channel, str(self._newest))
                )
                self.sent += 1
            except Exception as exc:  # a wake-up: the readers poll as well
                self._warnings.warn(
                    "NOTIFY %s after commit failed (%s: %s); readers will poll",
                    self.channel,
                    type(exc).__name__,
                    exc,
                )
                return

    async def flush(self) -> None:
        """Wait for the wake-up in flight, if any (tests, shutdown)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


class ProjectionRunner:
    def __init__(
        self,
        store: EventStore,
        projection: RedisCacheProjection,
        *,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        listen_dsn: str | None = None,
        channel: str = CHANNEL,
    ) -> None:
        self.store = store
        self.projection = projection
        self.cache = projection.cache
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.listen_dsn = listen_dsn
        self.channel = channel
        self.rebuilds = 0
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None

    async def checkpoint(self) -> Mark | None:
        """The last mark applied to the live generation (None: not built)."""
        return await self.cache.checkpoint((await self.cache.write_keys())[0])

    async def run_once(self) -> int:
        """Apply every event past the checkpoint that is below the horizon;
        returns how many were applied."""
        keys = (await self.cache.write_keys())[0]
        mark = await self.cache.checkpoint(keys)
        if mark is None:
            mark = await self._start_rebuild(keys)
        applied = 0
        while True:
            batch = await horizon.read(self.store.engine, mark, self.batch_size)
            if batch.last is None:
                break
            await self.projection.apply_latest(batch.events)
            if await self.cache.advance_checkpoint(keys, batch.last) < 0:
                # The checkpoint vanished while we were writing: Redis lost
                # data (FLUSHDB / restart) after we read it. Start over.
                mark = await self._start_rebuild(keys)
                continue
            mark = batch.last
            applied += len(batch)
            if len(batch) < self.batch_size:
                break
        return applied

    async def _start_rebuild(self, keys: Keys) -> Mark:
        self.rebuilds += 1
        log.warning("redis cache checkpoint missing in %s: rebuilding from the start", keys.ns)
        await self.cache.init_checkpoint(keys)
        return horizon.ORIGIN

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        """Catch up, then wait for a notification (or the poll interval), forever."""
        stop = stop or asyncio.Event()
        try:
            while not stop.is_set():
                await self._ensure_listener()
                # Clear before reading: a NOTIFY arriving during run_once
                # must wake the next round, not be lost.
                self._wake.clear()
                try:
                    await self.run_once()
                except (RedisError, OSError, SQLAlchemyError) as exc:
                    log.warning("projection runner: %s: %s (retrying)", type(exc).__name__, exc)
                await _wait_any(self._wake, stop, self.poll_interval)
        finally:
            await self._close_listener()

    def wake(self) -> None:
        self._wake.set()

    async def _ensure_listener(self) -> None:
        if self.listen_dsn is None or self._listener is not None:
            return
        try:
            conn = await asyncpg.connect(self.listen_dsn, timeout=5)
            await conn.add_listener(self.channel, self._on_notify)
            conn.add_termination_listener(self._on_listener_lost)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("LISTEN %s failed (%s); polling instead", self.channel, exc)
            return
        self._listener = conn

    def _on_notify(self, *_args: object) -> None:
        self._wake.set()

    def _on_listener_lost(self, *_args: object) -> None:
        # Reconnected on the next round; polling covers the gap.
        self._listener = None
        self._wake.set()

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    waiters = [asyncio.create_task(wake.wait()), asyncio.create_task(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waiters:
            task.cancel()
