"""The expiry sweep: records ``SessionExpired`` for every session past its
idle expiry or absolute cap.

How a sweep runs
    ``cutoff`` is fixed when the sweep starts: it expires what was due then
    (sessions falling due during the sweep wait for the next run). Batches
    are read from the partial index ``ix_sessions_active_expires_at`` (active
    sessions by deadline), oldest deadline first. An expired session leaves
    the index, so the next batch starts where the last one ended and the cost
    of a sweep grows with the number of expired sessions, not the table size.

Races
    The ``sessions`` row may be stale by the time the batch is appended: a
    request may have refreshed the session (clocks of two hosts differ), or
    revoked it, or recorded its expiry itself. Every append carries each
    session's expected stream version; a ConcurrencyError rolls the whole
    batch back. The sweep then re-reads the batch's sessions (one query)
    and splits them: those still at the version it expected go again at
    once, as one batch; those that moved are decided afresh
    (``ExpireSession`` gives ``[]`` for a session no longer due or already
    ended) and go as another batch. Only the sessions that raced are
    retried, never the batch one session at a time, so a busy batch costs a
    few appends, not one per session. A session is therefore never ended
    twice, a refreshed one is never expired, and no ConcurrencyError leaves
    the sweep. Sessions that keep moving (GROUP_ATTEMPTS times) are left
    for the next sweep; those that did not move are never held back by them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, literal_column, select
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import Clock
from session_ledger.ledger.db import retry_stale
from session_ledger.ledger.domain.decide import ExpireSession, decide
from session_ledger.ledger.domain.errors import ConcurrencyError
from session_ledger.ledger.domain.events import EventMetadata, SessionExpired
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.state import SessionState
from session_ledger.ledger.store import EventStore, StreamAppend
from session_ledger.projections.schema import sessions
from session_ledger.projections.session_table import load_states, state_from_row
from session_ledger.workers.logging import get_logger
from session_ledger.workers.metrics import WorkerMetrics

ACTOR = "system:expiry"
#: Appends of one group of sessions (after re-reads) before leaving it to
#: the next sweep.
GROUP_ATTEMPTS = 5

KeepGoing = Callable[[], Awaitable[bool]]


def due_sessions_query(cutoff: datetime, limit: int, exclude: Sequence[str] = ()) -> Select[Any]:
    """Active sessions whose deadline is at or before ``cutoff``, oldest first.

    ``status = 'active'`` is a literal, not a bound parameter: the planner
    (PostgreSQL with a generic prepared plan, and SQLite always) can only use
    a partial index when the query's predicate provably implies the index's.
    """
    query = (
        select(sessions)
        .where(sessions.c.status == literal_column("'active'"))
        .where(sessions.c.expires_at <= cutoff)
        .order_by(sessions.c.expires_at)
        .limit(limit)
    )
    if exclude:
        query = query.where(sessions.c.session_id.not_in(list(exclude)))
    return query


@dataclass
class BatchResult:
    expired: int = 0
    #: Due according to the table, but no longer due or already ended when re-read.
    skipped: int = 0
    conflicts: int = 0
    #: Kept losing races; left for the next sweep.
    deferred: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class SweepResult:
    cutoff: datetime
    expired: int = 0
    skipped: int = 0
    conflicts: int = 0
    deferred: int = 0
    batches: int = 0
    duration: float = 0.0
    #: True when the sweep ended early (stop requested or leadership lost).
    interrupted: bool = False
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, batch: BatchResult) -> None:
        self.batches += 1
        self.expired += batch.expired
        self.skipped += batch.skipped
        self.conflicts += batch.conflicts
        self.deferred += len(batch.deferred)
        self.reasons.update(batch.reasons)


class ExpirySweep:
    def __init__(
        self,
        store: EventStore,
        policy: SessionPolicy,
        clock: Clock,
        *,
        batch_size: int = 500,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self.store = store
        self.engine: AsyncEngine = store.engine
        self.policy = policy
        self.clock = clock
        self.batch_size = batch_size
        self.metrics = metrics
        self._log = get_logger("workers.expiry")

    async def run(
        self, *, stop: asyncio.Event | None = None, keep_going: KeepGoing | None = None
    ) -> SweepResult:
        """Expire every session due at the start of the sweep, batch by batch.

        ``stop`` and ``keep_going`` (e.g. "still the leader") are checked
        between batches only: the batch in hand always finishes.
        """
        started = time.perf_counter()
        result = SweepResult(cutoff=self.clock.now())
        correlation = f"expiry-sweep:{uuid.uuid4().hex}"
        deferred: list[str] = []
        while True:
            if (stop is not None and stop.is_set()) or (
                keep_going is not None and not await keep_going()
            ):
                result.interrupted = True
                break
            states = await self.due(result.cutoff, self.batch_size, deferred)
            if not states:
                break
            batch = await self.expire_batch(states, correlation_id=correlation)
            result.add(batch)
            deferred.extend(batch.deferred)
            if len(states) < self.batch_size:
                break
        result.duration = time.perf_counter() - started
        self._log.info(
            "expiry.sweep",
            expired=result.expired,
            skipped=result.skipped,
            conflicts=result.conflicts,
            deferred=result.deferred,
            batches=result.batches,
            interrupted=result.interrupted,
            cutoff=result.cutoff.isoformat(),
            duration_ms=round(result.duration * 1000, 1),
        )
        return result

    async def due(
        self, cutoff: datetime, limit: int, exclude: Sequence[str] = ()
    ) -> list[SessionState]:
        async def read() -> list[SessionState]:
            async with self.engine.connect() as conn:
                rows = await conn.execute(due_sessions_query(cutoff, limit, exclude))
                return [state_from_row(row) for row in rows]

        # The first read after a database restart meets a pooled connection
        # that died with the server: it fails once, the stale pool is
        # dropped, and the read is tried again on a fresh connection (the
        # append retries the same way), so the sweep does not wait for the
        # next interval.
        return await retry_stale(read)

    async def expire_batch(
        self, states: Sequence[SessionState], *, correlation_id: str | None = None
    ) -> BatchResult:
        """Append SessionExpired for each of ``states`` still due; never raises
        ConcurrencyError."""
        started = time.perf_counter()
        result = BatchResult()
        meta = EventMetadata(actor=ACTOR, correlation_id=correlation_id)
        # (sessions, appends tried so far): the batch, then what conflicts split off.
        groups: deque[tuple[list[SessionState], int]] = deque([(list(states), 0)])
        while groups:
            group, tried = groups.popleft()
            appends = self._plan(group, result)
            if not appends:
                continue
            try:
                recorded = await self.store.append_batch(appends, metadata=meta)
            except ConcurrencyError:
                # The whole group rolled back. Re-read it (one query): the
                # sessions still where we expected them go again together,
                # at once; those that moved are decided afresh, apart.
                result.conflicts += 1
                expected = {a.stream_id: a.expected_version for a in appends}
                fresh = await self._reload(list(expected))
                steady = [s for s in fresh if s.version == expected[s.session_id]]
                moved = [s for s in fresh if s.version != expected[s.session_id]]
                # Each conflict that moved a session shrinks the steady group,
                # which is therefore retried without counting; a conflict
                # that moved nothing (the competitor rolled back) counts.
                parts = [(steady, tried + (0 if moved else 1)), (moved, tried + 1)]
                for part, attempts in parts:
                    if not part:
                        continue
                    if attempts < GROUP_ATTEMPTS:
                        groups.append((part, attempts))
                    else:
                        result.deferred += [s.session_id for s in part]
                continue
            self._count(recorded, result)
        if result.deferred:
            self._log.warning(
                "expiry.deferred", sessions=len(result.deferred), attempts=GROUP_ATTEMPTS
            )
        duration = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.expiry_batch_duration.observe(duration)
            self.metrics.expiry_conflicts.inc(result.conflicts)
            for reason, n in result.reasons.items():
                self.metrics.sessions_expired.labels(reason=reason).inc(n)
        self._log.info(
            "expiry.batch",
            expired=result.expired,
            skipped=result.skipped,
            conflicts=result.conflicts,
            deferred=len(result.deferred),
            size=len(states),
            duration_ms=round(duration * 1000, 1),
        )
        return result

    def _plan(self, states: Sequence[SessionState], result: BatchResult) -> list[StreamAppend]:
        now = self.clock.now()
        appends: list[StreamAppend] = []
        for state in states:
            events = decide(state, ExpireSession(), now, self.policy)
            if events:
                appends.append(StreamAppend(state.session_id, state.version, events, state.user_id))
            else:
                result.skipped += 1
        return appends

    async def _reload(self, session_ids: Sequence[str]) -> list[SessionState]:
        async def read() -> list[SessionState]:
            async with self.engine.connect() as conn:
                return await load_states(conn, session_ids)

        return await retry_stale(read)

    @staticmethod
    def _count(recorded: Sequence[Any], result: BatchResult) -> None:
        for r in recorded:
            if isinstance(r.event, SessionExpired):
                result.expired += 1
                result.reasons[r.event.reason.value] += 1
