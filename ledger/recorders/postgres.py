"""The PostgreSQL recorder (asyncpg): every append one statement, projection
writes riding along as data-modifying CTEs, on held connections; appends run
in parallel (see _INSERT and ledger.horizon)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from session_ledger.ledger.db import fetch_standalone
from session_ledger.ledger.recorder import ConnectionLostError, EventBatch, Lookup, Positions
from session_ledger.ledger.recorders.sql import (
    Shape,
    SqlRecorder,
    bound,
    insert_statements,
    notify_payload,
    positions_of,
    shape,
    stream_sql,
)
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.writes import Notify, PositionOf, Write

_COLUMNS = (
    "stream_id, stream_version, type, schema_version, data, meta, user_id, "
    "recorded_at, prev_hash, hash"
)
#: No lock: appends run in parallel. Positions come from the identity
#: sequence when the rows are inserted, and transactions commit in any
#: order, so a reader following positions could skip one that commits late.
#: Each row records its transaction instead (``xid``, filled in by the
#: column's default, pg_current_xact_id()), and followers read in (xid,
#: position) order below the oldest running transaction: see ledger.horizon.
#: Arrays instead of one VALUES tuple per row: one statement text (prepared
#: once) for any batch size, and no limit on the number of rows.
_INSERT = f"""INSERT INTO ledger_events ({_COLUMNS})
SELECT s, v, t, sv, d::json, $1::json, u, $2::timestamptz, p, h
FROM unnest($3::text[], $4::int[], $5::text[], $6::int[], $7::text[], $8::text[],
            $9::text[], $10::text[]) AS x(s, v, t, sv, d, u, p, h)
RETURNING position, stream_id, stream_version"""  # noqa: S608 (constants only)
_HEAD = (
    f"SELECT stream_version, hash FROM {events_table.name} "  # noqa: S608 (a name)
    "WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1"
)


def _dollar(n: int) -> str:
    return f"${n}"


class PostgresRecorder(SqlRecorder):
    HEAD_SQL = _HEAD
    STREAM_SQL = stream_sql("$1", "$2")

    def _insert(self, batch: EventBatch) -> tuple[str, tuple[Any, ...]]:
        columns = list(zip(*batch.rows, strict=True))
        arrays = (batch.meta_json, batch.recorded_at, *map(list, columns))
        return _INSERT, arrays

    async def _send(self, batch: EventBatch, writes: Sequence[Write]) -> Positions | None:
        # One statement in its own implicit transaction, on a held
        # connection (ledger.db.fetch_standalone).
        sql, params = self._insert(batch)
        if writes:
            sql, fused = _statement(self.dialect, sql, params, writes)
            params = tuple(fused)
        try:
            returned = await fetch_standalone(self.engine, sql, params)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # One statement: the unique (stream_id, stream_version) keeps a
            # second try from landing twice (and the writes with it).
            raise ConnectionLostError(exc, repeatable=True) from exc
        return positions_of(returned, len(batch.rows))

    async def _insert_in(self, conn: AsyncConnection, batch: EventBatch) -> Positions | None:
        # Through SQLAlchemy, which sends BEGIN with the first statement it
        # executes itself: this must be the one.
        sql, params = self._insert(batch)
        returned = list((await conn.exec_driver_sql(sql, params)).all())
        return positions_of(returned, len(batch.rows))

    async def _fetch_in(self, conn: AsyncConnection, sql: str, params: Sequence[Any]) -> None:
        await conn.exec_driver_sql(sql, tuple(params))

    def _write_sql(
        self, writes: Sequence[Write], positions: Positions
    ) -> list[tuple[str, list[Any]]]:
        statements = insert_statements(self.dialect, writes, positions, _dollar)
        for write in writes:
            if isinstance(write, Notify):
                payload = notify_payload(write, positions)
                statements.append(("SELECT pg_notify($1, $2)", [write.channel, payload]))
        return statements

    def _first_sql(self, lookup: Lookup) -> tuple[str, int]:
        table, column = lookup.table, lookup.column
        names = ", ".join(f"t.{c.name}" for c in table.columns)
        sql = f"SELECT {names} FROM {table.name} t WHERE t.{column} = $1"  # noqa: S608 (names)
        if lookup.via is not None:
            # The current key is by far the common case; UNION ALL ... LIMIT 1
            # stops there and only looks in ``via`` when needed.
            pk = _pk(table)
            sql += (
                f" UNION ALL SELECT {names} FROM {table.name} t JOIN {lookup.via.name} v "  # noqa: S608
                f"ON v.{pk} = t.{pk} WHERE v.{column} = $1 LIMIT 1"
            )
        return sql, 1

    def _keys_sql(self, table: Table, keys: Sequence[str]) -> tuple[str, Sequence[Any]]:
        names = ", ".join(c.name for c in table.columns)
        sql = f"SELECT {names} FROM {table.name} WHERE {_pk(table)} = ANY($1)"  # noqa: S608
        return sql, (list(keys),)


def _pk(table: Table) -> str:
    (column,) = table.primary_key.columns
    return column.name


def _statement(
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
        s = shape(dialect, write.table, tuple(write.rows[0]))
        rows: list[tuple[int, ...]] = []
        for row in write.rows:
            at: tuple[int, ...] = ()
            for i, value in enumerate(bound(s, row)):
                if type(value) is PositionOf:
                    params += (value.stream_id, value.stream_version)
                    at += (i,)
                else:
                    params.append(value)
            rows.append(at)
        signature.append(_InsertSig(s, write.on_conflict, tuple(rows)))
    return _sql(insert_sql, len(insert_params), tuple(signature)), params


@dataclass(frozen=True, slots=True)
class _NotifySig:
    position: bool
    suffix: bool = False


@dataclass(frozen=True, slots=True)
class _InsertSig:
    shape: Shape
    on_conflict: str | None
    #: Per row, the indexes of the columns whose value is a PositionOf.
    rows: tuple[tuple[int, ...], ...]


@functools.lru_cache(maxsize=256)  # shapes vary only with batch sizes
def _sql(insert_sql: str, taken: int, signature: tuple[_NotifySig | _InsertSig, ...]) -> str:
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
        s = entry.shape
        tuples = []
        for at in entry.rows:
            marks = (position() if i in at else mark() for i in range(len(s.columns)))
            tuples.append(f"({', '.join(marks)})")
        conflict = s.conflict[entry.on_conflict]
        ctes.append(f"w{len(ctes)} AS ({s.head} VALUES {', '.join(tuples)}{conflict})")
    return (
        f"WITH {', '.join(ctes)} "  # noqa: S608 (built above from names and placeholders)
        f"SELECT position, stream_id, stream_version{''.join(notifies)} FROM ev"
    )
