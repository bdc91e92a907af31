"""Inline projection writes as data, so that an append goes to the database
in one statement (PostgreSQL) or one hop to its thread (SQLite).

An inline projection may run its statements on the append's connection,
inside the append's transaction (``InlineProjection.apply``): BEGIN, the
events, one statement per projection, COMMIT, a round trip each. It may
instead say *what* it writes and leave the sending to the store: for new
streams (a sign-in) from the events alone (``new_stream_writes``), for
existing ones (a refresh, a touch, a revoke) from what it read before the
append (``existing_stream_writes``, which may decline: the append then runs
``apply``):

* PostgreSQL: every write becomes a data-modifying CTE beside the event
  INSERT, all one statement, atomic without BEGIN / COMMIT
  (:func:`pg_statement`);
* SQLite (no DML in CTEs): one statement per write in the append's
  transaction, on the driver (:func:`sqlite_statements`).

A value may be the position of one of the events being appended
(:class:`PositionOf`): PostgreSQL reads it from the INSERT's RETURNING rows,
SQLite from the positions the INSERT returned.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.domain.events import Event, EventMetadata


@dataclass(frozen=True, slots=True)
class PositionOf:
    """The ledger position the event (``stream_id``, ``stream_version``) of
    this append will get: known only once it is inserted."""

    stream_id: str
    stream_version: int


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event about to be appended: a RecordedEvent but for its position,
    which stands in as a :class:`PositionOf`."""

    stream_id: str
    stream_version: int
    event: Event
    metadata: EventMetadata
    user_id: str | None
    recorded_at: datetime

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def position(self) -> PositionOf:
        return PositionOf(self.stream_id, self.stream_version)


@dataclass(frozen=True, slots=True)
class Insert:
    """Rows for ``table`` (each a mapping of every column written)."""

    table: Table
    rows: Sequence[Mapping[str, Any]]
    #: "update": a row whose primary key exists replaces the other columns;
    #: "nothing": it is skipped; None: it is an error (IntegrityError).
    on_conflict: Literal["update", "nothing"] | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """``pg_notify(channel, payload || suffix)``, delivered on commit
    (PostgreSQL only; nothing elsewhere)."""

    channel: str
    payload: str | PositionOf
    suffix: str = ""


Write = Insert | Notify


class NewStreamWrites(Protocol):
    """The capability an inline projection adds to ``apply``: its writes for
    an append whose every stream is new, as data. Must equal what ``apply``
    would do for the same events."""

    def new_stream_writes(self, pending: Sequence[PendingEvent]) -> Sequence[Write]: ...


class ExistingStreamWrites(Protocol):
    """The same capability for an append to streams that already exist (a
    refresh, a touch, a revoke): the writes may depend on what the
    projection holds for those streams, so it reads that first, before the
    append and outside its transaction, and returns None when it cannot
    vouch for what it read (the append then runs ``apply`` in a transaction
    as before). What it read is the state after each stream's expected
    version when the projection checks its own record of that version: the
    append lands only if every stream is still at that version (the INSERT's
    guard on SQLite, the unique (stream_id, stream_version) on PostgreSQL),
    and then the writes land with it."""

    async def existing_stream_writes(
        self, engine: AsyncEngine, pending: Sequence[PendingEvent]
    ) -> Sequence[Write] | None: ...


class WritesFromEvents(ABC):
    """Base of inline projections whose writes follow from the events alone,
    not from anything the projection holds (audit sightings, NOTIFYs): the
    same writes serve new streams and existing ones."""

    @abstractmethod
    def new_stream_writes(self, pending: Sequence[PendingEvent]) -> list[Write]: ...

    async def existing_stream_writes(
        self, _engine: AsyncEngine, pending: Sequence[PendingEvent]
    ) -> list[Write]:
        return self.new_stream_writes(pending)


Bind = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True, eq=False)  # one per shape (cached): compared by identity
class _Shape:
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
def _shape(dialect: Dialect, table: Table, keys: tuple[str, ...]) -> _Shape:
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
    return _Shape(head, columns, binders, conflict)


def _bound(shape: _Shape, row: Mapping[str, Any]) -> list[Any]:
    """The row's values in column order, converted (PositionOf left as is)."""
    values = []
    for column, bind in zip(shape.columns, shape.binders, strict=True):
        value = row[column]
        if bind is not None and value is not None and type(value) is not PositionOf:
            value = bind(value)
        values.append(value)
    return values


def pg_statement(
    dialect: Dialect, insert_sql: str, insert_params: Sequence[Any], writes: Sequence[Write]
) -> tuple[str, list[Any]]:
    """The event INSERT (``insert_sql``: ``INSERT ... RETURNING position,
    stream_id, stream_version``) with ``writes`` as one statement returning
    the same columns, and its parameters."""
    params = list(insert_params)
    signature: list[_NotifySig | _InsertSig] = []
    for write in writes:
        if isinstance(write, Notify):
            params.append(write.channel)
            payload = write.payload
            if type(payload) is PositionOf:
                params += (payload.stream_id, payload.stream_version)
            else:
                params.append(payload)
            if write.suffix:
                params.append(write.suffix)
            signature.append(_NotifySig(type(payload) is PositionOf, bool(write.suffix)))
            continue
        if not write.rows:
            continue
        shape = _shape(dialect, write.table, tuple(write.rows[0]))
        rows: list[tuple[int, ...]] = []
        for row in write.rows:
            at: tuple[int, ...] = ()
            for i, value in enumerate(_bound(shape, row)):
                if type(value) is PositionOf:
                    params += (value.stream_id, value.stream_version)
                    at += (i,)
                else:
                    params.append(value)
            rows.append(at)
        signature.append(_InsertSig(shape, write.on_conflict, tuple(rows)))
    return _pg_sql(insert_sql, len(insert_params), tuple(signature)), params


@dataclass(frozen=True, slots=True)
class _NotifySig:
    position: bool
    suffix: bool = False


@dataclass(frozen=True, slots=True)
class _InsertSig:
    shape: _Shape
    on_conflict: str | None
    #: Per row, the indexes of the columns whose value is a PositionOf.
    rows: tuple[tuple[int, ...], ...]


@functools.lru_cache(maxsize=256)  # shapes vary only with batch sizes
def _pg_sql(insert_sql: str, taken: int, signature: tuple[_NotifySig | _InsertSig, ...]) -> str:
    """The statement text for one shape of writes (cached: a sign-in always
    has the same one, so its text is built once and prepared once).

    Each Insert is a data-modifying CTE, which PostgreSQL runs to completion
    whether or not the main query reads it; all of them commit or fail with
    the events. Parameters in VALUES take their types from the target
    columns; a PositionOf is a scalar subquery over the INSERT's RETURNING
    rows. Each Notify is an uncorrelated scalar subquery of the main query
    (an InitPlan: evaluated once, not once per returned row)."""
    n = taken

    def mark() -> str:
        nonlocal n
        n += 1
        return f"${n}"

    def position() -> str:
        where = f"stream_id = {mark()} AND stream_version = {mark()}"
        return f"(SELECT position FROM ev WHERE {where})"  # noqa: S608 (placeholders)

    ctes = [f"ev AS ({insert_sql})"]
    notifies: list[str] = []
    for entry in signature:
        if isinstance(entry, _NotifySig):
            channel = mark()
            payload = f"{position()}::text" if entry.position else mark()
            if entry.suffix:
                payload = f"{payload} || {mark()}::text"
            notifies.append(f", (SELECT pg_notify({channel}, {payload}))")
            continue
        shape = entry.shape
        tuples = []
        for at in entry.rows:
            marks = (position() if i in at else mark() for i in range(len(shape.columns)))
            tuples.append(f"({', '.join(marks)})")
        conflict = shape.conflict[entry.on_conflict]
        ctes.append(f"w{len(ctes)} AS ({shape.head} VALUES {', '.join(tuples)}{conflict})")
    return (
        f"WITH {', '.join(ctes)} "  # noqa: S608 (built above from names and placeholders)
        f"SELECT position, stream_id, stream_version{''.join(notifies)} FROM ev"
    )


#: SQLite's limit on bound parameters is 32766: rows per INSERT stay below it.
_SQLITE_MAX_PARAMS = 30000


def sqlite_statements(
    dialect: Dialect, writes: Sequence[Write], positions: Mapping[tuple[str, int], int]
) -> list[tuple[str, list[Any]]]:
    """One multi-row INSERT per Insert (and per 30,000 values), positions
    filled in; Notify is PostgreSQL's and writes nothing here."""
    statements: list[tuple[str, list[Any]]] = []
    for write in writes:
        if isinstance(write, Notify) or not write.rows:
            continue
        shape = _shape(dialect, write.table, tuple(write.rows[0]))
        row_sql = "(" + ", ".join(["?"] * len(shape.columns)) + ")"
        per_statement = max(1, _SQLITE_MAX_PARAMS // len(shape.columns))
        for start in range(0, len(write.rows), per_statement):
            chunk = write.rows[start : start + per_statement]
            params: list[Any] = []
            for row in chunk:
                for value in _bound(shape, row):
                    if type(value) is PositionOf:
                        value = positions[(value.stream_id, value.stream_version)]
                    params.append(value)
            values = ", ".join([row_sql] * len(chunk))
            sql = f"{shape.head} VALUES {values}{shape.conflict[write.on_conflict]}"
            statements.append((sql, params))
    return statements
