"""The Redis cache projection and the cached read model, against real servers."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.state import SessionStatus
from session_ledger.ledger.domain.tokens import hash_token
from session_ledger.projections.state_codec import decode_state, encode_state
from session_ledger.projections.verify import verify_redis, verify_table
from tests.projections.conftest import Harness, make_harness


class CountingSql:
    """Counts SQL lookups made by the cached read model (wraps the real one)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0

    async def by_token_hash(self, token_hash: str, *, fresh: bool = False) -> Any:
        self.calls += 1
        return await self.inner.by_token_hash(token_hash)


async def test_created_session_is_cached_and_served_from_redis(harness: Harness) -> None:
    view, token = await harness.ledger.create_session("u1")
    keys = (await harness.cache.write_keys())[0]
    raw = await harness.cache.client.get(keys.state("u1", view.id))
    assert raw is not None
    assert decode_state(raw).session_id == view.id
    counting = CountingSql(harness.sql)
    harness.read_model.sql = counting  # type: ignore[assignment]
    validated = await harness.ledger.get_session(token)
    assert validated is not None
    assert validated.session.id == view.id
    assert counting.calls == 0


async def test_state_codec_round_trips(harness: Harness) -> None:
    view, _token = await harness.ledger.create_session("u1", fields={"theme": {"dark": True}})
    state = await harness.sql.by_id(view.id)
    assert state is not None
    assert decode_state(encode_state(state)) == state


async def test_miss_fills_from_sql_and_next_read_hits(harness: Harness) -> None:
    view, token = await harness.ledger.create_session("u1")
    keys = (await harness.cache.write_keys())[0]
    await harness.cache.client.delete(keys.state("u1", view.id), keys.token(hash_token(token)))
    counting = CountingSql(harness.sql)
    harness.read_model.sql = counting  # type: ignore[assignment]
    assert await harness.read_model.by_token_hash(hash_token(token)) is not None
    assert counting.calls == 1
    assert await harness.read_model.by_token_hash(hash_token(token)) is not None
    assert counting.calls == 1


async def test_older_version_never_overwrites_newer(harness: Harness) -> None:
    view, token = await harness.ledger.create_session("u1")
    old = await harness.sql.by_id(view.id)
    assert old is not None
    assert await harness.ledger.sign_out(token)
    keys = (await harness.cache.write_keys())[0]
    # A slow fill of the pre-revoke state arrives after the revoke's write.
    assert await harness.cache.put_states([keys], [old]) == [0]
    cached = await harness.cache.get_states(keys, [("u1", view.id)])
    assert cached[view.id].status is SessionStatus.REVOKED
    assert await harness.ledger.get_session(token) is None
    # Not back in the user's index either.
    assert await harness.cache.active_session_ids(keys, "u1", harness.clock.now()) == []


async def test_tombstone_outlives_cookie_cache_and_fills(harness: Harness) -> None:
    view, token = await harness.ledger.create_session("u1")
    await harness.ledger.sign_out(token)
    keys = (await harness.cache.write_keys())[0]
    ttl_ms = await harness.cache.client.pttl(keys.state("u1", view.id))
    assert ttl_ms > 60_000 - 5_000
    assert harness.cache.tombstone_seconds >= 300  # default cookie cache max_age


async def test_user_index_follows_sessions(harness: Harness) -> None:
    a, _ = await harness.ledger.create_session("u1")
    b, token_b = await harness.ledger.create_session("u1")
    c, _ = await harness.ledger.create_session("u2")
    keys = (await harness.cache.write_keys())[0]
    now = harness.clock.now()
    assert set(await harness.cache.active_session_ids(keys, "u1", now)) == {a.id, b.id}
    await harness.ledger.sign_out(token_b)
    assert await harness.cache.active_session_ids(keys, "u1", now) == [a.id]
    assert await harness.cache.active_session_ids(keys, "u2", now) == [c.id]


async def test_concurrent_sign_ins_never_lose_index_entries(harness: Harness) -> None:
    import asyncio

    views = await asyncio.gather(*[harness.ledger.create_session("u1") for _ in range(20)])
    keys = (await harness.cache.write_keys())[0]
    ids = await harness.cache.active_session_ids(keys, "u1", harness.clock.now())
    assert set(ids) == {v.id for v, _ in views}


async def test_refresh_rotation_and_grace_token(harness: Harness) -> None:
    _view, token = await harness.ledger.create_session("u1")
    harness.clock.advance(days=2)
    validated = await harness.ledger.get_session(token)
    assert validated is not None
    assert validated.rotated
    new_token = validated.token
    # The old token is accepted within the grace window, from the cache.
    assert await harness.ledger.get_session(token) is not None
    assert await harness.ledger.get_session(new_token) is not None
    harness.clock.advance(seconds=60)
    # After the grace window the old token is reuse: the session is revoked.
    assert await harness.ledger.get_session(token) is None
    assert await harness.ledger.get_session(new_token) is None
    assert await verify_table(harness.engine) == []
    assert await verify_redis(harness.engine, harness.cache, clock=harness.clock) == []


async def test_ttl_is_time_to_expiry_capped_by_settings(harness: Harness) -> None:
    view, _ = await harness.ledger.create_session("u1")
    keys = (await harness.cache.write_keys())[0]
    ttl = await harness.cache.client.pttl(keys.state("u1", view.id))
    assert timedelta(days=6, hours=23) < timedelta(milliseconds=ttl) <= timedelta(days=7)
    harness.cache.ttl_cap = 600
    state = await harness.sql.by_id(view.id)
    assert state is not None
    await harness.cache.put_states([keys], [replace(state, version=state.version + 1)])
    assert await harness.cache.client.pttl(keys.state("u1", view.id)) <= 600_000


async def test_checkpoint_only_moves_forward_and_detects_loss(harness: Harness) -> None:
    keys = (await harness.cache.write_keys())[0]
    await harness.cache.client.delete(keys.checkpoint)
    assert await harness.cache.advance_checkpoint(keys, (0, 5)) == -1  # never initialised
    await harness.cache.init_checkpoint(keys)
    assert await harness.cache.advance_checkpoint(keys, (0, 5)) == 1
    assert await harness.cache.advance_checkpoint(keys, (0, 3)) == 0
    assert await harness.cache.checkpoint(keys) == (0, 5)
    # Marks order by transaction first: a lower position of a newer one is ahead.
    assert await harness.cache.advance_checkpoint(keys, (7, 2)) == 1
    assert await harness.cache.advance_checkpoint(keys, (6, 90)) == 0
    assert await harness.cache.checkpoint(keys) == (7, 2)
    # A bare position (written before marks) is the mark (0, position).
    await harness.cache.client.set(keys.checkpoint, 9)
    assert await harness.cache.checkpoint(keys) == (0, 9)
    assert await harness.cache.advance_checkpoint(keys, (0, 8)) == 0
    assert await harness.cache.advance_checkpoint(keys, (1, 1)) == 1


async def test_scripts_reloaded_after_script_flush(
    engine: AsyncEngine, private_client: Any, clock: ManualClock
) -> None:
    # A private server: SCRIPT FLUSH must not disturb anyone else's scripts.
    h = await make_harness(engine, private_client, "sl:", clock)
    await h.ledger.create_session("u1")
    await private_client.script_flush()
    view, _ = await h.ledger.create_session("u1")
    keys = (await h.cache.write_keys())[0]
    assert await h.cache.client.get(keys.state("u1", view.id)) is not None


async def test_verify_reports_a_tampered_cache_entry(harness: Harness) -> None:
    view, _ = await harness.ledger.create_session("u1")
    keys = (await harness.cache.write_keys())[0]
    state = await harness.sql.by_id(view.id)
    assert state is not None
    bad = replace(state, ip="6.6.6.6", version=state.version + 5)
    await harness.cache.put_states([keys], [bad])
    differences = await verify_redis(harness.engine, harness.cache, clock=harness.clock)
    fields = {d.field for d in differences}
    assert {"ip", "version"} <= fields
    assert all(d.session_id == view.id for d in differences)


async def test_a_fill_keeps_the_token_pointer_as_long_as_the_session(harness: Harness) -> None:
    """Issue 14, item 4: a fill wrote the presented token's pointer with the
    tombstone's TTL (300 s), so five minutes later the live session missed
    Redis and verify --projections failed."""
    view, token = await harness.ledger.create_session("u1")
    keys = (await harness.cache.write_keys())[0]
    pointer_key, state_key = keys.token(hash_token(token)), keys.state("u1", view.id)
    await harness.cache.client.delete(state_key, pointer_key)
    assert await harness.read_model.by_token_hash(hash_token(token)) is not None  # a fill
    pointer = await harness.cache.client.pttl(pointer_key)
    assert pointer > harness.cache.tombstone_seconds * 1000
    assert pointer >= await harness.cache.client.pttl(state_key) - 5_000
    # A stale fill (an older state, expiring earlier) never shortens it either.
    state = await harness.sql.by_id(view.id)
    assert state is not None
    older = replace(state, expires_at=state.expires_at - timedelta(days=3))
    await harness.cache.put_states([keys], [older], {hash_token(token): view.id})
    assert await harness.cache.client.pttl(pointer_key) >= pointer - 5_000
    assert await verify_redis(harness.engine, harness.cache, clock=harness.clock) == []


async def test_verify_reports_a_token_pointer_that_expires_before_its_session(
    harness: Harness,
) -> None:
    view, token = await harness.ledger.create_session("u1")
    keys = (await harness.cache.write_keys())[0]
    await harness.cache.client.pexpire(keys.token(hash_token(token)), 300_000)
    differences = await verify_redis(harness.engine, harness.cache, clock=harness.clock)
    assert [d.field for d in differences] == ["token pointer TTL"]
    assert differences[0].session_id == view.id
