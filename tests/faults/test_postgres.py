"""PostgreSQL faults under load: a fast restart, a crash of the postmaster,
and an outage seen through one keep-alive connection. The services recover
by themselves (no restart), answer 503 with Retry-After while the database
is gone (never 500, never a dropped connection), lose nothing they
acknowledged, and the workers' first sweep after a restart succeeds."""

from __future__ import annotations

import asyncio
import http.client
import json
from datetime import UTC, datetime, timedelta

import asyncpg

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.db import make_engine
from session_ledger.workers.expiry import ExpirySweep
from tests.support.db import migrate
from tests.support.deployment import Deployment
from tests.support.faults import assert_clean, describe
from tests.support.scenarios import Rig, postgres_killed, postgres_restart
from tests.workers.conftest import POLICY, create_sessions, expired_counts, make_store


def failed_sweeps(dep: Deployment, since: float) -> list[str]:
    """The workers' ``job.failed`` log lines of the expiry job after ``since``."""
    failed = []
    for worker in dep.workers:
        for line in worker.log().splitlines():
            if '"job.failed"' not in line or '"expiry"' not in line:
                continue
            when = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
            if when.timestamp() > since:
                failed.append(line)
    return failed


async def test_postgres_restart_fast(fault_rig: Rig) -> None:
    outcome = await postgres_restart(fault_rig)
    print(describe(outcome))
    assert_clean(outcome)
    assert outcome.transport_errors == {}  # no connection dropped
    # The first expiry sweep on the restarted server succeeded (issue 14, item 5).
    assert failed_sweeps(fault_rig.dep, outcome.notes["back at"]) == []


async def test_first_sweep_after_a_restart_succeeds(fault_rig: Rig) -> None:
    """Issue 14, item 5, in one process: the sweep's pool holds connections
    that died with the server; the sweep after the restart still expires
    everything due (it used to fail, and expiry waited one more interval)."""
    pg = fault_rig.pg
    admin = await asyncpg.connect(pg.url().replace("+asyncpg", ""))
    try:
        await admin.execute("CREATE DATABASE sweep_restart")
    finally:
        await admin.close()
    url = pg.url("sweep_restart")
    await migrate(url)
    engine = make_engine(url)  # as the service's: no pre-ping
    try:
        now = datetime.now(UTC)
        clock = ManualClock(now)
        store = make_store(engine, clock)
        sweep = ExpirySweep(store, POLICY, clock, batch_size=50)
        made = await create_sessions(store, now - timedelta(hours=3), 120)
        # Idle connections in the pool, as a running worker has them.
        await asyncio.gather(*(sweep.due(now, 1) for _ in range(3)))
        await asyncio.to_thread(pg.restart, "fast")
        result = await sweep.run()
        assert result.expired == len(made)
        assert set((await expired_counts(engine)).values()) == {1}
    finally:
        await engine.dispose()


async def test_postgres_postmaster_killed(fault_rig: Rig) -> None:
    outcome = await postgres_killed(fault_rig)
    print(describe(outcome))
    assert_clean(outcome)
    assert outcome.transport_errors == {}


Answer = tuple[int, dict[str, str], bytes]


def _get(conn: http.client.HTTPConnection, path: str, cookie: str) -> Answer:
    conn.request("GET", path, headers={"cookie": cookie})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


async def test_database_down_is_503_on_a_kept_alive_connection(fault_rig: Rig) -> None:
    """Issue 14, item 3: 503 SERVICE_UNAVAILABLE with Retry-After, one log
    line per error, and the same connection serves the next request, which
    succeeds once the database is back (the service never restarted)."""
    pg, service, cookie = fault_rig.pg, fault_rig.dep.services[0], fault_rig.canary.cookie
    assert service.port is not None
    log_before = len(service.log())
    path = "/api/auth/get-session?disableCookieCache=true"

    def exercise() -> list[Answer]:
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        answers = []
        try:
            assert _get(conn, path, cookie)[0] == 200
            sock = conn.sock
            pg.stop("fast")
            for _ in range(3):
                answers.append(_get(conn, path, cookie))
                assert conn.sock is sock, "the connection was closed"
            pg.start()
            answers.append(_get(conn, path, cookie))
            assert conn.sock is sock, "the connection was closed"
        finally:
            conn.close()
            if pg.postmaster_pid() is None:
                pg.start()
        return answers

    answers = await asyncio.to_thread(exercise)
    for status, headers, body in answers[:3]:
        assert status == 503
        assert headers["retry-after"] == "1"
        assert json.loads(body)["code"] == "SERVICE_UNAVAILABLE"
        assert headers.get("connection", "keep-alive") != "close"
    status, _, body = answers[3]
    assert status == 200
    assert json.loads(body)["session"] is not None
    log = service.log()[log_before:]
    assert "Traceback" not in log
    assert log.count("service unavailable: GET /api/auth/get-session") == 3
