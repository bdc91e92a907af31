"""Append throughput of the event store beside the raw drivers, in one run.

    python -m bench.append [--n 2000] [--batches 40] [--backend sqlite|postgres]

Two workloads per backend, each measured for our store and for the raw
driver doing the same INSERT (same columns, same JSON payload):

* single: one event per append, each in its own transaction (a new stream
  every time, like sign-ins);
* batch: 100 events in one append (one transaction, one stream).

Raw baselines, with the transaction boundaries a hand-written append has
(BEGIN, INSERT or executemany, COMMIT): asyncpg for PostgreSQL, aiosqlite
(the driver our store runs on) for SQLite; the targets apply to these. For
reference only: Python's synchronous sqlite3 (no thread hop per call), and
on PostgreSQL the INSERT committed on its own ("1-stmt"), which is how our
store sends an append without inline projections (one statement, see
ledger/store.py). The raw rows (JSON text, hash) are built before the clock
starts, so "raw" is the driver alone and "ours" carries all of the store's
own work (serialisation, hashing, result objects, SQLAlchemy's pool).
Ours and raw run in alternating rounds into the same table, so table growth
and cache warmth affect both alike.

PostgreSQL: a temporary database is created and dropped on the server named by
SESSION_LEDGER_TEST_PG (default postgresql+asyncpg://postgres@127.0.0.1:5432/test).
SQLite: a file in a temporary directory. No other data is touched.

Targets (issue 2): single >= 60 % of raw, batch >= 50 % of raw.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy.engine import make_url

from session_ledger import migrations
from session_ledger.ledger.chain import GENESIS, event_hash
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.events import EventMetadata, SessionCreated, serialize
from session_ledger.ledger.store import EventStore

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
BATCH = 100
TARGETS = {"single": 0.60, "batch": 0.50}
ROUNDS = 4

COLUMNS = (
    "stream_id, stream_version, type, schema_version, data, meta, user_id, "
    "recorded_at, prev_hash, hash"
)
PG_INSERT = f"INSERT INTO ledger_events ({COLUMNS}) VALUES ($1, $2, $3, $4, $5::json, $6::json, $7, $8, $9, $10) RETURNING position"  # noqa: E501
SQLITE_INSERT = f"INSERT INTO ledger_events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

T0 = datetime(2026, 1, 1, tzinfo=UTC)
META = EventMetadata(actor="user:bench", request_id="req-0123456789", correlation_id="corr-01234")


def event(i: int) -> SessionCreated:
    """A realistic sign-in event (about 500 bytes of JSON)."""
    return SessionCreated(
        session_id=f"sess-{i:012d}",
        user_id=f"user-{i % 1000:06d}",
        token_hash=f"{i:064x}",
        created_at=T0,
        expires_at=T0 + timedelta(days=30),
        authenticated_at=T0,
        ip="203.0.113.42",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0 Safari/537.36",
        fields={"plan": "pro", "locale": "en-GB"},
    )


def raw_row(stream_id: str, version: int, i: int) -> tuple[Any, ...]:
    """The row our store would write, built the way a hand-written INSERT would."""
    event_type, schema_version, data = serialize(event(i))
    meta = META.model_dump(mode="json")
    digest = event_hash(
        GENESIS,
        stream_id=stream_id,
        stream_version=version,
        event_type=event_type,
        schema_version=schema_version,
        data=data,
        meta=meta,
        user_id="user-bench",
        recorded_at=T0,
    )
    return (
        stream_id,
        version,
        event_type,
        schema_version,
        json.dumps(data),
        json.dumps(meta),
        "user-bench",
        T0,
        GENESIS,
        digest,
    )


EVENTS: list[SessionCreated] = []


def events(count: int) -> list[SessionCreated]:
    """Pre-built events: building them is the caller's cost, not the store's."""
    while len(EVENTS) < count:
        EVENTS.append(event(len(EVENTS)))
    return EVENTS[:count]


def single_rows(prefix: str, count: int) -> dict[int, list[tuple[Any, ...]]]:
    """Rows for the raw single-row runs, per round, built before the clock starts."""
    per_round = max(1, count // ROUNDS)
    return {
        r: [raw_row(f"{prefix}-{r}-{i}", 1, i) for i in range(per_round)] for r in range(ROUNDS)
    }


def batch_rows(prefix: str, count: int) -> dict[int, list[list[tuple[Any, ...]]]]:
    per_round = max(1, count // ROUNDS)
    return {
        r: [
            [raw_row(f"{prefix}-{r}-{b}", v + 1, v) for v in range(BATCH)] for b in range(per_round)
        ]
        for r in range(ROUNDS)
    }


# ----------------------------------------------------------------- measurement


@dataclass
class Measure:
    events: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


Run = Callable[[int, int], Awaitable[int]]
"""run(round, count) -> events written; count = appends (single) or batches (batch)."""


async def alternate(
    runs: dict[str, Run], count: int, profiler: cProfile.Profile | None
) -> dict[str, Measure]:
    """Run each contender in ROUNDS alternating slices; total events and time per contender."""
    results = {name: Measure() for name in runs}
    per_round = max(1, count // ROUNDS)
    for round_ in range(ROUNDS):
        for name, run in runs.items():
            profile = profiler is not None and name == "ours"
            if profile:
                assert profiler is not None
                profiler.enable()
            start = time.perf_counter()
            written = await run(round_, per_round)
            results[name].seconds += time.perf_counter() - start
            if profile:
                assert profiler is not None
                profiler.disable()
            results[name].events += written
    return results


# ------------------------------------------------------------------ PostgreSQL


@asynccontextmanager
async def temporary_pg_database(server_url: str) -> Any:
    url = make_url(server_url)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    name = f"sl_bench_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def bench_postgres(
    server_url: str, n: int, batches: int, profiler: cProfile.Profile | None
) -> dict[str, dict[str, Measure]]:
    async with temporary_pg_database(server_url) as url:
        sa_url = url.render_as_string(hide_password=False)
        engine = make_engine(sa_url)
        await migrations.upgrade(engine)
        store = EventStore(engine)
        raw = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
        try:
            singles = single_rows("rs", n) | {99: single_rows("rw", 20 * ROUNDS)[0]}
            statement_singles = single_rows("ra", n)
            batched = batch_rows("rb", batches)
            evs = events(max(n, BATCH))

            async def ours_single(round_: int, count: int) -> int:
                for i in range(count):
                    await store.append(f"os-{round_}-{i}", 0, [evs[i]], metadata=META)
                return count

            async def raw_single(round_: int, count: int) -> int:
                for row in singles[round_][:count]:
                    async with raw.transaction():
                        await raw.fetchval(PG_INSERT, *row)
                return count

            async def raw_single_statement(round_: int, count: int) -> int:
                # The INSERT alone, committed by itself (no BEGIN / COMMIT).
                for row in statement_singles[round_][:count]:
                    await raw.fetchval(PG_INSERT, *row)
                return count

            async def ours_batch(round_: int, count: int) -> int:
                for b in range(count):
                    await store.append(f"ob-{round_}-{b}", 0, evs[:BATCH], metadata=META)
                return count * BATCH

            async def raw_batch(round_: int, count: int) -> int:
                for rows in batched[round_][:count]:
                    async with raw.transaction():
                        await raw.executemany(PG_INSERT, rows)
                return count * BATCH

            # Warm up both paths (connections, prepared statements, caches).
            await ours_single(99, 20)
            await raw_single(99, 20)
            return {
                "single": await alternate(
                    {
                        "ours": ours_single,
                        "raw asyncpg": raw_single,
                        "raw asyncpg 1-stmt": raw_single_statement,
                    },
                    n,
                    profiler,
                ),
                "batch": await alternate(
                    {"ours": ours_batch, "raw asyncpg": raw_batch}, batches, profiler
                ),
            }
        finally:
            await raw.close()
            await engine.dispose()


# ---------------------------------------------------------------------- SQLite


def sqlite_connect_raw(path: Path) -> sqlite3.Connection:
    """sqlite3 with the same settings ledger.db gives our engine."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


def sqlite_params(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQLAlchemy stores SQLite datetimes as ISO text; do the same.
    return (*row[:7], row[7].strftime("%Y-%m-%d %H:%M:%S.%f"), *row[8:])


async def bench_sqlite(
    n: int, batches: int, profiler: cProfile.Profile | None
) -> dict[str, dict[str, Measure]]:
    with tempfile.TemporaryDirectory(prefix="sl-bench-") as tmp:
        path = Path(tmp) / "bench.db"
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await migrations.upgrade(engine)
        store = EventStore(engine)
        sync_conn = sqlite_connect_raw(path)
        async_conn = await aiosqlite.connect(path, isolation_level=None, timeout=30)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
            await async_conn.execute(f"PRAGMA {pragma}")
        try:

            def sqlite_singles(prefix: str, count: int) -> dict[int, list[tuple[Any, ...]]]:
                return {
                    r: [sqlite_params(row) for row in rows]
                    for r, rows in single_rows(prefix, count).items()
                }

            def sqlite_batches(prefix: str, count: int) -> dict[int, list[list[tuple[Any, ...]]]]:
                return {
                    r: [[sqlite_params(row) for row in rows] for rows in batch]
                    for r, batch in batch_rows(prefix, count).items()
                }

            a_singles = sqlite_singles("as", n) | {99: sqlite_singles("aw", 20 * ROUNDS)[0]}
            s_singles = sqlite_singles("ss", n)
            a_batches = sqlite_batches("ab", batches)
            s_batches = sqlite_batches("sb", batches)
            evs = events(max(n, BATCH))

            async def ours_single(round_: int, count: int) -> int:
                for i in range(count):
                    await store.append(f"os-{round_}-{i}", 0, [evs[i]], metadata=META)
                return count

            async def aiosqlite_single(round_: int, count: int) -> int:
                for row in a_singles[round_][:count]:
                    await async_conn.execute("BEGIN IMMEDIATE")
                    await async_conn.execute(SQLITE_INSERT, row)
                    await async_conn.execute("COMMIT")
                return count

            async def sqlite3_single(round_: int, count: int) -> int:
                for row in s_singles[round_][:count]:
                    sync_conn.execute("BEGIN IMMEDIATE")
                    sync_conn.execute(SQLITE_INSERT, row)
                    sync_conn.execute("COMMIT")
                return count

            async def ours_batch(round_: int, count: int) -> int:
                for b in range(count):
                    await store.append(f"ob-{round_}-{b}", 0, evs[:BATCH], metadata=META)
                return count * BATCH

            async def aiosqlite_batch(round_: int, count: int) -> int:
                for rows in a_batches[round_][:count]:
                    await async_conn.execute("BEGIN IMMEDIATE")
                    await async_conn.executemany(SQLITE_INSERT, rows)
                    await async_conn.execute("COMMIT")
                return count * BATCH

            async def sqlite3_batch(round_: int, count: int) -> int:
                for rows in s_batches[round_][:count]:
                    sync_conn.execute("BEGIN IMMEDIATE")
                    sync_conn.executemany(SQLITE_INSERT, rows)
                    sync_conn.execute("COMMIT")
                return count * BATCH

            await ours_single(99, 20)
            await aiosqlite_single(99, 20)
            return {
                "single": await alternate(
                    {
                        "ours": ours_single,
                        "raw aiosqlite": aiosqlite_single,
                        "raw sqlite3": sqlite3_single,
                    },
                    n,
                    profiler,
                ),
                "batch": await alternate(
                    {
                        "ours": ours_batch,
                        "raw aiosqlite": aiosqlite_batch,
                        "raw sqlite3": sqlite3_batch,
                    },
                    batches,
                    profiler,
                ),
            }
        finally:
            await async_conn.close()
            sync_conn.close()
            await engine.dispose()


# ----------------------------------------------------------------------- report


#: The baselines the targets apply to: the async drivers the store runs on,
#: with the same transaction boundaries (BEGIN, INSERT, COMMIT). The others
#: are printed for reference: sqlite3 is synchronous (no thread hop), and
#: "1-stmt" is the INSERT committed on its own, without BEGIN / COMMIT.
TARGET_BASELINES = {"raw asyncpg", "raw aiosqlite"}


def report(backend: str, results: dict[str, dict[str, Measure]]) -> list[str]:
    lines = []
    for workload, measures in results.items():
        ours = measures["ours"]
        for name, measure in measures.items():
            if name == "ours":
                continue
            ratio = ours.rate / measure.rate if measure.rate else 0.0
            target = TARGETS[workload]
            if name in TARGET_BASELINES:
                verdict = f">= {target:.0%} " + ("ok" if ratio >= target else "MISS")
            else:
                verdict = "(reference)"
            lines.append(
                f"| {backend:<8} | {workload:<6} | {ours.rate:>10,.0f} | {name:<18} "
                f"| {measure.rate:>10,.0f} | {ratio:>6.0%} | {verdict:<11} |"
            )
    return lines


HEADER = [
    "| backend  | kind   | ours ev/s  | baseline           | raw ev/s   | ours/raw | target      |",
    "|----------|--------|-----------:|--------------------|-----------:|---------:|-------------|",
]


@contextmanager
def maybe_profile(enabled: bool, out: str | None) -> Iterator[cProfile.Profile | None]:
    if not enabled:
        yield None
        return
    profiler = cProfile.Profile()
    yield profiler
    stats = pstats.Stats(profiler, stream=sys.stderr)
    if out:
        stats.dump_stats(out)
    stats.sort_stats("cumulative").print_stats(30)


async def main_async(args: argparse.Namespace) -> int:
    rows: list[str] = []
    with maybe_profile(args.profile, args.profile_out) as profiler:
        for backend in args.backend:
            started = time.perf_counter()
            if backend == "postgres":
                results = await bench_postgres(args.pg, args.n, args.batches, profiler)
            else:
                results = await bench_sqlite(args.n, args.batches, profiler)
            print(f"{backend}: measured in {time.perf_counter() - started:.1f}s", file=sys.stderr)
            rows += report(backend, results)
    print(
        f"\nAppend throughput: single = 1 event per append/transaction ({args.n} per contender), "
        f"batch = {BATCH} events per append ({args.batches} per contender); "
        f"{ROUNDS} alternating rounds."
    )
    print("\n".join(HEADER + rows))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--n", type=int, default=2000, help="single-event appends per contender (default 2000)"
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=40,
        help=f"batches of {BATCH} events per contender (default 40)",
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=["sqlite", "postgres"],
        help="backend to measure (repeatable; default both)",
    )
    parser.add_argument(
        "--pg",
        default=os.environ.get("SESSION_LEDGER_TEST_PG", DEFAULT_PG),
        help="PostgreSQL server URL; a temporary database is created on it",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile our store's appends")
    parser.add_argument("--profile-out", help="write the cProfile stats to this file")
    args = parser.parse_args(argv)
    args.backend = args.backend or ["postgres", "sqlite"]
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
