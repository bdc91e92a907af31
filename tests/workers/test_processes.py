"""Real ``session-ledger worker`` processes on one PostgreSQL database:
two at once, and one killed with SIGKILL half-way."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.clock import ManualClock
from ledger.events import TERMINAL_EVENT_TYPES
from ledger.schema import events as events_table
from projections.schema import sessions
from tests.support.chain import raw_rows, verify_chain
from tests.workers.conftest import create_sessions, expired_counts, make_store, terminal_counts
from workers.health import latest_by_job, read_health

pytestmark = [pytest.mark.pg, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "session-ledger")
DUE = 10_000
LIVE = 500
#: Bound on waiting for the workers (they need a few seconds).
DEADLINE = 180.0


class Workers:
    def __init__(self, pg_url: str, workdir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
        self.env |= {
            "SESSION_LEDGER_DATABASE_URL": pg_url,
            "SESSION_LEDGER_WORKER__EXPIRY_INTERVAL": "1",
            "SESSION_LEDGER_WORKER__EXPIRY_BATCH_SIZE": "200",
        }
        self.workdir = workdir
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        n = len(self.procs)
        proc = subprocess.Popen(
            [CLI, "worker", "--only", "expiry", *args],
            env=self.env,
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=(self.workdir / f"worker{n}.log").open("w"),
            text=True,
        )
        self.procs.append(proc)
        return proc

    def log(self, n: int) -> list[dict[str, object]]:
        lines = (self.workdir / f"worker{n}.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(pg_url: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(pg_url, tmp_path)
    try:
        yield w
    finally:
        w.stop_all()


async def _populate(engine: AsyncEngine, count: int = DUE) -> set[str]:
    """``count`` sessions due an hour ago, 500 live for another day (real clock)."""
    now = datetime.now(UTC)
    store = make_store(engine, ManualClock(now))
    due = await create_sessions(store, now - timedelta(hours=2), count, prefix="due")
    await create_sessions(store, now - timedelta(minutes=1), LIVE, prefix="live")
    return {m.session_id for m in due}


async def _expired_total(engine: AsyncEngine) -> int:
    query = select(func.count()).where(events_table.c.type == "SessionExpired")
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


async def _wait_for(engine: AsyncEngine, total: int, procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + DEADLINE
    while await _expired_total(engine) < total:
        for proc in procs:
            assert proc.poll() is None, f"worker exited early with {proc.returncode}"
        assert time.monotonic() < deadline, f"only {await _expired_total(engine)} expired"
        await asyncio.sleep(0.1)


async def _assert_exactly_once(engine: AsyncEngine, due: set[str]) -> None:
    """Each due session expired once, the live ones untouched, table = ledger."""
    counts = await expired_counts(engine)
    assert set(counts) == due
    assert set(counts.values()) == {1}
    assert set(await terminal_counts(engine)) == due  # live sessions untouched
    async with engine.connect() as conn:
        rows = await conn.execute(select(sessions.c.status, func.count()).group_by("status"))
        assert {row[0]: row[1] for row in rows} == {"expired": len(due), "active": LIVE}
        kinds = await conn.execute(select(events_table.c.type).distinct())
        assert {k[0] for k in kinds} == {"SessionCreated"} | (
            TERMINAL_EVENT_TYPES - {"SessionRevoked"}
        )
    assert verify_chain(await raw_rows(engine)) == []


async def test_two_worker_processes_expire_each_session_exactly_once(
    workers: Workers, pg_engine: AsyncEngine
) -> None:
    due = await _populate(pg_engine)
    procs = [workers.start(), workers.start()]
    await _wait_for(pg_engine, DUE, procs)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=30) == 0  # graceful: SIGTERM is a clean exit

    await _assert_exactly_once(pg_engine, due)
    for n in range(2):
        assert any(line["event"] == "worker.stopped" for line in workers.log(n))
    sweeps = [
        line
        for n in range(2)
        for line in workers.log(n)
        if line["event"] == "expiry.sweep" and line["expired"]
    ]
    assert sum(int(str(line["expired"])) for line in sweeps) == DUE
    health = latest_by_job(await read_health(pg_engine))
    assert health["expiry"].last_success_at is not None


async def test_a_worker_killed_mid_sweep_is_finished_by_the_next(
    workers: Workers, pg_engine: AsyncEngine
) -> None:
    due = await _populate(pg_engine)
    first = workers.start()
    deadline = time.monotonic() + DEADLINE
    while await _expired_total(pg_engine) < 500:
        assert first.poll() is None
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    first.send_signal(signal.SIGKILL)  # no chance to finish anything
    first.wait()
    at_kill = await _expired_total(pg_engine)
    assert at_kill < DUE, "the first worker finished before it could be killed"

    # The dead worker's connection (and its leader lock) is gone: the next
    # worker becomes leader and expires the rest.
    second = workers.start()
    await _wait_for(pg_engine, DUE, [second])
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == 0
    await _assert_exactly_once(pg_engine, due)


async def test_worker_once_reports_and_exits(workers: Workers, pg_engine: AsyncEngine) -> None:
    due = await _populate(pg_engine, 1000)
    proc = workers.start("--once")
    out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0
    assert json.loads(out)["expiry"]["expired"] == 1000
    await _assert_exactly_once(pg_engine, due)
