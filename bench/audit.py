"""Audit queries and ledger verification on a large PostgreSQL ledger.

    python -m bench.audit [--events 1000000] [--users 10000] [--samples 300] [--keep]

Builds a fresh database (migrated), bulk-loads ``--events`` valid,
hash-chained session events for ``--users`` users with COPY (plus their
``audit_ips`` rows, as the inline projection would have written them), then
measures, for random users / networks:

* history of one user      AuditLog.user_history (one page of 100)
* active at T for one user AuditLog.active_at(T, user_id=...)
* sessions from one /24    AuditLog.ip_sightings("10.a.b.0/24")

each beside a raw asyncpg baseline fetching the same rows with the same
index (ratio = ours / raw), and the verify rate of
ledger.integrity.verify_ledger (events/s), beside a raw asyncpg read of every
row. Prints the EXPLAIN plans of the three queries.

Each user signs in from their own /24 (10.x.y.0/24) and sometimes from a
mobile network; sessions get 1-9 events (touches, a refresh, an end by
sign-out, revocation, token reuse or expiry, or none yet) at random times
over 90 days; users are interleaved through the ledger, so one user's events
are spread over the whole table (the index, not locality, makes it fast).

Targets (issue 7): user history p99 <= 20 ms; verify >= 100,000 events/s.
The server is SESSION_LEDGER_TEST_PG (default postgres@127.0.0.1:5432/test);
the database is dropped afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from session_ledger import migrations
from session_ledger.ledger.audit import AuditLog
from session_ledger.ledger.audit_schema import ip_key, network_key_range
from session_ledger.ledger.chain import GENESIS, event_hash, timestamp
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.integrity import verify_ledger

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=90)
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
EVENT_COLUMNS = [
    "position",
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
IP_COLUMNS = ["position", "session_id", "user_id", "ip", "ip_key", "recorded_at"]
ENDINGS = ["sign_out"] * 60 + ["revoked"] * 8 + ["token_reuse"] * 2 + ["admin"] * 3
ENDINGS += ["expired"] * 15 + ["open"] * 12
TARGET_USER_P99_MS = 20.0
TARGET_VERIFY_RATE = 100_000


def home_ip(user: int, rng: random.Random) -> str:
    return f"10.{user // 256 % 256}.{user % 256}.{rng.randint(1, 254)}"


def session_events(
    session: int, user: int, rng: random.Random
) -> Iterator[tuple[str, dict[str, Any], datetime]]:
    """(type, data, recorded_at) of one valid session stream."""
    sid = f"s{session:09d}"
    uid = f"user-{user:05d}"
    at = T0 + SPAN * rng.random()
    expires = at + timedelta(days=30)
    yield (
        "SessionCreated",
        {
            "session_id": sid,
            "user_id": uid,
            "token_hash": secrets.token_hex(32),
            "created_at": timestamp(at),
            "expires_at": timestamp(expires),
            "authenticated_at": timestamp(at),
            "max_expires_at": None,
            "ip": home_ip(user, rng),
            "user_agent": UA,
            "remember_me": True,
            "fields": {},
        },
        at,
    )
    for _ in range(rng.randint(0, 5)):
        at += timedelta(minutes=rng.randint(5, 600))
        ip = home_ip(user, rng) if rng.random() < 0.8 else f"198.51.{rng.randint(0, 255)}.7"
        yield "SessionTouched", {"touched_at": timestamp(at), "ip": ip, "user_agent": UA}, at
    if rng.random() < 0.5:
        at += timedelta(hours=rng.randint(24, 72))
        expires = at + timedelta(days=30)
        data = {"refreshed_at": timestamp(at), "expires_at": timestamp(expires)}
        yield "SessionRefreshed", data, at
    ending = rng.choice(ENDINGS)
    if ending == "expired":
        at = expires + timedelta(minutes=rng.randint(1, 60))
        yield "SessionExpired", {"expired_at": timestamp(at), "reason": "idle"}, at
    elif ending != "open":
        at += timedelta(minutes=rng.randint(1, 600))
        actor = "system" if ending == "token_reuse" else f"user:{uid}"
        data = {"revoked_at": timestamp(at), "reason": ending, "actor": actor}
        yield "SessionRevoked", data, at


def ledger_rows(
    n_events: int, n_users: int, seed: int = 7
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
    """(ledger_events record, audit_ips record or None), ``n_events`` of them.

    Sessions are laid out one after another (positions follow streams, so the
    chain is built without holding every stream's head), users at random."""
    rng = random.Random(seed)
    position = 0
    session = 0
    while position < n_events:
        session += 1
        user = rng.randrange(n_users)
        uid = f"user-{user:05d}"
        meta = {"actor": f"user:{uid}", "request_id": None, "correlation_id": None}
        prev = GENESIS
        for version, (event_type, data, at) in enumerate(
            session_events(session, user, rng), start=1
        ):
            if position >= n_events:
                return
            position += 1
            sid = f"s{session:09d}"
            digest = event_hash(
                prev,
                stream_id=sid,
                stream_version=version,
                event_type=event_type,
                schema_version=1,
                data=data,
                meta=meta,
                user_id=uid,
                recorded_at=at,
            )
            row = (
                position,
                sid,
                version,
                event_type,
                1,
                json.dumps(data),
                json.dumps(meta),
                uid,
                at,
                prev,
                digest,
            )
            ip = data.get("ip")
            sighting = None if ip is None else (position, sid, uid, ip, ip_key(ip), at)
            yield row, sighting
            prev = digest


async def load(dsn: str, n_events: int, n_users: int, chunk: int = 50_000) -> float:
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        events: list[tuple[Any, ...]] = []
        ips: list[tuple[Any, ...]] = []

        async def flush() -> None:
            await conn.copy_records_to_table("ledger_events", records=events, columns=EVENT_COLUMNS)
            await conn.copy_records_to_table("audit_ips", records=ips, columns=IP_COLUMNS)
            events.clear()
            ips.clear()

        for row, sighting in ledger_rows(n_events, n_users):
            events.append(row)
            if sighting is not None:
                ips.append(sighting)
            if len(events) >= chunk:
                await flush()
        await flush()
        await conn.execute(
            "SELECT setval(pg_get_serial_sequence('ledger_events', 'position'), "
            "(SELECT max(position) FROM ledger_events))"
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return time.perf_counter() - started


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def timed(fn: Callable[[Any], Awaitable[Any]], args: list[Any]) -> list[float]:
    samples = []
    for arg in args:
        started = time.perf_counter()
        await fn(arg)
        samples.append(time.perf_counter() - started)
    return samples


async def measure(url: str, dsn: str, n_users: int, samples: int) -> dict[str, Any]:
    rng = random.Random(11)
    users = [f"user-{rng.randrange(n_users):05d}" for _ in range(samples)]
    instants = [T0 + SPAN * rng.random() for _ in range(samples)]
    networks = [
        ipaddress.ip_network(f"10.{u // 256 % 256}.{u % 256}.0/24")
        for u in (rng.randrange(n_users) for _ in range(samples))
    ]
    engine = make_engine(url)
    raw = await asyncpg.connect(dsn)
    audit = AuditLog(engine)
    results: dict[str, Any] = {}
    try:
        # Warm both paths (pool, prepared statements, caches) before timing.
        for u in users[:20]:
            await audit.user_history(u)
            await raw.fetch("SELECT 1")

        pairs = list(zip(users, instants, strict=True))
        cases: dict[
            str, tuple[Callable[[Any], Awaitable[Any]], Callable[[Any], Awaitable[Any]], list[Any]]
        ] = {
            "history of one user": (
                lambda u: audit.user_history(u, limit=100),
                lambda u: raw.fetch(
                    "SELECT * FROM ledger_events WHERE user_id = $1 AND position > 0 "
                    "ORDER BY position LIMIT 100",
                    u,
                ),
                users,
            ),
            "active at T for one user": (
                lambda p: audit.active_at(p[1], user_id=p[0], limit=100),
                lambda p: raw.fetch(
                    "SELECT * FROM ledger_events WHERE user_id = $1 AND recorded_at <= $2 "
                    "ORDER BY stream_id, stream_version",
                    p[0],
                    p[1],
                ),
                pairs,
            ),
            "sessions from one /24": (
                lambda n: audit.ip_sightings(n, limit=100),
                lambda n: raw.fetch(
                    "SELECT * FROM audit_ips WHERE ip_key BETWEEN $1 AND $2 AND position > 0 "
                    "ORDER BY position LIMIT 100",
                    *network_key_range(n),
                ),
                networks,
            ),
        }
        for name, (ours, baseline, args) in cases.items():
            # Alternate halves so that cache warmth favours neither side.
            half = len(args) // 2
            t_ours = await timed(ours, args[:half])
            t_raw = await timed(baseline, args[:half])
            t_raw += await timed(baseline, args[half:])
            t_ours += await timed(ours, args[half:])
            o50, o99 = percentiles(t_ours)
            r50, r99 = percentiles(t_raw)
            results[name] = {"p50_ms": o50, "p99_ms": o99, "raw_p50_ms": r50, "raw_p99_ms": r99}

        total = await raw.fetchval("SELECT count(*) FROM ledger_events")
        started = time.perf_counter()
        report = await verify_ledger(engine)
        verify_s = time.perf_counter() - started
        assert report.ok, report.problems[:5]
        started = time.perf_counter()
        last = 0
        while True:
            rows = await raw.fetch(
                "SELECT * FROM ledger_events WHERE position > $1 ORDER BY position LIMIT 5000", last
            )
            if not rows:
                break
            last = rows[-1]["position"]
        raw_s = time.perf_counter() - started
        results["verify"] = {
            "events": total,
            "seconds": verify_s,
            "rate": total / verify_s,
            "raw_read_rate": total / raw_s,
        }
        u, at, net = users[0], instants[0], networks[0]
        low, high = network_key_range(net)
        results["plans"] = {
            "history of one user": await _explain(
                raw,
                "SELECT * FROM ledger_events WHERE user_id = $1 AND position > 0 "
                "ORDER BY position LIMIT 100",
                u,
            ),
            "active at T (candidates)": await _explain(
                raw,
                "SELECT position, stream_id FROM ledger_events WHERE type = 'SessionCreated' "
                "AND position > 0 AND recorded_at <= $1 AND user_id = $2 "
                "ORDER BY position LIMIT 500",
                at,
                u,
            ),
            "sessions from one /24": await _explain(
                raw,
                "SELECT * FROM audit_ips WHERE ip_key BETWEEN $1 AND $2 AND position > 0 "
                "ORDER BY position LIMIT 100",
                low,
                high,
            ),
            "revocations by reason": await _explain(
                raw,
                "SELECT * FROM ledger_events WHERE type = 'SessionRevoked' "
                "AND data->>'reason' = 'token_reuse' AND position > 0 ORDER BY position LIMIT 100",
            ),
        }
    finally:
        await raw.close()
        await engine.dispose()
    return results


async def _explain(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, *args)
    return "\n".join(r[0] for r in rows)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    server = make_url(os.environ.get("SESSION_LEDGER_TEST_PG", DEFAULT_PG))
    admin_dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"bench_audit_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    dsn = server.set(drivername="postgresql", database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url)
        await migrations.upgrade(engine)
        await engine.dispose()
        seconds = await load(dsn, args.events, args.users)
        print(f"loaded {args.events:,} events for {args.users:,} users in {seconds:.1f} s")
        results = await measure(url, dsn, args.users, args.samples)
    finally:
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")
        await admin.close()

    print(f"\n{'query':<26}{'p50 ms':>9}{'p99 ms':>9}{'raw p50':>9}{'raw p99':>9}{'p50 ratio':>11}")
    for query in ("history of one user", "active at T for one user", "sessions from one /24"):
        r = results[query]
        print(
            f"{query:<26}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['raw_p50_ms']:>9.2f}"
            f"{r['raw_p99_ms']:>9.2f}{r['p50_ms'] / r['raw_p50_ms']:>10.1f}x"
        )
    v = results["verify"]
    print(
        f"\nverify: {v['events']:,} events in {v['seconds']:.1f} s = {v['rate']:,.0f} events/s "
        f"(raw asyncpg read of the same rows: {v['raw_read_rate']:,.0f} rows/s)"
    )
    user_p99 = results["history of one user"]["p99_ms"]
    print(
        f"targets: user history p99 {user_p99:.1f} ms (<= {TARGET_USER_P99_MS:.0f}): "
        f"{'met' if user_p99 <= TARGET_USER_P99_MS else 'MISSED'}; verify "
        f"{v['rate']:,.0f}/s (>= {TARGET_VERIFY_RATE:,}): "
        f"{'met' if v['rate'] >= TARGET_VERIFY_RATE else 'MISSED'}"
    )
    for query, plan in results["plans"].items():
        print(f"\nEXPLAIN {query}:\n{plan}")


if __name__ == "__main__":
    asyncio.run(main())
