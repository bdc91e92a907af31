"""Appends of new streams send the inline projections' writes as data
(ledger.writes): one statement on PostgreSQL, one driver transaction on
SQLite. Whatever the path, the projection tables must end up exactly as
``apply`` on the connection leaves them, and they commit or fail with the
events."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

import asyncpg
import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.audit_schema import audit_ips
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.decide import CreateSession, RevokeSession, RotateToken, decide
from session_ledger.ledger.domain.errors import ConcurrencyError
from session_ledger.ledger.domain.events import (
    Event,
    EventMetadata,
    RevocationReason,
    SessionCreated,
    SessionRotated,
)
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.state import evolve
from session_ledger.ledger.store import EventStore, StreamAppend
from session_ledger.ledger.writes import Prior, Projected, Projection, Rows, Write
from session_ledger.projections.audit_ips import AuditIpProjection
from session_ledger.projections.revocation_notify import CHANNEL as REVOCATIONS
from session_ledger.projections.revocation_notify import RevocationNotifier
from session_ledger.projections.runner import NotifyAfterCommit
from session_ledger.projections.schema import retired_tokens, sessions
from session_ledger.projections.session_table import (
    SessionTableProjection,
    state_from_mapping,
    state_to_row,
)
from tests.support.statements import statement_verbs

POLICY = SessionPolicy()
META = EventMetadata(actor="user:u1")


class OnConnectionOnly:
    """The same projection, vouching for nothing it could read before the
    append: forces the transaction path, where it reads on the connection."""

    def __init__(self, inner: Projection) -> None:
        self.inner = inner

    def prior(self, events: Sequence[Projected]) -> Prior | None:
        return self.inner.prior(events)

    def writes(
        self, events: Sequence[Projected], prior: Rows, *, locked: bool
    ) -> Sequence[Write] | None:
        return self.inner.writes(events, prior, locked=True) if locked else None


def session_events(
    session_id: str, now: datetime, *, ip: str | None, story: str, token_hash: str | None = None
) -> list[Event]:
    """A new stream's events: created, then maybe rotated and revoked."""
    create = CreateSession(
        session_id=session_id,
        user_id="u1",
        token_hash=token_hash or hashlib.sha256(session_id.encode()).hexdigest(),
        ip=ip,
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        remember_me=True,
        fields={"theme": "dark"},
    )
    events = decide(None, create, now, POLICY)
    state = evolve(None, events[0])
    if "rotate" in story:
        new_hash = hashlib.sha256(f"{session_id}-2".encode()).hexdigest()
        rotated = decide(state, RotateToken(new_token_hash=new_hash), now, POLICY)
        events += rotated
        for e in rotated:
            state = evolve(state, e)
    if "revoke" in story:
        revoke = RevokeSession(reason=RevocationReason.REVOKED, actor="user:u1")
        events += decide(state, revoke, now, POLICY)
    return events


async def rows_of(engine: AsyncEngine, table: Table) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(table))).mappings()]


@pytest.mark.parametrize("path", ["as data", "on the connection"])
@pytest.mark.parametrize(
    "stories",
    [
        [("s1", "10.0.0.1", "create")],
        [("s1", None, "create")],
        [("s1", "10.0.0.1", "create rotate")],
        [("s1", "10.0.0.1", "create rotate revoke"), ("s2", "2001:db8::1", "create")],
    ],
)
async def test_new_streams_project_the_same_either_way(
    engine: AsyncEngine,
    clock: ManualClock,
    path: str,
    stories: list[tuple[str, str | None, str]],
) -> None:
    now = clock.now()
    appends = [
        StreamAppend(sid, 0, session_events(sid, now, ip=ip, story=story), "u1")
        for sid, ip, story in stories
    ]
    projections: list[Projection] = [SessionTableProjection(), AuditIpProjection()]
    if path == "on the connection":
        projections = [OnConnectionOnly(p) for p in projections]
    store = EventStore(engine, clock=clock, inline_projections=projections)
    recorded = await store.append_batch(appends, metadata=META)

    # sessions: each row is the fold of its stream's events.
    expected_rows = []
    for a in appends:
        state = None
        for e in a.events:
            state = evolve(state, e)
        assert state is not None
        expected_rows.append(state_to_row(state))
    stored = [state_to_row(state_from_mapping(r)) for r in await rows_of(engine, sessions)]
    key = itemgetter("session_id")
    assert sorted(stored, key=key) == sorted(expected_rows, key=key)
    # retired tokens: one row per rotation.
    assert {(r["token_hash"], r["session_id"]) for r in await rows_of(engine, retired_tokens)} == {
        (r.event.previous_token_hash, r.stream_id)
        for r in recorded
        if isinstance(r.event, SessionRotated)
    }
    # audit_ips: one sighting per event that carried an address, at its position.
    assert sorted(
        (r["position"], r["session_id"], r["ip"]) for r in await rows_of(engine, audit_ips)
    ) == [
        (r.position, r.stream_id, r.event.ip)
        for r in recorded
        if isinstance(r.event, SessionCreated) and r.event.ip is not None
    ]


async def test_a_failing_write_takes_the_events_with_it(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    """A projection write that violates a constraint fails the append: no
    events, no rows (one statement on PostgreSQL, one transaction on SQLite)."""
    now = clock.now()
    store = EventStore(engine, clock=clock, inline_projections=[SessionTableProjection()])
    await store.append("a", 0, session_events("a", now, ip=None, story="create"), metadata=META)
    head = await store.head()
    # Same token hash under another session id: sessions.token_hash is unique.
    token_of_a = hashlib.sha256(b"a").hexdigest()
    clash = session_events("b", now, ip=None, story="create", token_hash=token_of_a)
    with pytest.raises(IntegrityError):
        await store.append("b", 0, clash, metadata=META)
    assert await store.head() == head
    assert [r["session_id"] for r in await rows_of(engine, sessions)] == ["a"]
    # A conflict on the stream itself is still a ConcurrencyError.
    with pytest.raises(ConcurrencyError):
        await store.append("a", 0, session_events("z", now, ip=None, story="create"))


async def test_the_wake_up_is_sent_after_commit(
    pg_engine: AsyncEngine, pg_url: str, clock: ManualClock
) -> None:
    """``NOTIFY ledger_events`` leaves the append transaction (where its lock
    would serialise commits): the writer sends it once the append committed,
    a wake-up naming the newest position (readers read the ledger)."""
    listener = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("ledger_events", lambda *args: received.put_nowait(args[3]))
    try:
        store = EventStore(pg_engine, clock=clock, inline_projections=[SessionTableProjection()])
        wake = NotifyAfterCommit(pg_engine)
        store.after_commit.append(wake)
        now = clock.now() + timedelta(seconds=1)
        recorded = await store.append(
            "n", 0, session_events("n", now, ip=None, story="create rotate"), metadata=META
        )
        payload = await asyncio.wait_for(received.get(), timeout=5)
        assert payload == str(recorded[-1].position)
        await wake.flush()
        assert wake.sent == 1
        assert received.empty()  # once per append, not once per event
    finally:
        await listener.close()


async def test_revocation_notifications_of_big_appends_name_every_session_in_chunks(
    pg_engine: AsyncEngine, pg_url: str, clock: ManualClock
) -> None:
    """The revocation NOTIFY stays in the append transaction, as data for new
    streams: 200 sessions created and ended in one append (one statement),
    then 200 ended in one append (on the connection: more than 32 existing
    streams). Each time, payloads under PostgreSQL's 8,000 bytes that
    together name every session."""
    listener = await asyncpg.connect(pg_url.replace("+asyncpg", ""))
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(REVOCATIONS, lambda *args: received.put_nowait(args[3]))
    store = EventStore(
        pg_engine,
        clock=clock,
        inline_projections=[SessionTableProjection(), RevocationNotifier()],
    )
    now = clock.now() + timedelta(seconds=1)
    try:
        for story, version in (("create revoke", 0), ("create", 0), ("revoke", 1)):
            # The revoke story ends the sessions of the create story.
            prefix = "ended" if story == "create revoke" else "big"
            ids = [f"{prefix}-{i:03d}" for i in range(200)]
            events = {"create revoke": slice(0, 2), "create": slice(0, 1), "revoke": slice(1, 2)}
            appends = [
                StreamAppend(
                    sid,
                    version,
                    session_events(sid, now, ip=None, story="create revoke")[events[story]],
                    "u1",
                )
                for sid in ids
            ]
            await store.append_batch(appends, metadata=META)
            if story == "create":
                continue
            seen: set[str] = set()
            while len(seen) < len(ids):
                payload = await asyncio.wait_for(received.get(), timeout=5)
                assert len(payload.encode()) < 8000
                seen |= set(payload.split(","))
            assert seen == set(ids)
        assert received.empty()
    finally:
        await listener.close()


async def test_a_sign_in_is_one_statement_on_postgresql(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    """With every inline projection able to write as data, a new stream costs
    one statement on PostgreSQL (no BEGIN / COMMIT), and on SQLite its
    transaction holds one statement per table."""
    store = EventStore(
        engine, clock=clock, inline_projections=[SessionTableProjection(), AuditIpProjection()]
    )
    events = session_events("s", clock.now(), ip="10.0.0.1", story="create")
    with statement_verbs(engine) as statements:
        await store.append("s", 0, events, metadata=META)
    if engine.dialect.name == "postgresql":
        assert statements == ["WITH"]
    else:
        assert statements == ["BEGIN", "INSERT", "INSERT", "INSERT", "COMMIT"]
