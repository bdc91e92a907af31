"""What every contender stores and where: the same session payload for all,
and the throw-away databases and Redis prefixes of one run."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import redis
from sqlalchemy.engine import URL, make_url

from bench.server import database

REDIS_ENV = "SESSION_LEDGER_TEST_REDIS"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

IP = "203.0.113.7"
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
#: The application's own data on a session (BetterAuth's additional fields).
FIELDS = {"theme": "dark", "locale": "en-GB", "plan": "pro"}


def user_id(i: int) -> str:
    """Sessions spread over 100 users."""
    return f"user-{i % 100:03d}"


def session_data(i: int) -> dict[str, str]:
    """The payload a dictionary-style session store (Django) is given: what
    our SessionCreated carries besides its own bookkeeping."""
    return {"_auth_user_id": user_id(i), "ip": IP, "user_agent": USER_AGENT, **FIELDS}


def redis_url() -> str:
    return os.environ.get(REDIS_ENV, DEFAULT_REDIS)


@dataclass(frozen=True)
class Backends:
    """Where one contender keeps its data: a database of its own on the
    shared server (or a file of its own) and a Redis key prefix of its own."""

    database_url: str  # SQLAlchemy URL (postgresql+asyncpg://... or sqlite+aiosqlite:///...)
    redis_prefix: str

    @property
    def pg(self) -> URL:
        return make_url(self.database_url)

    @property
    def sqlite_path(self) -> str:
        database = make_url(self.database_url).database
        assert database is not None
        return database


@contextmanager
def backends(backend: str) -> Iterator[Backends]:
    """A fresh database ("postgres" or "sqlite") and Redis prefix, removed after."""
    prefix = f"slpeers:{secrets.token_hex(4)}:"
    with ExitStack() as stack:
        url = stack.enter_context(database(backend))
        stack.callback(drop_prefix, prefix)
        yield Backends(url, prefix)


def drop_prefix(prefix: str) -> None:
    """Delete this run's keys (never anything else on the shared Redis)."""
    client = redis.Redis.from_url(redis_url())
    try:
        batch = list(client.scan_iter(match=f"{prefix}*", count=1000))
        while batch:
            client.delete(*batch[:1000])
            batch = batch[1000:]
    finally:
        client.close()


def new_runner() -> asyncio.Runner:
    """The event loop async contenders run on: uvloop, as under `serve`."""
    import uvloop

    return asyncio.Runner(loop_factory=uvloop.new_event_loop)
