"""The checkpointed runner: keeps the Redis cache caught up with the ledger.

The after-commit hook writes the cache right after each append; this runner
is the safety net. It reads the ledger with the gap-free ``read_all`` from the
checkpoint stored in Redis, applies each batch (idempotent, version-checked
writes) and moves the checkpoint forward. A missing checkpoint (first start,
FLUSHDB, a Redis restart without persistence, eviction) means the cache may
have lost anything: the runner rebuilds it from position zero.

``run_forever`` wakes on PostgreSQL ``NOTIFY ledger_events`` (sent by
:class:`NotifyOnAppend` inside the append transaction, so delivered exactly
when the events become visible) and polls as a fallback (SQLite, or the
listening connection lost). The same notifications tell every service
process which sessions changed (:mod:`projections.freshness`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import TypeVar

import asyncpg
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from session_ledger.ledger.domain.events import RecordedEvent
from session_ledger.ledger.store import EventStore
from session_ledger.ledger.writes import Notify, PendingEvent, Write, WritesFromEvents
from session_ledger.projections.redis_cache import Keys, RedisCacheProjection

log = logging.getLogger(__name__)

CHANNEL = "ledger_events"
E = TypeVar("E", RecordedEvent, PendingEvent)


#: Sessions per notification: a payload must stay under 8000 bytes.
NOTIFY_STREAMS = 150


class NotifyOnAppend(WritesFromEvents):
    """Inline projection (runs in the append transaction) that sends
    ``NOTIFY <channel>, '<last position> <session>:<version>,...'`` (one
    per NOTIFY_STREAMS sessions, each with the last position of its own
    events). PostgreSQL delivers it only when the transaction commits, never
    for a rolled-back append. The runner only wakes on it; service processes
    read the changes (projections.freshness.parse_changes)."""

    def __init__(self, channel: str = CHANNEL) -> None:
        self.channel = channel

    async def apply(self, conn: AsyncConnection, recorded: Sequence[RecordedEvent]) -> None:
        if conn.dialect.name != "postgresql" or not recorded:
            return
        for last, suffix in _chunks(recorded):
            await conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": self.channel, "payload": f"{last.position}{suffix}"},
            )

    def new_stream_writes(self, pending: Sequence[PendingEvent]) -> list[Write]:
        """The same notifications, as data (see ledger.writes): ``pending``
        is in the order positions are drawn, so a chunk's last event gets
        its highest."""
        return [Notify(self.channel, last.position, suffix) for last, suffix in _chunks(pending)]


def _chunks(events: Sequence[E]) -> list[tuple[E, str]]:
    """(the chunk's last event, ``" sid:version,..."``) per NOTIFY_STREAMS
    sessions. ``events`` are in position order (or, pending, in the order
    positions are drawn), so a session's last event is its newest."""
    last: dict[str, int] = {}
    for i, e in enumerate(events):
        last[e.stream_id] = i
    sids = list(last)
    chunks = []
    for start in range(0, len(sids), NOTIFY_STREAMS):
        part = sids[start : start + NOTIFY_STREAMS]
        newest = events[max(last[sid] for sid in part)]
        pairs = ",".join(f"{sid}:{events[last[sid]].stream_version}" for sid in part)
        chunks.append((newest, f" {pairs}"))
    return chunks


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

    async def checkpoint(self) -> int | None:
        """The last position applied to the live generation (None: not built)."""
        return await self.cache.checkpoint((await self.cache.write_keys())[0])

    async def run_once(self) -> int:
        """Apply every event past the checkpoint; returns how many were applied."""
        keys = (await self.cache.write_keys())[0]
        position = await self.cache.checkpoint(keys)
        if position is None:
            position = await self._start_rebuild(keys)
        applied = 0
        while True:
            batch = await self.store.read_all(position, self.batch_size)
            if not batch:
                break
            await self.projection.apply_latest(batch)
            last = batch[-1].position
            if await self.cache.advance_checkpoint(keys, last) < 0:
                # The checkpoint vanished while we were writing: Redis lost
                # data (FLUSHDB / restart) after we read it. Start over.
                position = await self._start_rebuild(keys)
                continue
            position = last
            applied += len(batch)
            if len(batch) < self.batch_size:
                break
        return applied

    async def _start_rebuild(self, keys: Keys) -> int:
        self.rebuilds += 1
        log.warning("redis cache checkpoint missing in %s: rebuilding from position 0", keys.ns)
        await self.cache.init_checkpoint(keys)
        return 0

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
