"""The sweep query reads the partial index: its cost follows the number of
due sessions, not the size of the table."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.projections.schema import sessions
from session_ledger.workers.expiry import due_sessions_query

INDEX = "ix_sessions_active_expires_at"


def _rows(clock: ManualClock, count: int, due_every: int) -> list[dict[str, Any]]:
    now = clock.now()
    rows: list[dict[str, Any]] = []
    for i in range(count):
        status = "active" if i % 3 else "revoked"
        due = i % due_every == 0
        expires = now - timedelta(minutes=i % 50 + 1) if due else now + timedelta(days=1 + i % 20)
        rows.append(
            {
                "session_id": f"s-{i:07d}",
                "user_id": f"u-{i % 1000}",
                "status": status,
                "token_hash": f"{i:064x}",
                "previous_token_hash": None,
                "grace_until": None,
                "retired_token_hashes": [],
                "created_at": now - timedelta(days=1),
                "expires_at": expires,
                "authenticated_at": now - timedelta(days=1),
                "max_expires_at": None,
                "last_active_at": now - timedelta(days=1),
                "updated_at": now - timedelta(days=1),
                "ip": None,
                "user_agent": None,
                "device": "Unknown",
                "remember_me": True,
                "fields": {},
                "version": 1,
                "ended_at": None,
                "end_reason": None,
                "ended_by": None,
            }
        )
    return rows


def _literal(value: Any) -> str:
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    return str(int(value))


async def _fill(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            await conn.execute(sessions.insert(), rows[start : start + 5000])


@pytest.mark.pg
async def test_postgres_plans_the_sweep_on_the_partial_index(
    pg_engine: AsyncEngine, clock: ManualClock
) -> None:
    # 40,000 sessions, 1 in 200 due: a sequential scan would read them all.
    await _fill(pg_engine, _rows(clock, 40_000, due_every=200))
    query = due_sessions_query(clock.now(), 500)
    async with pg_engine.connect() as conn:
        await conn.execute(text("ANALYZE sessions"))
        compiled = query.compile(dialect=conn.dialect)
        args = ", ".join(_literal(compiled.params[name]) for name in compiled.positiontup or ())
        await conn.exec_driver_sql(f"PREPARE sweep_plan AS {compiled}")
        # The generic plan too: asyncpg prepares statements, and after a few
        # runs PostgreSQL may switch to a plan made without the parameter
        # values; the literal 'active' keeps the partial index usable there.
        plans = []
        for mode in ("force_custom_plan", "force_generic_plan"):
            await conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
            result = await conn.exec_driver_sql(f"EXPLAIN EXECUTE sweep_plan({args})")
            plans.append("\n".join(row[0] for row in result))
    for plan in plans:
        assert INDEX in plan, plan
        assert "Seq Scan" not in plan, plan


async def test_sqlite_plans_the_sweep_on_the_partial_index(
    sqlite_engine: AsyncEngine, clock: ManualClock
) -> None:
    await _fill(sqlite_engine, _rows(clock, 5_000, due_every=100))
    query = due_sessions_query(clock.now(), 500)
    async with sqlite_engine.connect() as conn:
        await conn.execute(text("ANALYZE"))
        compiled = query.compile(dialect=conn.dialect)
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        result = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
        plan = "\n".join(str(row[-1]) for row in result)
    assert INDEX in plan, plan
