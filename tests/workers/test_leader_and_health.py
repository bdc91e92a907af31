"""Leader election (PostgreSQL advisory lock), heartbeats, metrics endpoint,
and the worker's job wrapper."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api.bootstrap import Container, build
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.workers.health import Heartbeats, latest_by_job, read_health
from session_ledger.workers.leader import AdvisoryLockLeader, SingleProcessLeader, leadership_for
from session_ledger.workers.metrics import WorkerMetrics
from session_ledger.workers.scheduler import Worker
from tests.support.redis import free_port
from tests.workers.conftest import create_sessions, expired_counts


@pytest.fixture
async def container(
    engine_url: str, engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy
) -> Container:
    settings = load_settings(
        database_url=engine_url,
        session=policy.model_dump(),
        worker={"expiry_batch_size": 10},
    )
    return await build(settings, clock=clock, engine=engine)


# ------------------------------------------------------------------ leader


@pytest.mark.pg
async def test_one_leader_at_a_time_and_takeover_when_it_dies(pg_url: str) -> None:
    a, b = AdvisoryLockLeader(pg_url), AdvisoryLockLeader(pg_url)
    try:
        assert await a.acquire()
        assert not await b.acquire()
        assert await a.acquire()  # still the leader, lock held on its own connection

        # The leader's process dies: the server ends its backend (and the lock).
        pid = a._conn.get_server_pid()  # type: ignore[union-attr]
        assert await b._conn.fetchval("SELECT pg_terminate_backend($1)", pid)  # type: ignore[union-attr]
        for _ in range(600):  # the backend exits asynchronously (slowly under load)
            if await b.acquire():
                break
            await asyncio.sleep(0.05)
        assert b.leading
        assert not await a.acquire()  # reconnects, but the lock is b's now

        await b.release()
        assert await a.acquire()
    finally:
        await a.release()
        await b.release()


def test_sqlite_assumes_a_single_worker_process() -> None:
    assert isinstance(leadership_for("sqlite+aiosqlite:///x.db"), SingleProcessLeader)
    assert isinstance(
        leadership_for("postgresql+asyncpg://postgres@127.0.0.1/x"), AdvisoryLockLeader
    )


@pytest.mark.pg
async def test_only_the_leader_of_two_workers_sweeps(
    pg_url: str, pg_engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy
) -> None:
    settings = load_settings(database_url=pg_url, session=policy.model_dump())
    containers = [await build(settings, clock=clock, engine=pg_engine) for _ in range(2)]
    await create_sessions(containers[0].store, clock.now(), 40, policy=policy)
    clock.advance(hours=2)
    workers = [Worker(c, jobs=["expiry"]) for c in containers]
    try:
        results = await asyncio.gather(*(w.run_job("expiry") for w in workers))
        ran = [r for r in results if r is not None]
        assert len(ran) == 1
        assert ran[0]["expired"] == 40
        assert set((await expired_counts(pg_engine)).values()) == {1}
    finally:
        for w in workers:
            await w.leader.release()


# ------------------------------------------------------------------ health


async def test_heartbeats_record_success_and_failure(
    container: Container, clock: ManualClock, policy: SessionPolicy
) -> None:
    await create_sessions(container.store, clock.now(), 25, policy=policy)
    clock.advance(hours=2)
    worker = Worker(
        container, jobs=["expiry"], heartbeats=Heartbeats(container.engine, clock, "w1")
    )

    results = await worker.run_once()
    assert results["expiry"] is not None
    assert results["expiry"]["expired"] == 25
    assert results["expiry"]["batches"] == 3
    health = latest_by_job(await read_health(container.engine))
    assert health["expiry"].last_success_at == clock.now()
    assert health["expiry"].last_error is None
    assert health["expiry"].details["expired"] == 25

    # A failing run keeps the last success and records the error.
    succeeded_at = clock.now()
    clock.advance(minutes=1)

    async def boom(**_kwargs: Any) -> Any:
        raise RuntimeError("database on fire")

    worker.sweep.run = boom  # type: ignore[method-assign]
    assert await worker.run_job("expiry") is None
    assert worker.failed == ["expiry"]
    row = (await read_health(container.engine))[0]
    assert row.last_success_at == succeeded_at
    assert row.last_error == "RuntimeError: database on fire"


async def test_digest_job_runs_with_the_others(container: Container) -> None:
    worker = Worker(container, heartbeats=Heartbeats(container.engine, container.clock, "w2"))
    results = await worker.run_once()
    assert results["digest"] == {}
    assert results["projector"] is None  # no Redis configured
    assert worker.failed == []
    assert "digest" in latest_by_job(await read_health(container.engine))


async def test_graceful_stop_finishes_the_running_sweep(
    container: Container, clock: ManualClock, policy: SessionPolicy
) -> None:
    await create_sessions(container.store, clock.now(), 30, policy=policy)
    clock.advance(hours=2)
    worker = Worker(container, jobs=["expiry"])
    original = container.store.append_batch

    async def append_then_signal(*args: Any, **kwargs: Any) -> Any:
        recorded = await original(*args, **kwargs)
        worker.stop.set()  # SIGTERM arrives while the first batch is in hand
        return recorded

    container.store.append_batch = append_then_signal  # type: ignore[method-assign]
    await asyncio.wait_for(worker.run_forever(), 30)
    assert sum((await expired_counts(container.engine)).values()) == 10


# ----------------------------------------------------------------- metrics


def test_metrics_are_served_over_http() -> None:
    metrics = WorkerMetrics()
    metrics.sessions_expired.labels(reason="idle").inc(3)
    metrics.projection_lag_events.labels(projection="redis").set(7)
    port = free_port()
    metrics.serve(port, addr="127.0.0.1")
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'session_ledger_sessions_expired_total{reason="idle"} 3.0' in body
    assert 'session_ledger_projection_lag_events{projection="redis"} 7.0' in body
    assert "session_ledger_expiry_batch_duration_seconds_bucket" in body
