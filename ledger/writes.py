"""Inline projection writes as data, so that an append of new streams (a
sign-in) goes to the database in one statement.

An inline projection normally runs its statements on the append's
connection, inside the append's transaction (``InlineProjection.apply``):
BEGIN, the events, one statement per projection, COMMIT, a round trip each.
For brand-new streams a projection's rows follow from the events alone, so a
projection may also say *what* it writes (``new_stream_writes``) and leave
the sending to the store:

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from sqlalchemy import Table
from sqlalchemy.engine import Dialect

from ledger.events import Event, EventMetadata


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
    """``pg_notify(channel, payload)``, delivered on commit (PostgreSQL only;
    nothing elsewhere)."""

    channel: str
    payload: str | PositionOf


Write = Insert | Notify


@runtime_checkable
class NewStreamWrites(Protocol):
    """The capability an inline projection adds to ``apply``: its writes for
    an append whose every stream is new, as data. Must equal what ``apply``
    would do for the same events."""

    def new_stream_writes(self, pending: Sequence[PendingEvent]) -> Sequence[Write]: ...


Bind = Callable[[Any], Any] | None


@functools.cache
def _binders(dialect: Dialect, table: Table) -> dict[str, Bind]:
    # SQLAlchemy's own conversions for this dialect (JSON to text, SQLite's
    # text timestamps and integer booleans): the driver gets what
    # SQLAlchemy's execute would have given it.
    return {c.name: c.type.dialect_impl(dialect).bind_processor(dialect) for c in table.columns}


def _columns(write: Insert) -> list[str]:
    # Names the table itself knows (KeyError otherwise): only they reach SQL.
    return [write.table.c[name].name for name in write.rows[0]]


def _conflict_clause(insert: Insert, columns: Sequence[str]) -> str:
    if insert.on_conflict is None:
        return ""
    keys = [c.name for c in insert.table.primary_key.columns]
    target = ", ".join(keys)
    if insert.on_conflict == "nothing":
        return f" ON CONFLICT ({target}) DO NOTHING"
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    return f" ON CONFLICT ({target}) DO UPDATE SET {updates}"


class _PgParams:
    """Numbered parameters after the ones the event INSERT uses."""

    def __init__(self, first: int) -> None:
        self.values: list[Any] = []
        self.first = first

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${self.first + len(self.values) - 1}"

    def value(self, value: Any, bind: Bind) -> str:
        if isinstance(value, PositionOf):
            stream = self.add(value.stream_id)
            version = self.add(value.stream_version)
            where = f"stream_id = {stream} AND stream_version = {version}"
            return f"(SELECT position FROM ev WHERE {where})"  # noqa: S608 (placeholders)
        return self.add(value if bind is None or value is None else bind(value))


def pg_statement(
    dialect: Dialect, insert_sql: str, insert_params: Sequence[Any], writes: Sequence[Write]
) -> tuple[str, list[Any]]:
    """The event INSERT (``insert_sql``: ``INSERT ... RETURNING position,
    stream_id, stream_version``) with ``writes`` as one statement returning
    the same columns.

    Each Insert is a data-modifying CTE, which PostgreSQL runs to completion
    whether or not the main query reads it; all of them commit or fail with
    the events. Parameters in VALUES take their types from the target
    columns. Each Notify is an uncorrelated scalar subquery of the main
    query (an InitPlan: evaluated once, not once per returned row)."""
    params = _PgParams(len(insert_params) + 1)
    ctes = [f"ev AS ({insert_sql})"]
    notifies: list[str] = []
    for write in writes:
        if isinstance(write, Notify):
            channel = params.add(write.channel)
            payload = params.value(write.payload, None)
            if isinstance(write.payload, PositionOf):
                payload = f"{payload}::text"
            notifies.append(f", (SELECT pg_notify({channel}, {payload}))")
            continue
        if not write.rows:
            continue
        columns = _columns(write)
        binders = _binders(dialect, write.table)
        values = ", ".join(
            "(" + ", ".join(params.value(row[c], binders[c]) for c in columns) + ")"
            for row in write.rows
        )
        # Table and column names from the Table, values all bound.
        ctes.append(
            f"w{len(ctes)} AS (INSERT INTO {write.table.name} ({', '.join(columns)}) "  # noqa: S608
            f"VALUES {values}{_conflict_clause(write, columns)})"
        )
    sql = (
        f"WITH {', '.join(ctes)} "  # noqa: S608 (built above from names and placeholders)
        f"SELECT position, stream_id, stream_version{''.join(notifies)} FROM ev"
    )
    return sql, [*insert_params, *params.values]


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
        columns = _columns(write)
        binders = _binders(dialect, write.table)
        per_statement = max(1, _SQLITE_MAX_PARAMS // len(columns))
        row_sql = "(" + ", ".join(["?"] * len(columns)) + ")"
        head = f"INSERT INTO {write.table.name} ({', '.join(columns)}) VALUES "  # noqa: S608
        tail = _conflict_clause(write, columns)
        for start in range(0, len(write.rows), per_statement):
            chunk = write.rows[start : start + per_statement]
            params: list[Any] = []
            for row in chunk:
                for c in columns:
                    value = row[c]
                    if isinstance(value, PositionOf):
                        value = positions[(value.stream_id, value.stream_version)]
                    elif value is not None and (bind := binders[c]) is not None:
                        value = bind(value)
                    params.append(value)
            statements.append((head + ", ".join([row_sql] * len(chunk)) + tail, params))
    return statements
