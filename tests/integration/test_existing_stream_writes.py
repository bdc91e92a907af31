"""Appends to streams that already exist (a refresh, a rotation, an update,
a revoke) also send the inline projections' writes as data
(ledger.writes.ExistingStreamWrites): the session table reads the rows it
folds onto first, on their own, and the append's guard makes that read
safe. The tables must end up exactly as ``apply`` in a transaction leaves
them, and a read made stale by a concurrent append must never land."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.audit_schema import audit_ips
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.decide import (
    Command,
    Reauthenticate,
    RefreshSession,
    RevokeSession,
    RotateToken,
    UpdateFields,
    ValidateSession,
    decide,
)
from session_ledger.ledger.domain.errors import ConcurrencyError
from session_ledger.ledger.domain.events import Event, RevocationReason, SessionRotated
from session_ledger.ledger.domain.state import SessionState, evolve
from session_ledger.ledger.store import EventStore, InlineProjection, StreamAppend
from session_ledger.ledger.writes import PendingEvent, Write
from session_ledger.projections.audit_ips import AuditIpProjection
from session_ledger.projections.schema import retired_tokens, sessions
from session_ledger.projections.session_table import (
    SessionTableProjection,
    state_from_mapping,
    state_to_row,
)
from tests.integration.test_new_stream_writes import (
    META,
    POLICY,
    OnConnectionOnly,
    rows_of,
    session_events,
)
from tests.support.statements import statement_verbs


def new_hash(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def story_commands(story: str, stream: str) -> list[Command]:
    commands: dict[str, Command] = {
        "refresh": RefreshSession(rotation_token_hash=new_hash(f"{stream}-refreshed")),
        "rotate": RotateToken(new_token_hash=new_hash(f"{stream}-rotated")),
        "update": UpdateFields(fields={"theme": "light", "n": 2}),
        "reauth": Reauthenticate(),
        "touch": ValidateSession(
            token_hash=new_hash(stream), ip="192.0.2.7", user_agent="curl/8.0", allow_refresh=False
        ),
        "revoke": RevokeSession(reason=RevocationReason.REVOKED, actor="user:u1"),
    }
    return [commands[word] for word in story.split()]


async def create(store: EventStore, streams: Sequence[str], clock: ManualClock) -> None:
    now = clock.now()
    await store.append_batch(
        [
            StreamAppend(
                s, 0, session_events(s, now, ip="10.0.0.1", story="create", token_hash=new_hash(s))
            )
            for s in streams
        ],
        metadata=META,
    )


def fold(events: Sequence[Event], state: SessionState | None = None) -> SessionState:
    for e in events:
        state = evolve(state, e)
    assert state is not None
    return state


async def stored_sessions(engine: AsyncEngine) -> list[dict[str, Any]]:
    rows = [state_to_row(state_from_mapping(r)) for r in await rows_of(engine, sessions)]
    return sorted(rows, key=itemgetter("session_id"))


@pytest.mark.parametrize("path", ["as data", "on the connection"])
@pytest.mark.parametrize(
    "stories",
    [
        {"s1": "refresh"},
        {"s1": "rotate update"},
        {"s1": "touch"},
        {"s1": "reauth revoke"},
        {"s1": "revoke", "s2": "revoke", "s3": "rotate"},  # revoke-all and friends
    ],
)
async def test_existing_streams_project_the_same_either_way(
    engine: AsyncEngine, clock: ManualClock, path: str, stories: dict[str, str]
) -> None:
    projections: list[InlineProjection] = [SessionTableProjection(), AuditIpProjection()]
    if path == "on the connection":
        projections = [OnConnectionOnly(p) for p in projections]
    store = EventStore(engine, clock=clock, inline_projections=projections)
    await create(store, ["s1", "s2", "s3"], clock)
    before = {r["session_id"]: state_from_mapping(r) for r in await rows_of(engine, sessions)}
    ips_before = len(await rows_of(engine, audit_ips))

    clock.advance(600)
    appends, expected = [], {sid: state_to_row(state) for sid, state in before.items()}
    for sid, story in stories.items():
        state, events = before[sid], []
        for command in story_commands(story, sid):
            decided = decide(state, command, clock.now(), POLICY)
            events += decided
            state = fold(decided, state)
        assert events, story
        appends.append(StreamAppend(sid, before[sid].version, events, "u1"))
        expected[sid] = state_to_row(state)
    recorded = await store.append_batch(appends, metadata=META)

    assert await stored_sessions(engine) == sorted(expected.values(), key=itemgetter("session_id"))
    retired = {(r["token_hash"], r["session_id"]) for r in await rows_of(engine, retired_tokens)}
    assert retired == {
        (r.event.previous_token_hash, r.stream_id)
        for r in recorded
        if isinstance(r.event, SessionRotated)
    }
    sightings = len(await rows_of(engine, audit_ips)) - ips_before
    assert sightings == sum(1 for r in recorded if getattr(r.event, "ip", None) is not None)


class ConcurrentAppendAfterRead(SessionTableProjection):
    """Reads the rows, then lets another writer move the stream before the
    append is sent: what it read is stale by the time it lands."""

    def __init__(self, other: EventStore, stream: str, events: list[Event]) -> None:
        super().__init__()
        self.other, self.stream, self.events = other, stream, events

    async def existing_stream_writes(
        self, engine: AsyncEngine, pending: Sequence[PendingEvent]
    ) -> list[Write] | None:
        writes = await super().existing_stream_writes(engine, pending)
        assert writes is not None  # the read itself was current
        await self.other.append(self.stream, 1, self.events, metadata=META)
        return writes


async def test_a_stale_read_never_lands(engine: AsyncEngine, clock: ManualClock) -> None:
    plain = EventStore(engine, clock=clock, inline_projections=[SessionTableProjection()])
    await create(plain, ["s"], clock)
    (state,) = [state_from_mapping(r) for r in await rows_of(engine, sessions)]
    clock.advance(60)
    theirs = decide(state, UpdateFields(fields={"by": "them"}), clock.now(), POLICY)
    ours = decide(state, UpdateFields(fields={"by": "us"}), clock.now(), POLICY)
    racing = EventStore(
        engine,
        clock=clock,
        inline_projections=[ConcurrentAppendAfterRead(plain, "s", theirs)],
    )
    head = await plain.head()
    with pytest.raises(ConcurrencyError):
        await racing.append("s", 1, ours, metadata=META)
    assert await plain.head() == head + len(theirs)  # theirs only
    (row,) = await stored_sessions(engine)
    assert row == state_to_row(fold(theirs, state))  # their write, not our stale one


async def test_a_row_behind_its_stream_takes_the_transaction(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    """A session row that is not at the stream's version (here: missing) is
    not folded onto; the append runs ``apply`` in its transaction instead."""
    store = EventStore(engine, clock=clock, inline_projections=[SessionTableProjection()])
    await create(store, ["s"], clock)
    (state,) = [state_from_mapping(r) for r in await rows_of(engine, sessions)]
    projection = SessionTableProjection()
    decided = decide(state, UpdateFields(fields={"x": 1}), clock.now(), POLICY)
    pending = [PendingEvent("s", 2, decided[0], META, "u1", clock.now())]
    assert await projection.existing_stream_writes(engine, pending) is not None
    stale = [PendingEvent("s", 3, decided[0], META, "u1", clock.now())]
    assert await projection.existing_stream_writes(engine, stale) is None


async def test_a_revoke_is_one_statement_on_postgresql(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    """Besides the read of the stream's head and of its row: one statement on
    PostgreSQL, one driver transaction on SQLite."""
    store = EventStore(
        engine, clock=clock, inline_projections=[SessionTableProjection(), AuditIpProjection()]
    )
    await create(store, ["s"], clock)
    (state,) = [state_from_mapping(r) for r in await rows_of(engine, sessions)]
    revoke = decide(state, RevokeSession(RevocationReason.REVOKED, "user:u1"), clock.now(), POLICY)
    with statement_verbs(engine) as statements:
        await store.append("s", 1, revoke, metadata=META)
    if engine.dialect.name == "postgresql":
        assert statements == ["SELECT", "SELECT", "WITH"]
    else:
        assert statements == ["SELECT", "SELECT", "BEGIN", "INSERT", "INSERT", "COMMIT"]
