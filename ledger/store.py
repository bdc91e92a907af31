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

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from session_ledger.ledger.chain import GENESIS, canonical_json, event_hash_from_json, timestamp
from session_ledger.ledger.clock import Clock, SystemClock, utc
from session_ledger.ledger.db import (
    Driver,
    SqliteExecute,
    autocommit,
    driver_fetch,
    fetch_standalone,
    pooled,
    read_standalone,
    retry_stale,
    writer,
)
from session_ledger.ledger.domain.errors import (
    ConcurrencyError,
    EventValidationError,
    InvalidAppendError,
)
from session_ledger.ledger.domain.events import (
    Event,
    EventMetadata,
    RecordedEvent,
    deserialize,
    serialize,
)
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.writes import (
    PendingEvent,
    Write,
    pg_statement,
    sqlite_statements,
)

log = logging.getLogger(__name__)

MAX_STREAM_ID = 64
MAX_USER_ID = 128
#: Key of the PostgreSQL advisory lock that serialises appends (see _PG_LOCK).
APPEND_LOCK_KEY = 0x5E55_1011


#: Appends to more existing streams than this run the projections' apply
#: in a transaction (see _projection_writes).
EXISTING_AS_DATA_MAX = 32

_HEAD = (
    f"SELECT stream_version, hash FROM {events_table.name} "  # noqa: S608 (a name)
    "WHERE stream_id = {} ORDER BY stream_version DESC LIMIT 1"
)
_HEAD_PG = _HEAD.format("$1")
_HEAD_SQLITE = _HEAD.format("?")
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
        self._reader = autocommit(self.engine)
        #: Off only in the test that shows what the append lock prevents.
        self._serialise = True

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
        # Existing streams chain onto their head, read before any lock is
        # taken; the insert below re-checks it atomically (SQLite: a guard
        # in the statement; PostgreSQL: the unique (stream_id,
        # stream_version)), so a head that moves meanwhile is a conflict.
        prev_hashes = await self._prev_hashes(appends)
        rows = _Rows.build(prepared, prev_hashes, meta, recorded_at)
        writes = await self._projection_writes(rows)
        postgres = self._dialect == "postgresql"
        # One statement, atomic on its own: nothing to project, or (on
        # PostgreSQL) projections whose writes ride along as data.
        single = writes == [] and rows.statements(self._dialect) == 1
        single = single or (postgres and writes is not None)
        recorded: list[RecordedEvent] = []
        for attempt in (1, 2):
            sent = False
            try:
                if writes is not None:
                    # On the driver: PostgreSQL one statement in its own
                    # implicit transaction (see _PG_LOCK for how it still
                    # serialises appends; ledger.db.fetch_standalone);
                    # SQLite one transaction in one hop (ledger.db.pooled).
                    sent = True
                    if postgres:
                        positions = await self._pg_send(rows, writes)
                    else:
                        positions = await pooled(
                            self.engine, lambda d: self._sqlite_send(d, rows, writes)
                        )
                    recorded = rows.recorded(positions) if positions else []
                else:
                    async with self._writer.connect() as conn, conn.begin():
                        # On PostgreSQL SQLAlchemy sends BEGIN with the first
                        # statement it executes itself: this must be the one.
                        positions = await self._insert_in(conn, rows)
                        if positions is None:
                            await conn.rollback()
                        else:
                            recorded = rows.recorded(positions)
                            for projection in self.inline_projections:
                                await projection.apply(conn, recorded)
                        sent = True  # leaving the block sends COMMIT
                break
            except IntegrityError as exc:
                # PostgreSQL: the unique (stream_id, stream_version) rejected
                # the insert. Any other constraint (an inline projection's,
                # say) is not a stream conflict: let it through.
                async with self.engine.connect() as conn:
                    error = await _conflict(conn, appends)
                if error.actual_version is None:
                    raise
                if attempt == 2 and (own := await self._own_write(rows)) is not None:
                    recorded = rows.recorded(own)  # the first try did commit
                    break
                raise error from exc
            except DBAPIError as exc:
                # A pooled connection that died (server restart, failover)
                # fails its first statement; the stale pool is then dropped.
                # A lone statement is retried even when the outcome of the
                # first try is unknown: the unique (stream_id,
                # stream_version) keeps it from landing twice (and with it
                # the projection writes of the same statement), and
                # _own_write tells "the first try committed" from a real
                # conflict. A transaction whose COMMIT may have been sent is
                # not retried: its inline projections may have had effects
                # of their own.
                if attempt == 2 or (sent and not single) or not exc.connection_invalidated:
                    raise
        if not recorded:
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

    @property
    def _dialect(self) -> str:
        return self.engine.dialect.name

    async def _prev_hashes(self, appends: Sequence[StreamAppend]) -> dict[str, str]:
        """The hash each stream's new events chain onto; ConcurrencyError when
        a stream is not at its expected version (new streams are checked by
        the insert itself)."""
        existing = [a for a in appends if a.expected_version > 0]
        heads: dict[str, tuple[int, str]] = {}
        if len(existing) == 1:
            # The per-request case (a refresh, a revoke): one statement on its
            # own (ledger.db.read_standalone).
            stream_id = existing[0].stream_id
            sql = _HEAD_PG if self._dialect == "postgresql" else _HEAD_SQLITE
            rows = await retry_stale(lambda: read_standalone(self._reader, sql, (stream_id,)))
            if rows:
                heads[stream_id] = (rows[0][0], rows[0][1])
        elif existing:
            async with self._reader.connect() as conn:
                heads = await _stream_heads(conn, [a.stream_id for a in existing])
        hashes: dict[str, str] = {}
        for a in appends:
            if a.expected_version == 0:
                hashes[a.stream_id] = GENESIS
                continue
            version, head_hash = heads.get(a.stream_id, (0, GENESIS))
            if version != a.expected_version:
                raise ConcurrencyError(a.stream_id, a.expected_version, version)
            hashes[a.stream_id] = head_hash
        return hashes

    async def _projection_writes(self, rows: _Rows) -> list[Write] | None:
        """Every inline projection's writes for this append, as data; None
        when the projections must run on the connection instead (a
        projection that cannot say, or many existing streams). See
        ledger.writes."""
        if not self.inline_projections:
            return []
        new = all(p.append.expected_version == 0 for p in rows.prepared)
        if not new and len(rows.prepared) > EXISTING_AS_DATA_MAX:
            # Many existing streams at once (an expiry batch, a revoke-all of
            # hundreds): round trips are few next to the work, and the
            # projections' reads and one big statement measured slower
            # (bench.expiry: 3,500-3,900 against 4,300-4,800 per s).
            return None
        # The optional capabilities ledger.writes.NewStreamWrites and
        # ExistingStreamWrites: every projection must have the one needed.
        capability = "new_stream_writes" if new else "existing_stream_writes"
        writers: list[Any] = []
        for projection in self.inline_projections:
            say = getattr(projection, capability, None)
            if say is None:
                return None
            writers.append(say)
        pending = rows.pending()
        if new:
            return [w for say in writers for w in say(pending)]
        writes: list[Write] = []
        for say in writers:
            some = await say(self.engine, pending)
            if some is None:
                return None
            writes += some
        return writes

    async def _pg_send(
        self, rows: _Rows, writes: Sequence[Write]
    ) -> dict[tuple[str, int], int] | None:
        """PostgreSQL: the one statement (see ledger.db.fetch_standalone)."""
        sql, params, count = self._pg_statement(rows, writes)
        return _positions(await fetch_standalone(self.engine, sql, params), count)

    def _pg_statement(self, rows: _Rows, writes: Sequence[Write]) -> tuple[str, Sequence[Any], int]:
        """PostgreSQL: the append and ``writes`` as one statement (its text,
        parameters, and the number of events it inserts)."""
        ((sql, params, count),) = rows.chunks("postgresql")
        if not self._serialise:
            sql = sql.replace(_PG_LOCK, "")
        if not writes:
            return sql, params, count
        fused_sql, fused = pg_statement(self.engine.dialect, sql, params, writes)
        return fused_sql, fused, count

    async def _sqlite_send(
        self, driver: Driver, rows: _Rows, writes: Sequence[Write]
    ) -> dict[tuple[str, int], int] | None:
        """SQLite: the append and ``writes`` on the driver; positions, or None
        when a stream moved (the guard in the INSERT)."""
        if not writes and rows.statements("sqlite") == 1:
            ((sql, params, count),) = rows.chunks("sqlite")
            return _positions(await driver.fetch(sql, params), count)
        dialect = self.engine.dialect

        def transaction(execute: SqliteExecute) -> dict[tuple[str, int], int] | None:
            # Runs in SQLite's thread, inside BEGIN IMMEDIATE: the write lock
            # is held from the start, so the guard in the INSERT reads what
            # no one else can change.
            positions: dict[tuple[str, int], int] = {}
            for sql, params, count in rows.chunks("sqlite"):
                chunk = _positions(execute(sql, params), count)
                if chunk is None:
                    execute("ROLLBACK", ())
                    return None
                positions.update(chunk)
            for statement, values in sqlite_statements(dialect, writes, positions):
                execute(statement, values)
            return positions

        return await driver.sqlite_transaction(transaction)

    async def _insert_in(
        self, conn: AsyncConnection, rows: _Rows
    ) -> dict[tuple[str, int], int] | None:
        """The rows inserted in ``conn``'s transaction; positions, or None
        when a stream moved. SQLite: on the driver (one hop to its thread
        instead of four); PostgreSQL: through SQLAlchemy, which sends BEGIN
        with it."""
        positions: dict[tuple[str, int], int] = {}
        for sql, params, count in rows.chunks(self._dialect):
            if not self._serialise:
                sql = sql.replace(_PG_LOCK, "")
            if self._dialect == "sqlite":
                returned = await driver_fetch(conn, sql, params)
            else:
                returned = list((await conn.exec_driver_sql(sql, params)).all())
            chunk = _positions(returned, count)
            if chunk is None:
                return None
            positions.update(chunk)
        return positions

    async def _own_write(self, rows: _Rows) -> dict[tuple[str, int], int] | None:
        """The positions of ``rows`` if exactly these rows (same hashes) are
        stored: an append whose first try committed although its connection
        died before the answer came back."""
        keys = rows.keys()
        query = select(
            events_table.c.position,
            events_table.c.stream_id,
            events_table.c.stream_version,
            events_table.c.hash,
        ).where(events_table.c.stream_id.in_({stream for stream, _ in keys}))
        async with self.engine.connect() as conn:
            stored = {(r.stream_id, r.stream_version): r for r in await conn.execute(query)}
        hashes = rows.hashes()
        if any(key not in stored or stored[key].hash != hashes[key] for key in keys):
            return None
        return {key: stored[key].position for key in keys}

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


def _positions(returned: Sequence[Any], count: int) -> dict[tuple[str, int], int] | None:
    """(stream, version) -> position from an INSERT's RETURNING rows; None
    when fewer than ``count`` rows came back (SQLite's guard held)."""
    if len(returned) != count:
        return None
    return {(r[1], r[2]): r[0] for r in returned}


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
    #: (validated event, type, schema version, canonical data JSON) per event.
    events: list[tuple[Event, str, int, str]]


def _prepare(a: StreamAppend) -> _Prepared:
    """Serialise each event once, before anything is written: the canonical
    JSON is both what is stored and what is hashed."""
    events = []
    for event in a.events:
        try:
            event_type, schema_version, data = serialize(event)
            data_json = canonical_json(data)
        except (TypeError, ValueError) as exc:  # PydanticSerializationError is a ValueError
            # A nested value changed in place after validation (frozen
            # models still hold mutable dicts).
            raise EventValidationError(f"{event.type}: not JSON: {exc}") from None
        events.append((event, event_type, schema_version, data_json))
    return _Prepared(a, events)


#: SQLite's limit on bound parameters is 32766; stay well below it.
_SQLITE_CHUNK_ROWS = 500
_COLUMNS = (
    "stream_id, stream_version, type, schema_version, data, meta, user_id, "
    "recorded_at, prev_hash, hash"
)
#: Serialises appends so that positions are handed out in commit order. A
#: sequence alone hands out positions at INSERT time, and transactions commit
#: in any order: a reader that has seen position 12 committed would never
#: look back for an 11 that commits a moment later. The transaction-scoped
#: advisory lock is taken by this uncorrelated EXISTS, which PostgreSQL
#: evaluates once as an InitPlan before the first row is produced, so before
#: any position is drawn from the identity sequence; it is released only
#: after COMMIT has made the rows visible, so the next appender's positions
#: are all higher than every visible one. Taking it inside the INSERT saves
#: a round trip over a separate SELECT. The INSERT's snapshot predates the
#: lock, which is harmless: it reads nothing (the unique index checks the
#: latest rows whatever the snapshot). Cost: appends do not run in parallel
#: (measured in bench/append.py); reads are unaffected.
_PG_LOCK = f"WHERE EXISTS (SELECT FROM pg_advisory_xact_lock({APPEND_LOCK_KEY}))"
#: Arrays instead of one VALUES tuple per row: one statement text (prepared
#: once) for any batch size, and no limit on the number of rows.
_PG_INSERT = f"""INSERT INTO ledger_events ({_COLUMNS})
SELECT s, v, t, sv, d::json, $1::json, u, $2::timestamptz, p, h
FROM unnest($3::text[], $4::int[], $5::text[], $6::int[], $7::text[], $8::text[],
            $9::text[], $10::text[]) AS x(s, v, t, sv, d, u, p, h)
{_PG_LOCK}
RETURNING position, stream_id, stream_version"""  # noqa: S608 (constants only)


def _sqlite_insert(rows: int, streams: int) -> str:
    """A multi-row INSERT guarded by the streams' heads: it inserts nothing
    when any stream already holds a version it is about to write. SQLite has
    one writer at a time, and the guard reads inside the write transaction,
    so nothing can move between the check and the insert; a conflict is an
    empty result rather than a failed statement (a failed INSERT ... RETURNING
    can leave sqlite3's statement, and with it the write lock, behind).

    The guard is a scalar subquery, which SQLite runs once per statement (an
    uncorrelated NOT EXISTS in the same place was run once per row)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    guard = " OR ".join(["(stream_id = ? AND stream_version >= ?)"] * streams)
    # Placeholders only: every value is a bound parameter.
    return "".join(
        (
            f"INSERT INTO ledger_events ({_COLUMNS}) SELECT * FROM (VALUES {values}) ",  # noqa: S608
            f"WHERE (SELECT 1 FROM ledger_events WHERE {guard} LIMIT 1) IS NULL ",  # noqa: S608
            "RETURNING position, stream_id, stream_version",
        )
    )


#: SQLite keeps datetimes as text: format them exactly as SQLAlchemy does.
_SQLITE_TIMESTAMP = events_table.c.recorded_at.type.dialect_impl(SQLiteDialect()).bind_processor(
    SQLiteDialect()
)


@dataclass
class _Rows:
    """The rows of one append, hashed and ready for either database."""

    prepared: Sequence[_Prepared]
    metadata: EventMetadata
    meta_json: str
    recorded_at: datetime
    #: (stream_id, version, type, schema_version, data JSON, user_id, prev, hash)
    rows: list[tuple[str, int, str, int, str, str | None, str, str]]

    @classmethod
    def build(
        cls,
        prepared: Sequence[_Prepared],
        prev_hashes: dict[str, str],
        meta: dict[str, Any],
        recorded_at: datetime,
    ) -> _Rows:
        meta_json = canonical_json(meta)
        stamp = timestamp(recorded_at)
        rows = []
        for p in prepared:
            a = p.append
            version, prev_hash = a.expected_version, prev_hashes[a.stream_id]
            for _, event_type, schema_version, data_json in p.events:
                version += 1
                digest = event_hash_from_json(
                    prev_hash,
                    stream_id=a.stream_id,
                    stream_version=version,
                    event_type=event_type,
                    schema_version=schema_version,
                    data_json=data_json,
                    meta_json=meta_json,
                    user_id=a.user_id,
                    recorded_at=stamp,
                )
                row = (a.stream_id, version, event_type, schema_version, data_json, a.user_id)
                rows.append((*row, prev_hash, digest))
                prev_hash = digest
        metadata = EventMetadata.model_validate(meta)  # exactly what is stored
        return cls(prepared, metadata, meta_json, recorded_at, rows)

    def keys(self) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in self.rows]

    def hashes(self) -> dict[tuple[str, int], str]:
        return {(r[0], r[1]): r[7] for r in self.rows}

    def statements(self, dialect: str) -> int:
        """How many statements :meth:`chunks` makes."""
        if dialect == "postgresql":
            return 1
        return -(-len(self.rows) // _SQLITE_CHUNK_ROWS)

    def chunks(self, dialect: str) -> list[tuple[str, tuple[Any, ...], int]]:
        """(SQL, parameters, row count) per statement."""
        if dialect == "postgresql":
            columns = list(zip(*self.rows, strict=True))
            arrays = (self.meta_json, self.recorded_at, *map(list, columns))
            return [(_PG_INSERT, arrays, len(self.rows))]
        assert _SQLITE_TIMESTAMP is not None
        stamp = _SQLITE_TIMESTAMP(self.recorded_at)
        statements = []
        for start in range(0, len(self.rows), _SQLITE_CHUNK_ROWS):
            chunk = self.rows[start : start + _SQLITE_CHUNK_ROWS]
            params: list[Any] = []
            first: dict[str, int] = {}
            for (
                stream_id,
                version,
                event_type,
                schema_version,
                data,
                user_id,
                prev,
                digest,
            ) in chunk:
                params += (stream_id, version, event_type, schema_version, data)
                params += (self.meta_json, user_id, stamp, prev, digest)
                first.setdefault(stream_id, version)
            for guard in first.items():
                params += guard
            statements.append((_sqlite_insert(len(chunk), len(first)), tuple(params), len(chunk)))
        return statements

    def pending(self) -> list[PendingEvent]:
        metadata = self.metadata
        events = [event for p in self.prepared for event, *_ in p.events]
        return [
            PendingEvent(stream_id, version, event, metadata, user_id, self.recorded_at)
            for (stream_id, version, *_, user_id, _, _), event in zip(
                self.rows, events, strict=True
            )
        ]

    def recorded(self, positions: dict[tuple[str, int], int]) -> list[RecordedEvent]:
        metadata = self.metadata
        events = [event for p in self.prepared for event, *_ in p.events]
        recorded = [
            RecordedEvent(
                position=positions[(stream_id, version)],
                stream_id=stream_id,
                stream_version=version,
                event=event,
                metadata=metadata,
                user_id=user_id,
                recorded_at=self.recorded_at,
                prev_hash=prev,
                hash=digest,
            )
            for (stream_id, version, _, _, _, user_id, prev, digest), event in zip(
                self.rows, events, strict=True
            )
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
