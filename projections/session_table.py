"""The current-session table: an inline projection (written with the
append, atomically) and the read model the SessionLedger reads through."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from session_ledger.ledger.clock import utc
from session_ledger.ledger.devices import describe_device
from session_ledger.ledger.domain.events import SessionRotated, is_session_event
from session_ledger.ledger.domain.state import SessionState, SessionStatus, evolve
from session_ledger.ledger.recorder import Lookup, Recorder
from session_ledger.ledger.recorders import recorder_for
from session_ledger.ledger.writes import Insert, Prior, Projected, Rows, Write
from session_ledger.projections.schema import retired_tokens, sessions


class SessionTableProjection:
    """Keeps ``sessions`` equal to the fold of each session's events.

    ``table`` / ``retired`` default to the live tables; replay passes its
    shadow copies (same columns, other names) to rebuild beside them."""

    def __init__(self, table: Table = sessions, retired: Table = retired_tokens) -> None:
        self.table = table
        self.retired = retired

    def prior(self, events: Sequence[Projected]) -> Prior | None:
        """The rows of the sessions the events continue (not those they create)."""
        existing = [s for s, version in _expected(events).items() if version > 0]
        return Prior(self.table, existing) if existing else None

    def writes(
        self, events: Sequence[Projected], prior: Rows, *, locked: bool
    ) -> list[Write] | None:
        """The sessions' rows folded on, and the retired tokens of rotations.
        Read before the append (not ``locked``), a row that is not at the
        version the append expects (it moved, or is missing) is not vouched
        for: None."""
        states = {key: state_from_mapping(row) for key, row in prior.items()}
        if not locked:
            for stream, version in _expected(events).items():
                state = states.get(stream)
                if version > 0 and (state is None or state.version != version):
                    return None
        rows, retired = _fold_rows(events, states)
        writes: list[Write] = [Insert(self.table, rows, on_conflict="update")]
        if retired:
            writes.append(Insert(self.retired, retired))
        return writes


def _expected(events: Sequence[Projected]) -> dict[str, int]:
    """Each session stream's version before the events."""
    expected: dict[str, int] = {}
    for e in events:
        if is_session_event(e.event):
            expected.setdefault(e.stream_id, e.stream_version - 1)
    return expected


def _fold_rows(
    events: Sequence[Projected], states: Mapping[str, SessionState]
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


#: The session whose current token, or any rotated-out one, has this hash.
_BY_TOKEN = Lookup(sessions, "token_hash", via=retired_tokens)


class SessionTableReadModel:
    """Reads the ``sessions`` table, through the recorder that writes it:
    the authoritative read path."""

    def __init__(self, source: Recorder | AsyncEngine) -> None:
        self.recorder: Recorder = (
            recorder_for(source) if isinstance(source, AsyncEngine) else source
        )

    async def by_token_hash(self, token_hash: str, *, fresh: bool = False) -> SessionState | None:
        # The table is the store: every read is fresh. The hot read of every
        # request: the recorder's own fastest way to one row.
        row = await self.recorder.first(_BY_TOKEN, token_hash)
        return state_from_mapping(row) if row is not None else None

    async def by_id(self, session_id: str) -> SessionState | None:
        states = await self.by_ids([session_id])
        return states[0] if states else None

    async def by_ids(self, session_ids: Sequence[str]) -> list[SessionState]:
        if not session_ids:
            return []
        rows = await self.recorder.rows(sessions, {"session_id": list(session_ids)})
        return [state_from_mapping(row) for row in rows]

    async def active_for_user(self, user_id: str, now: datetime) -> list[SessionState]:
        # By the (user_id, status) index; a user has few active sessions.
        where = {"user_id": user_id, "status": SessionStatus.ACTIVE.value}
        states = [state_from_mapping(row) for row in await self.recorder.rows(sessions, where)]
        live = [s for s in states if s.expires_at > utc(now)]
        live.sort(key=lambda s: s.last_active_at, reverse=True)
        return live


#: The name it had when only SQL databases kept the table.
SqlSessionReadModel = SessionTableReadModel
