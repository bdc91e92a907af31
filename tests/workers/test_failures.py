"""A worker whose jobs fail says so: ``worker --once`` exits 2 naming each
failed job and why; running on, each failure is logged (the same error at
most once a minute), and ``status`` and the worker's ``/healthz`` show the
job as failing with its last error."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from session_ledger.api.bootstrap import build
from session_ledger.api.cli.worker import projector_for
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.config import load_settings
from session_ledger.workers.health import Heartbeats, JobStates, failing_jobs, read_health
from session_ledger.workers.scheduler import Worker
from tests.cli.conftest import cli, console_script
from tests.support.db import migrate
from tests.support.redis import free_port

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _unreachable_pg() -> tuple[str, str]:
    port = free_port()
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x", f"127.0.0.1:{port}/x"


def test_worker_once_against_an_unreachable_database_fails_naming_the_jobs() -> None:
    url, where = _unreachable_pg()
    done = console_script("worker", "--once", "--database-url", url)
    assert done.returncode == 2
    reason = f"cannot reach the database on {where} (connection refused)"
    assert done.stderr.splitlines() == [
        f"error: job expiry failed: {reason}: start it or fix SESSION_LEDGER_DATABASE_URL",
        f"error: job digest failed: {reason}: start it or fix SESSION_LEDGER_DATABASE_URL",
    ]
    results = json.loads(done.stdout)
    assert results["expiry"]["error"].startswith(reason)
    assert results["projector"] is None  # no Redis configured: nothing to run


def test_a_failing_projector_is_named_too(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    asyncio.run(migrate(url))
    redis = f"redis://127.0.0.1:{free_port()}/0"
    env = {"SESSION_LEDGER_REDIS__URL": redis}
    done = console_script("worker", "--once", "--only", "projector", "--database-url", url, env=env)
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"error: job projector failed: cannot reach Redis on {redis[8:]} (")
    # ... and `status` shows it, from the heartbeat the failed run left.
    status = cli("status", "--database-url", url, columns=200)
    assert status.exit_code == 0, status.output
    assert "FAILING" in status.stdout
    assert "projector is failing: cannot reach Redis on" in status.stdout


# ------------------------------------------------------------ in process


def test_failures_are_logged_rate_limited() -> None:
    now = [0.0]
    states = JobStates(log_every=60, monotonic=lambda: now[0])
    assert states.failed("expiry", "db down", T0) == 1  # the first of a streak
    for t in (1.0, 30.0, 59.0):
        now[0] = t
        assert states.failed("expiry", "db down", T0) is None
    now[0] = 61.0
    assert states.failed("expiry", "db down", T0) == 4  # itself and the 3 not logged
    now[0] = 62.0
    assert states.failed("expiry", "db refused the login", T0) == 1  # a new error: at once
    assert not states.ok
    assert states.to_json()["jobs"]["expiry"]["failures"] == 6
    assert states.succeeded("expiry", T0) == 6  # the streak it ends
    assert states.ok
    assert states.failed("expiry", "db down", T0) == 1  # a new streak is logged again


async def test_an_unreachable_database_is_a_failure_not_a_standby() -> None:
    url, where = _unreachable_pg()
    container = await build(load_settings(database_url=url))
    try:
        worker = Worker(container, jobs=["expiry", "digest"])
        with capture_logs() as logs:
            for _ in range(3):
                assert await worker.run_job("expiry") is None
            assert await worker.run_job("digest") is None
    finally:
        await container.close()
    assert worker.failed == ["expiry"] * 3 + ["digest"]
    assert worker.errors["expiry"].startswith(f"cannot reach the database on {where}")
    failed = [e for e in logs if e["event"] == "job.failed"]
    assert [(e["job"], e["failures"]) for e in failed] == [("expiry", 1), ("digest", 1)]
    heartbeat = [e for e in logs if e["event"] == "heartbeat.failed"]
    assert len(heartbeat) == 1  # the database is down for heartbeats too: said once
    healthy, body = worker.health()
    assert not healthy
    assert body["jobs"]["expiry"]["state"] == "failing"
    assert body["jobs"]["expiry"]["failures"] == 3
    assert body["jobs"]["expiry"]["lastError"] == worker.errors["expiry"]


async def test_healthz_and_status_show_the_failing_job(sqlite_url: str) -> None:
    clock = ManualClock(T0)
    container = await build(load_settings(database_url=sqlite_url), clock=clock)
    worker = Worker(container, jobs=["expiry"], heartbeats=Heartbeats(container.engine, clock))

    async def broken(**_kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    original = worker.sweep.run
    server = worker.metrics.serve(port := free_port(), addr="127.0.0.1", health=worker.health)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            worker.sweep.run = broken  # type: ignore[method-assign]
            await worker.run_job("expiry")
            answer = await client.get("/healthz")
            assert answer.status_code == 503
            assert answer.json()["jobs"]["expiry"]["lastError"] == "RuntimeError: disk on fire"
            assert "session_ledger_job_failures_total" in (await client.get("/metrics")).text

            failing = failing_jobs(await read_health(container.engine))
            assert failing["expiry"].last_error == "RuntimeError: disk on fire"
            status = await asyncio.to_thread(cli, "status", "--database-url", sqlite_url)
            assert "expiry is failing: RuntimeError: disk on fire" in status.stdout

            worker.sweep.run = original  # type: ignore[method-assign]
            clock.advance(60)
            assert await worker.run_job("expiry") is not None
            answer = await client.get("/healthz")
            assert answer.status_code == 200
            assert answer.json()["jobs"]["expiry"]["state"] == "ok"
            assert failing_jobs(await read_health(container.engine)) == {}
    finally:
        server.shutdown()
        await container.close()


@pytest.mark.redis
async def test_the_running_projector_reports_its_failures(sqlite_url: str) -> None:
    redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = load_settings(
        database_url=sqlite_url, redis={"url": redis}, worker={"projector_poll_interval": 0.05}
    )
    container = await build(settings)
    try:
        worker = Worker(container, jobs=["projector"], projector=projector_for(container))
        assert worker.projector is not None
        task = asyncio.create_task(worker.projector.run(worker.stop))
        for _ in range(100):
            if worker.failed:
                break
            await asyncio.sleep(0.05)
        worker.stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        await container.close()
    assert worker.failed[0] == "projector"
    assert worker.errors["projector"].startswith("cannot reach Redis on 127.0.0.1:")
    assert worker.health()[1]["jobs"]["projector"]["state"] == "failing"
