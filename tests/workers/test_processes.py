"""Real ``session-ledger worker`` processes on one PostgreSQL database:
two at once, the leader killed with SIGKILL half-way."""

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

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.events import TERMINAL_EVENT_TYPES
from session_ledger.ledger.schema import events as events_table
from session_ledger.projections.schema import sessions
from session_ledger.workers.health import latest_by_job, read_health
from tests.support import profile
from tests.support.chain import raw_rows, verify_chain
from tests.workers.conftest import create_sessions, expired_counts, make_store, terminal_counts

pytestmark = [pytest.mark.pg, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "session-ledger")
#: Sessions to expire, and per batch: enough batches that a worker can be
#: killed half-way and two workers interleave.
DUE = profile.pick(2_000, 10_000)
BATCH = profile.pick(50, 200)
LIVE = 500
#: Bound on waiting for the workers (they need a few seconds).
DEADLINE = 180.0


class Workers:
    def __init__(self, pg_url: str, workdir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
        self.env |= {
            "SESSION_LEDGER_DATABASE_URL": pg_url,
            "SESSION_LEDGER_WORKER__EXPIRY_INTERVAL": "1",
            "SESSION_LEDGER_WORKER__EXPIRY_BATCH_SIZE": str(BATCH),
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


async def test_two_workers_expire_each_session_once_and_survive_the_leader_s_kill(
    workers: Workers, pg_engine: AsyncEngine
) -> None:
    """Two worker processes at once; the leader is killed with SIGKILL half-way
    through; the standby takes over, and every due session expires once."""
    due = await _populate(pg_engine)
    procs = [workers.start(), workers.start()]
    deadline = time.monotonic() + DEADLINE
    while await _expired_total(pg_engine) < DUE // 20:
        assert all(proc.poll() is None for proc in procs)
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    leaders = [n for n in range(2) if any(e["event"] == "leader.acquired" for e in workers.log(n))]
    assert len(leaders) == 1, "exactly one worker leads"
    leader, standby = procs[leaders[0]], procs[1 - leaders[0]]
    leader.send_signal(signal.SIGKILL)  # no chance to finish anything
    leader.wait()
    at_kill = await _expired_total(pg_engine)
    assert at_kill < DUE, "the leader finished before it could be killed"

    # The dead leader's connection (and its lock) is gone: the standby leads
    # and expires the rest.
    await _wait_for(pg_engine, DUE, [standby])
    standby.send_signal(signal.SIGTERM)
    assert standby.wait(timeout=30) == 0  # graceful: SIGTERM is a clean exit
    assert any(e["event"] == "worker.stopped" for e in workers.log(1 - leaders[0]))
    await _assert_exactly_once(pg_engine, due)
    health = latest_by_job(await read_health(pg_engine))
    assert health["expiry"].last_success_at is not None


async def test_worker_once_reports_and_exits(workers: Workers, pg_engine: AsyncEngine) -> None:
    due = await _populate(pg_engine, 1000)
    proc = workers.start("--once")
    out, _ = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0
    assert json.loads(out)["expiry"]["expired"] == 1000
    await _assert_exactly_once(pg_engine, due)
