"""Worker health: every job run leaves a heartbeat row (worker_heartbeats).

A successful run sets ``last_success_at`` and clears ``last_error``; a failed
run records the error and keeps the last success, so "how long since this job
last worked" is always answerable (``session-ledger status``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.clock import Clock, SystemClock, utc
from ledger.db import writer
from workers.schema import worker_heartbeats

MAX_ERROR = 2000


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
