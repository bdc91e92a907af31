"""Tampering with a ledger the way an attacker with database access would:
the immutability triggers are switched off first (superuser on PostgreSQL,
dropped on SQLite), exactly what the tests must be able to detect."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.chain import GENESIS, event_hash
from tests.support.chain import raw_rows


async def tamper(engine: AsyncEngine, sql: str, params: dict[str, Any] | None = None) -> None:
    """Run ``sql`` against ledger_events with its append-only triggers bypassed."""
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Triggers are not fired for a session in replica mode (superuser only).
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            await conn.execute(text("DROP TRIGGER IF EXISTS ledger_events_no_update"))
            await conn.execute(text("DROP TRIGGER IF EXISTS ledger_events_no_delete"))
        await conn.execute(text(sql), params or {})


async def set_ip(engine: AsyncEngine, position: int, ip: str) -> None:
    """Change one byte-level detail of a stored payload (the ip of an event)."""
    async with engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
    if pg:
        sql = (
            "UPDATE ledger_events SET data = "
            "jsonb_set(data::jsonb, '{ip}', to_jsonb(CAST(:ip AS text)))::json"
        )
    else:
        sql = "UPDATE ledger_events SET data = json_set(data, '$.ip', :ip)"
    await tamper(engine, sql + " WHERE position = :p", {"ip": ip, "p": position})


async def rehash_stream(engine: AsyncEngine, stream_id: str) -> None:
    """Recompute a stream's whole chain after a forgery, as a careful attacker would."""
    prev = GENESIS
    for row in await raw_rows(engine, stream_id):
        new = event_hash(
            prev,
            stream_id=row["stream_id"],
            stream_version=row["stream_version"],
            event_type=row["type"],
            schema_version=row["schema_version"],
            data=row["data"],
            meta=row["meta"],
            user_id=row["user_id"],
            recorded_at=row["recorded_at"],
        )
        await tamper(
            engine,
            "UPDATE ledger_events SET prev_hash = :prev, hash = :hash WHERE position = :p",
            {"prev": prev, "hash": new, "p": row["position"]},
        )
        prev = new
