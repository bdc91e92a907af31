"""The expiry sweep against a controlled clock, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.testing import capture_logs

from session_ledger.ledger.clock import ManualClock, utc
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.decide import (
    RefreshSession,
    RevokeSession,
    UpdateFields,
    ValidateSession,
    decide,
    decide_validation,
)
from session_ledger.ledger.domain.events import EventMetadata, RevocationReason, SessionRefreshed
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.state import SessionState, fold
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.service import SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.session_table import SqlSessionReadModel
from session_ledger.workers.expiry import ExpirySweep
from session_ledger.workers.metrics import WorkerMetrics
from tests.support.chain import raw_rows, verify_chain
from tests.workers.conftest import (
    create_sessions,
    expired_counts,
    expired_reasons,
    make_store,
    session_rows,
    terminal_counts,
)


async def _state(store: EventStore, sid: str) -> SessionState:
    state = fold(r.event for r in await store.read_stream(sid))
    assert state is not None
    return state


async def _head(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(events_table)) or 0)


async def test_sweep_expires_exactly_the_due_sessions_and_is_idempotent(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy
) -> None:
    store = make_store(engine, clock)
    start = clock.now()
    made = []
    # Sessions created at 40 instants, 3 minutes apart: long (remember me,
    # 60 min idle) and short (remember me off, 10 min).
    for i in range(40):
        made += await create_sessions(store, clock.now(), 5, prefix=f"long{i}", policy=policy)
        made += await create_sessions(
            store, clock.now(), 2, prefix=f"short{i}", policy=policy, remember_me=False
        )
        clock.advance(minutes=3)
    # Three sessions slid up to their absolute cap (90 minutes after creation).
    capped = await create_sessions(store, start, 3, prefix="capped", policy=policy)
    for m in capped:
        state = await _state(store, m.session_id)
        events = decide(state, RefreshSession(), start + timedelta(minutes=50), policy)
        assert isinstance(events[0], SessionRefreshed)
        assert events[0].expires_at == state.max_expires_at
        await store.append(m.session_id, state.version, events, user_id=state.user_id)
    deadlines = {m.session_id: m.expires_at for m in made}
    deadlines |= {m.session_id: start + timedelta(minutes=90) for m in capped}

    sweep = ExpirySweep(store, policy, clock, batch_size=7)
    for minutes in (100, 200):
        clock.set(start + timedelta(minutes=minutes))
        cutoff = clock.now()
        due = {sid for sid, deadline in deadlines.items() if deadline <= cutoff}
        already = set(await expired_counts(engine))
        result = await sweep.run()

        assert result.expired == len(due - already)
        assert result.conflicts == 0
        counts = await expired_counts(engine)
        assert set(counts) == due
        assert set(counts.values()) == {1}
        rows = await session_rows(engine)
        assert {sid for sid, row in rows.items() if row["status"] == "expired"} == due
        assert {sid for sid, row in rows.items() if row["status"] == "active"} == (
            set(deadlines) - due
        )

        # Idempotent: a second sweep at the same instant finds nothing to do.
        before = await _head(engine)
        again = await sweep.run()
        assert (again.expired, again.batches) == (0, 0)
        assert await _head(engine) == before

    assert len(due) == len(deadlines)  # by minute 200 everything has expired
    reasons = await expired_reasons(engine)
    assert {reasons[m.session_id] for m in capped} == {"absolute"}
    assert {reasons[m.session_id] for m in made} == {"idle"}
    assert verify_chain(await raw_rows(engine)) == []


async def test_a_stale_batch_skips_sessions_refreshed_revoked_or_ended_meanwhile(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy
) -> None:
    store = make_store(engine, clock)
    start = clock.now()
    made = await create_sessions(store, start, 30, policy=policy)
    ids = [m.session_id for m in made]
    sweep_now = start + timedelta(minutes=61)
    sweep_clock = ManualClock(sweep_now)
    sweep = ExpirySweep(make_store(engine, sweep_clock), policy, sweep_clock, batch_size=100)
    stale = await sweep.due(sweep_now, 100)
    assert len(stale) == 30

    # Meanwhile, an app server whose clock is two minutes behind refreshes
    # 10 sessions and revokes 10; another process records 5 expiries itself.
    app_now = start + timedelta(minutes=59)
    for sid in ids[:10]:
        state = await _state(store, sid)
        await store.append(sid, state.version, decide(state, RefreshSession(), app_now, policy))
    for sid in ids[10:20]:
        state = await _state(store, sid)
        revoke = RevokeSession(reason=RevocationReason.ADMIN, actor="admin:1")
        await store.append(sid, state.version, decide(state, revoke, app_now, policy))
    for sid in ids[20:25]:
        state = await _state(store, sid)
        decision = decide_validation(
            state, ValidateSession(token_hash=state.token_hash), sweep_now, policy
        )
        assert decision.reason == "expired"
        await store.append(sid, state.version, decision.events)

    result = await sweep.expire_batch(stale)  # must not raise ConcurrencyError

    assert result.conflicts >= 1
    assert result.expired == 5
    assert result.skipped == 25
    assert result.deferred == []
    terminal = await terminal_counts(engine)
    assert set(terminal) == set(ids[10:])
    assert set(terminal.values()) == {1}
    rows = await session_rows(engine, ids[:10])
    assert all(row["status"] == "active" for row in rows.values())
    assert all(utc(row["expires_at"]) > sweep_now for row in rows.values())
    assert verify_chain(await raw_rows(engine)) == []


async def test_a_contended_batch_retries_only_the_sessions_that_raced(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy
) -> None:
    """Issue 14, item 6: requests keep changing one session of the batch
    just before each of the sweep's appends. The sweep re-reads the batch,
    appends the sessions that did not move together and decides the moved
    ones afresh: a few appends, never one per session (it fell back to one
    session at a time after three conflicts: 200 appends here)."""
    store = make_store(engine, clock)
    start = clock.now()
    made = await create_sessions(store, start, 200, policy=policy)
    sweep_now = start + timedelta(minutes=61)
    sweep_clock = ManualClock(sweep_now)
    sweep_store = make_store(engine, sweep_clock)
    append_batch = sweep_store.append_batch
    sizes: list[int] = []

    async def racing(appends: Any, *, metadata: Any = None) -> Any:
        sizes.append(len(appends))
        if len(sizes) <= 4:
            # A request (clock a bit behind) updates a session of this very batch.
            victim = appends[len(appends) // 2].stream_id
            state = await _state(store, victim)
            update = UpdateFields(fields={"raced": len(sizes)})
            when = start + timedelta(minutes=59)
            await store.append(victim, state.version, decide(state, update, when, policy))
        return await append_batch(appends, metadata=metadata)

    sweep_store.append_batch = racing  # type: ignore[method-assign]
    sweep = ExpirySweep(sweep_store, policy, sweep_clock, batch_size=500)
    result = await sweep.run()

    assert result.expired == 200
    assert result.conflicts == 4
    assert result.deferred == 0
    assert len(sizes) <= 1 + 2 * 4
    assert max(sizes[1:]) < 200
    counts = await expired_counts(engine)
    assert set(counts) == {m.session_id for m in made}
    assert set(counts.values()) == {1}
    assert verify_chain(await raw_rows(engine)) == []


async def test_sweep_racing_refreshes_and_revocations_ends_each_session_at_most_once(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy
) -> None:
    # App servers' clock is 40 s behind the worker's (clock skew): from the
    # worker's view sessions 0..80 are due, from the app's only 0..40, so
    # sessions 41..80 can be refreshed by a request while the sweep expires them.
    app_clock = clock
    start = app_clock.now()
    app_store = make_store(engine, app_clock)
    app = SessionLedger(
        store=app_store, read_model=SqlSessionReadModel(engine), policy=policy, clock=app_clock
    )
    tokens: list[tuple[str, str]] = []
    for k in range(120):
        app_clock.set(start + timedelta(seconds=k))
        view, token = await app.create_session(f"user-{k % 7}")
        tokens.append((view.id, token))
    cutoff = start + timedelta(seconds=3600 + 80)
    app_clock.set(cutoff - timedelta(seconds=40))
    sweep_clock = ManualClock(cutoff)
    sweep = ExpirySweep(make_store(engine, sweep_clock), policy, sweep_clock, batch_size=8)
    rng = random.Random(6)

    async def request(k: int, sid: str, token: str) -> None:
        await asyncio.sleep(rng.random() * 0.2)
        if k % 3 == 0:
            for _ in range(2):
                validated = await app.get_session(token)
                if validated is None:
                    return
                token = validated.token
        elif k % 3 == 1:
            user = (await app.read_model.by_id(sid)).user_id  # type: ignore[union-attr]
            await app.revoke_session(user, sid, reason=RevocationReason.ADMIN)

    sweeping = asyncio.create_task(sweep.run())
    await asyncio.gather(*(request(k, sid, tok) for k, (sid, tok) in enumerate(tokens)))
    result = await sweeping  # no ConcurrencyError escapes the sweep

    terminal = await terminal_counts(engine)
    assert max(terminal.values()) == 1
    rows = await session_rows(engine)
    for k, (sid, _token) in enumerate(tokens):
        # Every stream is a legal history: nothing follows a terminal event.
        state = await _state(app_store, sid)
        assert rows[sid]["status"] == state.status.value
        if terminal[sid] == 0:
            assert state.status.value == "active"
            assert state.expires_at > cutoff, f"session {k} due but left active"
        if k % 3 == 2:  # untouched: the sweep alone decides
            assert terminal[sid] == (1 if k <= 80 else 0)
    by_sweep = [
        r for r in await app_store.read_all(limit=10_000) if r.metadata.actor == "system:expiry"
    ]
    assert result.expired == len(by_sweep)
    assert verify_chain(await raw_rows(engine)) == []


async def test_two_sweeps_at_once_expire_each_session_exactly_once(
    engine_url: str, clock: ManualClock, policy: SessionPolicy
) -> None:
    engines = [make_engine(engine_url), make_engine(engine_url)]
    try:
        store = make_store(engines[0], clock)
        made = await create_sessions(store, clock.now(), 300, policy=policy)
        clock.advance(hours=2)
        sweeps = [ExpirySweep(make_store(e, clock), policy, clock, batch_size=25) for e in engines]
        results = await asyncio.gather(*(s.run() for s in sweeps))
        assert sum(r.expired for r in results) == 300
        counts = await expired_counts(engines[0])
        assert set(counts) == {m.session_id for m in made}
        assert set(counts.values()) == {1}
    finally:
        for e in engines:
            await e.dispose()


async def test_stop_lets_the_batch_in_hand_finish_then_ends_the_sweep(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store(engine, clock)
    await create_sessions(store, clock.now(), 50, policy=policy)
    clock.advance(hours=2)
    stop = asyncio.Event()
    original = store.append_batch

    async def append_then_stop(*args: Any, **kwargs: Any) -> Any:
        recorded = await original(*args, **kwargs)
        stop.set()  # the "signal" arrives while the first batch is in hand
        return recorded

    monkeypatch.setattr(store, "append_batch", append_then_stop)
    result = await ExpirySweep(store, policy, clock, batch_size=10).run(stop=stop)
    assert (result.expired, result.batches, result.interrupted) == (10, 1, True)
    assert sum((await expired_counts(engine)).values()) == 10


async def test_each_batch_logs_one_line_and_updates_the_metrics(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy
) -> None:
    store = make_store(engine, clock)
    await create_sessions(store, clock.now(), 25, policy=policy)
    clock.advance(hours=2)
    metrics = WorkerMetrics()
    with capture_logs() as logs:
        await ExpirySweep(store, policy, clock, batch_size=10, metrics=metrics).run()
    batches = [line for line in logs if line["event"] == "expiry.batch"]
    assert [line["expired"] for line in batches] == [10, 10, 5]
    assert all(line["duration_ms"] >= 0 for line in batches)
    sweep_lines = [line for line in logs if line["event"] == "expiry.sweep"]
    assert len(sweep_lines) == 1
    assert sweep_lines[0]["expired"] == 25
    sample = metrics.registry.get_sample_value
    assert sample("session_ledger_sessions_expired_total", {"reason": "idle"}) == 25
    assert sample("session_ledger_expiry_batch_duration_seconds_count") == 3


async def test_metadata_names_the_worker_and_the_sweep(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy
) -> None:
    store = make_store(engine, clock)
    await create_sessions(store, clock.now(), 3, policy=policy)
    clock.advance(hours=2)
    await ExpirySweep(store, policy, clock).run()
    expired = [r for r in await store.read_all() if r.type == "SessionExpired"]
    assert {r.metadata.actor for r in expired} == {"system:expiry"}
    assert len({r.metadata.correlation_id for r in expired}) == 1
    assert all(r.user_id is not None for r in expired)
    assert all(isinstance(r.metadata, EventMetadata) for r in expired)
