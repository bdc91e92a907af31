"""The current-session table: an inline projection (same transaction as the
append) and the SQL read model the SessionLedger reads through."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, TextClause, bindparam, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from session_ledger.ledger.clock import utc
from session_ledger.ledger.db import (
    RowDecoder,
    autocommit,
    read_standalone,
    retry_stale,
    row_decoder,
)
from session_ledger.ledger.devices import describe_device
from session_ledger.ledger.domain.events import (
    RecordedEvent,
    SessionCreated,
    SessionRotated,
    is_session_event,
)
from session_ledger.ledger.domain.state import SessionState, SessionStatus, evolve
from session_ledger.ledger.writes import Insert, PendingEvent, Write
from session_ledger.projections.schema import retired_tokens, sessions

_COLUMNS = [c.name for c in sessions.columns]
_UPDATABLE = [c for c in _COLUMNS if c != "session_id"]


class SessionTableProjection:
    """Keeps ``sessions`` equal to the fold of each session's events.

    ``table`` / ``retired`` default to the live tables; replay passes its
    shadow copies (same columns, other names) to rebuild beside them."""

    def __init__(self, table: Table = sessions, retired: Table = retired_tokens) -> None:
        self.table = table
        self.retired = retired

    async def apply(self, conn: AsyncConnection, recorded: Sequence[RecordedEvent]) -> None:
        first: dict[str, RecordedEvent] = {}
        for r in recorded:
            if is_session_event(r.event):
                first.setdefault(r.stream_id, r)
        existing_ids = [s for s, r in first.items() if not isinstance(r.event, SessionCreated)]
        states = {s.session_id: s for s in await load_states(conn, existing_ids, self.table)}
        rows, retired = _fold_rows(recorded, states)
        await upsert(conn, rows, self.table)
        if retired:
            await conn.execute(self.retired.insert(), retired)

    def new_stream_writes(self, pending: Sequence[PendingEvent]) -> list[Write]:
        """The same rows for new streams, as data (see ledger.writes)."""
        return self._writes(pending, {})

    async def existing_stream_writes(
        self, engine: AsyncEngine, pending: Sequence[PendingEvent]
    ) -> list[Write] | None:
        """The same rows for streams that may exist (a refresh, a revoke), as
        data: their rows are read first, on their own, and folded on. None
        when a row is not at the version the append expects (it moved, or
        is missing): then ``apply`` runs in the append's transaction, which
        also tells a real conflict. See ledger.writes.ExistingStreamWrites."""
        expected: dict[str, int] = {}
        for p in pending:
            if is_session_event(p.event):
                expected.setdefault(p.stream_id, p.stream_version - 1)
        existing = [stream for stream, version in expected.items() if version > 0]
        states = {s.session_id: s for s in await self._read_states(engine, existing)}
        for stream in existing:
            state = states.get(stream)
            if state is None or state.version != expected[stream]:
                return None
        return self._writes(pending, states)

    def _writes(
        self, pending: Sequence[PendingEvent], states: Mapping[str, SessionState]
    ) -> list[Write]:
        rows, retired = _fold_rows(pending, states)
        writes: list[Write] = [Insert(self.table, rows, on_conflict="update")]
        if retired:
            writes.append(Insert(self.retired, retired))
        return writes

    async def _read_states(self, engine: AsyncEngine, ids: Sequence[str]) -> list[SessionState]:
        if not ids:
            return []
        columns = ", ".join(c.name for c in self.table.columns)
        params: tuple[Any, ...]
        if engine.dialect.name == "postgresql":
            where, params = "session_id = ANY($1)", (list(ids),)
        else:
            where, params = f"session_id IN ({', '.join('?' * len(ids))})", tuple(ids)
        sql = f"SELECT {columns} FROM {self.table.name} WHERE {where}"  # noqa: S608 (names, placeholders)
        decode = _decoder(engine.dialect, self.table)
        rows = await retry_stale(lambda: read_standalone(engine, sql, params))
        return [state_from_mapping(decode(row)) for row in rows]


@functools.cache
def _decoder(dialect: Dialect, table: Table) -> RowDecoder:
    return row_decoder(dialect, tuple(table.columns))


def _fold_rows(
    events: Sequence[RecordedEvent | PendingEvent], states: Mapping[str, SessionState]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``sessions`` row of every stream in ``events`` (folded onto
    ``states``) and the ``retired`` rows of their rotations."""
    folded: dict[str, SessionState | None] = {}
    retired: list[dict[str, Any]] = []
    for r in events:
        if not is_session_event(r.event):
            continue  # a sign-in attempt's stream: no session row
        state = folded[r.stream_id] if r.stream_id in folded else states.get(r.stream_id)
        folded[r.stream_id] = evolve(state, r.event)
        if isinstance(r.event, SessionRotated):
            retired.append({"token_hash": r.event.previous_token_hash, "session_id": r.stream_id})
    rows = []
    for state in folded.values():
        assert state is not None
        rows.append(state_to_row(state))
    return rows, retired


async def upsert(
    conn: AsyncConnection, rows: list[dict[str, Any]], table: Table = sessions
) -> None:
    if not rows:
        return
    if len(rows) == 1:
        # The per-request case (a sign-in, a refresh, a revoke).
        await conn.execute(_upsert_statement(table), rows)
        return
    # Many rows (replay batches, expiry sweeps, revoke-all): the Core
    # construct, which SQLAlchemy sends as multi-row statements
    # ("insertmanyvalues"); its compilation is paid once per batch.
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.session_id],
        set_={name: stmt.excluded[name] for name in _UPDATABLE},
    )
    await conn.execute(stmt, rows)


@functools.cache
def _upsert_statement(table: Table) -> TextClause:
    # SQLAlchemy does not cache the compiled form of ``on_conflict_do_update``
    # (it recompiled it on every sign-in: most of a create's Python time). A
    # typed text() statement is cached, and both databases read this SQL alike.
    columns = ", ".join(_COLUMNS)
    values = ", ".join(f":{name}" for name in _COLUMNS)
    updates = ", ".join(f"{name} = excluded.{name}" for name in _UPDATABLE)
    return text(
        f"INSERT INTO {table.name} ({columns}) VALUES ({values}) "  # noqa: S608 (names only)
        f"ON CONFLICT (session_id) DO UPDATE SET {updates}"
    ).bindparams(*(bindparam(c.name, type_=c.type) for c in table.columns))


async def load_states(
    conn: AsyncConnection, session_ids: Iterable[str], table: Table = sessions
) -> list[SessionState]:
    ids = list(session_ids)
    if not ids:
        return []
    result = await conn.execute(select(table).where(table.c.session_id.in_(ids)))
    return [state_from_row(row) for row in result]


def state_to_row(state: SessionState) -> dict[str, Any]:
    return {
        "session_id": state.session_id,
        "user_id": state.user_id,
        "status": state.status.value,
        "token_hash": state.token_hash,
        "previous_token_hash": state.previous_token_hash,
        "grace_until": state.grace_until,
        "retired_token_hashes": sorted(state.retired_token_hashes),
        "created_at": state.created_at,
        "expires_at": state.expires_at,
        "authenticated_at": state.authenticated_at,
        "max_expires_at": state.max_expires_at,
        "last_active_at": state.last_active_at,
        "updated_at": state.updated_at,
        "ip": state.ip,
        "user_agent": state.user_agent,
        "device": describe_device(state.user_agent),
        "remember_me": state.remember_me,
        "fields": dict(state.fields),
        "version": state.version,
        "ended_at": state.ended_at,
        "end_reason": state.end_reason,
        "ended_by": state.ended_by,
    }


def _time(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def state_from_row(row: Row[Any]) -> SessionState:
    return state_from_mapping(row._mapping)


def state_from_mapping(m: Mapping[Any, Any]) -> SessionState:
    return SessionState(
        session_id=m["session_id"],
        user_id=m["user_id"],
        status=SessionStatus(m["status"]),
        token_hash=m["token_hash"],
        previous_token_hash=m["previous_token_hash"],
        grace_until=_time(m["grace_until"]),
        retired_token_hashes=frozenset(m["retired_token_hashes"]),
        created_at=utc(m["created_at"]),
        expires_at=utc(m["expires_at"]),
        authenticated_at=utc(m["authenticated_at"]),
        max_expires_at=_time(m["max_expires_at"]),
        last_active_at=utc(m["last_active_at"]),
        updated_at=utc(m["updated_at"]),
        ip=m["ip"],
        user_agent=m["user_agent"],
        remember_me=m["remember_me"],
        fields=dict(m["fields"]),
        version=m["version"],
        ended_at=_time(m["ended_at"]),
        end_reason=m["end_reason"],
        ended_by=m["ended_by"],
    )


_SELECTED = ", ".join(f"s.{name}" for name in _COLUMNS)
_BY_TOKEN = (
    f"SELECT {_SELECTED} FROM {sessions.name} s WHERE s.token_hash = {{0}} "  # noqa: S608
    f"UNION ALL SELECT {_SELECTED} FROM {sessions.name} s JOIN {retired_tokens.name} r "
    "ON r.session_id = s.session_id WHERE r.token_hash = {1} LIMIT 1"
)
_BY_TOKEN_PG = _BY_TOKEN.format("$1", "$1")
_BY_TOKEN_SQLITE = _BY_TOKEN.format("?", "?")


class SqlSessionReadModel:
    """Reads the ``sessions`` table: the authoritative read path."""

    def __init__(self, engine: AsyncEngine) -> None:
        # Every read here is one statement (or two independent ones).
        self.engine = autocommit(engine)
        self._decode = row_decoder(engine.dialect, tuple(sessions.columns))
        self._postgres = engine.dialect.name == "postgresql"

    async def by_token_hash(self, token_hash: str, *, fresh: bool = False) -> SessionState | None:
        # The table is the store: every read is fresh.
        return await retry_stale(lambda: self._by_token_hash(token_hash))

    async def _by_token_hash(self, token_hash: str) -> SessionState | None:
        # The hot read of every request: one statement on the driver (see
        # ledger.db.read_standalone). The current token is by far the common
        # case; UNION ALL ... LIMIT 1 stops there and only looks at
        # rotated-out tokens (previous one in grace, or reuse) when needed.
        if self._postgres:
            rows = await read_standalone(self.engine, _BY_TOKEN_PG, (token_hash,))
        else:
            rows = await read_standalone(self.engine, _BY_TOKEN_SQLITE, (token_hash, token_hash))
        return state_from_mapping(self._decode(rows[0])) if rows else None

    async def by_id(self, session_id: str) -> SessionState | None:
        states = await self.by_ids([session_id])
        return states[0] if states else None

    async def by_ids(self, session_ids: Sequence[str]) -> list[SessionState]:
        async def read() -> list[SessionState]:
            async with self.engine.connect() as conn:
                return await load_states(conn, session_ids)

        return await retry_stale(read)

    async def active_for_user(self, user_id: str, now: datetime) -> list[SessionState]:
        query = (
            select(sessions)
            .where(sessions.c.user_id == user_id)
            .where(sessions.c.status == SessionStatus.ACTIVE.value)
            .where(sessions.c.expires_at > now)
            .order_by(sessions.c.last_active_at.desc())
        )

        async def read() -> list[SessionState]:
            async with self.engine.connect() as conn:
                return [state_from_row(row) for row in await conn.execute(query)]

        return await retry_stale(read)
