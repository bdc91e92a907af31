"""A SessionLedger on each recorder (memory, SQLite, PostgreSQL), with a
manual clock. ``ledger`` and ``target`` run a test on all three; tests that
read the database themselves take ``engine`` and ``make_ledger(engine, ...)``."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.recorder import Recorder
from session_ledger.ledger.recorders.memory import MemoryRecorder
from session_ledger.ledger.service import SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel

#: Where a test's ledger keeps its events: a database, or a memory recorder.
Target = AsyncEngine | Recorder
TARGETS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.pg),
]


def make_ledger(
    target: Target, clock: ManualClock, policy: SessionPolicy | None = None
) -> SessionLedger:
    store = EventStore(target, clock=clock, inline_projections=[SessionTableProjection()])
    return SessionLedger(
        store=store,
        read_model=SqlSessionReadModel(store.recorder),
        policy=policy or SessionPolicy(),
        clock=clock,
    )


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "memory":
        return MemoryRecorder()
    engine: AsyncEngine = request.getfixturevalue(
        f"{request.param}_engine".replace("postgres", "pg")
    )
    return engine


@pytest.fixture
def ledger(target: Target, clock: ManualClock) -> SessionLedger:
    return make_ledger(target, clock)
