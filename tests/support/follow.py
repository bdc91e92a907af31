"""Concurrent appends from several processes, and a follower racing them.

The harness of the follower tests (``tests/integration/test_followers.py``):
writer processes append through the public ``EventStore`` API while the
database itself holds each append's transaction open for a random while
after its rows took their positions (a test trigger, see
:func:`install_commit_delays`), so transactions commit out of order whatever
the store's code looks like. Writers also race for shared streams, so some
appends lose (a unique violation: a transaction aborted after drawing its
positions, leaving holes). Every committed event is reported back; the
follower must see each exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.errors import ConcurrencyError
from session_ledger.ledger.domain.events import Event, RecordedEvent
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.store import EventStore, StreamAppend
from session_ledger.projections.session_table import SessionTableProjection
from tests.support.events import created, touched

#: An AFTER INSERT trigger that sleeps 0 to ``max_ms`` ms in the inserting
#: transaction: its positions (and xid) are taken, its commit comes later.
DELAY_TRIGGER = (
    """CREATE FUNCTION test_commit_delay() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_sleep(random() * {max_ms} / 1000.0);
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER test_commit_delay AFTER INSERT ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION test_commit_delay()""",
)

#: Seconds the writers of one run may take.
COLLECT_TIMEOUT = 120.0

#: (position, stream id, stream version) of a committed event.
Committed = tuple[int, str, int]


async def install_commit_delays(engine: AsyncEngine, max_ms: int) -> None:
    """PostgreSQL only: every append's transaction stays open 0 to ``max_ms``
    ms after its INSERT (on this test database only)."""
    async with engine.begin() as conn:
        for statement in DELAY_TRIGGER:
            await conn.execute(text(statement.format(max_ms=int(max_ms))))


@dataclass(frozen=True)
class WriterPlan:
    url: str
    seed: int
    process: int
    writers: int
    appends: int
    #: Streams every writer of every process competes for.
    shared: int
    #: Appends carry the service's inline ``sessions`` projection.
    project_sessions: bool = False


async def _write(plan: WriterPlan) -> list[Committed]:
    rng = random.Random(plan.seed * 1000 + plan.process)
    engine = make_engine(plan.url)
    inline = [SessionTableProjection()] if plan.project_sessions else []
    store = EventStore(engine, inline_projections=list(inline))
    committed: list[Committed] = []
    now = datetime.now(UTC)

    def touch(ip: str) -> Event:
        return touched(at=now, ip=ip)

    def record(recorded: list[RecordedEvent]) -> None:
        committed.extend((r.position, r.stream_id, r.stream_version) for r in recorded)

    async def writer(index: int) -> None:
        own = f"p{plan.process}w{index}"
        version = 0
        for n in range(plan.appends):
            await asyncio.sleep(rng.uniform(0, 0.003))
            roll = rng.random()
            if roll < 0.25 and plan.shared:
                # A race for a shared stream, at the version read a moment
                # ago: someone else may get there first.
                stream = f"shared-{rng.randrange(plan.shared)}"
                at = await store.stream_version(stream)
                event: Event = created(stream, at=now) if at == 0 else touch(f"10.9.{index}.{n}")
                with contextlib.suppress(ConcurrencyError):  # someone else got there first
                    record(await store.append(stream, at, [event]))
            elif roll < 0.4 and version > 0:
                # One append to two streams: one transaction, two events.
                other = f"{own}-b{n}"
                batch = [
                    StreamAppend(own, version, [touch(f"10.8.{index}.{n}")]),
                    StreamAppend(other, 0, [created(other, at=now)]),
                ]
                record(await store.append_batch(batch))
                version += 1
            else:
                event = created(own, at=now) if version == 0 else touch(f"10.7.{index}.{n}")
                record(await store.append(own, version, [event]))
                version += 1

    try:
        await asyncio.gather(*(writer(i) for i in range(plan.writers)))
    finally:
        await engine.dispose()
    return committed


def _writer_process(plan: WriterPlan, out: multiprocessing.Queue[object]) -> None:
    try:
        out.put(asyncio.run(_write(plan)))
    except BaseException as exc:
        out.put(f"{type(exc).__name__}: {exc}")


@dataclass
class FollowResult:
    committed: list[Committed] = field(default_factory=list)
    seen: list[RecordedEvent] = field(default_factory=list)
    #: Events seen while the writers were still running.
    seen_live: int = 0

    def problems(self) -> list[str]:
        """Everything wrong with what the follower saw (empty: nothing)."""
        seen = [(e.position, e.stream_id, e.stream_version) for e in self.seen]
        found: list[str] = []
        twice = len(seen) - len(set(seen))
        if twice:
            found.append(f"{twice} events read twice")
        missed = set(self.committed) - set(seen)
        if missed:
            found.append(f"missed {sorted(missed)[:10]} ({len(missed)} in all)")
        unknown = set(seen) - set(self.committed)
        if unknown:
            found.append(f"read events nobody committed: {sorted(unknown)[:10]}")
        last: dict[str, int] = {}
        for _, stream, version in seen:
            if version != last.get(stream, 0) + 1:
                found.append(f"stream {stream}: version {version} after {last.get(stream, 0)}")
            last[stream] = version
        return found


class Follower(Protocol):
    """A reader following the ledger: each call returns the next events (at
    most ``limit``) after those it returned before."""

    async def read_next(self, limit: int) -> list[RecordedEvent]: ...


@dataclass
class HorizonFollower:
    """Follows the ledger in commit-safe order (ledger.horizon): what the
    runner, replay and every follower do."""

    store: EventStore
    mark: Mark = horizon.ORIGIN

    async def read_next(self, limit: int) -> list[RecordedEvent]:
        batch = await horizon.read(self.store.engine, self.mark, limit)
        if batch.last is not None:
            self.mark = batch.last
        return batch.events


@dataclass
class PositionFollower:
    """Follows ``EventStore.read_all`` by position: gap-free only while
    appends commit in position order, which they no longer do on
    PostgreSQL (the control experiment of the follower tests)."""

    store: EventStore
    position: int = 0

    async def read_next(self, limit: int) -> list[RecordedEvent]:
        batch = await self.store.read_all(after_position=self.position, limit=limit)
        if batch:
            self.position = batch[-1].position
        return batch


class WriterProcesses:
    """The writer processes of one run, as an async context manager: started
    on entry, their reports gathered in the background, stopped on exit."""

    def __init__(self, plans: list[WriterPlan]) -> None:
        context = multiprocessing.get_context("spawn")
        self._out: multiprocessing.Queue[object] = context.Queue()
        self._children = [
            context.Process(target=_writer_process, args=(plan, self._out), daemon=True)
            for plan in plans
        ]
        self._reports: list[object] = []
        self._collecting: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WriterProcesses:
        for child in self._children:
            child.start()
        self._collecting = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for child in self._children:
            await asyncio.to_thread(child.join, 30)
            if child.is_alive():
                child.kill()
        if self._collecting is not None and not self._collecting.done():
            self._collecting.cancel()

    async def _collect(self) -> None:
        deadline = time.monotonic() + COLLECT_TIMEOUT
        while len(self._reports) < len(self._children):
            try:
                self._reports.append(await asyncio.to_thread(self._out.get, True, 0.5))
            except queue.Empty:
                # A process that died without a word (killed, crashed at
                # start) would otherwise be waited for until the deadline.
                dead = [c.exitcode for c in self._children if c.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    self._reports.append(f"writer processes ended with {dead or 'no report'}")
                    return

    @property
    def finished(self) -> bool:
        """Every writer process has reported (its appends all committed)."""
        return self._collecting is not None and self._collecting.done()

    async def committed(self) -> list[Committed]:
        """Every event the writers committed, once all have finished."""
        assert self._collecting is not None
        await self._collecting
        committed: list[Committed] = []
        for report in self._reports:
            if isinstance(report, str):
                raise AssertionError(f"a writer process failed: {report}")
            assert isinstance(report, list)
            committed += report
        return committed


def plans(
    url: str,
    *,
    seed: int,
    processes: int = 2,
    writers: int = 4,
    appends: int = 15,
    shared: int = 3,
    project_sessions: bool = False,
) -> list[WriterPlan]:
    return [
        WriterPlan(url, seed, p, writers, appends, shared, project_sessions)
        for p in range(processes)
    ]


async def follow_writers(
    url: str, follower: Callable[[EventStore], Follower], *, seed: int, limit: int = 25
) -> FollowResult:
    """Run the writer processes, follow the ledger with a ``follower`` of a
    store of its own until they are done and one more read finds nothing,
    and gather what each side saw."""
    result = FollowResult()
    engine = make_engine(url)
    reader = follower(EventStore(engine))
    try:
        async with WriterProcesses(plans(url, seed=seed)) as writers:
            while True:
                finished = writers.finished  # read once more after the writers are done
                batch = await reader.read_next(limit)
                result.seen += batch
                if not finished:
                    result.seen_live += len(batch)
                elif not batch:
                    break
                if len(batch) < limit:
                    await asyncio.sleep(0.002)
            result.committed = await writers.committed()
    finally:
        await engine.dispose()
    return result
