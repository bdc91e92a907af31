"""The event store's contract, run unchanged against SQLite and PostgreSQL.

Every test takes the parametrised ``engine`` fixture (a fresh, migrated
database per test), so each case below runs once per backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal, cast

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import insert, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from session_ledger.ledger.chain import event_hash
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.db import Driver, make_engine
from session_ledger.ledger.domain.errors import (
    ConcurrencyError,
    EventValidationError,
    InvalidAppendError,
    UnknownEventTypeError,
)
from session_ledger.ledger.domain.events import (
    Event,
    EventMetadata,
    RecordedEvent,
    RevocationReason,
    SessionRevoked,
    SessionTouched,
    deserialize,
    validate_event,
)
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.store import EventStore, StreamAppend
from tests.support.chain import ChainBreak, raw_rows, verify_chain
from tests.support.events import T0, created, token_hash, touched

META = EventMetadata(actor="user:u1", request_id="req-1", correlation_id="corr-1")


@pytest.fixture
def store(engine: AsyncEngine, clock: ManualClock) -> EventStore:
    return EventStore(engine, clock=clock)


def is_pg(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


def positions(recorded: Sequence[RecordedEvent]) -> list[int]:
    return [r.position for r in recorded]


async def snapshot(engine: AsyncEngine) -> list[dict[str, Any]]:
    return await raw_rows(engine)


# ------------------------------------------------------------------ reading and appending


async def test_empty_ledger(store: EventStore) -> None:
    assert await store.head() == 0
    assert await store.read_all() == []
    assert await store.read_stream("nobody") == []
    assert await store.stream_version("nobody") == 0
    assert [b async for b in store.iter_all()] == []


async def test_append_then_read_stream(store: EventStore) -> None:
    events: list[Event] = [created("s1"), touched(T0 + timedelta(minutes=1), ip="10.0.0.2")]
    recorded = await store.append("s1", 0, events, metadata=META, user_id="user-1")

    assert [r.stream_version for r in recorded] == [1, 2]
    assert positions(recorded) == sorted(positions(recorded))
    assert len(set(positions(recorded))) == 2
    assert [r.event for r in recorded] == events
    assert all(r.stream_id == "s1" and r.user_id == "user-1" for r in recorded)
    assert all(r.metadata == META for r in recorded)

    assert await store.read_stream("s1") == recorded
    assert await store.read_stream("s1", from_version=2) == recorded[1:]
    assert await store.read_stream("s1", from_version=3) == []
    assert await store.stream_version("s1") == 2
    assert await store.head() == recorded[-1].position

    more = await store.append("s1", 2, [touched(T0 + timedelta(minutes=2))])
    assert more[0].stream_version == 3
    assert more[0].prev_hash == recorded[-1].hash
    assert await store.read_stream("s1") == [*recorded, *more]


async def test_metadata_defaults_and_user_id_is_optional(store: EventStore) -> None:
    (recorded,) = await store.append("s1", 0, [created("s1")])
    assert recorded.metadata == EventMetadata()
    assert recorded.metadata.actor == "system"
    assert recorded.user_id is None
    assert (await store.read_stream("s1"))[0] == recorded


async def test_read_all_is_global_order_with_paging(store: EventStore) -> None:
    appended: list[RecordedEvent] = []
    for round_ in range(3):
        for stream in ("a", "b", "c"):
            event = created(stream) if round_ == 0 else touched(T0 + timedelta(seconds=round_))
            appended += await store.append(stream, round_, [event])

    everything = await store.read_all()
    assert everything == appended
    assert positions(everything) == sorted(set(positions(everything)))
    assert await store.head() == appended[-1].position

    # Paging by position: each page continues exactly after the previous one.
    pages: list[RecordedEvent] = []
    after = 0
    while page := await store.read_all(after_position=after, limit=4):
        assert len(page) <= 4
        pages += page
        after = page[-1].position
    assert pages == appended
    assert await store.read_all(after_position=appended[-1].position) == []
    assert await store.read_all(after_position=appended[3].position, limit=2) == appended[4:6]

    batches = [batch async for batch in store.iter_all(batch_size=4)]
    assert [len(b) for b in batches] == [4, 4, 1]
    assert [e for b in batches for e in b] == appended
    up_to = appended[4].position
    bounded = [e async for b in store.iter_all(batch_size=2, up_to=up_to) for e in b]
    assert bounded == appended[:5]
    after_two = [e async for b in store.iter_all(after_position=appended[1].position) for e in b]
    assert after_two == appended[2:]


async def test_head_and_stream_version_track_appends(store: EventStore) -> None:
    first = await store.append("a", 0, [created("a")])
    assert await store.head() == first[0].position
    second = await store.append("b", 0, [created("b"), touched()])
    assert await store.head() == second[-1].position
    assert await store.stream_version("a") == 1
    assert await store.stream_version("b") == 2


async def test_recorded_at_comes_from_the_injected_clock(engine: AsyncEngine) -> None:
    clock = ManualClock(datetime(2030, 6, 1, 8, 30, 15, 123456, tzinfo=UTC))
    store = EventStore(engine, clock=clock)
    (first,) = await store.append("s", 0, [created("s")])
    later = clock.advance(hours=5)
    (second,) = await store.append("s", 1, [touched()])

    assert first.recorded_at == datetime(2030, 6, 1, 8, 30, 15, 123456, tzinfo=UTC)
    assert second.recorded_at == later
    stored = await store.read_stream("s")
    assert [e.recorded_at for e in stored] == [first.recorded_at, later]
    assert all(e.recorded_at.tzinfo is not None for e in stored)


async def test_recorded_at_from_a_non_utc_clock_keeps_the_instant(engine: AsyncEngine) -> None:
    """A clock may hand out aware datetimes in any zone; the stored instant must be the same.

    Fails on SQLite at the time of writing: the store passes the clock's value
    through unnormalised and SQLite's DATETIME drops the offset, so
    12:00+02:00 comes back as 12:00Z (two hours late) and the hash chain,
    computed over 10:00Z, no longer verifies.
    """
    berlin_summer = timezone(timedelta(hours=2))
    clock = ManualClock(datetime(2026, 7, 1, 12, 0, tzinfo=berlin_summer))
    store = EventStore(engine, clock=clock)
    (recorded,) = await store.append("s", 0, [created("s")])
    (stored,) = await store.read_stream("s")

    assert recorded.recorded_at == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert stored.recorded_at == recorded.recorded_at
    assert verify_chain(await raw_rows(engine)) == []


# ------------------------------------------------------------- optimistic concurrency


async def test_wrong_expected_version_raises_named_conflict(store: EventStore) -> None:
    await store.append("s1", 0, [created("s1"), touched()])
    before = await snapshot(store.engine)

    for expected in (0, 1, 3, 7):
        with pytest.raises(ConcurrencyError) as info:
            await store.append("s1", expected, [touched()])
        err = info.value
        assert (err.stream_id, err.expected_version, err.actual_version) == ("s1", expected, 2)
        assert err.code == "CONCURRENCY_CONFLICT"
        assert "'s1'" in str(err)
        assert f"expected version {expected}" in str(err)
        assert "actual version 2" in str(err)

    with pytest.raises(ConcurrencyError) as info:
        await store.append("new-stream", 1, [touched()])
    assert (info.value.stream_id, info.value.expected_version, info.value.actual_version) == (
        "new-stream",
        1,
        0,
    )
    assert await snapshot(store.engine) == before


async def test_batch_across_streams_is_atomic(store: EventStore) -> None:
    recorded = await store.append_batch(
        [
            StreamAppend("a", 0, [created("a")], user_id="u1"),
            StreamAppend("b", 0, [created("b"), touched()], user_id="u1"),
        ],
        metadata=META,
    )
    assert [(r.stream_id, r.stream_version) for r in recorded] == [("a", 1), ("b", 1), ("b", 2)]
    assert positions(recorded) == sorted(set(positions(recorded)))
    before = await snapshot(store.engine)
    head = await store.head()

    # Stream "c" is new and fine, "a" is stale: nothing at all may be written.
    with pytest.raises(ConcurrencyError) as info:
        await store.append_batch(
            [
                StreamAppend("c", 0, [created("c")]),
                StreamAppend("b", 2, [touched()]),
                StreamAppend("a", 0, [touched()]),
            ]
        )
    assert (info.value.stream_id, info.value.expected_version, info.value.actual_version) == (
        "a",
        0,
        1,
    )
    assert await store.head() == head
    assert await store.read_stream("c") == []
    assert await store.stream_version("b") == 2
    assert await snapshot(store.engine) == before

    # The same batch with the right versions lands whole, in one transaction.
    landed = await store.append_batch(
        [
            StreamAppend("c", 0, [created("c")]),
            StreamAppend("b", 2, [touched()]),
            StreamAppend("a", 1, [touched()]),
        ]
    )
    assert [(r.stream_id, r.stream_version) for r in landed] == [("c", 1), ("b", 3), ("a", 2)]
    assert {r.recorded_at for r in landed} == {store.clock.now()}


async def test_inline_projection_failure_rolls_back_the_append(engine: AsyncEngine) -> None:
    class BoomError(RuntimeError):
        pass

    class FailingProjection:
        def __init__(self) -> None:
            self.seen: list[RecordedEvent] = []

        async def apply(self, conn: AsyncConnection, recorded: Sequence[RecordedEvent]) -> None:
            self.seen += recorded
            raise BoomError

    projection = FailingProjection()
    store = EventStore(engine, inline_projections=[projection])
    with pytest.raises(BoomError):
        await store.append("s", 0, [created("s")])
    assert len(projection.seen) == 1
    assert await store.head() == 0
    assert await EventStore(engine).read_stream("s") == []


async def test_a_projection_constraint_violation_is_not_a_stream_conflict(
    engine: AsyncEngine,
) -> None:
    """An IntegrityError raised by an inline projection was reported as a
    ConcurrencyError (callers would retry a write that can never succeed)."""

    class DuplicateRow:
        async def apply(self, conn: AsyncConnection, recorded: Sequence[RecordedEvent]) -> None:
            await conn.execute(
                text(
                    "INSERT INTO session_retired_tokens (token_hash, session_id) "
                    "VALUES ('dup', :sid)"
                ),
                {"sid": recorded[0].stream_id},
            )

    store = EventStore(engine, inline_projections=[DuplicateRow()])
    await store.append("a", 0, [created("a")])
    with pytest.raises(IntegrityError):
        await store.append("b", 0, [created("b")])
    assert await store.read_stream("b") == []
    # Nothing is left locked: the next append goes through at once.
    await EventStore(engine).append("c", 0, [created("c")])
    assert await store.stream_version("c") == 1


async def test_after_commit_sees_committed_events_only(engine: AsyncEngine) -> None:
    calls: list[tuple[list[RecordedEvent], int]] = []
    store = EventStore(engine)

    async def after_commit(recorded: Sequence[RecordedEvent]) -> None:
        # Runs after COMMIT: a fresh connection already sees the events.
        calls.append((list(recorded), await EventStore(engine).head()))

    store.after_commit.append(after_commit)
    recorded = await store.append("s", 0, [created("s"), touched()])
    assert calls == [(recorded, recorded[-1].position)]

    with pytest.raises(ConcurrencyError):
        await store.append("s", 0, [touched()])
    assert len(calls) == 1


async def test_a_failing_after_commit_callback_fails_neither_the_append_nor_the_others(
    engine: AsyncEngine,
) -> None:
    """The events are durable once committed: a follower's failure must not
    turn the append into an error (callers would retry a write that happened)."""
    seen: list[int] = []

    async def broken(recorded: Sequence[RecordedEvent]) -> None:
        raise RuntimeError("cache down")

    async def healthy(recorded: Sequence[RecordedEvent]) -> None:
        seen.append(recorded[-1].position)

    store = EventStore(engine, after_commit=[broken, healthy])
    recorded = await store.append("s", 0, [created("s")])
    assert seen == [recorded[-1].position]
    assert await store.read_stream("s") == recorded


async def test_two_writers_racing_on_one_stream(engine_url: str, engine: AsyncEngine) -> None:
    """Same expected version from two engines at once: one wins whole, one conflicts."""
    other_engine = make_engine(engine_url)
    try:
        writers = [EventStore(engine), EventStore(other_engine)]
        await writers[0].append("s", 0, [created("s")])
        version = 1
        for round_ in range(10):
            ips = [f"10.1.{round_}.{w}" for w in range(2)]
            results = await asyncio.gather(
                *(
                    store.append("s", version, [touched(ip=ip), touched(ip=ip)])
                    for store, ip in zip(writers, ips, strict=True)
                ),
                return_exceptions=True,
            )
            wins = [r for r in results if isinstance(r, list)]
            losses = [r for r in results if isinstance(r, ConcurrencyError)]
            assert len(wins) == 1, results
            assert len(losses) == 1, results
            assert losses[0].stream_id == "s"
            assert losses[0].expected_version == version
            assert losses[0].actual_version == version + 2

            # Exactly the winner's two events, nothing of the loser's.
            winner_ip = wins[0][0].event.ip  # type: ignore[union-attr]
            tail = await writers[0].read_stream("s", from_version=version + 1)
            assert [e.stream_version for e in tail] == [version + 1, version + 2]
            assert [e.event.ip for e in tail] == [winner_ip, winner_ip]  # type: ignore[union-attr]
            version += 2
        assert await writers[1].stream_version("s") == 21
        assert verify_chain(await raw_rows(engine)) == []
    finally:
        await other_engine.dispose()


async def test_racing_batches_never_land_partially(engine_url: str, engine: AsyncEngine) -> None:
    """Two batches overlap in stream "b": one wins whole, the other writes nothing anywhere."""
    other_engine = make_engine(engine_url)
    try:
        left, right = EventStore(engine), EventStore(other_engine)
        for round_ in range(8):
            a, b, c = f"a{round_}", f"b{round_}", f"c{round_}"
            results = await asyncio.gather(
                left.append_batch(
                    [StreamAppend(a, 0, [created(a)]), StreamAppend(b, 0, [created(b)])]
                ),
                right.append_batch(
                    [StreamAppend(b, 0, [created(b)]), StreamAppend(c, 0, [created(c)])]
                ),
                return_exceptions=True,
            )
            assert sum(isinstance(r, list) for r in results) == 1, results
            assert sum(isinstance(r, ConcurrencyError) for r in results) == 1, results
            left_won = isinstance(results[0], list)
            assert await left.stream_version(a) == (1 if left_won else 0)
            assert await left.stream_version(c) == (0 if left_won else 1)
            assert await left.stream_version(b) == 1
    finally:
        await other_engine.dispose()


# -------------------------------------------------------------------- immutability


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_events SET type = 'SessionExpired'",
        "UPDATE ledger_events SET stream_version = stream_version + 100 WHERE stream_version = 1",
        "DELETE FROM ledger_events",
        "DELETE FROM ledger_events WHERE stream_version = 2",
    ],
)
async def test_update_and_delete_are_rejected_by_the_database(
    store: EventStore, statement: str
) -> None:
    await store.append("s1", 0, [created("s1"), touched()])
    await store.append("s2", 0, [created("s2")])
    before = await snapshot(store.engine)

    with pytest.raises(DBAPIError, match="append-only"):
        async with store.engine.begin() as conn:
            await conn.execute(text(statement))

    assert await snapshot(store.engine) == before


async def test_truncate_is_rejected_on_postgres(pg_engine: AsyncEngine) -> None:
    store = EventStore(pg_engine)
    await store.append("s1", 0, [created("s1")])
    before = await snapshot(pg_engine)
    with pytest.raises(DBAPIError, match="append-only"):
        async with pg_engine.begin() as conn:
            await conn.execute(text("TRUNCATE ledger_events"))
    assert await snapshot(pg_engine) == before


# ---------------------------------------------------------------------- hash chain


async def populate(store: EventStore) -> list[RecordedEvent]:
    recorded = await store.append(
        "s1",
        0,
        [created("s1", nested={"k": [1, 2, {"ü": "ß"}]}, note='日本語 "quoted" \\ and \u2028')],
        metadata=META,
        user_id="user-1",
    )
    recorded += await store.append_batch(
        [
            StreamAppend("s1", 1, [touched(ip="10.0.0.2"), touched(ip="10.0.0.3")], "user-1"),
            StreamAppend("s2", 0, [created("s2", ip=None)], "user-2"),
        ]
    )
    recorded += await store.append(
        "s1",
        3,
        [SessionRevoked(revoked_at=T0, reason=RevocationReason.SIGN_OUT, actor="user:user-1")],
    )
    return recorded


async def test_hash_chain_recomputes(store: EventStore) -> None:
    recorded = await populate(store)
    assert verify_chain(await raw_rows(store.engine)) == []
    assert verify_chain(recorded) == []
    assert verify_chain(await store.read_all()) == []
    s1 = await store.read_stream("s1")
    assert s1[0].prev_hash == "0" * 64
    assert [e.prev_hash for e in s1[1:]] == [e.hash for e in s1[:-1]]
    assert len({e.hash for e in recorded}) == len(recorded)


async def test_hash_chain_covers_numbers_as_stored(store: EventStore) -> None:
    """Free-form session fields may hold any JSON number; the chain must survive storage.

    Fails on PostgreSQL at the time of writing: JSONB normalises numbers
    (1e20 comes back as the integer 100000000000000000000, -0.0 as 0.0), so
    the hash computed before the INSERT no longer matches what is stored.
    """
    await store.append("s", 0, [created("s", big=1e20, small=1.5e-7, zero=-0.0, one=1.0)])
    assert verify_chain(await raw_rows(store.engine)) == []


async def tamper(engine: AsyncEngine, sql: str, params: dict[str, Any]) -> None:
    """Run ``sql`` with the append-only triggers out of the way (tests only)."""
    async with engine.begin() as conn:
        if is_pg(engine):
            # Superuser only: row triggers do not fire for a replication-role session.
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            await conn.execute(text("DROP TRIGGER ledger_events_no_update"))
            await conn.execute(text("DROP TRIGGER ledger_events_no_delete"))
        await conn.execute(text(sql), params)


def data_as_text(engine: AsyncEngine) -> str:
    return "data::text" if is_pg(engine) else "data"


def text_as_data(engine: AsyncEngine, expr: str) -> str:
    return f"({expr})::json" if is_pg(engine) else expr


async def test_tampering_one_byte_is_detected(store: EventStore) -> None:
    recorded = await populate(store)
    victim = recorded[1]  # s1 version 2, ip 10.0.0.2
    engine = store.engine
    # One byte of the payload: 10.0.0.2 -> 10.0.0.7.
    replaced = f"replace({data_as_text(engine)}, '10.0.0.2', '10.0.0.7')"
    await tamper(
        engine,
        f"UPDATE ledger_events SET data = {text_as_data(engine, replaced)} WHERE position = :p",
        {"p": victim.position},
    )
    rows = await raw_rows(engine)
    assert next(r for r in rows if r["position"] == victim.position)["data"]["ip"] == "10.0.0.7"

    assert verify_chain(rows) == [
        ChainBreak(victim.position, "s1", 2, "hash does not match the stored content")
    ]
    # The store still reads the forged event; only the chain tells.
    assert (await store.read_stream("s1", 2))[0].event.ip == "10.0.0.7"  # type: ignore[union-attr]
    assert verify_chain(await store.read_stream("s1")) != []


async def test_forging_a_matching_hash_breaks_the_next_link(store: EventStore) -> None:
    recorded = await populate(store)
    victim, successor = recorded[1], recorded[2]
    engine = store.engine
    rows = await raw_rows(engine)
    row = next(r for r in rows if r["position"] == victim.position)
    forged = {**row, "data": {**row["data"], "ip": "10.0.0.7"}}
    forged_hash = event_hash(
        forged["prev_hash"],
        stream_id=forged["stream_id"],
        stream_version=forged["stream_version"],
        event_type=forged["type"],
        schema_version=forged["schema_version"],
        data=forged["data"],
        meta=forged["meta"],
        user_id=forged["user_id"],
        recorded_at=forged["recorded_at"],
    )
    replaced = f"replace({data_as_text(engine)}, '10.0.0.2', '10.0.0.7')"
    await tamper(
        engine,
        f"UPDATE ledger_events SET data = {text_as_data(engine, replaced)}, hash = :h "
        "WHERE position = :p",
        {"p": victim.position, "h": forged_hash},
    )
    assert verify_chain(await raw_rows(engine)) == [
        ChainBreak(successor.position, "s1", 3, "prev_hash does not link to the previous event")
    ]


async def test_removing_an_event_is_detected(store: EventStore) -> None:
    recorded = await populate(store)
    victim = recorded[1]
    await tamper(
        store.engine, "DELETE FROM ledger_events WHERE position = :p", {"p": victim.position}
    )
    breaks = verify_chain(await raw_rows(store.engine))
    assert breaks
    assert {b.stream_id for b in breaks} == {"s1"}
    assert min(b.position for b in breaks) == recorded[2].position


# ----------------------------------------------------------------------- bad input


class SessionExploded(BaseModel):
    """Looks like an event, is not in the catalogue."""

    model_config = ConfigDict(frozen=True)
    type: Literal["SessionExploded"] = "SessionExploded"


async def assert_nothing_written(store: EventStore, before: list[dict[str, Any]]) -> None:
    assert await snapshot(store.engine) == before


async def test_unknown_event_type_is_rejected(store: EventStore) -> None:
    await store.append("s", 0, [created("s")])
    before = await snapshot(store.engine)

    with pytest.raises(UnknownEventTypeError, match="SessionExploded") as info:
        validate_event({"type": "SessionExploded"})
    assert info.value.code == "UNKNOWN_EVENT_TYPE"
    with pytest.raises(UnknownEventTypeError, match="SessionExploded"):
        deserialize("SessionExploded", 1, {})
    with pytest.raises(UnknownEventTypeError, match="SessionExploded"):
        await store.append("s", 1, [cast(Event, SessionExploded())])
    with pytest.raises(UnknownEventTypeError):
        await store.append_batch(
            [
                StreamAppend("t", 0, [created("t")]),
                StreamAppend("s", 1, [touched(), cast(Event, SessionExploded())]),
            ]
        )
    await assert_nothing_written(store, before)


async def test_unknown_type_in_storage_fails_reads_clearly(store: EventStore) -> None:
    """A row written by a newer release (unknown type) is a typed error, not a crash."""
    (first,) = await store.append("s", 0, [created("s")])
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(events_table).values(
                stream_id="s",
                stream_version=2,
                type="SessionExploded",
                schema_version=1,
                data={},
                meta={},
                recorded_at=first.recorded_at,
                prev_hash=first.hash,
                hash="f" * 64,
            )
        )
    with pytest.raises(UnknownEventTypeError, match="SessionExploded"):
        await store.read_stream("s")
    with pytest.raises(UnknownEventTypeError):
        await store.read_all()


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"token_hash": "not-a-sha256"}, "token_hash"),
        ({"user_id": ""}, "user_id"),
        ({"expires_at": "2026-01-01T00:00:00"}, "expires_at"),  # naive: not allowed
        ({"unexpected": 1}, "unexpected"),
    ],
)
async def test_invalid_payload_is_rejected(
    store: EventStore, payload: dict[str, Any], where: str
) -> None:
    base = created("s").model_dump(mode="json")
    with pytest.raises(EventValidationError, match=where) as info:
        validate_event({**base, **payload})
    assert info.value.code == "INVALID_EVENT"
    assert info.value.message.startswith("SessionCreated: ")
    with pytest.raises(EventValidationError, match=where):
        deserialize(
            "SessionCreated", 1, {k: v for k, v in {**base, **payload}.items() if k != "type"}
        )
    with pytest.raises(EventValidationError):
        validate_event({"no": "type"})


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")
async def test_events_cannot_be_built_around_validation(store: EventStore) -> None:
    """pydantic's model_copy(update=...) and model_construct skip validation;
    events validate there too, so no invalid event ever reaches the store
    (which therefore does not validate a second time)."""
    await store.append("s", 0, [created("s")])
    before = await snapshot(store.engine)
    with pytest.raises(EventValidationError, match="touched_at"):
        touched().model_copy(update={"touched_at": "yesterday"})
    with pytest.raises(EventValidationError, match="token_hash"):
        created("t").model_copy(update={"token_hash": token_hash("t").upper()})
    with pytest.raises(EventValidationError, match="touched_at"):
        SessionTouched.model_construct(touched_at="yesterday")  # type: ignore[arg-type]
    # Valid updates still work, and a copy without updates is the same event.
    later = touched().model_copy(update={"touched_at": T0 + timedelta(seconds=5)})
    assert later.touched_at == T0 + timedelta(seconds=5)
    assert touched().model_copy() == touched()
    await assert_nothing_written(store, before)


async def test_a_payload_mutated_after_validation_is_not_written(store: EventStore) -> None:
    """Frozen models still hold mutable dicts: a value that is no longer JSON
    is refused with a clear error, and nothing is written."""
    event = created("s")
    event.fields["when"] = object()  # type: ignore[assignment]  # not a JSON value
    before = await snapshot(store.engine)
    with pytest.raises(EventValidationError, match="not JSON"):
        await store.append("s", 0, [event])
    await assert_nothing_written(store, before)
    assert await store.read_stream("s") == []


@pytest.mark.parametrize(
    ("appends", "match"),
    [
        ([], "nothing to append"),
        ([StreamAppend("s", 1, [])], "no events"),
        ([StreamAppend("s", -1, [touched()])], "expected version must be >= 0"),
        ([StreamAppend("", 0, [touched()])], "stream id"),
        ([StreamAppend("x" * 65, 0, [touched()])], "stream id"),
        (
            [StreamAppend("s", 1, [touched()]), StreamAppend("s", 2, [touched()])],
            "appears twice",
        ),
        (
            [
                StreamAppend("n", 0, [created("n")]),
                StreamAppend("s", 1, [touched()]),
                StreamAppend("n", 1, [touched()]),
            ],
            "appears twice",
        ),
    ],
    ids=["empty-batch", "no-events", "negative-version", "empty-id", "long-id", "dup", "dup-later"],
)
async def test_malformed_append_is_rejected(
    store: EventStore, appends: list[StreamAppend], match: str
) -> None:
    await store.append("s", 0, [created("s")])
    before = await snapshot(store.engine)
    head = await store.head()
    with pytest.raises(InvalidAppendError, match=match) as info:
        await store.append_batch(appends)
    assert info.value.code == "INVALID_APPEND"
    assert await store.head() == head
    await assert_nothing_written(store, before)


async def test_overlong_user_id_is_a_typed_error(store: EventStore) -> None:
    """The user_id column holds 128 characters; a longer one is bad input like any other.

    Fails at the time of writing: the store does not check it, so PostgreSQL
    raises a raw driver error (StringDataRightTruncation, a 500 at the edge)
    while SQLite silently stores the whole string: the backends disagree.
    """
    await store.append("s", 0, [created("s")])
    before = await snapshot(store.engine)
    with pytest.raises(InvalidAppendError, match="user"):
        await store.append("t", 0, [created("t")], user_id="u" * 129)
    await assert_nothing_written(store, before)


async def test_single_stream_append_rejects_bad_input(store: EventStore) -> None:
    await store.append("s", 0, [created("s")])
    before = await snapshot(store.engine)
    with pytest.raises(InvalidAppendError):
        await store.append("s", 1, [])
    with pytest.raises(InvalidAppendError):
        await store.append("s", -1, [touched()])
    with pytest.raises(ConcurrencyError):
        await store.append("s", 5, [touched()])
    await assert_nothing_written(store, before)


# ------------------------------------------------------------------ lost connections


async def test_append_survives_a_server_side_disconnect_of_its_pool(pg_engine: AsyncEngine) -> None:
    """Every pooled backend is killed (a server restart, a failover): the
    next single-statement append drops the stale pool and lands once."""
    store = EventStore(pg_engine)
    await store.append("a", 0, [created("a")])
    admin_engine = make_engine(pg_engine.url.render_as_string(hide_password=False))
    try:
        async with admin_engine.connect() as admin:
            killed = await admin.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    finally:
        await admin_engine.dispose()
    assert killed is not None
    assert killed >= 1
    recorded = await store.append("b", 0, [created("b")])
    assert [r.stream_id for r in await store.read_all()] == ["a", "b"]
    assert recorded[0].stream_id == "b"


async def test_an_append_whose_answer_was_lost_is_not_reported_as_a_conflict(
    pg_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The statement commits but the connection dies before the answer: the
    retry meets its own rows, recognises them by their hashes, and returns
    them instead of a ConcurrencyError; nothing is written twice."""
    store = EventStore(pg_engine)
    real = Driver.fetch
    calls = 0

    async def commit_then_lose_the_answer(
        driver: Driver, sql: str, params: Sequence[Any] = ()
    ) -> list[Any]:
        nonlocal calls
        calls += 1
        rows = await real(driver, sql, params)
        if calls == 1:
            raise DBAPIError(sql, None, ConnectionError("lost"), connection_invalidated=True)
        return rows

    monkeypatch.setattr(Driver, "fetch", commit_then_lose_the_answer)
    recorded = await store.append("s", 0, [created("s"), touched()], metadata=META)
    assert calls == 2
    stored = await store.read_stream("s")
    assert [(r.position, r.hash) for r in recorded] == [(r.position, r.hash) for r in stored]
    assert len(stored) == 2

    # A real conflict after a lost answer is still a conflict.
    calls = 0
    with pytest.raises(ConcurrencyError):
        await store.append("s", 0, [created("s")])
