"""One line for a failure an operator can fix: a server that cannot be
reached, a database that does not exist, a SQLite file that cannot be opened,
a schema that is not migrated.

The CLI prints it and exits 2; the worker logs it and records it as the
job's last error (``session-ledger status``). Anything else (a bug) gets no
description here: its callers decide (the CLI still prints one line, with
``--debug`` for the traceback).
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Iterator

import asyncpg
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from session_ledger.ledger.domain.errors import LedgerError

DATABASE_SETTING = "SESSION_LEDGER_DATABASE_URL"
REDIS_SETTING = "SESSION_LEDGER_REDIS__URL"


def describe_failure(
    exc: BaseException, *, database_url: str | None = None, redis_url: str | None = None
) -> str | None:
    """What went wrong and how to fix it, in one line; None for anything else."""
    chain = list(_chain(exc))
    for e in chain:
        if isinstance(e, LedgerError):
            return e.message
    for e in chain:
        if isinstance(e, RedisConnectionError | RedisTimeoutError):
            return _redis(e, redis_url)
    for e in chain:
        message = _database(e, database_url)
        if message is not None:
            return message
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, its causes and contexts, and the driver errors SQLAlchemy wraps."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, DBAPIError):
            orig = e.orig
            todo.append(orig if isinstance(orig, BaseException) else None)
        todo += [e.__cause__, e.__context__]
        if isinstance(e, BaseExceptionGroup):
            todo += list(e.exceptions)


def _line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _database(e: BaseException, url: str | None) -> str | None:
    where = _where(url)
    fix = f"or fix {DATABASE_SETTING}"
    if isinstance(e, asyncpg.InvalidCatalogNameError):
        name = _database_name(url) or "?"
        return f'PostgreSQL database "{name}" does not exist on {where}: create it (createdb) {fix}'
    if isinstance(e, asyncpg.InvalidAuthorizationSpecificationError | asyncpg.InvalidPasswordError):
        return f"PostgreSQL on {where} refused the login ({_line(e)}): fix the user or password"
    if isinstance(e, asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError):
        return f"PostgreSQL on {where} is not accepting connections ({_line(e)}): try again later"
    if isinstance(e, asyncpg.UndefinedTableError) or (
        isinstance(e, sqlite3.OperationalError) and "no such table" in str(e)
    ):
        return f"the database {where} is not migrated ({_line(e)}): run `session-ledger migrate`"
    if isinstance(e, sqlite3.OperationalError) and "unable to open database file" in str(e):
        return (
            f"cannot open the SQLite database {_database_name(url) or where}: its directory "
            f"must exist and be writable, {fix}"
        )
    if isinstance(e, sqlite3.DatabaseError) and "not a database" in str(e):
        return f"{_database_name(url) or where} is not a SQLite database: check the path {fix}"
    if isinstance(e, socket.gaierror):
        return f"cannot reach the database on {where}: unknown host ({_line(e)}); {fix}"
    if isinstance(e, ConnectionRefusedError):
        return f"cannot reach the database on {where} (connection refused): start it {fix}"
    if isinstance(e, TimeoutError):
        return f"cannot reach the database on {where} (timed out): check the network {fix}"
    if isinstance(e, OSError) and e.errno is not None:
        return f"cannot reach the database on {where} ({e.strerror or _line(e)}): {fix}"
    if isinstance(e, asyncpg.PostgresError | sqlite3.Error):
        return f"database error on {where}: {_line(e)}"
    return None


def _redis(e: BaseException, url: str | None) -> str:
    where = _where(url) if url else "Redis"
    return f"cannot reach Redis on {where} ({_line(e)}): start it or fix {REDIS_SETTING}"


def _where(url: str | None) -> str:
    """``host:port/database`` (never the password), or the SQLite file."""
    if not url:
        return "the configured server"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "the configured server"
    if parsed.drivername.startswith("sqlite"):
        return parsed.database or ":memory:"
    host = parsed.host or "localhost"
    port = f":{parsed.port}" if parsed.port else ""
    name = f"/{parsed.database}" if parsed.database else ""
    return f"{host}{port}{name}"


def _database_name(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return make_url(url).database
    except ArgumentError:
        return None
