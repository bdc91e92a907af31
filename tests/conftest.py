"""Fixtures shared by every test.

Databases
    ``engine``        a migrated AsyncEngine, once on SQLite and once on PostgreSQL
    ``engine_url``    the URL behind ``engine`` (same parametrisation), to build more engines
    ``pg_engine`` / ``pg_url``          PostgreSQL only (a fresh database per test)
    ``sqlite_engine`` / ``sqlite_url``  SQLite only (a fresh file in tmp_path)
    ``empty_engine`` / ``empty_engine_url``  an empty, unmigrated database on both backends

Every database is created by running the Alembic migrations (PostgreSQL: once
per session into a template database, then copied per test). PostgreSQL and
Redis are real servers; when one cannot be reached the tests that need it
fail with a message saying how to start it. They are never skipped.

Redis
    ``redis_url``, ``redis_prefix`` (``sltest:<random>:``, deleted after the test),
    ``redis_client`` (redis.asyncio, decode_responses=False)

Time
    ``clock``         a ledger.clock.ManualClock at 2026-01-01T00:00:00Z
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.db import make_engine
from tests.support import profile
from tests.support import redis as redis_support
from tests.support.db import (
    REDIS_ENV,
    PgServer,
    ServiceUnavailableError,
    TemplateCopies,
    migrate,
    redis_server_url,
    sqlite_file_url,
    unique_name,
)
from tests.support.redis import RedisProcess

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.pg),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        help="the full profile: more generated examples, bigger loads (CI runs it)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Before collection: test modules size their runs when imported.
    if config.getoption("--slow"):
        os.environ[profile.ENV] = "full"


def pytest_report_header(config: pytest.Config) -> str:
    return f"test profile: {'full' if profile.full() else 'default (--slow for the full one)'}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the servers it needs (``-m pg``, ``-m "not redis"``)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "pg_server" in fixtures:
            item.add_marker(pytest.mark.pg)
        if "redis_server" in fixtures:
            item.add_marker(pytest.mark.redis)


# ------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
async def pg_server() -> AsyncIterator[PgServer]:
    """Admin connection to the PostgreSQL test server (SESSION_LEDGER_TEST_PG)."""
    server = await PgServer.connect()
    yield server
    await server.close()


@pytest.fixture(scope="session")
async def pg_template(pg_server: PgServer) -> AsyncIterator[str]:
    """A database migrated to head once per session; tests get copies of it."""
    name = await pg_server.create_database("sl_template_")
    try:
        await migrate(pg_server.url_for(name))
        yield name
    finally:
        await pg_server.drop_database(name)


@pytest.fixture(scope="session")
async def pg_copies(pg_server: PgServer, pg_template: str) -> AsyncIterator[TemplateCopies]:
    copies = TemplateCopies(pg_server, pg_template)
    yield copies
    await copies.close()


@pytest.fixture
async def pg_url(pg_server: PgServer, pg_copies: TemplateCopies) -> AsyncIterator[str]:
    """URL of a fresh, migrated PostgreSQL database (a copy of the template), dropped after."""
    name = await pg_copies.take()
    try:
        yield pg_server.url_for(name)
    finally:
        pg_copies.release(name)


@pytest.fixture
async def empty_pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    """URL of a fresh PostgreSQL database with no tables (not migrated)."""
    name = await pg_server.create_database("sl_t_")
    try:
        yield pg_server.url_for(name)
    finally:
        await pg_server.drop_database(name)


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(pg_url)
    yield engine
    await engine.dispose()


# ---------------------------------------------------------------------- SQLite


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file migrated to head."""
    url = sqlite_file_url(tmp_path / "ledger.db")
    await migrate(url)
    return url


@pytest.fixture
def empty_sqlite_url(tmp_path: Path) -> str:
    return sqlite_file_url(tmp_path / "empty.db")


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(sqlite_url)
    yield engine
    await engine.dispose()


# ------------------------------------------------------------------ both backends


@pytest.fixture(params=BACKENDS)
def engine_url(request: pytest.FixtureRequest) -> str:
    """URL of a fresh migrated database: SQLite file, then PostgreSQL."""
    fixture = "pg_url" if request.param == "postgres" else "sqlite_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def engine(engine_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated AsyncEngine (ledger.db.make_engine), on SQLite and on PostgreSQL."""
    engine = make_engine(engine_url)
    yield engine
    await engine.dispose()


@pytest.fixture(params=BACKENDS)
def empty_engine_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty (unmigrated) database: SQLite file, then PostgreSQL."""
    fixture = "empty_pg_url" if request.param == "postgres" else "empty_sqlite_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
async def empty_engine(empty_engine_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(empty_engine_url)
    yield engine
    await engine.dispose()


# ----------------------------------------------------------------------- Redis


@pytest.fixture(scope="session")
async def redis_server() -> str:
    """The Redis test server's URL (SESSION_LEDGER_TEST_REDIS), checked once."""
    url = redis_server_url()
    client = redis_support.client(url)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise ServiceUnavailableError(
            f"Redis test server unreachable at {url} ({type(exc).__name__}: {exc}). "
            f"Start it with scripts/services.sh, or point {REDIS_ENV} at a server."
        ) from exc
    finally:
        await client.aclose()
    return url


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """URL of the real Redis server; pair it with ``redis_prefix`` for every key."""
    return redis_server


@pytest.fixture
async def redis_prefix(redis_server: str) -> AsyncIterator[str]:
    """A key prefix unique to this test (``sltest:<random>:``); its keys are deleted after."""
    prefix = unique_name("sltest:") + ":"
    yield prefix
    await redis_support.delete_prefix(redis_server, prefix)


@pytest.fixture
async def redis_client(redis_url: str, redis_prefix: str) -> AsyncIterator[Any]:
    """A redis.asyncio.Redis client (typed Any, see tests.support.redis.client).

    Use ``redis_prefix`` for every key it writes: they are deleted after the test."""
    client = redis_support.client(redis_url)
    yield client
    await client.aclose()


# ------------------------------------------------------------------------ time


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock at 2026-01-01T00:00:00Z; moves only with advance()/set()."""
    return ManualClock()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own, which it may flush, stop or kill
    without touching the shared server under the other tests' feet."""
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed (scripts/services.sh installs it)")
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()
