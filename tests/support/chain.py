"""Independent re-computation of the per-stream hash chain.

Works on raw rows of ``ledger_events`` (what is really stored, read without
the store) or on ``RecordedEvent`` objects. The product's own verifier comes
later; this one exists so tests do not trust the code they check.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.chain import GENESIS, event_hash
from session_ledger.ledger.domain.events import RecordedEvent, serialize
from session_ledger.ledger.schema import events as events_table


@dataclass(frozen=True)
class ChainBreak:
    position: int
    stream_id: str
    stream_version: int
    reason: str


def _as_mapping(row: RecordedEvent | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(row, RecordedEvent):
        event_type, schema_version, data = serialize(row.event)
        return {
            "position": row.position,
            "stream_id": row.stream_id,
            "stream_version": row.stream_version,
            "type": event_type,
            "schema_version": schema_version,
            "data": data,
            "meta": row.metadata.model_dump(mode="json"),
            "user_id": row.user_id,
            "recorded_at": row.recorded_at,
            "prev_hash": row.prev_hash,
            "hash": row.hash,
        }
    return row


def verify_chain(rows: Iterable[RecordedEvent | Mapping[str, Any]]) -> list[ChainBreak]:
    """Every break in the per-stream chains of ``rows`` (empty: all intact).

    Per stream, versions must run 1, 2, 3, ... without gaps; the first
    ``prev_hash`` is the genesis hash, every later one the previous event's
    ``hash``; every ``hash`` is the SHA-256 recomputed over the stored content.
    """
    streams: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        mapping = _as_mapping(row)
        streams[mapping["stream_id"]].append(mapping)

    breaks: list[ChainBreak] = []
    for stream_id, stream in streams.items():
        stream.sort(key=lambda r: r["stream_version"])
        expected_prev = GENESIS
        for expected_version, row in enumerate(stream, start=1):
            reasons: list[str] = []
            if row["stream_version"] != expected_version:
                reasons.append(f"version {row['stream_version']}, expected {expected_version}")
            if row["prev_hash"] != expected_prev:
                reasons.append("prev_hash does not link to the previous event")
            recomputed = event_hash(
                row["prev_hash"],
                stream_id=row["stream_id"],
                stream_version=row["stream_version"],
                event_type=row["type"],
                schema_version=row["schema_version"],
                data=row["data"],
                meta=row["meta"],
                user_id=row["user_id"],
                recorded_at=row["recorded_at"],
            )
            if recomputed != row["hash"]:
                reasons.append("hash does not match the stored content")
            breaks.extend(
                ChainBreak(row["position"], stream_id, row["stream_version"], reason)
                for reason in reasons
            )
            expected_prev = row["hash"]
    breaks.sort(key=lambda b: b.position)
    return breaks


async def raw_rows(engine: AsyncEngine, stream_id: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``ledger_events`` as stored (no deserialisation), in position order."""
    query = select(events_table).order_by(events_table.c.position)
    if stream_id is not None:
        query = query.where(events_table.c.stream_id == stream_id)
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]
