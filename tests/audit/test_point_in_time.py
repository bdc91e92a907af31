"""Point in time equals a brute-force fold of the raw ledger up to T.

Here sessions slide and rotate (a short update_age), so expires_at moves:
active_at must fold each stream up to T, not read any stored deadline.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_ledger.ledger.audit import AuditLog
from session_ledger.ledger.clock import ManualClock, utc
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.events import deserialize
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.rules import is_active
from session_ledger.ledger.domain.state import evolve
from session_ledger.ledger.service import RequestContext, SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.audit_ips import AuditIpProjection
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel
from tests.audit.history import EPOCH, WINDOW, collect
from tests.support.chain import raw_rows

SLIDING = SessionPolicy(
    expires_in=7200, update_age=600, activity_interval=60, rotate_on_refresh=True, fresh_age=0
)
_windows = itertools.count(2000)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("advance"), st.sampled_from([30, 300, 900, 3600, 7200, 9000])),
        st.tuples(st.just("validate"), st.integers(0, 20)),
        st.tuples(st.just("sign_out"), st.integers(0, 20)),
        st.tuples(st.just("revoke_all"), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=40,
)


def brute_force(rows: list[dict[str, Any]], at: datetime) -> set[str]:
    """Fold every stream's events recorded at or before ``at``, the slow way."""
    streams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        streams[row["stream_id"]].append(row)
    active = set()
    for stream_id, stream in streams.items():
        stream.sort(key=lambda r: r["stream_version"])
        state = None
        for row in stream:
            if utc(row["recorded_at"]) > at:
                break
            state = evolve(state, deserialize(row["type"], row["schema_version"], row["data"]))
        if state is not None and is_active(state, at):
            active.add(stream_id)
    return active


async def _scenario(url: str, plan: list[tuple[Any, ...]], instants: list[float]) -> None:
    window = next(_windows)
    start = EPOCH + window * WINDOW
    clock = ManualClock(start)
    engine = make_engine(url)
    try:
        store = EventStore(
            engine,
            clock=clock,
            inline_projections=[SessionTableProjection(), AuditIpProjection()],
        )
        ledger = SessionLedger(
            store=store, read_model=SqlSessionReadModel(engine), policy=SLIDING, clock=clock
        )
        tokens: list[tuple[str, str]] = []  # (user id, current token)
        for kind, *args in plan:
            if kind == "create":
                user_id = f"p{window}-u{args[0]}"
                _, token = await ledger.create_session(
                    user_id, RequestContext(ip="10.0.0.1"), remember_me=args[1]
                )
                tokens.append((user_id, token))
            elif kind == "advance":
                clock.advance(args[0])
            elif kind == "validate" and tokens:
                i = args[0] % len(tokens)
                validated = await ledger.get_session(tokens[i][1])
                if validated is not None:
                    tokens[i] = (tokens[i][0], validated.token)
            elif kind == "sign_out" and tokens:
                await ledger.sign_out(tokens[args[0] % len(tokens)][1])
            elif kind == "revoke_all":
                await ledger.revoke_all_sessions(f"p{window}-u{args[0]}")
        rows = [r for r in await raw_rows(engine) if utc(r["recorded_at"]) >= start]
        audit = AuditLog(engine)
        end = clock.now() + timedelta(hours=3)
        for fraction in instants:
            at = start + (end - start) * fraction
            got = await collect(audit.active_at, at, limit=3)
            assert {s.session_id for s in got} == brute_force(rows, at)
            for user in range(3):
                user_id = f"p{window}-u{user}"
                page = await audit.active_at(at, user_id=user_id, limit=1000)
                mine = {r["stream_id"] for r in rows if r["user_id"] == user_id}
                assert {s.session_id for s in page.items} == brute_force(rows, at) & mine
    finally:
        await engine.dispose()


@given(plan=steps, instants=st.lists(st.floats(0, 1), min_size=1, max_size=6))
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_active_at_equals_brute_force_fold(
    engine_url: str, plan: list[tuple[Any, ...]], instants: list[float]
) -> None:
    asyncio.run(_scenario(engine_url, plan, instants))
