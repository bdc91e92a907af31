"""A SessionLedger on a real database, with a manual clock."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.service import SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel


def make_ledger(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy | None = None
) -> SessionLedger:
    store = EventStore(engine, clock=clock, inline_projections=[SessionTableProjection()])
    return SessionLedger(
        store=store,
        read_model=SqlSessionReadModel(engine),
        policy=policy or SessionPolicy(),
        clock=clock,
    )


@pytest.fixture
def ledger(engine: AsyncEngine, clock: ManualClock) -> SessionLedger:
    return make_ledger(engine, clock)
