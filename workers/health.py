"""Worker health: every job run leaves a heartbeat row (worker_heartbeats).

A successful run sets ``last_success_at`` and clears ``last_error``; a failed
run records the error and keeps the last success, so "how long since this job
last worked" is always answerable (``session-ledger status``).

``JobStates`` is the same story inside one worker process, kept in memory so
it holds when the database is the thing that failed: what the worker's
``/healthz`` answers, and the rate limit of its failure logs.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import Clock, SystemClock, utc
from session_ledger.ledger.db import writer
from session_ledger.workers.schema import worker_heartbeats

MAX_ERROR = 2000
#: A job failing the same way again is logged at most this often (seconds).
LOG_FAILURES_EVERY = 60.0


def default_worker_id() -> str:
    """``host:pid``: unique among live processes, readable in ``status``."""
    return f"{socket.gethostname()}:{os.getpid()}"[:128]


@dataclass(frozen=True, slots=True)
class JobHealth:
    worker_id: str
    job: str
    last_success_at: datetime | None
    last_error: str | None
    details: Mapping[str, Any] = field(default_factory=dict)


class Heartbeats:
    """Writes this worker's heartbeat rows."""

    def __init__(
        self, engine: AsyncEngine, clock: Clock | None = None, worker_id: str | None = None
    ) -> None:
        # Writer connections: on SQLite they take the write lock up front
        # (BEGIN IMMEDIATE) instead of failing on a lock upgrade.
        self._engine = writer(engine)
        self._clock = clock or SystemClock()
        self.worker_id = worker_id or default_worker_id()

    async def success(self, job: str, details: Mapping[str, Any] | None = None) -> datetime:
        now = self._clock.now()
        await self._upsert(
            job,
            {"last_success_at": now, "last_error": None, "details": _json(details, now)},
            insert_extra={},
        )
        return now

    async def failure(
        self, job: str, error: BaseException | str, details: Mapping[str, Any] | None = None
    ) -> None:
        now = self._clock.now()
        message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        await self._upsert(
            job,
            {"last_error": message[:MAX_ERROR], "details": _json(details, now, failed=True)},
            insert_extra={"last_success_at": None},
        )

    async def _upsert(self, job: str, values: dict[str, Any], insert_extra: dict[str, Any]) -> None:
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(worker_heartbeats).values(
            worker_id=self.worker_id, job=job, **insert_extra, **values
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[worker_heartbeats.c.worker_id, worker_heartbeats.c.job],
            set_={name: stmt.excluded[name] for name in values},
        )
        async with self._engine.begin() as conn:
            await conn.execute(stmt)


def _json(details: Mapping[str, Any] | None, now: datetime, failed: bool = False) -> dict[str, Any]:
    out = dict(details or {})
    out["failed_at" if failed else "succeeded_at"] = now.isoformat()
    return out


async def read_health(engine: AsyncEngine) -> list[JobHealth]:
    """Every heartbeat row, newest success first."""
    query = select(worker_heartbeats).order_by(
        worker_heartbeats.c.job, worker_heartbeats.c.worker_id
    )
    async with engine.connect() as conn:
        rows = [
            JobHealth(
                worker_id=row.worker_id,
                job=row.job,
                last_success_at=None if row.last_success_at is None else utc(row.last_success_at),
                last_error=row.last_error,
                details=dict(row.details or {}),
            )
            for row in await conn.execute(query)
        ]
    return sorted(rows, key=_newest_first)


def _newest_first(h: JobHealth) -> tuple[str, float]:
    return (h.job, -(h.last_success_at.timestamp() if h.last_success_at else 0.0))


def latest_by_job(rows: list[JobHealth]) -> dict[str, JobHealth]:
    """Per job, the heartbeat with the most recent success (any worker)."""
    latest: dict[str, JobHealth] = {}
    for h in rows:
        current = latest.get(h.job)
        if current is None or _newest_first(h) < _newest_first(current):
            latest[h.job] = h
    return latest


def failing_jobs(rows: list[JobHealth]) -> dict[str, JobHealth]:
    """Jobs whose newest run (any worker) failed: the row of that failure."""
    latest = latest_by_job(rows)
    failing: dict[str, JobHealth] = {}
    for h in rows:
        failed_at = failed_at_of(h)
        if not h.last_error or failed_at is None:
            continue
        best = latest.get(h.job)
        success = best.last_success_at if best is not None else None
        if success is not None and failed_at <= success:
            continue
        current = failing.get(h.job)
        if current is None or failed_at > (failed_at_of(current) or failed_at):
            failing[h.job] = h
    return failing


def failed_at_of(h: JobHealth) -> datetime | None:
    """When the heartbeat's last failure happened (None: never, or unknown)."""
    raw = h.details.get("failed_at")
    try:
        return utc(datetime.fromisoformat(str(raw))) if raw else None
    except ValueError:
        return None


# ----------------------------------------------------------- in process


@dataclass
class JobState:
    """One job as this process saw it run."""

    last_success_at: datetime | None = None
    last_error: str | None = None
    failed_at: datetime | None = None
    #: Failures since the last success (0: the job is healthy).
    failures: int = 0
    #: Failures not logged yet (rate limit), and when the last one was logged.
    unlogged: int = 0
    logged_at: float | None = None
    logged_error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "state": "failing" if self.failing else "ok",
            "lastSuccessAt": self.last_success_at.isoformat() if self.last_success_at else None,
            "lastError": self.last_error,
            "failedAt": self.failed_at.isoformat() if self.failed_at else None,
            "failures": self.failures,
        }


class JobStates:
    """Per job: healthy or failing, with the last error; decides which
    failures are logged (the first of a streak, a new error, then at most one
    every ``log_every`` seconds)."""

    def __init__(
        self, log_every: float = LOG_FAILURES_EVERY, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.log_every = log_every
        self._monotonic = monotonic
        self.jobs: dict[str, JobState] = {}

    def _state(self, job: str) -> JobState:
        return self.jobs.setdefault(job, JobState())

    def succeeded(self, job: str, at: datetime) -> int:
        """Record a success; returns how many failures it ends (0: none)."""
        state = self._state(job)
        ended = state.failures
        state.last_success_at = at
        state.failures = state.unlogged = 0
        state.logged_at = state.logged_error = None
        return ended

    def failed(self, job: str, error: str, at: datetime) -> int | None:
        """Record a failure. Returns None when it is not to be logged, else
        the number of failures it stands for (itself and the ones not logged)."""
        state = self._state(job)
        state.failures += 1
        state.unlogged += 1
        state.last_error = error[:MAX_ERROR]
        state.failed_at = at
        now = self._monotonic()
        due = (
            state.logged_at is None
            or error != state.logged_error
            or now - state.logged_at >= self.log_every
        )
        if not due:
            return None
        count, state.unlogged = state.unlogged, 0
        state.logged_at, state.logged_error = now, error
        return count

    @property
    def ok(self) -> bool:
        return not any(s.failing for s in self.jobs.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "failing",
            "jobs": {job: s.to_json() for job, s in sorted(self.jobs.items())},
        }
