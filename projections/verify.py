"""Consistency check: every projection against a fresh fold of the ledger.

The ledger is streamed in (stream id, version) order through a server-side
cursor, one session folded at a time, and compared in batches with the SQL
table and the Redis cache, so memory stays bounded whatever the ledger size.
Every difference is reported as (projection, session id, field, expected,
actual).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import Clock, SystemClock
from session_ledger.ledger.devices import describe_device
from session_ledger.ledger.domain.events import SESSION_EVENT_TYPES, deserialize
from session_ledger.ledger.domain.rules import is_active
from session_ledger.ledger.domain.state import SessionState, evolve
from session_ledger.ledger.schema import events as events_table
from session_ledger.projections.redis_cache import Keys, RedisSessionCache, owner_value
from session_ledger.projections.schema import retired_tokens, sessions
from session_ledger.projections.session_table import state_from_row

DEFAULT_BATCH = 1000
#: A token pointer may expire this much before its session's state (both are
#: written with the same TTL, a little apart).
POINTER_TTL_SLACK_MS = 60_000
_STATE_FIELDS = [f.name for f in dataclasses.fields(SessionState)]


@dataclass(frozen=True, slots=True)
class Difference:
    projection: str
    session_id: str
    field: str
    expected: object
    actual: object

    def __str__(self) -> str:
        return (
            f"{self.projection}: session {self.session_id}: {self.field}: "
            f"expected {self.expected!r}, got {self.actual!r}"
        )


async def folded_sessions(
    engine: AsyncEngine, batch_size: int = DEFAULT_BATCH
) -> AsyncIterator[list[SessionState]]:
    """Every session's state folded from its events, in batches."""
    query = (
        select(
            events_table.c.stream_id,
            events_table.c.type,
            events_table.c.schema_version,
            events_table.c.data,
        )
        .where(events_table.c.type.in_(sorted(SESSION_EVENT_TYPES)))
        .order_by(events_table.c.stream_id, events_table.c.stream_version)
        .execution_options(yield_per=batch_size)
    )
    batch: list[SessionState] = []
    current: str | None = None
    state: SessionState | None = None
    async with engine.connect() as conn:
        result = await conn.stream(query)
        async for row in result:
            if row.stream_id != current:
                if state is not None:
                    batch.append(state)
                    if len(batch) >= batch_size:
                        yield batch
                        batch = []
                current, state = row.stream_id, None
            state = evolve(state, deserialize(row.type, row.schema_version, row.data))
    if state is not None:
        batch.append(state)
    if batch:
        yield batch


def compare_states(
    projection: str, expected: SessionState, actual: SessionState
) -> list[Difference]:
    return [
        Difference(projection, expected.session_id, name, want, got)
        for name in _STATE_FIELDS
        if (want := getattr(expected, name)) != (got := getattr(actual, name))
    ]


# ------------------------------------------------------------- SQL table


async def verify_table(engine: AsyncEngine, batch_size: int = DEFAULT_BATCH) -> list[Difference]:
    differences: list[Difference] = []
    async for expected in folded_sessions(engine, batch_size):
        differences += await _compare_table_batch(engine, expected)
    # Rows the ledger knows nothing about.
    orphans = select(sessions.c.session_id).where(
        ~exists().where(events_table.c.stream_id == sessions.c.session_id)
    )
    async with engine.connect() as conn:
        for (sid,) in await conn.execute(orphans):
            differences.append(Difference("table", sid, "(row)", None, "row without events"))
    return differences


async def _compare_table_batch(
    engine: AsyncEngine, expected: Sequence[SessionState]
) -> list[Difference]:
    ids = [s.session_id for s in expected]
    async with engine.connect() as conn:
        rows = {
            r.session_id: r
            for r in await conn.execute(select(sessions).where(sessions.c.session_id.in_(ids)))
        }
        retired: dict[str, set[str]] = {}
        query = select(retired_tokens).where(retired_tokens.c.session_id.in_(ids))
        for r in await conn.execute(query):
            retired.setdefault(r.session_id, set()).add(r.token_hash)
    out: list[Difference] = []
    for state in expected:
        row = rows.get(state.session_id)
        if row is None:
            out.append(Difference("table", state.session_id, "(row)", "present", None))
            continue
        out += compare_states("table", state, state_from_row(row))
        device = describe_device(state.user_agent)
        if row.device != device:
            out.append(Difference("table", state.session_id, "device", device, row.device))
        got = retired.get(state.session_id, set())
        if got != set(state.retired_token_hashes):
            out.append(
                Difference(
                    "table",
                    state.session_id,
                    "session_retired_tokens",
                    sorted(state.retired_token_hashes),
                    sorted(got),
                )
            )
    return out


# ------------------------------------------------------------------ Redis


async def verify_redis(
    engine: AsyncEngine,
    cache: RedisSessionCache,
    *,
    clock: Clock | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> list[Difference]:
    """Compare the live generation with the ledger.

    A session that is active (and not past expiry) must be cached, with its
    token pointer and its place in the user's index. An ended session may be
    missing (its tombstone expires) but, when cached, must be equal, and it
    must not be in the user's index.
    """
    clock = clock or SystemClock()
    keys = (await cache.write_keys())[0]
    differences: list[Difference] = []
    async for expected in folded_sessions(engine, batch_size):
        differences += await _compare_redis_batch(cache, keys, expected, clock.now())
    return differences


async def _compare_redis_batch(
    cache: RedisSessionCache, keys: Keys, expected: Sequence[SessionState], now: datetime
) -> list[Difference]:
    cached = await cache.get_states(keys, [(s.user_id, s.session_id) for s in expected])
    pipe = cache.client.pipeline(transaction=False)
    for state in expected:
        pipe.get(keys.token(state.token_hash))
        pipe.zscore(keys.active(state.user_id), state.session_id)
        pipe.pttl(keys.token(state.token_hash))
        pipe.pttl(keys.state(state.user_id, state.session_id))
    answers = await pipe.execute()
    out: list[Difference] = []
    for i, state in enumerate(expected):
        sid = state.session_id
        # With a TTL cap keys may expire before the session does (filled
        # again on the next miss): absence is then no difference.
        live = is_active(state, now) and cache.ttl_cap is None
        pointer, score, pointer_ttl, state_ttl = answers[4 * i : 4 * i + 4]
        actual = cached.get(sid)
        if actual is None:
            if live:
                out.append(Difference("redis", sid, "(key)", "present", None))
        else:
            out += compare_states("redis", state, actual)
        owner = owner_value(state)
        if live and (pointer is None or pointer.decode() != owner):
            got = None if pointer is None else pointer.decode()
            out.append(Difference("redis", sid, "token pointer", owner, got))
        elif live and pointer_ttl < state_ttl - POINTER_TTL_SLACK_MS:
            # A pointer that expires before its session's state turns hits
            # into misses then, and this check into a failure (later).
            out.append(Difference("redis", sid, "token pointer TTL", state_ttl, pointer_ttl))
        if live and score is None:
            out.append(Difference("redis", sid, "user index", "member", None))
        if state.is_ended and score is not None:
            out.append(Difference("redis", sid, "user index", None, "member"))
    return out
