"""The per-stream hash chain: each event's hash covers its content and the
previous event's hash, so changing, removing or reordering a stored event
breaks every later link of its stream."""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import datetime
from typing import Any

from session_ledger.ledger.clock import utc

GENESIS = "0" * 64


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """One byte-exact JSON form: sorted keys, no spaces, UTF-8 kept as is."""
    return _CANONICAL.encode(value)


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


@functools.lru_cache(maxsize=4096)
def _json_str(value: str | None) -> str:
    # Cached: a batch repeats its stream ids, and there are few event types.
    return json.dumps(value, ensure_ascii=False)


def event_hash_from_json(
    prev_hash: str,
    *,
    stream_id: str,
    stream_version: int,
    event_type: str,
    schema_version: int,
    data_json: str,
    meta_json: str,
    user_id: str | None,
    recorded_at: str,
) -> str:
    """:func:`event_hash` from already canonical JSON of ``data`` and ``meta``
    and the :func:`timestamp` of ``recorded_at``: the same bytes, built
    without walking the payload again (the append path serialises each
    payload once, for the database and for the hash alike).

    The keys below are in sorted order, exactly as ``canonical_json`` of the
    whole body writes them; tests check both functions agree."""
    body = (
        f'{{"data":{data_json},"meta":{meta_json},"recorded_at":"{recorded_at}",'
        f'"schema_version":{schema_version},"stream_id":{_json_str(stream_id)},'
        f'"stream_version":{stream_version},"type":{_json_str(event_type)},'
        f'"user_id":{_json_str(user_id)}}}'
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()
