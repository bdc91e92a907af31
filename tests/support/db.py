"""Throw-away PostgreSQL databases and SQLite files for tests.

PostgreSQL: one migrated *template* database per test session; each test gets
``CREATE DATABASE ... TEMPLATE <template>`` (a file copy, milliseconds) and the
copy is dropped ``WITH (FORCE)`` afterwards. The server is never optional: if
it cannot be reached the tests fail with a message saying how to start it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections import deque
from pathlib import Path

import asyncpg
from sqlalchemy.engine import URL, make_url

from session_ledger import migrations
from session_ledger.ledger.db import make_engine

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ENV = "SESSION_LEDGER_TEST_PG"
REDIS_ENV = "SESSION_LEDGER_TEST_REDIS"


class ServiceUnavailableError(RuntimeError):
    """A server the tests need is not there. Never a reason to skip."""


def pg_server_url() -> URL:
    return make_url(os.environ.get(PG_ENV, DEFAULT_PG_URL))


def redis_server_url() -> str:
    return os.environ.get(REDIS_ENV, DEFAULT_REDIS_URL)


def unique_name(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6)}"


def sqlite_file_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def migrate(url: str) -> None:
    """Run the Alembic migrations to head on the database at ``url``."""
    engine = make_engine(url)
    try:
        await migrations.upgrade(engine)
    finally:
        await engine.dispose()


def _quote(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unsafe database name {name!r}")
    return f'"{name}"'


class PgServer:
    """Admin connections to the test server that create and drop databases."""

    def __init__(self, url: URL, pool: asyncpg.Pool) -> None:
        self.url = url
        self._pool = pool

    @classmethod
    async def connect(cls, url: URL | None = None) -> PgServer:
        url = url or pg_server_url()
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            # All four connections up front: the copies made in the background
            # (TemplateCopies) must not connect while a synchronous test (the
            # schemathesis runs, tens of seconds under --slow) holds the event
            # loop, or the connect's 10 s timeout expires meanwhile.
            pool = await asyncpg.create_pool(dsn, min_size=4, max_size=4, timeout=10)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise ServiceUnavailableError(
                f"PostgreSQL test server unreachable at "
                f"{url.render_as_string(hide_password=True)} ({type(exc).__name__}: {exc}). "
                f"Start it with scripts/services.sh, or point {PG_ENV} at a server."
            ) from exc
        return cls(url, pool)

    def url_for(self, database: str) -> str:
        return self.url.set(database=database).render_as_string(hide_password=False)

    async def create_database(self, prefix: str, template: str | None = None) -> str:
        name = unique_name(prefix)
        sql = f"CREATE DATABASE {_quote(name)}"
        if template is not None:
            sql += f" TEMPLATE {_quote(template)}"
        await self._pool.execute(sql)
        return name

    async def drop_database(self, name: str) -> None:
        await self._pool.execute(f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")

    async def close(self) -> None:
        await self._pool.close()


class TemplateCopies:
    """Copies of the template database, made ahead of need and dropped in the
    background: CREATE/DROP DATABASE cost a few hundred milliseconds each
    (WAL-logged, fsynced), which would otherwise be paid inside every test."""

    def __init__(self, server: PgServer, template: str, ahead: int = 2) -> None:
        self._server = server
        self._template = template
        self._ahead = ahead
        self._ready: deque[asyncio.Task[str]] = deque()
        self._dropping: set[asyncio.Task[None]] = set()

    def _fill(self) -> None:
        while len(self._ready) < self._ahead:
            self._ready.append(
                asyncio.create_task(self._server.create_database("sl_t_", self._template))
            )

    async def take(self) -> str:
        """The name of a fresh copy, now the caller's to use."""
        self._fill()
        task = self._ready.popleft()
        self._fill()
        return await task

    def release(self, name: str) -> None:
        """Drop ``name`` in the background (finished by :meth:`close`)."""
        task = asyncio.create_task(self._server.drop_database(name))
        self._dropping.add(task)
        task.add_done_callback(self._dropping.discard)

    async def close(self) -> None:
        leftovers = await asyncio.gather(*self._ready, return_exceptions=True)
        self._ready.clear()
        for name in leftovers:
            if isinstance(name, str):
                self.release(name)
        results = await asyncio.gather(*self._dropping, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
