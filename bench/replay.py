"""Replay rate into the SQL table and into Redis, beside raw bulk baselines,
and peak memory at a small and a large ledger, in one run.

    python -m bench.replay [--events 1000000] [--small 100000] [--batch-size 5000]

For each size a fresh PostgreSQL database is migrated and filled by
bench.gen_events (COPY of valid hash-chained events). Each measurement runs in
its own subprocess so that its peak RSS (resource.getrusage maxrss) is its own:

* table: projections.replay.replay_table (shadow tables, swap);
* redis: projections.replay.replay_redis (new generation, switch);
* raw COPY: the same number of rows COPYed into a plain table (the floor of
  what PostgreSQL ingests), raw SET: pipelined SETs of state-sized values.

Targets (issue 4): table >= 50,000 events/s; peak memory within 20 % from
the small to the large ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import subprocess
import sys
import time
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from bench.gen_events import generate
from session_ledger import migrations
from session_ledger.ledger.config import RedisSettings
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.store import EventStore
from session_ledger.projections.redis_cache import RedisCacheProjection, RedisSessionCache
from session_ledger.projections.replay import (
    DEFAULT_BATCH,
    DEFAULT_REDIS_BATCH,
    replay_redis,
    replay_table,
)
from session_ledger.projections.session_table import SessionTableProjection

PG = os.environ.get("SESSION_LEDGER_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SESSION_LEDGER_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------ child runs


async def child(kind: str, url: str, batch_size: int) -> dict[str, Any]:
    engine = make_engine(url)
    store = EventStore(engine, inline_projections=[SessionTableProjection()])
    started = time.perf_counter()
    result: dict[str, Any] = {}
    try:
        if kind == "table":
            r = await replay_table(engine, store, batch_size=batch_size or DEFAULT_BATCH)
            result["events"] = r.events
        elif kind == "redis":
            prefix = f"slbench:{secrets.token_hex(4)}:"
            client: Any = aioredis.from_url(REDIS)
            cache = RedisSessionCache(client, RedisSettings(prefix=prefix), dual_write_seconds=0)
            try:
                r = await replay_redis(
                    store,
                    RedisCacheProjection(cache, store),
                    batch_size=batch_size or DEFAULT_REDIS_BATCH,
                )
                result["events"] = r.events
            finally:
                keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=5000)]
                for i in range(0, len(keys), 5000):
                    await client.unlink(*keys[i : i + 5000])
                await client.aclose()
        elif kind == "raw-copy":
            conn = await asyncpg.connect(_dsn(url))
            try:
                await conn.execute("CREATE TABLE raw_copy (stream_id text, data jsonb)")
                rows = await conn.fetch("SELECT stream_id, data::text FROM ledger_events")
                records = [(r[0], r[1]) for r in rows]
                started = time.perf_counter()
                await conn.copy_records_to_table("raw_copy", records=records)
                result["events"] = len(records)
            finally:
                await conn.close()
        elif kind == "raw-set":
            raw: Any = aioredis.from_url(REDIS)
            client = raw
            prefix = f"slbench:{secrets.token_hex(4)}:"
            n = int(await _count(url))
            value = b"x" * 700
            try:
                started = time.perf_counter()
                for i in range(0, n, 1000):
                    pipe = client.pipeline(transaction=False)
                    for j in range(i, min(n, i + 1000)):
                        pipe.set(f"{prefix}{j}", value, ex=600)
                    await pipe.execute()
                result["events"] = n
            finally:
                keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=5000)]
                for i in range(0, len(keys), 5000):
                    await client.unlink(*keys[i : i + 5000])
                await client.aclose()
    finally:
        await engine.dispose()
    result["seconds"] = time.perf_counter() - started
    result["maxrss_mb"] = _maxrss_mb()
    return result


async def _count(url: str) -> int:
    conn = await asyncpg.connect(_dsn(url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM ledger_events"))
    finally:
        await conn.close()


def run_child(kind: str, url: str, batch_size: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.replay",
            "--child",
            kind,
            "--url",
            url,
            "--batch-size",
            str(batch_size),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------ main


async def with_ledger(n: int) -> tuple[str, str]:
    url = make_url(PG)
    admin = await asyncpg.connect(_dsn(PG))
    name = f"sl_bench_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    db_url = url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(db_url)
    await migrations.upgrade(engine)
    await engine.dispose()
    started = time.perf_counter()
    await generate(db_url, n)
    print(f"  generated {n:,} events in {time.perf_counter() - started:.1f} s", flush=True)
    return name, db_url


async def drop(name: str) -> None:
    admin = await asyncpg.connect(_dsn(PG))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def main(events: int, small: int, batch_size: int) -> None:
    sizes = sorted({small, events})
    results: dict[int, dict[str, dict[str, Any]]] = {}
    for n in sizes:
        print(f"ledger of {n:,} events:", flush=True)
        name, url = asyncio.run(with_ledger(n))
        try:
            results[n] = {}
            for kind in ("table", "redis", "raw-copy", "raw-set"):
                r = run_child(kind, url, batch_size)
                results[n][kind] = r
                rate = r["events"] / r["seconds"]
                print(
                    f"  {kind:<9} {rate:>10,.0f} events/s  {r['seconds']:7.1f} s  "
                    f"peak RSS {r['maxrss_mb']:6.0f} MB",
                    flush=True,
                )
        finally:
            asyncio.run(drop(name))
    big = results[max(sizes)]
    table_rate = big["table"]["events"] / big["table"]["seconds"]
    copy_rate = big["raw-copy"]["events"] / big["raw-copy"]["seconds"]
    redis_rate = big["redis"]["events"] / big["redis"]["seconds"]
    set_rate = big["raw-set"]["events"] / big["raw-set"]["seconds"]
    print(
        f"table replay: {table_rate:,.0f} events/s (target >= 50,000); "
        f"{table_rate / copy_rate:.1%} of raw COPY"
    )
    print(f"redis replay: {redis_rate:,.0f} events/s; {redis_rate / set_rate:.1%} of raw SET")
    if len(sizes) == 2:
        for kind in ("table", "redis"):
            a = results[sizes[0]][kind]["maxrss_mb"]
            b = results[sizes[1]][kind]["maxrss_mb"]
            print(
                f"{kind} peak RSS {sizes[0]:,} -> {sizes[1]:,} events: {a:.0f} -> {b:.0f} MB "
                f"({b / a - 1:+.0%}; target within 20 %)"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Replay benchmark.")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument(
        "--batch-size", type=int, default=0, help="0: each replay's default batch size"
    )
    parser.add_argument("--child")
    parser.add_argument("--url")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.url, args.batch_size))))
    else:
        main(args.events, args.small, args.batch_size)
