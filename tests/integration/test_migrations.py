"""Alembic migrations on both backends: upgrade, idempotence, downgrade, no drift."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

import session_ledger.migrations.target
from session_ledger import migrations
from session_ledger.ledger.store import EventStore
from tests.support.events import created, touched


async def current_heads(engine: AsyncEngine) -> set[str]:
    """Revisions the database is at (a set: the history may have several heads)."""
    async with engine.connect() as conn:
        heads = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads())
    return set(heads)


def script_heads() -> set[str]:
    return set(ScriptDirectory.from_config(migrations.alembic_config()).get_heads())


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def trigger_names(engine: AsyncEngine) -> set[str]:
    if engine.dialect.name == "postgresql":
        query = (
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgrelid = 'ledger_events'::regclass"
        )
    else:
        query = (
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'ledger_events'"
        )
    async with engine.connect() as conn:
        return {row[0] for row in await conn.execute(text(query))}


EXPECTED_TRIGGERS = {
    "postgresql": {"ledger_events_no_update_delete", "ledger_events_no_truncate"},
    "sqlite": {"ledger_events_no_update", "ledger_events_no_delete"},
}


async def test_upgrade_empty_database_to_head(empty_engine: AsyncEngine) -> None:
    assert await current_heads(empty_engine) == set()
    assert "ledger_events" not in await table_names(empty_engine)

    await migrations.upgrade(empty_engine)

    assert script_heads()
    assert await current_heads(empty_engine) == script_heads()
    assert {"ledger_events", "alembic_version"} <= await table_names(empty_engine)
    assert await trigger_names(empty_engine) == EXPECTED_TRIGGERS[empty_engine.dialect.name]
    # The migrated schema is usable by the store straight away.
    store = EventStore(empty_engine)
    await store.append("s", 0, [created("s")])
    assert await store.stream_version("s") == 1


async def test_upgrade_twice_is_a_no_op(empty_engine: AsyncEngine) -> None:
    await migrations.upgrade(empty_engine)
    store = EventStore(empty_engine)
    before = await store.append("s", 0, [created("s"), touched()])
    tables = await table_names(empty_engine)

    await migrations.upgrade(empty_engine)

    assert await current_heads(empty_engine) == script_heads()
    assert await table_names(empty_engine) == tables
    assert await store.read_all() == before


async def test_downgrade_to_base_and_upgrade_again(empty_engine: AsyncEngine) -> None:
    await migrations.upgrade(empty_engine)
    await EventStore(empty_engine).append("s", 0, [created("s")])

    await migrations.downgrade(empty_engine, "base")

    assert await current_heads(empty_engine) == set()
    assert await table_names(empty_engine) <= {"alembic_version"}
    if empty_engine.dialect.name == "postgresql":
        async with empty_engine.connect() as conn:
            leftover = await conn.scalar(
                text("SELECT count(*) FROM pg_proc WHERE proname = 'ledger_events_append_only'")
            )
        assert leftover == 0

    await migrations.upgrade(empty_engine)

    assert await current_heads(empty_engine) == script_heads()
    store = EventStore(empty_engine)
    assert await store.head() == 0
    (recorded,) = await store.append("s", 0, [created("s")])
    assert recorded.stream_version == 1
    # The re-created triggers guard the re-created table.
    with pytest.raises(DBAPIError, match="append-only"):
        async with empty_engine.begin() as conn:
            await conn.execute(text("DELETE FROM ledger_events"))


def _diff(connection: Connection) -> list[Any]:
    target = session_ledger.migrations.target
    opts = {"compare_type": True, "include_object": target.include_object(connection.dialect.name)}
    context = MigrationContext.configure(connection, opts=opts)
    return list(compare_metadata(context, target.target_metadata))


async def test_models_and_migrations_do_not_drift(engine: AsyncEngine) -> None:
    """Autogenerate against the migrated database finds nothing to change."""
    async with engine.connect() as conn:
        diff = await conn.run_sync(_diff)
    assert diff == []
