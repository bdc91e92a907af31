"""No skipped events: a reader following ``read_all`` by position sees every
committed event exactly once, in order, while many writers commit out of order.

Half of the writers append through a store whose inline projection sleeps a
random 0-20 ms *inside* the append transaction, after the INSERT has taken its
position: without the store's append serialisation, a later position commits
first, the reader moves past it, and the earlier one becomes visible behind
the reader's back. ``test_reader_misses_events_without_the_append_lock`` shows
that this setup really catches that failure.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.events import Event, RecordedEvent
from session_ledger.ledger.store import EventStore
from tests.support.chain import raw_rows, verify_chain
from tests.support.events import created, touched

WRITERS = 8
APPENDS = 40


class SleepingProjection:
    """An inline projection that holds the append transaction open for a while."""

    def __init__(self, rng: random.Random, max_delay: float) -> None:
        self._rng = rng
        self._max_delay = max_delay

    async def apply(self, conn: AsyncConnection, recorded: Sequence[RecordedEvent]) -> None:
        await asyncio.sleep(self._rng.uniform(0, self._max_delay))


@dataclass
class RaceResult:
    committed: list[int] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    #: Events the reader saw while writers were still running.
    seen_live: int = 0

    @property
    def missed(self) -> set[int]:
        return set(self.committed) - set(self.seen)


async def race(
    url: str, seed: int, *, writers: int = WRITERS, appends: int = APPENDS
) -> RaceResult:
    """Run the writers and one following reader, each on its own engine (pool)."""
    rng = random.Random(seed)
    result = RaceResult()
    engines: list[AsyncEngine] = []
    done = asyncio.Event()

    async def writer(index: int) -> None:
        engine = make_engine(url)
        engines.append(engine)
        sleepy = index % 2 == 0
        store = EventStore(
            engine,
            inline_projections=[SleepingProjection(rng, 0.020)] if sleepy else [],
        )
        stream = f"race-{seed}-w{index}"
        for version in range(appends):
            await asyncio.sleep(rng.uniform(0, 0.004))
            event: Event = (
                created(stream) if version == 0 else touched(ip=f"10.0.{index}.{version}")
            )
            recorded = await store.append(stream, version, [event])
            result.committed.extend(r.position for r in recorded)

    async def reader() -> None:
        engine = make_engine(url)
        engines.append(engine)
        store = EventStore(engine)
        last = 0
        while True:
            finished = done.is_set()  # read once more after the writers are done
            batch = await store.read_all(after_position=last, limit=50)
            if batch:
                result.seen.extend(e.position for e in batch)
                if not finished:
                    result.seen_live += len(batch)
                last = batch[-1].position
            elif finished:
                return
            else:
                await asyncio.sleep(0.001)

    try:
        reading = asyncio.create_task(reader())
        await asyncio.gather(*(writer(i) for i in range(writers)))
        done.set()
        await reading
    finally:
        for engine in engines:
            await engine.dispose()
    return result


async def test_reader_sees_every_committed_event_once_in_order(engine_url: str) -> None:
    seed = random.randrange(1 << 30)
    result = await race(engine_url, seed)

    context = f"seed={seed}"
    assert len(result.committed) == WRITERS * APPENDS, context
    assert result.seen == sorted(result.seen), f"reader saw positions out of order ({context})"
    assert len(result.seen) == len(set(result.seen)), f"reader saw duplicates ({context})"
    assert result.missed == set(), f"reader skipped {sorted(result.missed)} ({context})"
    assert set(result.seen) == set(result.committed), context
    # The reader really followed the writers, not only caught up at the end.
    assert result.seen_live >= len(result.committed) // 4, (result.seen_live, context)

    engine = make_engine(engine_url)
    try:
        rows = await raw_rows(engine)
        assert [r["position"] for r in rows] == result.seen
        assert verify_chain(rows) == []
    finally:
        await engine.dispose()


async def test_reader_misses_events_without_the_append_lock(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control experiment: the race above does catch a store that hands out
    positions without serialising commits (PostgreSQL; SQLite serialises writers
    in the database itself)."""
    original = EventStore.__post_init__

    def without_lock(self: EventStore) -> None:
        original(self)
        self._serialise = False

    monkeypatch.setattr(EventStore, "__post_init__", without_lock)
    outcomes: list[tuple[int, int]] = []
    for attempt in range(5):
        seed = random.randrange(1 << 30)
        result = await race(pg_url, seed, writers=WRITERS, appends=20)
        # Every write still commits; only the follower loses track.
        assert len(result.committed) == WRITERS * 20
        outcomes.append((seed, len(result.missed)))
        if result.missed:
            break
        assert attempt < 4, f"the reader never missed an event without the lock: {outcomes}"
    assert outcomes[-1][1] > 0
