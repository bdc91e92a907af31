"""Fill a PostgreSQL ledger fast with valid, hash-chained session events.

    python -m bench.gen_events URL --events 100000

Each session gets five events (created, touched, refreshed, touched, revoked
or left active), built with the real event models and serialised with
ledger.domain.events.serialize, chained with ledger.chain.event_hash, and loaded
with COPY (asyncpg copy_records_to_table) in chunks: bounded memory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from session_ledger.ledger.chain import GENESIS, event_hash
from session_ledger.ledger.domain.events import (
    Event,
    RevocationReason,
    SessionCreated,
    SessionRefreshed,
    SessionRevoked,
    SessionTouched,
    serialize,
)
from session_ledger.ledger.domain.tokens import hash_token

T0 = datetime.now(UTC).replace(microsecond=0)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
COLUMNS = [
    "stream_id",
    "stream_version",
    "type",
    "schema_version",
    "data",
    "meta",
    "user_id",
    "recorded_at",
    "prev_hash",
    "hash",
]
META = {"actor": "system", "request_id": None, "correlation_id": None}


def session_events(i: int) -> tuple[str, str, list[Event]]:
    sid = f"bench-{i:09d}"
    user = f"user-{i % 5000}"
    at = T0 + timedelta(seconds=i)
    events: list[Event] = [
        SessionCreated(
            session_id=sid,
            user_id=user,
            token_hash=hash_token(f"t{i}"),
            created_at=at,
            expires_at=at + timedelta(days=30),
            authenticated_at=at,
            ip="203.0.113.7",
            user_agent=UA,
        ),
        SessionTouched(touched_at=at + timedelta(minutes=10), ip="203.0.113.8"),
        SessionRefreshed(refreshed_at=at + timedelta(days=1), expires_at=at + timedelta(days=31)),
        SessionTouched(touched_at=at + timedelta(days=1, minutes=10)),
    ]
    if i % 3 == 0:
        events.append(
            SessionRevoked(
                revoked_at=at + timedelta(days=2), reason=RevocationReason.SIGN_OUT, actor=user
            )
        )
    else:
        events.append(SessionTouched(touched_at=at + timedelta(days=2)))
    return sid, user, events


def records(n: int) -> Iterator[tuple[Any, ...]]:
    """``n`` event rows, five per session, each stream hash-chained."""
    i = 0
    produced = 0
    while produced < n:
        sid, user, events = session_events(i)
        prev = GENESIS
        for version, event in enumerate(events, start=1):
            if produced >= n:
                return
            event_type, schema_version, data = serialize(event)
            recorded_at = T0 + timedelta(microseconds=produced)
            digest = event_hash(
                prev,
                stream_id=sid,
                stream_version=version,
                event_type=event_type,
                schema_version=schema_version,
                data=data,
                meta=META,
                user_id=user,
                recorded_at=recorded_at,
            )
            yield (
                sid,
                version,
                event_type,
                schema_version,
                json.dumps(data),
                json.dumps(META),
                user,
                recorded_at,
                prev,
                digest,
            )
            prev = digest
            produced += 1
        i += 1


async def generate(url: str, n: int, chunk: int = 50_000) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        buffer: list[tuple[Any, ...]] = []
        for row in records(n):
            buffer.append(row)
            if len(buffer) >= chunk:
                await conn.copy_records_to_table("ledger_events", records=buffer, columns=COLUMNS)
                buffer = []
        if buffer:
            await conn.copy_records_to_table("ledger_events", records=buffer, columns=COLUMNS)
        await conn.execute("ANALYZE ledger_events")
    finally:
        await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Fill a migrated PostgreSQL ledger.")
    parser.add_argument("url")
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    asyncio.run(generate(args.url, args.events))
