"""The change feed of a PostgreSQL process reads every change from the
ledger (the NOTIFY is only a wake-up): what committed above the horizon is
heard at once, the feed's mark moves over final rows only, and a pass that
cannot read everything leaves the feed behind (Redis not believed)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.store import EventStore
from session_ledger.projections import change_feed
from session_ledger.projections.change_feed import LedgerChanges
from session_ledger.projections.freshness import CacheFreshness
from tests.support.events import created, touched
from tests.unit.test_freshness import state

pytestmark = pytest.mark.pg


async def test_changes_above_the_horizon_are_heard_and_the_mark_waits(
    pg_engine: AsyncEngine,
) -> None:
    store = EventStore(pg_engine)
    freshness = CacheFreshness()
    feed = LedgerChanges(pg_engine, freshness, await horizon.head(pg_engine))
    freshness.connected(feed.mark)
    freshness.checkpoint_read(feed.mark)
    await store.append("s1", 0, [created("s1")])
    await feed.read_pass()
    assert feed.mark == await horizon.head(pg_engine)
    assert not freshness.vouches(state("s1", 0))

    async with pg_engine.connect() as long_conn:
        txn = await long_conn.begin()
        await long_conn.execute(text("SELECT pg_current_xact_id()"))
        await store.append("s1", 1, [touched()])
        before = feed.mark
        await feed.read_pass()
        # Heard at once, although the horizon holds followers back...
        assert not freshness.vouches(state("s1", 1))
        assert freshness.vouches(state("s1", 2))
        # ...and the mark stays below the transaction still running.
        assert feed.mark == before
        await txn.rollback()
    await feed.read_pass()
    assert feed.mark == await horizon.head(pg_engine)
    assert feed.mark > before


async def test_a_pass_that_cannot_read_everything_leaves_the_feed_behind(
    pg_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(change_feed, "PAGE", 2)
    monkeypatch.setattr(change_feed, "MAX_PAGES", 2)
    store = EventStore(pg_engine)
    freshness = CacheFreshness()
    feed = LedgerChanges(pg_engine, freshness, await horizon.head(pg_engine))
    freshness.connected(feed.mark)
    freshness.checkpoint_read(feed.mark)
    async with pg_engine.connect() as long_conn:
        txn = await long_conn.begin()
        await long_conn.execute(text("SELECT pg_current_xact_id()"))
        for i in range(5):
            await store.append(f"s{i}", 0, [created(f"s{i}")])
        await feed.read_pass()
        assert freshness.behind
        assert not freshness.vouches(state("other", 1))
        await txn.rollback()
    await feed.read_pass()  # the mark moves two pages a pass
    await feed.read_pass()
    assert not freshness.behind
    assert freshness.vouches(state("other", 1))
    assert feed.mark == await horizon.head(pg_engine)
