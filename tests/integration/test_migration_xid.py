"""Migration 0007: every event row records its writing transaction (``xid``).

Upgraded with events in the ledger, on both databases: the old rows keep
their order (all at xid 0, below every real transaction and any horizon)
without being rewritten or updated, the immutability triggers still hold,
new rows get their transaction's id (PostgreSQL), and the downgrade gives
the old table back, data intact.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger import migrations
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.store import EventStore
from tests.support.chain import verify_chain
from tests.support.events import created, touched

BEFORE = "0006"
XID = "0007"
INDEX = "ix_ledger_events_xid_position"


async def rows(engine: AsyncEngine, *, by_xid: bool = False) -> list[dict[str, Any]]:
    """Every row as stored, of the columns the table has at its revision (the
    store's reads follow the newest schema), in position or (xid, position)
    order."""
    present = await columns(engine)
    query = select(*(c for c in events_table.c if c.name in present))
    t = events_table.c
    query = query.order_by(*((t.xid, t.position) if by_xid else (t.position,)))
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def columns(engine: AsyncEngine, table: str = "ledger_events") -> set[str]:
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            query = (
                f"SELECT column_name FROM information_schema.columns WHERE table_name = '{table}'"
            )
        else:
            query = f"SELECT name FROM pragma_table_info('{table}')"
        return {row[0] for row in await conn.execute(text(query))}


async def indexes(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            query = "SELECT indexname FROM pg_indexes WHERE tablename = 'ledger_events'"
        else:
            query = "SELECT name FROM sqlite_master WHERE type = 'index'"
        return {row[0] for row in await conn.execute(text(query))}


async def fill(store: EventStore, prefix: str, streams: int = 3) -> None:
    """A few streams, interleaved, so positions mix streams."""
    for i in range(streams):
        await store.append(f"{prefix}{i}", 0, [created(f"{prefix}{i}")])
    for i in range(streams):
        await store.append(f"{prefix}{i}", 1, [touched(ip=f"10.1.{i}.1"), touched()])


async def assert_immutable(engine: AsyncEngine) -> None:
    for statement in (
        "UPDATE ledger_events SET stream_version = stream_version + 100",
        "DELETE FROM ledger_events",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))


def without_xid(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "xid"} for row in stored]


async def test_upgrade_keeps_existing_events_in_order_without_touching_them(
    empty_engine: AsyncEngine,
) -> None:
    engine = empty_engine
    postgres = engine.dialect.name == "postgresql"
    await migrations.upgrade(engine, BEFORE)
    await fill(EventStore(engine), "old-")
    before = await rows(engine)
    if postgres:
        # Where each row version lives and which transaction wrote it: an
        # UPDATE or a table rewrite would change them.
        async with engine.connect() as conn:
            file_before = await conn.scalar(text("SELECT pg_relation_filenode('ledger_events')"))
            versions_before = (
                await conn.execute(text("SELECT ctid::text, xmin::text FROM ledger_events"))
            ).all()

    await migrations.upgrade(engine, XID)

    assert "xid" in await columns(engine)
    assert (INDEX in await indexes(engine)) is postgres  # SQLite reads by position
    after = await rows(engine)
    assert [row["xid"] for row in after] == [0] * len(before)
    assert without_xid(after) == before
    assert await rows(engine, by_xid=True) == after
    assert verify_chain(after) == []
    if postgres:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_relation_filenode('ledger_events')")) == (
                file_before
            )
            versions_after = (
                await conn.execute(text("SELECT ctid::text, xmin::text FROM ledger_events"))
            ).all()
        assert versions_after == versions_before
    await assert_immutable(engine)
    # Not even the new column can be written in place.
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE ledger_events SET xid = xid"))

    # Events appended afterwards come after every old one in (xid, position).
    await fill(EventStore(engine), "new-", streams=2)
    ordered = await rows(engine, by_xid=True)
    assert [row["position"] for row in ordered] == sorted(row["position"] for row in ordered)
    new = [row for row in ordered if row["stream_id"].startswith("new-")]
    assert len(new) == 6
    if postgres:
        assert all(row["xid"] > 0 for row in new)
        # One append, one transaction: the two events of a batch share it.
        by_stream = {(r["stream_id"], r["stream_version"]): r["xid"] for r in new}
        assert by_stream[("new-0", 2)] == by_stream[("new-0", 3)]
        assert by_stream[("new-0", 1)] != by_stream[("new-0", 2)]
    else:
        assert all(row["xid"] == 0 for row in new)


async def test_downgrade_gives_the_old_table_back_with_its_data(
    empty_engine: AsyncEngine,
) -> None:
    engine = empty_engine
    await migrations.upgrade(engine, BEFORE)
    await fill(EventStore(engine), "old-")
    await migrations.upgrade(engine, XID)
    await fill(EventStore(engine), "new-", streams=2)
    before = without_xid(await rows(engine))

    await migrations.downgrade(engine, BEFORE)

    assert "xid" not in await columns(engine)
    assert INDEX not in await indexes(engine)
    assert await rows(engine) == before
    await assert_immutable(engine)
    # The old schema takes appends again.
    await EventStore(engine).append("after-downgrade", 0, [created("after-downgrade")])

    await migrations.upgrade(engine)

    again = await rows(engine)
    assert [row["xid"] for row in again] == [0] * len(again)
    assert verify_chain(again) == []


async def test_xid_is_the_writing_top_level_transaction(pg_engine: AsyncEngine) -> None:
    """What readers rely on: a row's xid is its top-level transaction's,
    also when it was inserted in a savepoint (a subtransaction has an xid of
    its own, but only the top-level one decides visibility at commit)."""
    insert = text(
        "INSERT INTO ledger_events (stream_id, stream_version, type, schema_version, data, "
        "meta, recorded_at, prev_hash, hash) VALUES (:s, 1, 'T', 1, '{}', '{}', now(), "
        "'p', 'h') RETURNING xid"
    )
    async with pg_engine.connect() as conn, conn.begin():
        top = await conn.scalar(text("SELECT pg_current_xact_id()"))
        plain = await conn.scalar(insert, {"s": "plain"})
        async with conn.begin_nested():
            nested = await conn.scalar(insert, {"s": "nested"})
        xmin = text("SELECT xmin::text::bigint FROM ledger_events WHERE stream_id = :s")
        own = {s: await conn.scalar(xmin, {"s": s}) for s in ("plain", "nested")}
    assert plain == nested == top
    # The row's xmin is the writer's own 32-bit id: the subtransaction's is
    # another than its parent's, the recorded xid is the parent's.
    assert top is not None
    assert own["plain"] == top % 2**32
    assert own["nested"] != own["plain"]
    async with pg_engine.connect() as conn:
        status = await conn.scalar(text("SELECT pg_xact_status(:x)"), {"x": top})
    assert status == "committed"  # the whole of it, savepoint included


async def test_migration_0008_keeps_digests_and_their_guard_both_ways(
    empty_engine: AsyncEngine,
) -> None:
    """Digests and replay checkpoints taken by position are the marks
    (0, position); downgrading drops the columns and keeps the digests
    append-only."""
    engine = empty_engine
    await migrations.upgrade(engine, XID)
    await fill(EventStore(engine), "old-")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO ledger_digests (position, event_count, digest, prev_digest, "
                "recorded_at) VALUES (3, 3, 'd', 'g', CURRENT_TIMESTAMP)"
            )
        )
    await migrations.upgrade(engine, "0008")
    async with engine.connect() as conn:
        stored = await conn.execute(text("SELECT xid, position FROM ledger_digests"))
        assert [tuple(row) for row in stored] == [(0, 3)]
    await migrations.downgrade(engine, XID)
    assert "xid" not in await columns(engine, "ledger_digests")
    with pytest.raises(Exception, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM ledger_digests"))
    await migrations.upgrade(engine)
