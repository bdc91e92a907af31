"""create_session/s and get_session/s (SQL read path, no refresh due) on
PostgreSQL and SQLite, beside raw-driver baselines measured in the same run:
a raw INSERT of an event-sized row in its own transaction (for create) and a
raw SELECT by an indexed key (for get).

    .venv/bin/python -m bench.lifecycle [--n 2000]

Targets: create >= 40 % of the raw INSERT rate; get >= 50 % of the raw SELECT.
The raw baselines are the drivers the engine runs on (asyncpg, aiosqlite);
Python's synchronous sqlite3 is printed for reference (no thread hop per call).

On PostgreSQL the two contenders alternate in ``--rounds`` rounds (the
order flips every round) and the printed ratio is the median of the rounds'
ratios, with their range: the machine's speed drifts by tens of percent
between seconds, which one long phase each would attribute to one side.
SQLite's contenders run one after the other, each alone (aiosqlite's thread
hops speed up while another connection's thread was just busy, which
interleaving would provoke; see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite
import asyncpg

from session_ledger.ledger.clock import SystemClock
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.service import SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel
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


Op = Callable[[int], Awaitable[object]]


async def alternate(n: int, rounds: int, ours: Op, raw: Op) -> tuple[float, float, list[float]]:
    """Both contenders in alternating rounds of n // rounds calls each:
    (ours /s, raw /s over all rounds, each round's ratio)."""
    per = n // rounds
    spent = {"ours": 0.0, "raw": 0.0}
    ratios: list[float] = []
    for r in range(rounds):
        order = [("ours", ours), ("raw", raw)]
        if r % 2:
            order.reverse()
        took: dict[str, float] = {}
        for name, op in order:
            start = time.perf_counter()
            for i in range(r * per, (r + 1) * per):
                await op(i)
            took[name] = time.perf_counter() - start
            spent[name] += took[name]
        ratios.append(took["raw"] / took["ours"])
    done = per * rounds
    return done / spent["ours"], done / spent["raw"], ratios


class LedgerContender:
    """create_session / get_session of the real service (SQL read path)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        store = EventStore(self.engine, inline_projections=[SessionTableProjection()])
        self.ledger = SessionLedger(store, SqlSessionReadModel(self.engine), POLICY, SystemClock())
        self.tokens: list[str] = []

    async def create(self, i: int) -> None:
        _, token = await self.ledger.create_session(f"user-{i % 100}", remember_me=True)
        self.tokens.append(token)

    async def get(self, i: int) -> None:
        assert await self.ledger.get_session(self.tokens[i % len(self.tokens)]) is not None

    async def close(self) -> None:
        await self.engine.dispose()


class RawPgContender:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, dsn: str) -> RawPgContender:
        conn = await asyncpg.connect(dsn)
        await conn.execute(RAW_TABLE.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY"))
        return cls(conn)

    async def insert(self, i: int) -> None:
        await self.conn.execute(
            "INSERT INTO raw_events (stream_id, data, token_hash) VALUES ($1, $2, $3)",
            str(i),
            PAYLOAD,
            token_hash(i),
        )

    async def select(self, i: int) -> None:
        row = await self.conn.fetchrow(
            "SELECT * FROM raw_events WHERE token_hash = $1", token_hash(i)
        )
        assert row is not None


async def bench_pg_alternating(
    url: str, n: int, rounds: int
) -> tuple[tuple[float, float], tuple[float, float], list[float], list[float]]:
    """(ours create, get), (raw insert, select), create ratios, get ratios."""
    ours = LedgerContender(url)
    raw = await RawPgContender.connect(url.replace("+asyncpg", ""))
    try:
        await ours.create(-1)  # warm up both
        await ours.get(0)
        await raw.insert(-1)
        await raw.select(-1)
        c_ours, c_raw, c_ratios = await alternate(n, rounds, ours.create, raw.insert)
        g_ours, g_raw, g_ratios = await alternate(n, rounds, ours.get, raw.select)
    finally:
        await ours.close()
        await raw.conn.close()
    return (c_ours, g_ours), (c_raw, g_raw), c_ratios, g_ratios


async def bench_ledger(url: str, n: int) -> tuple[float, float]:
    """Our create / get rates, alone (SQLite)."""
    ours = LedgerContender(url)
    try:
        await ours.create(-1)
        await ours.get(0)  # warm up
        return await rate(n, ours.create), await rate(n, ours.get)
    finally:
        await ours.close()


@asynccontextmanager
async def migrated_pg_database() -> AsyncIterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped afterwards."""
    server = await PgServer.connect()
    name = await server.create_database("sl_bench_")
    try:
        url = server.url_for(name)
        await migrate(url)
        yield url
    finally:
        await server.drop_database(name)
        await server.close()


def token_hash(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


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
    name: str,
    ours: tuple[float, float],
    raw: tuple[float, float],
    *,
    reference: bool = False,
    rounds: tuple[list[float], list[float]] | None = None,
) -> None:
    for index, (what, mine, base, target) in enumerate(
        (
            ("create_session", ours[0], raw[0], 0.40),
            ("get_session", ours[1], raw[1], 0.50),
        )
    ):
        ratio = mine / base
        spread = ""
        if rounds is not None:
            per_round = rounds[index]
            ratio = statistics.median(per_round)
            spread = f" median of {len(per_round)} rounds {min(per_round):.2f}-{max(per_round):.2f}"
        if reference:
            verdict = "(reference)"
        else:
            verdict = f"(target {target:.2f}) " + ("ok" if ratio >= target else "BELOW TARGET")
        print(
            f"{name:18} {what:15} {mine:9.0f}/s   raw {base:9.0f}/s   ratio {ratio:5.2f} {verdict}"
            f"{spread}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5, help="PostgreSQL: alternating rounds")
    args = parser.parse_args()

    async with migrated_pg_database() as url:
        ours, raw, creates, gets = await bench_pg_alternating(url, args.n, args.rounds)
        report("postgres/asyncpg", ours, raw, rounds=(creates, gets))

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
