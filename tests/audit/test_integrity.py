"""Tamper evidence: verify_ledger finds every kind of tampering, and nothing
on an untouched ledger; digests are recorded incrementally and chained."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.chain import GENESIS
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.integrity import (
    Digest,
    DigestFormatError,
    Problem,
    digest_step,
    latest_digest,
    parse_expected,
    record_digest,
    verify_ledger,
)
from session_ledger.ledger.recorders import recorder_for
from session_ledger.ledger.service import RequestContext, SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.ledger.writes import FromEvents, Projected, Rows, Write
from tests.audit.history import make_ledger
from tests.audit.tamper import rehash_stream, set_ip, tamper
from tests.support.chain import raw_rows
from tests.support.events import created


async def _history(ledger: SessionLedger, clock: ManualClock, sessions: int = 4) -> list[str]:
    ids = []
    for i in range(sessions):
        view, token = await ledger.create_session(f"user-{i % 2}", RequestContext(ip="10.0.0.1"))
        ids.append(view.id)
        clock.advance(60)
        await ledger.get_session(token, RequestContext(ip=f"10.0.0.{i + 2}"))
        clock.advance(60)
        await ledger.get_session(token, RequestContext(ip="10.0.0.1"))
        if i % 2:
            await ledger.sign_out(token)
    return ids


@pytest.fixture
async def ledger(engine: AsyncEngine, clock: ManualClock) -> SessionLedger:
    return make_ledger(engine, clock)


async def _only(engine: AsyncEngine, kind: str) -> list[Problem]:
    report = await verify_ledger(engine, batch_size=3)
    assert report.problems, "the tampering must be reported"
    assert {p.kind for p in report.problems} == {kind}, report.problems
    return report.problems


async def test_untouched_ledger_verifies_clean(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    empty = await verify_ledger(engine)
    assert empty.ok
    assert empty.events_checked == 0
    await _history(ledger, clock)
    await record_digest(engine, clock)
    await _history(ledger, clock)  # events after the newest digest are fine too
    report = await verify_ledger(engine, batch_size=3)
    rows = await raw_rows(engine)
    assert report.ok, report.problems
    assert report.events_checked == len(rows)
    assert report.streams_seen == 8
    assert report.digests_checked == 1
    assert report.head == rows[-1]["position"]


async def test_modified_payload_byte_is_a_broken_link(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    ids = await _history(ledger, clock)
    row = (await raw_rows(engine, ids[2]))[0]
    await set_ip(engine, row["position"], "10.0.0.9")  # one character of the payload
    (problem,) = await _only(engine, "chain")
    assert (problem.stream_id, problem.stream_version, problem.position) == (
        ids[2],
        1,
        row["position"],
    )
    assert "changed" in problem.message


async def test_rehashed_forgery_is_caught_by_the_digest(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    ids = await _history(ledger, clock)
    digest = await record_digest(engine, clock)
    assert digest is not None
    row = (await raw_rows(engine, ids[0]))[0]
    await set_ip(engine, row["position"], "192.0.2.66")
    await rehash_stream(engine, ids[0])  # the chain is valid again
    (problem,) = await _only(engine, "digest")
    assert problem.position == digest.position
    # The operator's copy outside the database tells the same story.
    report = await verify_ledger(engine, expect=[(digest.mark, digest.digest)])
    assert sum(p.kind == "digest" for p in report.problems) == 2


async def test_deleted_event_is_reported_where_the_chain_breaks(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    ids = await _history(ledger, clock)
    await record_digest(engine, clock)
    rows = await raw_rows(engine, ids[1])
    assert len(rows) >= 3
    await tamper(
        engine, "DELETE FROM ledger_events WHERE position = :p", {"p": rows[1]["position"]}
    )
    report = await verify_ledger(engine, batch_size=2)
    chain = [p for p in report.problems if p.kind == "chain"]
    assert [(p.stream_id, p.stream_version, p.position) for p in chain] == [
        (ids[1], 3, rows[2]["position"])
    ]
    assert "missing" in chain[0].message
    assert any(p.kind == "digest" for p in report.problems)


async def test_deleted_first_event_is_reported(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    ids = await _history(ledger, clock)
    rows = await raw_rows(engine, ids[0])
    await tamper(
        engine, "DELETE FROM ledger_events WHERE position = :p", {"p": rows[0]["position"]}
    )
    (problem,) = await _only(engine, "chain")
    assert (problem.stream_id, problem.stream_version) == (ids[0], 2)


async def test_deleted_whole_stream_is_caught_by_the_digest(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    ids = await _history(ledger, clock)
    digest = await record_digest(engine, clock)
    assert digest is not None
    await tamper(engine, "DELETE FROM ledger_events WHERE stream_id = :s", {"s": ids[2]})
    (problem,) = await _only(engine, "digest")
    assert problem.position == digest.position
    assert "deleted" in problem.message


async def test_truncated_newest_events_are_caught_by_the_digest(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    await _history(ledger, clock)
    digest = await record_digest(engine, clock)
    assert digest is not None
    await tamper(
        engine, "DELETE FROM ledger_events WHERE position > :p", {"p": digest.position - 3}
    )
    (problem,) = await _only(engine, "digest")
    assert problem.position == digest.position
    assert "newest events were deleted" in problem.message


async def test_truncation_past_the_newest_digest_needs_the_external_copy(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    await _history(ledger, clock)
    first = await record_digest(engine, clock)
    await _history(ledger, clock, sessions=2)
    second = await record_digest(engine, clock)
    assert first is not None
    assert second is not None
    # The attacker removes the newest events and the digest row covering them.
    await tamper(engine, "DELETE FROM ledger_events WHERE position > :p", {"p": first.position})
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            await conn.execute(text("DROP TRIGGER ledger_digests_no_delete"))
        await conn.execute(
            text("DELETE FROM ledger_digests WHERE position = :p"), {"p": second.position}
        )
    assert (await verify_ledger(engine)).ok  # invisible from inside the database
    report = await verify_ledger(engine, expect=[parse_expected(second.token)])
    (problem,) = report.problems
    assert problem.kind == "digest"
    assert problem.position == second.position


async def test_digests_are_incremental_and_chained(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    assert await record_digest(engine, clock) is None  # empty ledger: nothing to digest
    await _history(ledger, clock, sessions=2)
    first = await record_digest(engine, clock)
    assert first is not None
    assert first.prev_digest == GENESIS
    assert await record_digest(engine, clock) is None  # head did not move
    clock.advance(timedelta(minutes=5).total_seconds())
    await _history(ledger, clock, sessions=3)
    second = await record_digest(engine, clock)
    assert second is not None
    assert second.prev_digest == first.digest
    rows = await raw_rows(engine)
    running = GENESIS
    for row in rows:
        running = digest_step(running, row["position"], row["hash"])
    assert (second.position, second.event_count, second.digest) == (
        rows[-1]["position"],
        len(rows),
        running,
    )
    latest = await latest_digest(engine)
    assert latest is not None
    assert latest == Digest(
        second.position,
        second.event_count,
        second.digest,
        first.digest,
        latest.recorded_at,
        second.xid,
    )


async def test_digest_rows_are_append_only(
    engine: AsyncEngine, ledger: SessionLedger, clock: ManualClock
) -> None:
    await _history(ledger, clock, sessions=1)
    await record_digest(engine, clock)
    with pytest.raises(Exception, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM ledger_digests"))


def test_expected_digest_format() -> None:
    assert parse_expected(f"12:{'a' * 64}") == ((0, 12), "a" * 64)
    assert parse_expected(f"907:12:{'a' * 64}") == ((907, 12), "a" * 64)
    digest = Digest(12, 3, "b" * 64, GENESIS, xid=907)
    assert parse_expected(digest.token) == ((907, 12), "b" * 64)
    for bad in ["", "12", f"x:{'a' * 64}", "12:abc", f"12:{'g' * 64}", f"1:2:3:{'a' * 64}"]:
        with pytest.raises(DigestFormatError):
            parse_expected(bad)


async def test_a_digest_covers_what_a_reader_below_the_horizon_sees(
    pg_engine: AsyncEngine, clock: ManualClock
) -> None:
    """A digest taken while an append's transaction is still open covers
    the events below the horizon only; that append commits later with a
    lower position than an event appended after it, and both digests still
    verify: no event ever appears before a digest's mark."""
    store = EventStore(pg_engine, clock=clock)
    await store.append("a", 0, [created("a")])
    gate = _Gate()
    recorder = recorder_for(pg_engine)
    recorder.before_commit = gate.hold
    held = EventStore(recorder, clock=clock, inline_projections=[gate])
    slow = asyncio.create_task(held.append("b", 0, [created("b")]))
    await gate.entered.wait()  # "b" has its position; its commit waits
    later = await store.append("c", 0, [created("c")])
    first = await record_digest(pg_engine, clock)
    assert first is not None
    assert first.event_count == 1  # "c" waits above the horizon, behind "b"
    gate.release.set()
    (b,) = await slow
    assert b.position < later[0].position
    second = await record_digest(pg_engine, clock)
    assert second is not None
    assert second.event_count == 3
    report = await verify_ledger(pg_engine, expect=[(first.mark, first.digest)])
    assert report.ok, report.problems
    assert report.digests_checked == 2


class _Gate(FromEvents):
    """An inline projection that holds its append's transaction open: it
    asks for the transaction (None before it), whose recorder waits in
    ``hold`` before COMMIT, after the events took their positions."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def writes(
        self, events: Sequence[Projected], prior: Rows, *, locked: bool
    ) -> list[Write] | None:
        return [] if locked else None

    async def hold(self) -> None:
        self.entered.set()
        await self.release.wait()
