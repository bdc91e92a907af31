"""One line per failure an operator can fix, whatever wraps it."""

from __future__ import annotations

import socket
import sqlite3

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from session_ledger.ledger.domain.errors import ConfigError
from session_ledger.ledger.failures import describe_failure

PG = "postgresql+asyncpg://app:secret@db.internal:6432/ledger"
SQLITE = "sqlite+aiosqlite:////srv/app/ledger.db"


def _wrapped(exc: BaseException) -> BaseException:
    """As SQLAlchemy hands a driver error over."""
    return OperationalError("SELECT 1", {}, exc)


@pytest.mark.parametrize(
    ("exc", "url", "expected"),
    [
        (
            ConnectionRefusedError(111, "refused"),
            PG,
            "cannot reach the database on db.internal:"
            "6432/ledger (connection refused): start it or fix SESSION_LEDGER_DATABASE_URL",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            PG,
            "cannot reach the database on db.internal:6432/ledger: unknown host",
        ),
        (TimeoutError(), PG, "cannot reach the database on db.internal:6432/ledger (timed out)"),
        (
            asyncpg.InvalidCatalogNameError('database "ledger" does not exist'),
            PG,
            'PostgreSQL database "ledger" does not exist on db.internal:6432/ledger: create it',
        ),
        (
            asyncpg.InvalidPasswordError("password authentication failed"),
            PG,
            "PostgreSQL on db.internal:6432/ledger refused the login (password authentication",
        ),
        (
            asyncpg.UndefinedTableError('relation "ledger_events" does not exist'),
            PG,
            "the database db.internal:6432/ledger is not migrated",
        ),
        (
            _wrapped(sqlite3.OperationalError("unable to open database file")),
            SQLITE,
            "cannot open the SQLite database /srv/app/ledger.db: its directory must exist",
        ),
        (
            _wrapped(sqlite3.OperationalError("no such table: ledger_events")),
            SQLITE,
            "the database /srv/app/ledger.db is not migrated",
        ),
        (
            _wrapped(sqlite3.DatabaseError("file is not a database")),
            SQLITE,
            "/srv/app/ledger.db is not a SQLite database",
        ),
        (ConfigError("invalid setting x: y"), PG, "invalid setting x: y"),
    ],
)
def test_each_failure_is_one_line_saying_what_and_how(
    exc: BaseException, url: str, expected: str
) -> None:
    message = describe_failure(exc, database_url=url)
    assert message is not None
    assert message.startswith(expected)
    assert "\n" not in message
    assert "secret" not in message  # never the password of the URL


def test_redis_and_causes() -> None:
    try:
        try:
            raise RedisConnectionError("Error 111 connecting to cache:6379. Connection refused.")
        except RedisConnectionError as inner:
            raise RuntimeError("catch-up failed") from inner
    except RuntimeError as outer:
        message = describe_failure(outer, redis_url="redis://cache:6379/0")
    assert message == (
        "cannot reach Redis on cache:6379/0 (Error 111 connecting to cache:6379. Connection "
        "refused.): start it or fix SESSION_LEDGER_REDIS__URL"
    )


def test_a_bug_is_not_described() -> None:
    assert describe_failure(KeyError("x"), database_url=PG) is None
