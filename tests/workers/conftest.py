"""Helpers of the worker tests: many sessions, fast, and ledger read-backs."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.decide import CreateSession, decide
from session_ledger.ledger.domain.events import TERMINAL_EVENT_TYPES, EventMetadata
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.store import EventStore, StreamAppend
from session_ledger.projections.schema import sessions
from session_ledger.projections.session_table import SessionTableProjection

#: Short lifetimes so that tests move the clock by minutes, not days.
POLICY = SessionPolicy(
    expires_in=3600,
    update_age=0,
    short_session_expires_in=600,
    max_lifetime=5400,
    rotation_grace=10,
    activity_interval=0,
)


@pytest.fixture
def policy() -> SessionPolicy:
    return POLICY


def make_store(engine: AsyncEngine, clock: ManualClock) -> EventStore:
    return EventStore(engine, clock=clock, inline_projections=[SessionTableProjection()])


@dataclass(frozen=True)
class Made:
    session_id: str
    user_id: str
    expires_at: datetime


def token_hash(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


async def create_sessions(
    store: EventStore,
    now: datetime,
    count: int,
    *,
    policy: SessionPolicy = POLICY,
    prefix: str = "s",
    remember_me: bool = True,
    chunk: int = 1000,
) -> list[Made]:
    """``count`` sessions created at ``now``: many streams per append, so that
    thousands take a few appends (SessionCreated decided by the real state machine)."""
    made: list[Made] = []
    appends: list[StreamAppend] = []
    for i in range(count):
        sid = f"{prefix}-{i:06d}"
        user = f"user-{i % 97}"
        command = CreateSession(
            session_id=sid,
            user_id=user,
            token_hash=token_hash(sid),
            ip="10.0.0.1",
            user_agent="pytest",
            remember_me=remember_me,
        )
        events = decide(None, command, now, policy)
        appends.append(StreamAppend(sid, 0, events, user))
        made.append(Made(sid, user, events[0].expires_at))  # type: ignore[union-attr]
        if len(appends) == chunk:
            await store.append_batch(appends, metadata=EventMetadata(actor="test"))
            appends = []
    if appends:
        await store.append_batch(appends, metadata=EventMetadata(actor="test"))
    return made


async def terminal_counts(engine: AsyncEngine) -> Counter[str]:
    """Number of terminal events (SessionRevoked + SessionExpired) per stream."""
    query = (
        select(events_table.c.stream_id, func.count())
        .where(events_table.c.type.in_(sorted(TERMINAL_EVENT_TYPES)))
        .group_by(events_table.c.stream_id)
    )
    async with engine.connect() as conn:
        return Counter({row[0]: int(row[1]) for row in await conn.execute(query)})


async def expired_counts(engine: AsyncEngine) -> Counter[str]:
    query = (
        select(events_table.c.stream_id, func.count())
        .where(events_table.c.type == "SessionExpired")
        .group_by(events_table.c.stream_id)
    )
    async with engine.connect() as conn:
        return Counter({row[0]: int(row[1]) for row in await conn.execute(query)})


async def expired_reasons(engine: AsyncEngine) -> dict[str, str]:
    query = select(events_table.c.stream_id, events_table.c.data).where(
        events_table.c.type == "SessionExpired"
    )
    async with engine.connect() as conn:
        return {row[0]: row[1]["reason"] for row in await conn.execute(query)}


async def session_rows(
    engine: AsyncEngine, ids: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    query = select(sessions)
    if ids is not None:
        query = query.where(sessions.c.session_id.in_(list(ids)))
    async with engine.connect() as conn:
        return {row.session_id: dict(row._mapping) for row in await conn.execute(query)}
