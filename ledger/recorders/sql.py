"""What the PostgreSQL and SQLite recorders share: the dialect-neutral
queries (SQLAlchemy Core), the choice between sending an append's writes as
data computed beforehand or in a transaction, and the one INSERT builder for
projection rows. The dialect's own SQL is in ``postgres.py`` / ``sqlite.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from session_ledger.ledger.db import (
    RowDecoder,
    autocommit,
    read_standalone,
    retry_stale,
    row_decoder,
    writer,
)
from session_ledger.ledger.recorder import (
    ConnectionLostError,
    EventBatch,
    Head,
    Lookup,
    Positions,
    Stored,
    StoredEvent,
)
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.writes import (
    Insert,
    Notify,
    PositionOf,
    Prior,
    Projection,
    Rows,
    Write,
)

#: Appends to more existing streams than this send their writes from a
#: transaction (see SqlRecorder.insert).
EXISTING_AS_DATA_MAX = 32

_latest = aliased(events_table)
_HEADS = select(events_table.c.stream_id, events_table.c.stream_version, events_table.c.hash).where(
    events_table.c.stream_id.in_(bindparam("ids", expanding=True)),
    events_table.c.stream_version
    == select(func.max(_latest.c.stream_version))
    .where(_latest.c.stream_id == events_table.c.stream_id)
    .scalar_subquery(),
)
_STORED_COLUMNS = [
    c for c in events_table.columns if c.name in StoredEvent._fields and c.name != "meta"
]
_SELECT_EVENTS = select(*_STORED_COLUMNS, events_table.c.meta)
_STREAM_COLUMNS = tuple(events_table.c[name] for name in StoredEvent._fields)


def stream_sql(stream_id: str, from_version: str) -> str:
    """``SELECT`` one stream's events from a version on, in StoredEvent's
    column order, with the dialect's placeholders for the two values."""
    names = ", ".join(c.name for c in _STREAM_COLUMNS)
    return (
        f"SELECT {names} FROM {events_table.name} "  # noqa: S608 (names and placeholders)
        f"WHERE stream_id = {stream_id} AND stream_version >= {from_version} "
        "ORDER BY stream_version"
    )


class SqlRecorder:
    """A recorder on a SQLAlchemy engine; subclasses say how to talk to
    their database (placeholders, one-statement appends, reads)."""

    #: ``SELECT stream_version, hash ... WHERE stream_id = <placeholder>``.
    HEAD_SQL: str
    #: :func:`stream_sql` with the dialect's placeholders.
    STREAM_SQL: str

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._reader = autocommit(engine)
        self._writer = writer(engine)
        self._first: dict[Lookup, tuple[str, int, RowDecoder]] = {}
        self._stored_event = _event_decoder(engine.dialect)
        #: Awaited inside an append's transaction just before COMMIT (tests
        #: widen the window between insert and commit with it).
        self.before_commit: Callable[[], Awaitable[None]] | None = None

    @property
    def dialect(self) -> Dialect:
        return self.engine.dialect

    # ------------------------------------------------------------ the dialect's

    async def _send(self, batch: EventBatch, writes: Sequence[Write]) -> Positions | None:
        """The events and ``writes`` at once, outside any transaction."""
        raise NotImplementedError

    async def _insert_in(self, conn: AsyncConnection, batch: EventBatch) -> Positions | None:
        """The events in ``conn``'s transaction (the first statement of it)."""
        raise NotImplementedError

    async def _fetch_in(self, conn: AsyncConnection, sql: str, params: Sequence[Any]) -> None:
        """One more statement in ``conn``'s transaction."""
        raise NotImplementedError

    def _write_sql(
        self, writes: Sequence[Write], positions: Positions
    ) -> list[tuple[str, list[Any]]]:
        """``writes`` as statements, positions filled in."""
        raise NotImplementedError

    def _first_sql(self, lookup: Lookup) -> tuple[str, int]:
        """The statement of :meth:`first` and how many times it binds the value."""
        raise NotImplementedError

    def _keys_sql(self, table: Table, keys: Sequence[str]) -> tuple[str, Sequence[Any]]:
        """``SELECT`` every column of the rows of ``table`` with these primary keys."""
        raise NotImplementedError

    # ------------------------------------------------------------------ writes

    async def heads(self, stream_ids: Sequence[str], *, hot: bool = True) -> dict[str, Head]:
        if hot and len(stream_ids) == 1:
            # The per-request case (a refresh, a revoke): one statement on
            # its own (ledger.db.read_standalone).
            stream_id = stream_ids[0]
            rows = await retry_stale(
                lambda: read_standalone(self._reader, self.HEAD_SQL, (stream_id,))
            )
            return {stream_id: Head(rows[0][0], rows[0][1])} if rows else {}
        if not stream_ids:
            return {}
        async with self._reader.connect() as conn:
            result = await conn.execute(_HEADS, {"ids": list(stream_ids)})
            return {row.stream_id: Head(row.stream_version, row.hash) for row in result}

    async def insert(
        self, batch: EventBatch, projections: Sequence[Projection]
    ) -> Positions | None:
        """As data when the projections can say their writes beforehand (one
        statement, or one hop): their prior rows are read first, on their
        own. Else in a transaction where they read after the insert: a
        projection that cannot vouch for what it read, or many existing
        streams (an expiry batch, a revoke-all of hundreds: round trips are
        few next to the work, and one big statement measured slower)."""
        writes: list[Write] | None = []
        if projections:
            existing = {r.stream_id for r in batch.rows if r.stream_version == 1}
            existing = {r.stream_id for r in batch.rows} - existing
            if len(existing) > EXISTING_AS_DATA_MAX:
                writes = None
            else:
                writes = await self._writes_before(batch, projections)
        if writes is not None:
            return await self._send(batch, writes)
        return await self._in_transaction(batch, projections)

    async def _writes_before(
        self, batch: EventBatch, projections: Sequence[Projection]
    ) -> list[Write] | None:
        writes: list[Write] = []
        for projection in projections:
            need = projection.prior(batch.events)
            prior: Rows = {}
            if need is not None and need.keys:
                rows = await retry_stale(functools.partial(self._read_keys, need))
                decode = _decoder(self.dialect, need.table)
                prior = _by_key(need.table, [decode(row) for row in rows])
            some = projection.writes(batch.events, prior, locked=False)
            if some is None:
                return None
            writes += some
        return writes

    async def _read_keys(self, need: Prior) -> list[Any]:
        sql, params = self._keys_sql(need.table, need.keys)
        return await read_standalone(self._reader, sql, params)

    async def _in_transaction(
        self, batch: EventBatch, projections: Sequence[Projection]
    ) -> Positions | None:
        committing = False
        try:
            async with self._writer.connect() as conn, conn.begin():
                positions = await self._insert_in(conn, batch)
                if positions is None:
                    await conn.rollback()
                    return None
                await self.project_in(conn, projections, batch.events, positions)
                if self.before_commit is not None:
                    await self.before_commit()
                committing = True  # leaving the block sends COMMIT
            return positions
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # A COMMIT that may have been sent is not tried again: it may
            # have landed.
            raise ConnectionLostError(exc, repeatable=not committing) from exc

    async def project_in(
        self,
        conn: AsyncConnection,
        projections: Sequence[Projection],
        events: Sequence[Any],
        positions: Positions | None = None,
    ) -> None:
        """The projections' writes for ``events``, on ``conn`` inside its
        transaction, each reading its prior rows there (replay uses this on
        its shadow tables)."""
        writes: list[Write] = []
        for projection in projections:
            need = projection.prior(events)
            prior: Rows = {}
            if need is not None and need.keys:
                table = need.table
                pk = _primary_key(table)
                query = select(table).where(table.c[pk].in_(list(need.keys)))
                prior = _by_key(table, [dict(r._mapping) for r in await conn.execute(query)])
            some = projection.writes(events, prior, locked=True)
            assert some is not None, "a projection must write what it reads under the lock"
            writes += some
        await self.write_in(conn, writes, positions)

    async def write_in(
        self, conn: AsyncConnection, writes: Sequence[Write], positions: Positions | None = None
    ) -> None:
        """``writes`` on ``conn``, inside its transaction (a Notify goes out
        when it commits, on the databases that have NOTIFY)."""
        for sql, params in self._write_sql(writes, positions or {}):
            await self._fetch_in(conn, sql, params)

    async def stored(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Stored]:
        query = select(
            events_table.c.position,
            events_table.c.stream_id,
            events_table.c.stream_version,
            events_table.c.hash,
        ).where(events_table.c.stream_id.in_({stream for stream, _ in keys}))
        async with self.engine.connect() as conn:
            return {
                (r.stream_id, r.stream_version): Stored(r.position, r.hash)
                for r in await conn.execute(query)
            }

    # ------------------------------------------------------------------- reads

    async def read_stream(self, stream_id: str, from_version: int) -> list[StoredEvent]:
        # One statement, so one snapshot of the stream's committed rows: it
        # may go the way of the hot reads (ledger.db.read_standalone).
        params = (stream_id, from_version)
        rows = await retry_stale(lambda: read_standalone(self._reader, self.STREAM_SQL, params))
        return [self._stored_event(row) for row in rows]

    async def read_all(self, after_position: int, limit: int) -> list[StoredEvent]:
        query = (
            _SELECT_EVENTS.where(events_table.c.position > after_position)
            .order_by(events_table.c.position)
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            return [StoredEvent(**row._asdict()) for row in await conn.execute(query)]

    async def max_position(self) -> int:
        async with self.engine.connect() as conn:
            value = await conn.scalar(select(func.coalesce(func.max(events_table.c.position), 0)))
            return int(value or 0)

    async def count_by_type(self) -> dict[str, int]:
        query = select(events_table.c.type, func.count()).group_by(events_table.c.type)
        async with self.engine.connect() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

    async def first(self, lookup: Lookup, value: Any) -> dict[str, Any] | None:
        # The hot read of every request: one statement on the driver (see
        # ledger.db.read_standalone), decoded by SQLAlchemy's type processors.
        known = self._first.get(lookup)
        if known is None:
            sql, binds = self._first_sql(lookup)
            known = self._first[lookup] = (sql, binds, _decoder(self.dialect, lookup.table))
        sql, binds, decode = known
        params = (value,) * binds
        rows = await retry_stale(lambda: read_standalone(self._reader, sql, params))
        return decode(rows[0]) if rows else None

    async def rows(self, table: Table, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        query = select(table)
        for name, value in where.items():
            column = table.c[name]
            if isinstance(value, list | tuple):
                query = query.where(column.in_(list(value)))
            else:
                query = query.where(column == value)

        async def read() -> list[dict[str, Any]]:
            async with self._reader.connect() as conn:
                return [dict(row._mapping) for row in await conn.execute(query)]

        return await retry_stale(read)


def _primary_key(table: Table) -> str:
    (column,) = table.primary_key.columns
    return column.name


def _by_key(table: Table, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    pk = _primary_key(table)
    return {row[pk]: row for row in rows}


def _event_decoder(dialect: Dialect) -> Callable[[Sequence[Any]], StoredEvent]:
    """A row of :func:`stream_sql` as a StoredEvent, with SQLAlchemy's own
    conversions for this dialect (as :func:`ledger.db.row_decoder`, without
    the dict in between: replays and reconstructions decode every event)."""
    steps = []
    for i, column in enumerate(_STREAM_COLUMNS):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            steps.append((i, process))
    make = StoredEvent._make

    def decode(values: Sequence[Any]) -> StoredEvent:
        row = list(values)
        for i, process in steps:
            row[i] = process(row[i])
        return make(row)

    return decode


@functools.cache
def _decoder(dialect: Dialect, table: Table) -> RowDecoder:
    return row_decoder(dialect, tuple(table.columns))


# ------------------------------------------------------- projection INSERTs

Bind = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True, eq=False)  # one per shape (cached): compared by identity
class Shape:
    """What every Insert into one table with one set of columns shares."""

    #: ``INSERT INTO t (a, b)`` (names the table itself knows: only they reach SQL).
    head: str
    columns: tuple[str, ...]
    #: SQLAlchemy's own conversions for this dialect (JSON to text, SQLite's
    #: text timestamps and integer booleans): the driver gets what
    #: SQLAlchemy's execute would have given it.
    binders: tuple[Bind, ...]
    conflict: Mapping[str | None, str]


@functools.cache
def shape(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> Shape:
    """The one builder of projection INSERTs (and of the ``sessions`` upsert)."""
    columns = tuple(table.c[key].name for key in keys)  # KeyError for unknown names
    binders = tuple(table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns)
    primary = [c.name for c in table.primary_key.columns]
    target = ", ".join(primary)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in primary)
    conflict = {
        None: "",
        "nothing": f" ON CONFLICT ({target}) DO NOTHING",
        "update": f" ON CONFLICT ({target}) DO UPDATE SET {updates}",
    }
    head = f"INSERT INTO {table.name} ({', '.join(columns)})"
    return Shape(head, columns, binders, conflict)


def bound(s: Shape, row: Mapping[str, Any]) -> list[Any]:
    """The row's values in column order, converted (PositionOf left as is)."""
    values = []
    for column, bind in zip(s.columns, s.binders, strict=True):
        value = row[column]
        if bind is not None and value is not None and type(value) is not PositionOf:
            value = bind(value)
        values.append(value)
    return values


#: Both databases cap bound parameters per statement (SQLite at 32766):
#: rows per INSERT stay below.
MAX_PARAMS = 30000


def insert_statements(
    dialect: Dialect,
    writes: Sequence[Write],
    positions: Mapping[tuple[str, int], int],
    mark: Callable[[int], str] | None = None,
) -> list[tuple[str, list[Any]]]:
    """One multi-row INSERT per Insert (and per 30,000 values), positions
    filled in; placeholders ``?``, or made by ``mark(n)`` (n from 1); Notify
    left out."""
    statements: list[tuple[str, list[Any]]] = []
    for write in writes:
        if not isinstance(write, Insert) or not write.rows:
            continue
        s = shape(dialect, write.table, tuple(write.rows[0]))
        per_statement = max(1, MAX_PARAMS // len(s.columns))
        row_sql = "(" + ", ".join(["?"] * len(s.columns)) + ")"
        for start in range(0, len(write.rows), per_statement):
            chunk = write.rows[start : start + per_statement]
            params: list[Any] = []
            for row in chunk:
                for value in bound(s, row):
                    if type(value) is PositionOf:
                        value = positions[(value.stream_id, value.stream_version)]
                    params.append(value)
            if mark is None:
                values = ", ".join([row_sql] * len(chunk))
            else:
                width = len(s.columns)
                values = ", ".join(
                    "(" + ", ".join(mark(r * width + c + 1) for c in range(width)) + ")"
                    for r in range(len(chunk))
                )
            sql = f"{s.head} VALUES {values}{s.conflict[write.on_conflict]}"
            statements.append((sql, params))
    return statements


def notify_payload(write: Notify, positions: Mapping[tuple[str, int], int]) -> str:
    """A Notify's payload once the positions are known."""
    payload = write.payload
    if type(payload) is PositionOf:
        payload = str(positions[(payload.stream_id, payload.stream_version)])
    return f"{payload}{write.suffix}"


def positions_of(returned: Sequence[Any], count: int) -> Positions | None:
    """(stream, version) -> position from an INSERT's RETURNING rows
    (position, stream_id, stream_version); None when fewer than ``count``
    rows came back (SQLite's guard held)."""
    if len(returned) != count:
        return None
    return {(r[1], r[2]): r[0] for r in returned}
