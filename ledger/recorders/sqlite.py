"""The SQLite recorder (aiosqlite): guarded multi-row INSERTs, an append's
transaction in one hop to aiosqlite's thread, the hot reads in the event
loop's thread (``ledger.sqlite_reads``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from session_ledger.ledger.db import Driver, SqliteExecute, driver_fetch, pooled
from session_ledger.ledger.recorder import ConnectionLostError, EventBatch, Lookup, Positions
from session_ledger.ledger.recorders.sql import (
    SqlRecorder,
    insert_statements,
    positions_of,
    stream_sql,
)
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.writes import Write

#: SQLite's limit on bound parameters is 32766; stay well below it.
_CHUNK_ROWS = 500
_COLUMNS = (
    "stream_id, stream_version, type, schema_version, data, meta, user_id, "
    "recorded_at, prev_hash, hash"
)
_HEAD = (
    f"SELECT stream_version, hash FROM {events_table.name} "  # noqa: S608 (a name)
    "WHERE stream_id = ? ORDER BY stream_version DESC LIMIT 1"
)
#: SQLite keeps datetimes as text: format them exactly as SQLAlchemy does.
_TIMESTAMP = events_table.c.recorded_at.type.dialect_impl(SQLiteDialect()).bind_processor(
    SQLiteDialect()
)


def _insert_sql(rows: int, streams: int) -> str:
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


def _chunks(batch: EventBatch) -> list[tuple[str, tuple[Any, ...], int]]:
    """(SQL, parameters, row count) per statement."""
    assert _TIMESTAMP is not None
    stamp = _TIMESTAMP(batch.recorded_at)
    statements = []
    for start in range(0, len(batch.rows), _CHUNK_ROWS):
        chunk = batch.rows[start : start + _CHUNK_ROWS]
        params: list[Any] = []
        first: dict[str, int] = {}
        for r in chunk:
            params += (r.stream_id, r.stream_version, r.type, r.schema_version, r.data)
            params += (batch.meta_json, r.user_id, stamp, r.prev_hash, r.hash)
            first.setdefault(r.stream_id, r.stream_version)
        for guard in first.items():
            params += guard
        statements.append((_insert_sql(len(chunk), len(first)), tuple(params), len(chunk)))
    return statements


class SqliteRecorder(SqlRecorder):
    HEAD_SQL = _HEAD
    STREAM_SQL = stream_sql("?", "?")

    async def _send(self, batch: EventBatch, writes: Sequence[Write]) -> Positions | None:
        # On the driver, in one hop (ledger.db.pooled).
        lone = not writes and len(batch.rows) <= _CHUNK_ROWS
        try:
            return await pooled(self.engine, lambda d: self._on_driver(d, batch, writes))
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            # A lone INSERT cannot land twice (the guard); a transaction
            # whose COMMIT may have been sent is not tried again.
            raise ConnectionLostError(exc, repeatable=lone) from exc

    async def _on_driver(
        self, driver: Driver, batch: EventBatch, writes: Sequence[Write]
    ) -> Positions | None:
        chunks = _chunks(batch)
        if not writes and len(chunks) == 1:
            ((sql, params, count),) = chunks
            return positions_of(await driver.fetch(sql, params), count)
        dialect = self.dialect

        def transaction(execute: SqliteExecute) -> Positions | None:
            # Runs in SQLite's thread, inside BEGIN IMMEDIATE: the write lock
            # is held from the start, so the guard in the INSERT reads what
            # no one else can change.
            positions: Positions = {}
            for sql, params, count in chunks:
                chunk = positions_of(execute(sql, params), count)
                if chunk is None:
                    execute("ROLLBACK", ())
                    return None
                positions.update(chunk)
            for statement, values in insert_statements(dialect, writes, positions):
                execute(statement, values)
            return positions

        return await driver.sqlite_transaction(transaction)

    async def _insert_in(self, conn: AsyncConnection, batch: EventBatch) -> Positions | None:
        # On the driver: one hop to its thread instead of four.
        positions: Positions = {}
        for sql, params, count in _chunks(batch):
            chunk = positions_of(await driver_fetch(conn, sql, params), count)
            if chunk is None:
                return None
            positions.update(chunk)
        return positions

    async def _fetch_in(self, conn: AsyncConnection, sql: str, params: Sequence[Any]) -> None:
        await driver_fetch(conn, sql, params)

    def _write_sql(
        self, writes: Sequence[Write], positions: Positions
    ) -> list[tuple[str, list[Any]]]:
        # Notify is PostgreSQL's: other processes follow SQLite's tail.
        return insert_statements(self.dialect, writes, positions)

    def _first_sql(self, lookup: Lookup) -> tuple[str, int]:
        table, column = lookup.table, lookup.column
        names = ", ".join(f"t.{c.name}" for c in table.columns)
        sql = f"SELECT {names} FROM {table.name} t WHERE t.{column} = ?"  # noqa: S608 (names)
        if lookup.via is None:
            return sql, 1
        (pk,) = (c.name for c in table.primary_key.columns)
        sql += (
            f" UNION ALL SELECT {names} FROM {table.name} t JOIN {lookup.via.name} v "  # noqa: S608
            f"ON v.{pk} = t.{pk} WHERE v.{column} = ? LIMIT 1"
        )
        return sql, 2

    def _keys_sql(self, table: Table, keys: Sequence[str]) -> tuple[str, Sequence[Any]]:
        names = ", ".join(c.name for c in table.columns)
        (pk,) = (c.name for c in table.primary_key.columns)
        where = f"{pk} IN ({', '.join('?' * len(keys))})"
        return f"SELECT {names} FROM {table.name} WHERE {where}", tuple(keys)  # noqa: S608
