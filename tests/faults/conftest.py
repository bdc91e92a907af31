"""The fault suite's deployment, shared by its scenarios (they run in file
order, each leaving the deployment healthy for the next):

* a private PostgreSQL (initdb / pg_ctl, fsync off), started once;
* a private Redis (it is killed, flushed and made to refuse writes);
* two ``session-ledger serve`` processes (A, B) and two workers, real OS
  processes, on short expiry settings so that the worker has work;
* a load driver whose users exist before the first scenario.

Nothing here touches the shared PostgreSQL or Redis.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.config import RedisSettings
from ledger.db import make_engine
from projections.redis_cache import RedisSessionCache
from tests.support.db import migrate
from tests.support.deployment import Deployment
from tests.support.faults import Canary
from tests.support.load import Load
from tests.support.postgres import PostgresProcess
from tests.support.redis import RedisProcess

PREFIX = "faults:"
#: Sessions signed in with remember-me off end this fast (the expiry scenarios).
SHORT_SESSION_SECONDS = 3


@pytest.fixture(scope="package")
def private_pg() -> Iterator[PostgresProcess]:
    pg = PostgresProcess()
    pg.init()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture(scope="package")
async def fault_db(private_pg: PostgresProcess) -> str:
    url = private_pg.url("postgres")
    await migrate(url)
    return url


@pytest.fixture(scope="package")
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("fault-redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="package")
def fault_deployment(
    fault_db: str, fault_redis: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    dep = Deployment(
        database_url=fault_db,
        redis_url=fault_redis.url,
        workdir=Path(tmp_path_factory.mktemp("deployment")),
        overrides={
            "SESSION_LEDGER_REDIS__PREFIX": PREFIX,
            "SESSION_LEDGER_SESSION__SHORT_SESSION_EXPIRES_IN": str(SHORT_SESSION_SECONDS),
            # Sweeps of several batches: a leader can be killed in the middle of one.
            "SESSION_LEDGER_WORKER__EXPIRY_BATCH_SIZE": "200",
        },
    )
    dep.start()
    try:
        yield dep
    finally:
        dep.stop()


@pytest.fixture(scope="package")
async def fault_engine(fault_db: str) -> AsyncIterator[AsyncEngine]:
    # The test's own reads survive the scenarios' restarts.
    engine = make_engine(fault_db, pool_pre_ping=True, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="package")
async def fault_cache(fault_redis: RedisProcess) -> AsyncIterator[RedisSessionCache]:
    client: Any = aioredis.from_url(fault_redis.url, socket_connect_timeout=1, socket_timeout=2)
    yield RedisSessionCache(client, RedisSettings(prefix=PREFIX))
    with contextlib.suppress(Exception):
        await client.aclose()


@pytest.fixture(scope="package")
async def fault_load(
    fault_deployment: Deployment, fault_engine: AsyncEngine
) -> AsyncIterator[Load]:
    load = Load(fault_deployment)
    await load.prepare(fault_engine)
    yield load
    await load.close()


@pytest.fixture(scope="package")
async def canary(fault_deployment: Deployment) -> Canary:
    return await Canary.create(fault_deployment)
