"""Property: for random session histories (driven through the real
SessionLedger with a manual clock), the incrementally maintained SQL table
and Redis cache equal a full replay of the ledger, field for field."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_ledger.ledger.attempts import SignInAttempts
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.errors import LedgerError
from session_ledger.ledger.domain.events import SignInFailure
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.service import RequestContext
from session_ledger.projections.replay import replay_redis, replay_table
from session_ledger.projections.verify import verify_redis, verify_table
from tests.projections.conftest import make_harness
from tests.projections.test_replay import table_snapshot

POLICY = SessionPolicy(
    expires_in=1000, update_age=100, rotation_grace=30, activity_interval=50, max_lifetime=2500
)
USERS = st.integers(0, 2)
SESSION = st.integers(0, 15)
OPS = st.one_of(
    st.tuples(st.just("create"), USERS, st.booleans()),
    st.tuples(st.just("validate"), SESSION, st.sampled_from([0, 1, 29, 31, 60, 101, 999, 1001])),
    st.tuples(st.just("sign_out"), SESSION),
    st.tuples(st.just("update"), SESSION),
    st.tuples(st.just("reauth"), SESSION),
    st.tuples(st.just("revoke_all"), USERS),
    st.tuples(st.just("revoke_others"), SESSION),
    st.tuples(st.just("failed_sign_in"), USERS, st.sampled_from([None, "203.0.113.5"])),
)


async def run_history(
    url: str, redis_url: str, prefix: str, clock: ManualClock, ops: list[tuple[Any, ...]]
) -> None:
    """One example. The database, key prefix and clock carry over from the
    previous examples of the same test: verify covers them all."""
    engine = make_engine(url)
    client: Any = aioredis.from_url(redis_url)
    try:
        h = await make_harness(engine, client, prefix, clock, policy=POLICY)
        attempts = SignInAttempts(h.store, "property-secret", clock)
        run = secrets.token_hex(3)
        tokens: list[str] = []
        owners: list[tuple[str, str]] = []  # (user id, session id)
        for op in ops:
            kind = op[0]
            try:
                if kind == "failed_sign_in":
                    # Not a session: every projection must leave it out.
                    await attempts.record_failure(
                        SignInFailure.WRONG_PASSWORD,
                        f"u{op[1]}@example.com",
                        RequestContext(ip=op[2]),
                        user_id=f"{run}-u{op[1]}",
                    )
                elif kind == "create":
                    user = f"{run}-u{op[1]}"
                    view, token = await h.ledger.create_session(user, remember_me=op[2])
                    tokens.append(token)
                    owners.append((user, view.id))
                elif not tokens and kind != "revoke_all":
                    continue
                elif kind == "validate":
                    clock.advance(op[2])
                    i = op[1] % len(tokens)
                    validated = await h.ledger.get_session(tokens[i])
                    if validated is not None:
                        tokens[i] = validated.token
                elif kind == "sign_out":
                    await h.ledger.sign_out(tokens[op[1] % len(tokens)])
                elif kind == "update":
                    await h.ledger.update_session(tokens[op[1] % len(tokens)], {"k": len(ops)})
                elif kind == "reauth":
                    await h.ledger.reauthenticate(tokens[op[1] % len(tokens)])
                elif kind == "revoke_all":
                    await h.ledger.revoke_all_sessions(f"{run}-u{op[1]}")
                elif kind == "revoke_others":
                    user, sid = owners[op[1] % len(owners)]
                    await h.ledger.revoke_other_sessions(user, sid)
            except LedgerError:
                pass  # e.g. a command on an ended session: nothing appended
            # Incremental projections == a fresh fold of the ledger.
        assert await verify_table(engine) == []
        assert await verify_redis(engine, h.cache, clock=clock) == []
        # ... == a full replay, field for field.
        incremental_table = await table_snapshot(engine)
        old_keys = (await h.cache.write_keys())[0]
        incremental_redis = await h.cache.get_states(old_keys, owners)
        await replay_table(engine, h.store, batch_size=7, clock=clock)
        await replay_redis(h.store, h.projection, batch_size=7, drop_old=False)
        assert await table_snapshot(engine) == incremental_table
        new_keys = (await h.cache.write_keys())[0]
        assert new_keys != old_keys
        replayed_redis = await h.cache.get_states(new_keys, owners)
        assert replayed_redis == incremental_redis
    finally:
        await client.aclose()
        await engine.dispose()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, min_size=1, max_size=25))
def test_incremental_projections_equal_replay(
    engine_url: str, redis_url: str, redis_prefix: str, clock: ManualClock, ops: list[Any]
) -> None:
    # Each example runs on its own event loop (hypothesis calls this sync
    # function repeatedly; the fixtures' loop is not running here).
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run_history(engine_url, redis_url, redis_prefix, clock, ops))
    finally:
        loop.close()
