"""The per-stream hash chain: each event's hash covers its content and the
previous event's hash, so changing, removing or reordering a stored event
breaks every later link of its stream."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from ledger.clock import utc

GENESIS = "0" * 64


def canonical_json(value: Any) -> str:
    """One byte-exact JSON form: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def timestamp(instant: datetime) -> str:
    """Microsecond UTC ISO form: what both databases store exactly."""
    return utc(instant).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    prev_hash: str,
    *,
    stream_id: str,
    stream_version: int,
    event_type: str,
    schema_version: int,
    data: dict[str, Any],
    meta: dict[str, Any],
    user_id: str | None,
    recorded_at: datetime,
) -> str:
    body = canonical_json(
        {
            "stream_id": stream_id,
            "stream_version": stream_version,
            "type": event_type,
            "schema_version": schema_version,
            "data": data,
            "meta": meta,
            "user_id": user_id,
            "recorded_at": timestamp(recorded_at),
        }
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()
