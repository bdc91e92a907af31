"""A conflict proves that what the first attempt read was out of date: the
retry reads the store, not the cache that answered (issue 14, items 1-2)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.decide import ExpireSession, decide
from session_ledger.ledger.domain.state import SessionState
from session_ledger.ledger.domain.tokens import hash_token
from session_ledger.ledger.service import SessionLedger
from session_ledger.projections.session_table import SqlSessionReadModel
from tests.service.conftest import make_ledger


class StaleCache(SqlSessionReadModel):
    """The table, but a token lookup that may read through the "cache"
    answers from a snapshot taken before another process changed the
    session (an after-commit write still in flight, or Redis refusing
    writes); with ``fresh=True`` it reads the table."""

    def __init__(self, engine: AsyncEngine, snapshot: dict[str, SessionState]) -> None:
        super().__init__(engine)
        self.snapshot = snapshot
        self.fresh: list[bool] = []

    async def by_token_hash(self, token_hash: str, **kwargs: Any) -> SessionState | None:
        fresh = bool(kwargs.get("fresh", False))
        self.fresh.append(fresh)
        if not fresh and token_hash in self.snapshot:
            return self.snapshot[token_hash]
        return await super().by_token_hash(token_hash)


async def _expired_elsewhere(
    engine: AsyncEngine, clock: ManualClock
) -> tuple[SessionLedger, StaleCache, str]:
    """A session the worker expired after this process's cache last saw it."""
    worker = make_ledger(engine, clock)
    view, token = await worker.create_session("u1")
    sql = SqlSessionReadModel(engine)
    before = await sql.by_token_hash(hash_token(token))
    assert before is not None
    clock.advance(days=31)
    expired = decide(before, ExpireSession(), clock.now(), worker.policy)
    await worker.store.append(view.id, before.version, expired)
    cache = StaleCache(engine, {hash_token(token): before})
    service = SessionLedger(store=worker.store, read_model=cache, policy=worker.policy, clock=clock)
    return service, cache, token


async def test_get_session_after_a_conflict_reads_the_store(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    service, cache, token = await _expired_elsewhere(engine, clock)
    # The stale state is due: recording its expiry conflicts with the
    # worker's; the retry reads the store and sees the end (it used to read
    # the same stale state 8 times and answer 503).
    assert await service.get_session(token) is None
    assert cache.fresh == [False, True]


async def test_sign_out_after_a_conflict_reads_the_store(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    other = make_ledger(engine, clock)
    view, token = await other.create_session("u1")
    sql = SqlSessionReadModel(engine)
    before = await sql.by_token_hash(hash_token(token))
    assert before is not None
    await other.update_session(token, {"theme": "dark"})  # another process moved it on
    cache = StaleCache(engine, {hash_token(token): before})
    service = SessionLedger(store=other.store, read_model=cache, policy=other.policy, clock=clock)
    assert await service.sign_out(token)
    assert cache.fresh == [False, True]
    assert await other.get_session(token) is None
    assert (await sql.by_id(view.id)) is not None
