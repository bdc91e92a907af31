"""Every audit query against generated histories with known answers.

Hypothesis generates step lists; each runs against the real SessionLedger
(ManualClock) on SQLite and PostgreSQL, next to a reference model
(tests/audit/history.py). Examples share one database per backend, each in
its own window of time and with its own user ids.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_ledger.ledger.audit import AuditEntry, AuditLog
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.events import RevocationReason
from tests.audit.history import (
    ADMIN_ACTOR,
    EPOCH,
    NETWORKS,
    WINDOW,
    Model,
    collect,
    histories,
    make_ledger,
    play,
)

_windows = itertools.count()
EXAMPLES = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check_positions(entries: list[Any]) -> None:
    positions = [e.position for e in entries]
    assert positions == sorted(set(positions)), "pages must follow ledger order, no repeats"


def _key(e: AuditEntry) -> tuple[datetime, str, str]:
    return (e.recorded_at, e.session_id, e.type)


async def _scenario(url: str, steps: list[tuple[object, ...]], instants: list[float]) -> None:
    window = next(_windows)
    start = EPOCH + window * WINDOW
    prefix = f"w{window}-"
    clock = ManualClock(start)
    engine = make_engine(url)
    try:
        model = await play(make_ledger(engine, clock), clock, steps, prefix)
        audit = AuditLog(engine)
        end = clock.now() + timedelta(seconds=1)
        await _check_histories(audit, model, prefix, start, end)
        await _check_ips(audit, model, start, end)
        await _check_revocations(audit, model, start, end)
        await _check_counts(audit, model, start, end)
        for fraction in instants:
            at = start + (end - start) * fraction
            await _check_active_at(audit, model, prefix, at)
    finally:
        await engine.dispose()


async def _check_histories(
    audit: AuditLog, model: Model, prefix: str, start: datetime, end: datetime
) -> None:
    for user in range(3):
        user_id = f"{prefix}u{user}"
        # Small pages: pagination must neither skip nor repeat.
        got = await collect(audit.user_history, user_id, limit=3)
        _check_positions(got)
        expected = [(e.at, e.session_id, e.type) for e in model.events if e.user_id == user_id]
        assert sorted(_key(e) for e in got) == sorted(expected)
        # A time range is a filter on recorded_at: [since, until).
        if expected:
            since = expected[len(expected) // 2][0]
            page = await audit.user_history(user_id, since=since, until=end, limit=1000)
            assert sorted(_key(e) for e in page.items) == sorted(
                x for x in expected if x[0] >= since
            )
            page = await audit.user_history(user_id, since=start, until=since, limit=1000)
            assert sorted(_key(e) for e in page.items) == sorted(
                x for x in expected if x[0] < since
            )
    assert (await audit.user_history(f"{prefix}nobody")).items == []
    for s in model.sessions:
        got = await collect(audit.session_history, s.session_id, limit=2)
        expected_types = [e.type for e in model.events if e.session_id == s.session_id]
        assert [e.type for e in got] == expected_types
        assert [e.stream_version for e in got] == list(range(1, len(got) + 1))
        assert got[0].ip is not None
        assert got[0].user_agent == "pytest"


async def _check_ips(audit: AuditLog, model: Model, start: datetime, end: datetime) -> None:
    for network in NETWORKS:
        got = await collect(audit.ip_sightings, network, since=start, until=end, limit=4)
        _check_positions(got)
        assert [(s.session_id, s.ip) for s in got] == model.sightings(network)


async def _check_revocations(audit: AuditLog, model: Model, start: datetime, end: datetime) -> None:
    revoked = [e for e in model.events if e.type == "SessionRevoked"]
    page = await audit.revocations(since=start, until=end, limit=1000)
    assert sorted((e.session_id, e.reason, e.actor) for e in page.items) == sorted(
        (e.session_id, e.reason, e.actor) for e in revoked
    )
    for reason in RevocationReason:
        page = await audit.revocations(reason=reason.value, since=start, until=end, limit=1000)
        assert Counter(e.session_id for e in page.items) == Counter(
            e.session_id for e in revoked if e.reason == reason.value
        )
    page = await audit.revocations(actor=ADMIN_ACTOR, since=start, until=end, limit=1000)
    assert Counter(e.session_id for e in page.items) == Counter(
        e.session_id for e in revoked if e.actor == ADMIN_ACTOR
    )


async def _check_counts(audit: AuditLog, model: Model, start: datetime, end: datetime) -> None:
    got = await audit.counts_per_day(since=start, until=end)
    assert Counter({(c.day, c.type): c.count for c in got}) == model.counts()


async def _check_active_at(audit: AuditLog, model: Model, prefix: str, at: datetime) -> None:
    overall = await collect(audit.active_at, at, limit=2)
    _check_positions(overall)
    assert {s.session_id for s in overall} == model.active(at)
    for user in range(3):
        user_id = f"{prefix}u{user}"
        page = await audit.active_at(at, user_id=user_id, limit=1000)
        assert {s.session_id for s in page.items} == model.active(at, user_id)
        assert all(s.user_id == user_id and s.expires_at > at for s in page.items)


@given(steps=histories, instants=st.lists(st.floats(0, 1), min_size=1, max_size=4))
@EXAMPLES
def test_queries_answer_as_the_model(
    engine_url: str, steps: list[tuple[object, ...]], instants: list[float]
) -> None:
    asyncio.run(_scenario(engine_url, steps, instants))
