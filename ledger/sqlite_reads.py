"""SQLite's hot reads in the event loop's own thread.

aiosqlite runs every statement in the connection's thread: the event loop
puts the call in a queue, the thread wakes, takes the GIL, runs SQLite,
and hands the result back through the loop's self-pipe. On the 2-core
machine that round costs more than the statement itself, twice per
get-session (the session, then the user), and under load the GIL handoffs
cost the loop more CPU than the rest of the request (bench/README.md).

A lookup of one row by key in a WAL database takes SQLite some
microseconds, and in WAL mode a reader never waits for a writer. So the
hottest reads (:func:`ledger.db.read_standalone`: a session by token, a user by id)
run right in the calling thread, on a plain read-only ``sqlite3``
connection of their own:

* **Never waits.** The connection's busy timeout is 0: whenever SQLite
  would have to wait for a lock (a writer holding the database in
  exclusive locking mode, a WAL recovery, a checkpoint that resets the
  WAL), it answers SQLITE_BUSY at once, and the read goes the usual way
  (:func:`ledger.db.fetch_standalone`: aiosqlite, busy timeout 30 s).
  Any other SQLite error goes that way too, where it is raised as usual.
* **Holds nothing.** Autocommit (``isolation_level=None``) and every
  statement is read to its end: SQLite resets it then, which ends its read
  transaction, so the connection never keeps a WAL checkpoint from
  finishing.
* **Sees every commit.** Each statement starts a fresh read transaction on
  the newest committed state: a write awaited before the read is visible.
* **Read-only** (``mode=ro``): it cannot change the database.
* **Observed statements go the usual way.** Listeners of SQLAlchemy's
  ``before_cursor_execute`` (statement counters, tracing) expect a
  SQLAlchemy ``Connection``; an engine that has any keeps every read on
  its pooled connections.
* One connection per thread (sqlite3 objects must not be shared between
  threads running at once) and per process (SQLite connections must not
  cross a ``fork``); ``engine.dispose()`` closes them.

Only for file databases named plainly in the URL (:func:`plain_file`); for
an in-memory database or a URL with query options (``?mode=...``)
:func:`ledger.db.direct_reads` gives None and reads take the usual path.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine


class DirectReads:
    """Read-only connections to one SQLite file, one per (process, thread)."""

    def __init__(self, engine: Engine, path: Path) -> None:
        self.path = path
        self._uri = f"file:{quote(str(path))}?mode=ro"
        self._engine = engine
        self._lock = threading.Lock()
        self._connections: dict[tuple[int, int], sqlite3.Connection] = {}
        #: Reads answered here, and those sent the usual way after SQLITE_BUSY
        #: or another error (visible in tests and for diagnosis).
        self.answered = 0
        self.passed_on = 0
        event.listen(engine, "engine_disposed", self._on_dispose)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any] | None:
        """The statement's rows, or None when SQLite could not answer at
        once (the caller then reads the usual way)."""
        if self._engine.dispatch.before_cursor_execute:
            return None
        try:
            rows = self._connection().execute(sql, params).fetchall()
        except sqlite3.Error:
            self.passed_on += 1
            return None
        self.answered += 1
        return rows

    def _connection(self) -> sqlite3.Connection:
        key = (os.getpid(), threading.get_ident())
        conn = self._connections.get(key)
        if conn is None:
            conn = sqlite3.connect(
                self._uri,
                uri=True,
                timeout=0,  # never wait: SQLITE_BUSY means "ask aiosqlite"
                isolation_level=None,  # autocommit: no read transaction kept
                check_same_thread=False,  # closed by dispose, from its thread
            )
            with self._lock:
                self._connections[key] = conn
        return conn

    def _on_dispose(self, _engine: Engine) -> None:
        pid = os.getpid()
        with self._lock:
            connections, self._connections = self._connections, {}
        for (owner, _thread), conn in connections.items():
            if owner == pid:  # a parent's connection is the parent's to close
                conn.close()


def plain_file(url: URL) -> Path | None:
    """The file of a SQLite URL that names one plainly; None for anything
    else (another database, in-memory, a ``file:`` URI, query options)."""
    database = url.database
    if (
        url.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
        or url.query
    ):
        return None
    return Path(database).resolve()


class DataVersionWatch:
    """Tells, in microseconds and without I/O to speak of, whether any other
    connection committed to a SQLite file since the last look.

    ``PRAGMA data_version`` changes on a connection exactly when another
    connection (of any process) committed in between; it reads the WAL
    index in shared memory. So a poller can look every few milliseconds
    and read the ledger's tail only when something was committed.
    Read-only, autocommit and busy timeout 0, like :class:`DirectReads`:
    an SQLITE_BUSY or other error is raised, and the poller looks again
    next time. Only for the thread that made it.
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro", uri=True, timeout=0, isolation_level=None
        )

    def version(self) -> int:
        row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self._conn.close()
