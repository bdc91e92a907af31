"""Races the service must win: many requests at the refresh boundary, and
revoke against refresh."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.service import SessionLedger
from tests.service.conftest import make_ledger

DAY = 86400


async def test_concurrent_validations_at_the_refresh_boundary_refresh_once(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    ledger = make_ledger(engine, clock, SessionPolicy(expires_in=10 * DAY, update_age=DAY))
    view, token = await ledger.create_session("user-1")
    clock.advance(DAY)  # exactly at the boundary: now == expires_at - expires_in + update_age
    results = await asyncio.gather(*(ledger.get_session(token) for _ in range(12)))
    assert all(r is not None for r in results), "no caller may be rejected"
    rotated = [r for r in results if r is not None and r.rotated]
    assert len(rotated) == 1
    types = [e.type for e in await ledger.store.read_stream(view.id)]
    assert types.count("SessionRefreshed") == 1
    assert types.count("SessionRotated") == 1
    # Both the new token and (within grace) the old one keep working.
    assert await ledger.get_session(rotated[0].token) is not None
    assert await ledger.get_session(token) is not None


async def test_revoke_racing_refresh_never_leaves_the_session_valid(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    ledger = make_ledger(engine, clock, SessionPolicy(expires_in=10 * DAY, update_age=0))
    for _ in range(15):
        view, token = await ledger.create_session("user-1")
        clock.advance(1)

        async def revoke(ledger: SessionLedger = ledger, sid: str = view.id) -> None:
            await ledger.revoke_session("user-1", sid)

        results = await asyncio.gather(
            ledger.get_session(token), revoke(), ledger.get_session(token)
        )
        new_tokens = {token} | {r.token for r in results if r is not None and hasattr(r, "token")}
        for candidate in new_tokens:
            assert await ledger.get_session(candidate) is None
        types = [e.type for e in await ledger.store.read_stream(view.id)]
        assert types.count("SessionRevoked") == 1
        assert types[-1] == "SessionRevoked"


async def test_concurrent_sign_ins_are_all_listed(engine: AsyncEngine, clock: ManualClock) -> None:
    ledger = make_ledger(engine, clock)
    created = await asyncio.gather(*(ledger.create_session("user-1") for _ in range(20)))
    listed = await ledger.list_sessions("user-1")
    assert {v.id for v, _ in created} == {v.id for v in listed}
