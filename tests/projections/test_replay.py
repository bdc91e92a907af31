"""Replay: rebuilt projections equal the incrementally built ones; a replay
killed at any batch and run again finishes correctly; the live service keeps
working during a rebuild and nothing appended meanwhile is lost."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.domain.state import SessionState
from session_ledger.projections.replay import SHADOW, TABLE_CHECKPOINT, replay_redis, replay_table
from session_ledger.projections.schema import projection_checkpoints, retired_tokens, sessions
from session_ledger.projections.session_table import state_from_row
from session_ledger.projections.verify import verify_redis, verify_table
from tests.projections.conftest import Harness, make_harness


class KilledError(Exception):
    """Raised from the batch hook: the replay process 'dies' here."""


async def traffic(harness: Harness, sessions_n: int = 12, seed: int = 1) -> None:
    """A small history: sign-ins, validations across time, rotations, revokes."""
    rnd = random.Random(seed)
    tokens: list[str] = []
    for i in range(sessions_n):
        _, token = await harness.ledger.create_session(f"user-{i % 4}", fields={"n": i})
        tokens.append(token)
    for _ in range(3):
        harness.clock.advance(hours=rnd.choice([1, 13, 30]))
        for i, token in enumerate(tokens):
            validated = await harness.ledger.get_session(token)
            if validated is not None:
                tokens[i] = validated.token
    for token in tokens[: sessions_n // 3]:
        await harness.ledger.sign_out(token)


async def table_snapshot(engine: AsyncEngine) -> tuple[list[SessionState], list[Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(sessions).order_by(sessions.c.session_id))
        states = [state_from_row(r) for r in rows]
        retired = list(
            await conn.execute(select(retired_tokens).order_by(retired_tokens.c.token_hash))
        )
    return states, [tuple(r) for r in retired]


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def index_names(engine: AsyncEngine, table: str) -> set[str]:
    async with engine.connect() as conn:
        return {
            i["name"]
            for i in await conn.run_sync(lambda c: inspect(c).get_indexes(table))
            if i["name"]
        }


async def test_table_replay_equals_incremental_table(harness: Harness) -> None:
    await traffic(harness)
    before = await table_snapshot(harness.engine)
    indexes_before = await index_names(harness.engine, "sessions")
    result = await replay_table(harness.engine, harness.store, batch_size=7)
    assert result.events == await harness.store.head()
    assert await table_snapshot(harness.engine) == before
    assert await index_names(harness.engine, "sessions") == indexes_before
    assert not {n for n in await table_names(harness.engine) if n.endswith(SHADOW)}
    assert await verify_table(harness.engine) == []
    # The service keeps working on the swapped table.
    _view, token = await harness.ledger.create_session("after")
    assert await harness.ledger.get_session(token) is not None


@pytest.mark.parametrize("kill_at", [1, 2, 5])
async def test_table_replay_killed_half_way_resumes(harness: Harness, kill_at: int) -> None:
    await traffic(harness)
    before = await table_snapshot(harness.engine)

    def kill(number: int) -> None:
        if number == kill_at:
            raise KilledError

    with pytest.raises(KilledError):
        await replay_table(harness.engine, harness.store, batch_size=5, on_batch=kill)
    async with harness.engine.connect() as conn:
        saved = await conn.scalar(
            select(projection_checkpoints.c.position).where(
                projection_checkpoints.c.name == TABLE_CHECKPOINT
            )
        )
    assert saved is not None
    assert saved > 0
    # Meanwhile the live table kept serving and events kept coming.
    _, token = await harness.ledger.create_session("during")
    assert await harness.ledger.get_session(token) is not None
    before = await table_snapshot(harness.engine)
    result = await replay_table(harness.engine, harness.store, batch_size=5)
    assert result.resumed_from == saved
    assert await table_snapshot(harness.engine) == before
    assert await verify_table(harness.engine) == []


async def test_events_appended_during_table_replay_are_not_lost(harness: Harness) -> None:
    await traffic(harness)
    appended: list[str] = []

    async def append_more(number: int) -> None:
        view, _ = await harness.ledger.create_session(f"late-{number}")
        appended.append(view.id)

    await replay_table(harness.engine, harness.store, batch_size=5, on_batch=append_more)
    assert appended
    for sid in appended:
        assert await harness.sql.by_id(sid) is not None
    assert await verify_table(harness.engine) == []


async def test_appends_wait_for_the_swap_and_land_in_the_new_table(harness: Harness) -> None:
    """Concurrent appends while replays run and swap: none is lost."""
    await traffic(harness, sessions_n=6)
    stop = asyncio.Event()
    created: list[str] = []

    async def writer() -> None:
        while not stop.is_set():
            view, _ = await harness.ledger.create_session("busy")
            created.append(view.id)
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        for _ in range(3):
            await replay_table(harness.engine, harness.store, batch_size=4)
    finally:
        stop.set()
        await task
    assert created
    assert await verify_table(harness.engine) == []


async def test_replay_replaces_a_corrupted_table(harness: Harness) -> None:
    await traffic(harness)
    async with harness.engine.begin() as conn:
        await conn.execute(text("UPDATE sessions SET ip = '6.6.6.6'"))
    assert await verify_table(harness.engine) != []
    await replay_table(harness.engine, harness.store, batch_size=50)
    assert await verify_table(harness.engine) == []


# ------------------------------------------------------------------ Redis


async def test_redis_replay_builds_a_new_generation_and_switches(harness: Harness) -> None:
    await traffic(harness)
    old = (await harness.cache.write_keys())[0]
    result = await replay_redis(harness.store, harness.projection, batch_size=7)
    new = (await harness.cache.write_keys())[0]
    assert new.generation == old.generation + 1
    assert result.head == await harness.store.head()
    assert await verify_redis(harness.engine, harness.cache, clock=harness.clock) == []
    # The old namespace is gone after the dual-write window.
    leftovers = [k async for k in harness.cache.client.scan_iter(match=f"{old.ns}*")]
    assert leftovers == []
    # Everything up to the head is in; the runner goes on from the horizon
    # seen under the switch's lock (ledger.horizon.final_mark).
    checkpoint = await harness.cache.checkpoint(new)
    assert checkpoint is not None
    assert checkpoint >= await horizon.head(harness.engine)


async def horizon_passed(harness: Harness, patience: float = 10.0) -> None:
    """Wait until followers can read every committed event."""
    deadline = asyncio.get_running_loop().time() + patience
    while (await horizon.lag(harness.engine)).held_back:
        assert asyncio.get_running_loop().time() < deadline, "the horizon stayed behind"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kill_at", [1, 3])
async def test_redis_replay_killed_half_way_resumes(harness: Harness, kill_at: int) -> None:
    await traffic(harness)
    # Replay reads its batches below the horizon and the rest in its final
    # catch-up: on the shared test server another database's transaction
    # that the horizon cannot attribute may hold it back for a moment, and
    # then no batch would be read before the catch-up.
    await horizon_passed(harness)

    def kill(number: int) -> None:
        if number == kill_at:
            raise KilledError

    with pytest.raises(KilledError):
        await replay_redis(harness.store, harness.projection, batch_size=5, on_batch=kill)
    live = (await harness.cache.write_keys())[0]
    assert live.generation == 0  # not switched: the live generation kept serving
    _, token = await harness.ledger.create_session("during")
    assert await harness.ledger.get_session(token) is not None
    result = await replay_redis(harness.store, harness.projection, batch_size=5)
    assert result.resumed_from > 0
    assert (await harness.cache.write_keys())[0].generation == 1
    assert await verify_redis(harness.engine, harness.cache, clock=harness.clock) == []


async def test_revoke_right_after_switch_is_seen_by_a_reader_on_the_old_generation(
    harness: Harness,
) -> None:
    """Another process's reader still uses the old generation (its cached
    pointer) right after the switch: a revoke must reach it anyway."""
    other = await make_harness(
        harness.engine, harness.cache.client, harness.cache.prefix, harness.clock
    )
    _, token = await harness.ledger.create_session("u1")
    assert await other.ledger.get_session(token) is not None  # caches generation 0
    harness.cache.dual_write_seconds = 2.0
    switched = asyncio.Event()
    original = harness.cache.switch_generation

    async def switch(generation: int) -> None:
        await original(generation)
        switched.set()

    harness.cache.switch_generation = switch  # type: ignore[method-assign]
    replay = asyncio.create_task(
        replay_redis(harness.store, harness.projection, batch_size=5, drop_old=False)
    )
    await switched.wait()
    # Pretend the other process looked the pointer up a moment before the switch.
    other.cache._read_keys_at = time.monotonic()
    assert other.cache._read_keys == other.cache.keys(0)
    assert await harness.ledger.sign_out(token)
    assert await other.ledger.get_session(token) is None
    await replay
