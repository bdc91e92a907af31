"""create_session/s and get_session/s (SQL read path, no refresh due) on
PostgreSQL and SQLite, beside raw-driver baselines measured in the same run:
a raw INSERT of an event-sized row in its own transaction (for create) and a
raw SELECT by an indexed key (for get).

    .venv/bin/python -m bench.lifecycle [--n 2000]

Targets: create >= 40 % of the raw INSERT rate; get >= 50 % of the raw SELECT.
The raw baselines are the drivers the engine runs on (asyncpg, aiosqlite);
Python's synchronous sqlite3 is printed for reference (no thread hop per call).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite
import asyncpg

from ledger.clock import SystemClock
from ledger.config import SessionPolicy
from ledger.db import make_engine
from ledger.service import SessionLedger
from ledger.store import EventStore
from projections.session_table import SessionTableProjection, SqlSessionReadModel
from tests.support.db import PgServer, migrate

#: No refresh or touch is due during the run: get_session is a pure read.
POLICY = SessionPolicy(update_age=10 * 86400, activity_interval=86400)
PAYLOAD = json.dumps({"session_id": "x" * 36, "user_id": "u" * 12, "token_hash": "h" * 64})
RAW_TABLE = """CREATE TABLE raw_events (position INTEGER PRIMARY KEY, stream_id TEXT,
    data TEXT, token_hash TEXT UNIQUE)"""


async def rate(n: int, op: Callable[[int], Awaitable[object]]) -> float:
    start = time.perf_counter()
    for i in range(n):
        await op(i)
    return n / (time.perf_counter() - start)


async def bench_ledger(url: str, n: int) -> tuple[float, float]:
    engine = make_engine(url)
    store = EventStore(engine, inline_projections=[SessionTableProjection()])
    ledger = SessionLedger(store, SqlSessionReadModel(engine), POLICY, SystemClock())
    tokens: list[str] = []

    async def create(i: int) -> None:
        _, token = await ledger.create_session(f"user-{i % 100}", remember_me=True)
        tokens.append(token)

    async def get(i: int) -> None:
        assert await ledger.get_session(tokens[i % len(tokens)]) is not None

    await create(0)
    await get(0)  # warm up
    creates = await rate(n, create)
    gets = await rate(n, get)
    await engine.dispose()
    return creates, gets


def token_hash(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


async def bench_raw_pg(dsn: str, n: int) -> tuple[float, float]:
    conn = await asyncpg.connect(dsn)
    await conn.execute(RAW_TABLE.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY"))

    async def insert(i: int) -> None:
        await conn.execute(
            "INSERT INTO raw_events (stream_id, data, token_hash) VALUES ($1, $2, $3)",
            str(i),
            PAYLOAD,
            token_hash(i),
        )

    async def select(i: int) -> None:
        row = await conn.fetchrow("SELECT * FROM raw_events WHERE token_hash = $1", token_hash(i))
        assert row is not None

    inserts = await rate(n, insert)
    selects = await rate(n, select)
    await conn.close()
    return inserts, selects


async def bench_raw_aiosqlite(path: Path, n: int) -> tuple[float, float]:
    """The driver our SQLite engine runs on: what the targets compare with."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute(RAW_TABLE)

    async def insert(i: int) -> None:
        await conn.execute("BEGIN IMMEDIATE")
        await conn.execute(
            "INSERT INTO raw_events (stream_id, data, token_hash) VALUES (?, ?, ?)",
            (str(i), PAYLOAD, token_hash(i)),
        )
        await conn.execute("COMMIT")

    async def select(i: int) -> None:
        rows = await conn.execute_fetchall(
            "SELECT * FROM raw_events WHERE token_hash = ?", (token_hash(i),)
        )
        assert rows

    inserts = await rate(n, insert)
    selects = await rate(n, select)
    await conn.close()
    return inserts, selects


async def bench_raw_sqlite(path: Path, n: int) -> tuple[float, float]:
    """Python's synchronous sqlite3, for reference: no thread hop per call."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(RAW_TABLE)

    async def insert(i: int) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "INSERT INTO raw_events (stream_id, data, token_hash) VALUES (?, ?, ?)",
            (str(i), PAYLOAD, token_hash(i)),
        )
        conn.execute("COMMIT")

    async def select(i: int) -> None:
        row = conn.execute(
            "SELECT * FROM raw_events WHERE token_hash = ?", (token_hash(i),)
        ).fetchone()
        assert row is not None

    inserts = await rate(n, insert)
    selects = await rate(n, select)
    conn.close()
    return inserts, selects


def report(
    name: str, ours: tuple[float, float], raw: tuple[float, float], *, reference: bool = False
) -> None:
    for what, mine, base, target in (
        ("create_session", ours[0], raw[0], 0.40),
        ("get_session", ours[1], raw[1], 0.50),
    ):
        ratio = mine / base
        if reference:
            verdict = "(reference)"
        else:
            verdict = f"(target {target:.2f}) " + ("ok" if ratio >= target else "BELOW TARGET")
        print(
            f"{name:18} {what:15} {mine:9.0f}/s   raw {base:9.0f}/s   ratio {ratio:5.2f} {verdict}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()

    server = await PgServer.connect()
    name = await server.create_database("sl_bench_")
    try:
        url = server.url_for(name)
        await migrate(url)
        ours = await bench_ledger(url, args.n)
        raw = await bench_raw_pg(url.replace("+asyncpg", ""), args.n)
        report("postgres/asyncpg", ours, raw)
    finally:
        await server.drop_database(name)
        await server.close()

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/ledger.db"
        await migrate(url)
        ours = await bench_ledger(url, args.n)
        raw = await bench_raw_aiosqlite(Path(tmp) / "raw.db", args.n)
        report("sqlite/aiosqlite", ours, raw)
        raw = await bench_raw_sqlite(Path(tmp) / "raw-sync.db", args.n)
        report("sqlite/sqlite3", ours, raw, reference=True)


if __name__ == "__main__":
    asyncio.run(main())
