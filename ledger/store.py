"""The event store: one append-only table, optimistic concurrency per stream,
gap-free global order, a hash chain per stream.

One implementation for PostgreSQL (asyncpg) and SQLite (aiosqlite).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, insert, select, text, tuple_
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.chain import GENESIS, event_hash
from ledger.clock import Clock, SystemClock, utc
from ledger.db import is_sqlite, writer
from ledger.errors import ConcurrencyError, InvalidAppendError
from ledger.events import Event, EventMetadata, RecordedEvent, deserialize, serialize
from ledger.schema import events as events_table

MAX_STREAM_ID = 64
#: Key of the PostgreSQL advisory lock that serialises appends (see _lock_appends).
APPEND_LOCK_KEY = 0x5E55_1011


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
        recorded_at = self.clock.now()
        async with self._writer.connect() as conn:
            try:
                async with conn.begin():
                    await self._lock_appends(conn)
                    heads = await _stream_heads(conn, [a.stream_id for a in appends])
                    rows = _build_rows(appends, heads, meta, recorded_at)
                    result = await conn.execute(
                        insert(events_table).returning(
                            events_table.c.position, sort_by_parameter_order=True
                        ),
                        rows,
                    )
                    positions = [r[0] for r in result]
                    recorded = [
                        _recorded_from_row(position=p, **row)
                        for p, row in zip(positions, rows, strict=True)
                    ]
                    for projection in self.inline_projections:
                        await projection.apply(conn, recorded)
            except IntegrityError as exc:
                # Only reachable if something appends without the lock (SQLite
                # with another process ignoring BEGIN IMMEDIATE, for example):
                # the unique (stream_id, stream_version) is the last guard.
                first = appends[0]
                raise ConcurrencyError(first.stream_id, first.expected_version, None) from exc
        for callback in self.after_commit:
            await callback(recorded)
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
        if a.stream_id in seen:
            raise InvalidAppendError(f"stream {a.stream_id!r} appears twice in one append")
        seen.add(a.stream_id)
        if a.expected_version < 0:
            raise InvalidAppendError(f"stream {a.stream_id!r}: expected version must be >= 0")
        if not a.events:
            raise InvalidAppendError(f"stream {a.stream_id!r}: no events to append")


async def _stream_heads(conn: AsyncConnection, stream_ids: list[str]) -> dict[str, tuple[int, str]]:
    """Current (version, hash) of each existing stream."""
    latest = (
        select(events_table.c.stream_id, func.max(events_table.c.stream_version).label("v"))
        .where(events_table.c.stream_id.in_(stream_ids))
        .group_by(events_table.c.stream_id)
        .subquery()
    )
    query = select(
        events_table.c.stream_id, events_table.c.stream_version, events_table.c.hash
    ).where(
        tuple_(events_table.c.stream_id, events_table.c.stream_version).in_(
            select(latest.c.stream_id, latest.c.v)
        )
    )
    result = await conn.execute(query)
    return {row.stream_id: (row.stream_version, row.hash) for row in result}


def _build_rows(
    appends: Sequence[StreamAppend],
    heads: dict[str, tuple[int, str]],
    meta: dict[str, Any],
    recorded_at: Any,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for a in appends:
        version, prev_hash = heads.get(a.stream_id, (0, GENESIS))
        if version != a.expected_version:
            raise ConcurrencyError(a.stream_id, a.expected_version, version)
        for event in a.events:
            version += 1
            event_type, schema_version, data = serialize(event)
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
    return rows


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
