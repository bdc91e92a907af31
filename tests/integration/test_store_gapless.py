"""No skipped events: a reader following the ledger in commit-safe order
(``ledger.horizon``) sees every committed event exactly once while many
writers append in parallel and commit out of order.

Half of the writers append through a store whose inline projection sleeps a
random 0-20 ms *inside* the append transaction, after the INSERT has taken its
position: a later position commits first. The same race run with the horizon
condition removed (the ``unsafe`` reader: (xid, position) order, everything
committed) and with a reader following positions both miss events: the setup
really catches what the horizon prevents. A reader racing writers while a
transaction of its own database stays open reads nothing past that
transaction's horizon, and everything, once each, when it ends.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.events import Event
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.recorders import recorder_for
from session_ledger.ledger.recorders.sql import SqlRecorder
from session_ledger.ledger.store import EventStore
from session_ledger.ledger.writes import FromEvents, Projected, Rows, Write
from tests.support.chain import raw_rows, verify_chain
from tests.support.db import PgServer
from tests.support.events import created, touched

WRITERS = 8
APPENDS = 40


class SleepingProjection(FromEvents):
    """An inline projection that holds the append transaction open for a
    while: it asks for the transaction (None before it), whose recorder
    sleeps before COMMIT (``before_commit``, see sleeping())."""

    def writes(
        self, events: Sequence[Projected], prior: Rows, *, locked: bool
    ) -> list[Write] | None:
        return [] if locked else None


def sleeping(engine: AsyncEngine, rng: random.Random, max_delay: float) -> SqlRecorder:
    recorder = recorder_for(engine)

    async def nap() -> None:
        await asyncio.sleep(rng.uniform(0, max_delay))

    recorder.before_commit = nap
    return recorder


@dataclass
class RaceResult:
    committed: list[int] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    #: Events the reader saw while writers were still running.
    seen_live: int = 0

    @property
    def missed(self) -> set[int]:
        return set(self.committed) - set(self.seen)


#: How the reader follows: "horizon" (the product), "unsafe" (the same
#: order without the horizon condition), "position" (read_all by position).
READERS = ("horizon", "unsafe", "position")


async def race(
    url: str,
    seed: int,
    *,
    writers: int = WRITERS,
    appends: int = APPENDS,
    reader_kind: str = "horizon",
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
            sleeping(engine, rng, 0.020) if sleepy else engine,
            inline_projections=[SleepingProjection()] if sleepy else [],
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
        mark: Mark = horizon.ORIGIN
        while True:
            finished = done.is_set()  # read once more after the writers are done
            if reader_kind == "position":
                batch = await store.read_all(after_position=mark[1], limit=50)
                marks = [(0, e.position) for e in batch]
            else:
                read = await horizon.read(engine, mark, 50, safe=reader_kind == "horizon")
                batch, marks = read.events, read.marks
            if batch:
                result.seen.extend(e.position for e in batch)
                if not finished:
                    result.seen_live += len(batch)
                mark = marks[-1]
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


async def test_reader_sees_every_committed_event_once(engine_url: str) -> None:
    seed = random.randrange(1 << 30)
    result = await race(engine_url, seed)

    context = f"seed={seed}"
    assert len(result.committed) == WRITERS * APPENDS, context
    assert len(result.seen) == len(set(result.seen)), f"reader saw duplicates ({context})"
    assert result.missed == set(), f"reader skipped {sorted(result.missed)} ({context})"
    assert set(result.seen) == set(result.committed), context
    # The reader really followed the writers, not only caught up at the end.
    assert result.seen_live >= len(result.committed) // 4, (result.seen_live, context)

    engine = make_engine(engine_url)
    try:
        rows = await raw_rows(engine)
        assert sorted(r["position"] for r in rows) == sorted(result.seen)
        assert verify_chain(rows) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("reader_kind", ["unsafe", "position"])
async def test_readers_without_the_horizon_miss_events(pg_url: str, reader_kind: str) -> None:
    """Control experiment: the race above does catch a reader that follows
    without the horizon condition (PostgreSQL; SQLite serialises writers in
    the database itself)."""
    outcomes: list[tuple[int, int]] = []
    for attempt in range(5):
        seed = random.randrange(1 << 30)
        result = await race(pg_url, seed, writers=WRITERS, appends=20, reader_kind=reader_kind)
        # Every write still commits; only the follower loses track.
        assert len(result.committed) == WRITERS * 20
        outcomes.append((seed, len(result.missed)))
        if result.missed:
            break
        assert attempt < 4, f"the {reader_kind} reader never missed an event: {outcomes}"
    assert outcomes[-1][1] > 0


async def test_a_long_transaction_holds_readers_back_and_they_skip_nothing(
    pg_url: str, pg_engine: AsyncEngine
) -> None:
    """A transaction of this database that wrote (it has an xid) stays open
    while writers append: the reader reads nothing committed after it began,
    however long it waits; once it ends, everything, each event once."""
    store = EventStore(pg_engine)
    await store.append("before", 0, [created("before")])
    reader_engine = make_engine(pg_url)
    try:
        mark = (await horizon.read(reader_engine)).last
        assert mark is not None
        async with pg_engine.connect() as long_conn:
            txn = await long_conn.begin()
            # Anything that gives it an xid: here an event of its own.
            await long_conn.exec_driver_sql("SELECT pg_current_xact_id()")
            committed: list[int] = []
            for i in range(10):
                recorded = await store.append(f"after-{i}", 0, [created(f"after-{i}")])
                committed += [r.position for r in recorded]
            seen: list[int] = []
            for _ in range(5):
                batch = await horizon.read(reader_engine, mark, 100)
                seen += [e.position for e in batch.events]
                await asyncio.sleep(0.01)
            assert seen == [], "read past a transaction still running"
            # The events are committed: the unsafe reader sees them already.
            unsafe = await horizon.read(reader_engine, mark, 100, safe=False)
            assert sorted(e.position for e in unsafe.events) == sorted(committed)
            lag = await horizon.lag(reader_engine)
            assert lag.held_back >= len(committed)
            assert lag.oldest_xact_seconds > 0
            await txn.rollback()
        while True:
            batch = await horizon.read(reader_engine, mark, 3)
            if batch.last is None:
                break
            seen += [e.position for e in batch.events]
            mark = batch.last
        assert seen == committed
        assert (await horizon.lag(reader_engine)).held_back == 0
    finally:
        await reader_engine.dispose()


async def test_a_transaction_of_another_database_holds_no_one_back(
    pg_engine: AsyncEngine, pg_server: PgServer
) -> None:
    """The horizon counts this database's transactions only: another
    database's long transaction cannot write here."""
    store = EventStore(pg_engine)
    other = make_engine(pg_server.url_for("postgres"))
    try:
        async with other.connect() as conn:
            await conn.begin()
            await conn.exec_driver_sql("SELECT pg_current_xact_id()")
            recorded = await store.append("s", 0, [created("s")])
            batch = await horizon.read(pg_engine)
            assert [e.position for e in batch.events] == [r.position for r in recorded]
            await conn.rollback()
    finally:
        await other.dispose()
