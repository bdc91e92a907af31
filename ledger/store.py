"""The event store: one append-only table, optimistic concurrency per stream,
gap-free global order, a hash chain per stream.

One implementation for PostgreSQL (asyncpg) and SQLite (aiosqlite).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from ledger.chain import GENESIS, event_hash
from ledger.clock import Clock, SystemClock, utc
from ledger.db import is_sqlite, writer
from ledger.errors import ConcurrencyError, InvalidAppendError
from ledger.events import (
    Event,
    EventMetadata,
    RecordedEvent,
    deserialize,
    serialize,
    validate_event,
)
from ledger.schema import events as events_table

log = logging.getLogger(__name__)

MAX_STREAM_ID = 64
MAX_USER_ID = 128
#: Key of the PostgreSQL advisory lock that serialises appends (see _lock_appends).
APPEND_LOCK_KEY = 0x5E55_1011


_INSERT = insert(events_table).returning(
    events_table.c.position, events_table.c.stream_id, events_table.c.stream_version
)
_HEAD = (
    select(events_table.c.stream_version, events_table.c.hash)
    .where(events_table.c.stream_id == bindparam("stream_id"))
    .order_by(events_table.c.stream_version.desc())
    .limit(1)
)
_latest = aliased(events_table)
_HEADS = select(events_table.c.stream_id, events_table.c.stream_version, events_table.c.hash).where(
    events_table.c.stream_id.in_(bindparam("ids", expanding=True)),
    events_table.c.stream_version
    == select(func.max(_latest.c.stream_version))
    .where(_latest.c.stream_id == events_table.c.stream_id)
    .scalar_subquery(),
)


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events to add to one stream, expected to be at ``expected_version``
    (0: the stream must not exist yet)."""

    stream_id: str
    expected_version: int
    events: Sequence[Event]
    user_id: str | None = None


class InlineProjection(Protocol):
    """Runs inside the append transaction: commits or rolls back with the events."""

    async def apply(self, conn: AsyncConnection, recorded: Sequence[RecordedEvent]) -> None: ...


AfterCommit = Callable[[Sequence[RecordedEvent]], Awaitable[None]]


@dataclass
class EventStore:
    engine: AsyncEngine
    clock: Clock = field(default_factory=SystemClock)
    inline_projections: list[InlineProjection] = field(default_factory=list)
    #: Called after every successful commit (cache projections, notifications).
    #: Their failures are theirs: the events are already durable.
    after_commit: list[AfterCommit] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._writer = writer(self.engine)

    # ------------------------------------------------------------------ writes

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        *,
        metadata: EventMetadata | None = None,
        user_id: str | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to one stream; see :meth:`append_batch`."""
        return await self.append_batch(
            [StreamAppend(stream_id, expected_version, events, user_id)], metadata=metadata
        )

    async def append_batch(
        self, appends: Sequence[StreamAppend], *, metadata: EventMetadata | None = None
    ) -> list[RecordedEvent]:
        """Append to one or more streams atomically: all events land, or none.

        Raises ConcurrencyError when any stream is not at its expected version.
        """
        _check_appends(appends)
        meta = (metadata or EventMetadata()).model_dump(mode="json")
        recorded_at = utc(self.clock.now())
        prepared = [_prepare(a) for a in appends]  # validated before any I/O
        conflict = False
        for attempt in (1, 2):
            committing = False
            try:
                async with self._writer.connect() as conn, conn.begin():
                    await self._lock_appends(conn)
                    prev_hashes = await _prev_hashes(conn, appends)
                    if prev_hashes is None:
                        conflict = True
                    else:
                        recorded = await _insert(conn, prepared, prev_hashes, meta, recorded_at)
                        for projection in self.inline_projections:
                            await projection.apply(conn, recorded)
                    committing = True  # leaving the block sends COMMIT
                break
            except IntegrityError as exc:
                # The head check under the append lock leaves the unique
                # (stream_id, stream_version) as a last guard only (a writer
                # that skipped the lock). Any other constraint (an inline
                # projection's, say) is not a stream conflict: let it through.
                async with self.engine.connect() as conn:
                    error = await _conflict(conn, appends)
                if error.actual_version is None:
                    raise
                raise error from exc
            except DBAPIError as exc:
                # A pooled connection that died (server restart, failover)
                # fails its first statement; SQLAlchemy then drops the stale
                # pool. Retrying is safe only if COMMIT was never sent: a
                # failure during COMMIT leaves the outcome unknown.
                if attempt == 2 or committing or not exc.connection_invalidated:
                    raise
        if conflict:
            # Read outside the writer connection: on SQLite it would take the
            # write lock again (BEGIN IMMEDIATE) only to read.
            async with self.engine.connect() as conn:
                raise await _conflict(conn, appends)
        for callback in self.after_commit:
            try:
                await callback(recorded)
            except Exception:
                # The events are durable: a failing follower (a cache, a
                # notification) must neither fail the command that appended
                # them (its caller would retry a write that happened) nor
                # keep the other followers from running.
                log.exception("after-commit callback %r failed", callback)
        return recorded

    async def _lock_appends(self, conn: AsyncConnection) -> None:
        if is_sqlite(self.engine):
            return  # BEGIN IMMEDIATE (ledger.db) already holds the only write lock.
        # Serialise appends so that positions are handed out in commit order.
        # A sequence alone hands out positions at INSERT time, and transactions
        # commit in any order: a reader that has seen position 12 committed
        # would never look back for an 11 that commits a moment later. The
        # transaction-scoped advisory lock is released only after COMMIT has
        # made the rows visible, so the next appender's positions are all
        # higher than every visible one. Cost: appends do not run in parallel
        # (measured in bench/append.py); reads are unaffected.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})

    # ------------------------------------------------------------------- reads

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        query = (
            select(events_table)
            .where(events_table.c.stream_id == stream_id)
            .where(events_table.c.stream_version >= from_version)
            .order_by(events_table.c.stream_version)
        )
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            return [_recorded_from_db(row) for row in result]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Events with position > ``after_position`` in global order (gap-free)."""
        query = (
            select(events_table)
            .where(events_table.c.position > after_position)
            .order_by(events_table.c.position)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            result = await conn.execute(query)
            return [_recorded_from_db(row) for row in result]

    async def iter_all(
        self, after_position: int = 0, batch_size: int = 1000, up_to: int | None = None
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of events in global order, in bounded memory."""
        position = after_position
        while True:
            batch = await self.read_all(position, batch_size)
            if up_to is not None:
                batch = [e for e in batch if e.position <= up_to]
            if not batch:
                return
            yield batch
            position = batch[-1].position
            if len(batch) < batch_size:
                return

    async def head(self) -> int:
        """The highest position in the ledger (0 when empty)."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(func.coalesce(func.max(events_table.c.position), 0)))
            return int(value or 0)

    async def stream_version(self, stream_id: str) -> int:
        async with self.engine.connect() as conn:
            heads = await _stream_heads(conn, [stream_id])
        return heads.get(stream_id, (0, GENESIS))[0]

    async def count_by_type(self) -> dict[str, int]:
        query = select(events_table.c.type, func.count()).group_by(events_table.c.type)
        async with self.engine.connect() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}


# ----------------------------------------------------------------- helpers


def _check_appends(appends: Sequence[StreamAppend]) -> None:
    if not appends:
        raise InvalidAppendError("nothing to append")
    seen: set[str] = set()
    for a in appends:
        if not a.stream_id or len(a.stream_id) > MAX_STREAM_ID:
            raise InvalidAppendError(f"stream id must be 1-{MAX_STREAM_ID} characters")
        if a.user_id is not None and not 0 < len(a.user_id) <= MAX_USER_ID:
            raise InvalidAppendError(f"user id must be 1-{MAX_USER_ID} characters")
        if a.stream_id in seen:
            raise InvalidAppendError(f"stream {a.stream_id!r} appears twice in one append")
        seen.add(a.stream_id)
        if a.expected_version < 0:
            raise InvalidAppendError(f"stream {a.stream_id!r}: expected version must be >= 0")
        if not a.events:
            raise InvalidAppendError(f"stream {a.stream_id!r}: no events to append")


async def _stream_heads(conn: AsyncConnection, stream_ids: list[str]) -> dict[str, tuple[int, str]]:
    """Current (version, hash) of each existing stream."""
    result = await conn.execute(_HEADS, {"ids": stream_ids})
    return {row.stream_id: (row.stream_version, row.hash) for row in result}


async def _prev_hashes(
    conn: AsyncConnection, appends: Sequence[StreamAppend]
) -> dict[str, str] | None:
    """The hash each stream's new events chain onto, or None when a stream is
    not at its expected version.

    Checked by reading each stream's head (under the append lock, so it
    cannot move), rather than by letting the unique (stream_id,
    stream_version) reject the insert: a failed insert leaves SQLite's
    statement and write lock in a state that outlives the rollback.

    PostgreSQL has no such problem, so there new streams (every sign-in)
    skip the read: if the stream exists after all, the unique key rejects
    the insert and append_batch reports the conflict.
    """
    if conn.dialect.name == "postgresql" and all(a.expected_version == 0 for a in appends):
        return {a.stream_id: GENESIS for a in appends}
    if len(appends) == 1:
        row = (await conn.execute(_HEAD, {"stream_id": appends[0].stream_id})).first()
        heads = {} if row is None else {appends[0].stream_id: (row.stream_version, row.hash)}
    else:
        heads = await _stream_heads(conn, [a.stream_id for a in appends])
    hashes: dict[str, str] = {}
    for a in appends:
        version, head_hash = heads.get(a.stream_id, (0, GENESIS))
        if version != a.expected_version:
            return None
        hashes[a.stream_id] = head_hash
    return hashes


async def _conflict(conn: AsyncConnection, appends: Sequence[StreamAppend]) -> ConcurrencyError:
    """Name the first stream that is not where its append expected it."""
    heads = await _stream_heads(conn, [a.stream_id for a in appends])
    for a in appends:
        actual = heads.get(a.stream_id, (0, GENESIS))[0]
        if actual != a.expected_version:
            return ConcurrencyError(a.stream_id, a.expected_version, actual)
    # Everything matches now: the competing transaction rolled back meanwhile.
    first = appends[0]
    return ConcurrencyError(first.stream_id, first.expected_version, None)


@dataclass(frozen=True, slots=True)
class _Prepared:
    append: StreamAppend
    #: (validated event, type, schema version, data) per event.
    events: list[tuple[Event, str, int, dict[str, Any]]]


def _prepare(a: StreamAppend) -> _Prepared:
    """Serialise each event and validate it once, before anything is written.

    Validation matters even for model instances: ``model_copy(update=...)``
    builds events that skip pydantic's checks."""
    events = []
    for event in a.events:
        event_type, schema_version, data = serialize(event)
        validated = validate_event({**data, "type": event_type})
        events.append((validated, event_type, schema_version, data))
    return _Prepared(a, events)


async def _insert(
    conn: AsyncConnection,
    prepared: Sequence[_Prepared],
    prev_hashes: dict[str, str],
    meta: dict[str, Any],
    recorded_at: datetime,
) -> list[RecordedEvent]:
    rows: list[dict[str, Any]] = []
    for p in prepared:
        a = p.append
        version, prev_hash = a.expected_version, prev_hashes[a.stream_id]
        for _, event_type, schema_version, data in p.events:
            version += 1
            row = {
                "stream_id": a.stream_id,
                "stream_version": version,
                "type": event_type,
                "schema_version": schema_version,
                "data": data,
                "meta": meta,
                "user_id": a.user_id,
                "recorded_at": recorded_at,
                "prev_hash": prev_hash,
            }
            row["hash"] = prev_hash = event_hash(
                prev_hash,
                stream_id=a.stream_id,
                stream_version=version,
                event_type=event_type,
                schema_version=schema_version,
                data=data,
                meta=meta,
                user_id=a.user_id,
                recorded_at=recorded_at,
            )
            rows.append(row)
    # RETURNING rows of a multi-row insert come in no promised order (asking
    # SQLAlchemy to sort them makes it insert row by row on SQLite): match
    # them back by their unique (stream_id, stream_version) instead.
    result = await conn.execute(_INSERT, rows)
    positions = {(r.stream_id, r.stream_version): r.position for r in result}
    metadata = EventMetadata.model_validate(meta)
    events = [event for p in prepared for event, *_ in p.events]
    recorded = [
        RecordedEvent(
            position=positions[(row["stream_id"], row["stream_version"])],
            stream_id=row["stream_id"],
            stream_version=row["stream_version"],
            event=event,
            metadata=metadata,
            user_id=row["user_id"],
            recorded_at=recorded_at,
            prev_hash=row["prev_hash"],
            hash=row["hash"],
        )
        for row, event in zip(rows, events, strict=True)
    ]
    recorded.sort(key=lambda r: r.position)
    return recorded


def _recorded_from_row(*, position: int, **row: Any) -> RecordedEvent:
    return RecordedEvent(
        position=position,
        stream_id=row["stream_id"],
        stream_version=row["stream_version"],
        event=deserialize(row["type"], row["schema_version"], row["data"]),
        metadata=EventMetadata.model_validate(row["meta"]),
        user_id=row["user_id"],
        recorded_at=utc(row["recorded_at"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


def _recorded_from_db(row: Row[Any]) -> RecordedEvent:
    return _recorded_from_row(**row._asdict())
