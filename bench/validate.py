"""get_session throughput on a Redis cache hit, beside raw redis-py GET and
beside the SQL path, measured in the same run.

    python -m bench.validate [--n 5000] [--rounds 3]

* cached: SessionLedger.get_session with the CachedSessionReadModel (a hit:
  token hash -> memoised owner -> one GET on the hot reads' own connection
  (projections.redis_wire) -> decode -> decide);
* raw GET: redis-py GET of a key holding a value of the same size;
* SQL: SessionLedger.get_session on the SqlSessionReadModel (PostgreSQL).

All on one connection each, sequential requests. The clock is frozen so
that validations append nothing (no refresh, no activity touch): the
benchmark measures the read path. Rounds alternate between the three so
that machine noise hits all alike; the best round of each is reported.

Targets (issue 4): cached >= 70 % of raw GET, cached >= 3x SQL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

from session_ledger import migrations
from session_ledger.ledger import horizon
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.config import RedisSettings
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.service import RequestContext, SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.cached_read_model import CachedSessionReadModel
from session_ledger.projections.freshness import CacheFreshness
from session_ledger.projections.redis_cache import RedisCacheProjection, RedisSessionCache
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel

PG = os.environ.get("SESSION_LEDGER_TEST_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SESSION_LEDGER_TEST_REDIS", "redis://127.0.0.1:6379/0")
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


@asynccontextmanager
async def temporary_database() -> Any:
    url = make_url(PG)
    admin = await asyncpg.connect(url.set(drivername="postgresql").render_as_string(False))
    name = f"sl_bench_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def rate(n: int, call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await call()
    return n / (time.perf_counter() - started)


async def main(n: int, rounds: int) -> None:
    prefix = f"slbench:{secrets.token_hex(4)}:"
    async with temporary_database() as url:
        engine = make_engine(url, pool_size=1, max_overflow=0)
        await migrations.upgrade(engine)
        client: Any = aioredis.from_url(REDIS, max_connections=1)
        raw_client: Any = aioredis.from_url(REDIS, max_connections=1)
        try:
            clock = ManualClock()
            store = EventStore(engine, clock=clock, inline_projections=[SessionTableProjection()])
            cache = RedisSessionCache(client, RedisSettings(prefix=prefix), clock=clock)
            cache.use_wire()  # as the service does (api.bootstrap)
            projection = RedisCacheProjection(cache, store)
            freshness = CacheFreshness()
            store.after_commit.append(freshness.after_commit)
            store.after_commit.append(projection.after_commit)
            # One process on its own database: its own appends are its feed.
            freshness.connected(await horizon.head(engine))
            await cache.init_checkpoint((await cache.write_keys())[0])
            sql = SqlSessionReadModel(engine)
            cached = SessionLedger(
                store=store, read_model=CachedSessionReadModel(cache, sql, freshness), clock=clock
            )
            plain = SessionLedger(store=store, read_model=sql, clock=clock)
            ctx = RequestContext(ip="203.0.113.7", user_agent=UA)
            view, token = await cached.create_session("bench-user", ctx, fields={"plan": "pro"})
            keys = (await cache.write_keys())[0]
            value = await client.get(keys.state("bench-user", view.id))
            assert value is not None
            raw_key = f"{prefix}raw"
            await raw_client.set(raw_key, b"x" * len(value))

            async def cached_call() -> None:
                assert await cached.get_session(token, ctx) is not None

            async def sql_call() -> None:
                assert await plain.get_session(token, ctx) is not None

            async def raw_call() -> None:
                await raw_client.get(raw_key)

            for call in (cached_call, sql_call, raw_call):  # warm up
                await rate(200, call)
            best: dict[str, float] = {"cached": 0.0, "raw GET": 0.0, "SQL": 0.0}
            for _ in range(rounds):
                best["cached"] = max(best["cached"], await rate(n, cached_call))
                best["raw GET"] = max(best["raw GET"], await rate(n, raw_call))
                best["SQL"] = max(best["SQL"], await rate(max(n // 4, 200), sql_call))
            print(f"value size: {len(value)} bytes; {n} requests per round, best of {rounds}")
            for name, value_rate in best.items():
                print(f"  {name:<8} {value_rate:>10,.0f} /s")
            vs_raw = best["cached"] / best["raw GET"]
            vs_sql = best["cached"] / best["SQL"]
            print(f"cached / raw GET = {vs_raw:.0%} (target >= 70%)")
            print(f"cached / SQL     = {vs_sql:.1f}x (target >= 3x)")
        finally:
            keys_left = [k async for k in raw_client.scan_iter(match=f"{prefix}*")]
            if keys_left:
                await raw_client.unlink(*keys_left)
            cache.close()
            await client.aclose()
            await raw_client.aclose()
            await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.rounds))
