"""Expiry sweep throughput on PostgreSQL: stale sessions among many live ones.

    python -m bench.expiry [--live 1000000] [--big 100000] [--small 10000]
                           [--batch-size 500] [--keep]

One fresh database, filled fast with a raw COPY of valid hash-chained
``SessionCreated`` events and the matching ``sessions`` rows (what the inline
projection would have written), then ANALYZEd. Every session is active:

* ``--live`` sessions expire in 30 days;
* ``--small`` stale sessions expire in the first 10 minutes after T;
* ``--big`` stale sessions expire in the hour after that.

Then, in one run and with the production wiring (api.bootstrap.build: inline
session table, audit IPs, NOTIFY), a sweep at T + 30 min expires the small
group, and a sweep at T + 3 h the big group, both against a table of the same
size. Reported per case: sessions expired per second, cost per expired
session, and the part of it spent finding them (the indexed query).

Targets (issue 6): >= 5,000 sessions expired per second, and the cost per
expired session of the two cases within 2x of each other (the sweep's cost
follows the number of expired sessions, not the table size).

The database is created on the server named by SESSION_LEDGER_TEST_PG
(default postgresql+asyncpg://postgres@127.0.0.1:5432/test) and dropped at
the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from session_ledger import migrations
from session_ledger.api.bootstrap import build
from session_ledger.ledger.chain import GENESIS, canonical_json, event_hash
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.devices import describe_device
from session_ledger.ledger.domain.events import EventMetadata, SessionCreated, serialize
from session_ledger.workers.expiry import ExpirySweep

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TARGET_RATE = 5000.0
TARGET_RATIO = 2.0
CHUNK = 50_000
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"

EVENT_COLUMNS = [
    "stream_id", "stream_version", "type", "schema_version", "data", "meta",
    "user_id", "recorded_at", "prev_hash", "hash",
]  # fmt: skip
SESSION_COLUMNS = [
    "session_id", "user_id", "status", "token_hash", "previous_token_hash", "grace_until",
    "retired_token_hashes", "created_at", "expires_at", "authenticated_at", "max_expires_at",
    "last_active_at", "updated_at", "ip", "user_agent", "device", "remember_me", "fields",
    "version", "ended_at", "end_reason", "ended_by",
]  # fmt: skip


def _iso(instant: datetime) -> str:
    """Pydantic's JSON form of a whole-second UTC datetime."""
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Group:
    name: str
    count: int
    #: Deadlines spread evenly over [first, first + spread).
    first: datetime
    spread: timedelta


def _sessions(groups: list[Group], created: datetime) -> Iterator[tuple[str, str, datetime]]:
    n = 0
    for g in groups:
        step = g.spread / max(1, g.count)
        for i in range(g.count):
            expires = (g.first + step * i).replace(microsecond=0)
            yield f"{g.name}-{n:08d}", f"user-{n % 100_000}", expires
            n += 1


def _rows(
    sid: str, user: str, created: datetime, expires: datetime, meta: dict[str, Any]
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    token_hash = hashlib.sha256(sid.encode()).hexdigest()
    data: dict[str, Any] = {
        "session_id": sid,
        "user_id": user,
        "token_hash": token_hash,
        "created_at": _iso(created),
        "expires_at": _iso(expires),
        "authenticated_at": _iso(created),
        "max_expires_at": None,
        "ip": "10.1.2.3",
        "user_agent": USER_AGENT,
        "remember_me": True,
        "fields": {},
    }
    digest = event_hash(
        GENESIS,
        stream_id=sid,
        stream_version=1,
        event_type="SessionCreated",
        schema_version=1,
        data=data,
        meta=meta,
        user_id=user,
        recorded_at=created,
    )
    event = (
        sid, 1, "SessionCreated", 1, json.dumps(data), json.dumps(meta),
        user, created, GENESIS, digest,
    )  # fmt: skip
    session = (
        sid, user, "active", token_hash, None, None, "[]", created, expires, created, None,
        created, created, "10.1.2.3", USER_AGENT, DEVICE, True, "{}", 1, None, None, None,
    )  # fmt: skip
    return event, session


DEVICE = describe_device(USER_AGENT)


def _check_payload_shape(created: datetime, expires: datetime, meta: dict[str, Any]) -> None:
    """The hand-built payload must be exactly what the store would write."""
    event = SessionCreated(
        session_id="x",
        user_id="u",
        token_hash=hashlib.sha256(b"x").hexdigest(),
        created_at=created,
        expires_at=expires,
        authenticated_at=created,
        ip="10.1.2.3",
        user_agent=USER_AGENT,
    )
    _type, _version, data = serialize(event)
    ours = _rows("x", "u", created, expires, meta)[0][4]
    assert canonical_json(data) == canonical_json(json.loads(ours)), (data, ours)


async def _fill(dsn: str, groups: list[Group], created: datetime) -> float:
    meta = EventMetadata(actor="bench").model_dump(mode="json")
    _check_payload_shape(created, groups[0].first, meta)
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        events: list[tuple[Any, ...]] = []
        rows: list[tuple[Any, ...]] = []
        total = sum(g.count for g in groups)
        done = 0
        for sid, user, expires in _sessions(groups, created):
            event, row = _rows(sid, user, created, expires, meta)
            events.append(event)
            rows.append(row)
            if len(events) == CHUNK:
                done += await _copy(conn, events, rows)
                events, rows = [], []
                print(f"\r  filled {done:,}/{total:,}", end="", flush=True)
        if events:
            done += await _copy(conn, events, rows)
        print(f"\r  filled {done:,}/{total:,}")
        await conn.execute("ANALYZE ledger_events")
        await conn.execute("ANALYZE sessions")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _copy(
    conn: asyncpg.Connection, events: list[tuple[Any, ...]], rows: list[tuple[Any, ...]]
) -> int:
    async with conn.transaction():
        await conn.copy_records_to_table("ledger_events", records=events, columns=EVENT_COLUMNS)
        await conn.copy_records_to_table("sessions", records=rows, columns=SESSION_COLUMNS)
    return len(events)


@dataclass
class Case:
    name: str
    expired: int
    seconds: float
    query_seconds: float

    @property
    def rate(self) -> float:
        return self.expired / self.seconds

    @property
    def cost_ms(self) -> float:
        return 1000 * self.seconds / self.expired


async def _sweep(url: str, name: str, at: datetime, batch_size: int) -> Case:
    clock = ManualClock(at)
    settings = load_settings(database_url=url, worker={"expiry_batch_size": batch_size})
    container = await build(settings, clock=clock)
    try:
        sweep = ExpirySweep(
            container.store, settings.session, clock, batch_size=settings.worker.expiry_batch_size
        )
        query_time = 0.0
        find = sweep.due

        async def timed_due(*args: Any, **kwargs: Any) -> Any:
            nonlocal query_time
            started = time.perf_counter()
            try:
                return await find(*args, **kwargs)
            finally:
                query_time += time.perf_counter() - started

        sweep.due = timed_due  # type: ignore[method-assign]
        result = await sweep.run()
        return Case(name, result.expired, result.duration, query_time)
    finally:
        await container.close()


async def main(args: argparse.Namespace) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    server = make_url(os.environ.get("SESSION_LEDGER_TEST_PG", DEFAULT_PG))
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"sl_bench_expiry_{secrets.token_hex(4)}"
    url = server.set(database=name).render_as_string(hide_password=False)
    dsn = server.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        engine = make_engine(url)
        await migrations.upgrade(engine)
        await engine.dispose()

        t = datetime(2026, 6, 1, tzinfo=UTC)
        created = t - timedelta(days=1)
        groups = [
            Group("warm", 2_000, t - timedelta(hours=1), timedelta(minutes=10)),
            Group("small", args.small, t, timedelta(minutes=10)),
            Group("big", args.big, t + timedelta(hours=1), timedelta(hours=1)),
            Group("live", args.live, t + timedelta(days=30), timedelta(days=1)),
        ]
        total = sum(g.count for g in groups)
        print(f"database {name}: {total:,} active sessions ({args.live:,} live)")
        fill = await _fill(dsn, groups, created)
        print(f"  fill: {fill:.1f} s ({total / fill:,.0f} sessions/s, COPY)")

        # Warm-up: caches and prepared statements, so both cases start equal.
        await _sweep(url, "warm", t - timedelta(seconds=1), args.batch_size)
        cases = [
            await _sweep(url, f"{args.small:,} stale", t + timedelta(minutes=30), args.batch_size),
            await _sweep(url, f"{args.big:,} stale", t + timedelta(hours=3), args.batch_size),
        ]
        print(f"\nexpiry sweep, batch size {args.batch_size}, table of {total:,} sessions")
        print(
            f"{'case':>16} {'expired':>9} {'seconds':>8} {'per s':>8} {'ms each':>8} {'query':>6}"
        )
        for c in cases:
            share = 100 * c.query_seconds / c.seconds
            print(
                f"{c.name:>16} {c.expired:>9,} {c.seconds:>8.2f} {c.rate:>8,.0f} "
                f"{c.cost_ms:>8.3f} {share:>5.1f}%"
            )
        small, big = cases
        assert small.expired == args.small, "wrong sessions expired"
        assert big.expired == args.big, "wrong sessions expired"
        ratio = max(small.cost_ms, big.cost_ms) / min(small.cost_ms, big.cost_ms)
        slowest = min(c.rate for c in cases)
        print(f"\ncost per expired session, ratio between the cases: {ratio:.2f}x")
        ok_rate = slowest >= TARGET_RATE
        ok_ratio = ratio <= TARGET_RATIO
        print(
            f"target >= {TARGET_RATE:,.0f}/s: {'met' if ok_rate else 'MISSED'} ({slowest:,.0f}/s)"
        )
        print(f"target ratio <= {TARGET_RATIO:.0f}x: {'met' if ok_ratio else 'MISSED'}")
        return 0 if ok_rate and ok_ratio else 1
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--live", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    return parser.parse_args()


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(_parse())))
