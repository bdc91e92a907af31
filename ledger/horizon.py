"""Read the ledger in commit-safe order: every follower's one rule.

Appends on PostgreSQL run in parallel: each draws its positions from the
identity sequence when it inserts, and transactions commit in any order. A
reader that has seen position 12 committed cannot know whether an 11 is
still on its way (a transaction that drew it and has not committed yet) or
will never come (one that rolled back). Following by position would skip
the 11 for good when it commits late.

Each row records its writing transaction instead (``xid``, migration 0007:
``pg_current_xact_id()``, the top-level transaction's ``xid8``), and a
follower reads in **(xid, position) order, only below the horizon**: the
oldest transaction still running, ``pg_snapshot_xmin(pg_current_snapshot())``
of the very statement that reads (narrowed to this database's
transactions, see HORIZON_SQL). Every transaction below it has ended, so
the rows below it are final: committed and visible in that snapshot, or
never to exist. A transaction that commits later has an xid at or above the
horizon the reader saw, so it sorts after everything the reader has taken.
The follower's checkpoint is the pair it last read, a :data:`Mark`.

The cost: the horizon is the oldest *writing* transaction of the database
(read-only ones have no xid and do not count). While one stays open
(a slow append, an admin session left in BEGIN after an UPDATE, a long
migration), followers read nothing of what committed after it began; they
never skip it, and catch up at once when it ends. That lag is measured by
:func:`lag` (the worker's ``session_ledger_ledger_horizon_*`` metrics and
``session-ledger status``).

Rows older than the column have ``xid = 0``, below every real transaction:
their order is unchanged, so a position checkpoint ``P`` taken before the
column existed is the mark ``(0, P)``.

SQLite has one writer at a time: what is committed is final, positions
commit in order, and the rows all have ``xid = 0``. There the horizon is
"everything committed" and the order is the position (its primary key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    bindparam,
    func,
    literal,
    literal_column,
    null,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from session_ledger.ledger.domain.events import RecordedEvent
from session_ledger.ledger.recorder import to_recorded
from session_ledger.ledger.schema import Xid8
from session_ledger.ledger.schema import events as events_table

#: A place in the commit-safe order: (writing transaction, position).
Mark = tuple[int, int]
#: Before the first event.
ORIGIN: Mark = (0, 0)

_t = events_table.c
#: The statement's own horizon (PostgreSQL): the oldest transaction of this
#: database still running in the statement's snapshot, or the snapshot's
#: xmax when there is none. ``pg_snapshot_xmin(pg_current_snapshot())``
#: would do, but it is the oldest of the whole cluster: a DROP DATABASE or a
#: batch job in another database would hold every follower back. A
#: transaction is left out only when its backend is positively known to be
#: connected to another database (a backend never changes database, so
#: that cannot go stale); one that pg_stat_get_activity does not show (it
#: ended meanwhile, a prepared transaction, another role's backend without
#: pg_read_all_stats) counts as this database's. Every xid below the result
#: has ended or belongs elsewhere and cannot have rows here.
HORIZON_SQL = """(COALESCE(
  (SELECT min(x) FROM pg_snapshot_xip(pg_current_snapshot()) AS x
   WHERE NOT EXISTS (SELECT FROM pg_stat_get_activity(NULL) AS a
     WHERE a.backend_xid = xid(x)
       AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))),
  pg_snapshot_xmax(pg_current_snapshot())))"""


def _horizon() -> ColumnElement[Any]:
    return literal_column(HORIZON_SQL, type_=Xid8())


def horizon_value(*, pg: bool) -> ColumnElement[Any]:
    """The statement's horizon, to select beside the rows (NULL on SQLite)."""
    return _horizon() if pg else null()


def postgres(target: AsyncEngine | AsyncConnection) -> bool:
    return target.dialect.name == "postgresql"


def after(mark: Mark, *, pg: bool) -> ColumnElement[bool]:
    """Rows after ``mark`` in commit-safe order."""
    if not pg:
        return _t.position > mark[1]
    return tuple_(_t.xid, _t.position) > tuple_(
        bindparam(None, mark[0], type_=Xid8()), literal(mark[1])
    )


def up_to(mark: Mark, *, pg: bool) -> ColumnElement[bool]:
    """Rows at or before ``mark`` in commit-safe order."""
    if not pg:
        return _t.position <= mark[1]
    return tuple_(_t.xid, _t.position) <= tuple_(
        bindparam(None, mark[0], type_=Xid8()), literal(mark[1])
    )


def below_horizon() -> ColumnElement[bool]:
    """Rows of transactions older than the oldest one still running (PostgreSQL).

    This is the line that keeps followers gap-free without serialising
    appends (see the module docstring): the xmin is the statement's own,
    so every row it lets through is final in the snapshot that reads it,
    and everything it holds back comes after it in (xid, position) order.
    A long-running writing transaction of the database holds the horizon,
    and so every follower, back until it ends: readers lag, they never
    skip."""
    return _t.xid < _horizon()


def ordered(query: Select[Any], *, pg: bool) -> Select[Any]:
    if pg:
        return query.order_by(_t.xid, _t.position)
    return query.order_by(_t.position)


def follow(query: Select[Any], mark: Mark, *, pg: bool, safe: bool = True) -> Select[Any]:
    """``query`` over ``ledger_events`` narrowed to the rows after ``mark``,
    in commit-safe order. ``safe=False`` drops the horizon: only for a reader
    that holds every writer out (replay's final catch-up under its table
    lock) or one that must see what is committed above it as well."""
    query = query.where(after(mark, pg=pg))
    if pg and safe:
        query = query.where(below_horizon())
    return ordered(query, pg=pg)


def mark_column(*, pg: bool) -> ColumnElement[Any]:
    """The xid column (0 on SQLite), to select beside the rows read."""
    return _t.xid if pg else literal(0)


@dataclass(frozen=True, slots=True)
class Batch:
    """Events read in commit-safe order, with the mark of each."""

    events: list[RecordedEvent] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def last(self) -> Mark | None:
        return self.marks[-1] if self.marks else None


async def read(
    engine: AsyncEngine, mark: Mark = ORIGIN, limit: int = 1000, *, safe: bool = True
) -> Batch:
    """The next events after ``mark`` in commit-safe order (at most ``limit``)."""
    pg = postgres(engine)
    query = follow(select(events_table), mark, pg=pg, safe=safe).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    marks = [(int(r.xid) if pg else 0, r.position) for r in rows]
    return Batch([to_recorded(r) for r in rows], marks)


async def horizon(conn: AsyncConnection) -> int | None:
    """The current horizon (PostgreSQL), None on SQLite (everything committed)."""
    if not postgres(conn):
        return None
    return int(await conn.scalar(select(_horizon())) or 0)


async def head(engine: AsyncEngine) -> Mark:
    """The last mark a follower can read now (ORIGIN when there is none)."""
    async with engine.connect() as conn:
        return await head_in(conn)


async def head_in(conn: AsyncConnection) -> Mark:
    """:func:`head`, on ``conn``."""
    pg = postgres(conn)
    query = select(mark_column(pg=pg), _t.position)
    if pg:
        query = query.where(below_horizon())
        query = query.order_by(_t.xid.desc(), _t.position.desc())
    else:
        query = query.order_by(_t.position.desc())
    row = (await conn.execute(query.limit(1))).first()
    return ORIGIN if row is None else (int(row[0]), int(row[1]))


async def count_after(engine: AsyncEngine, mark: Mark, limit: int) -> int:
    """Events committed after ``mark`` (horizon or not), counted up to ``limit``."""
    pg = postgres(engine)
    inner = select(_t.position).where(after(mark, pg=pg)).limit(limit).subquery()
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(inner)) or 0)


def final_mark(h: int | None, last: Mark) -> Mark:
    """The checkpoint of a reader that has just applied every committed row
    (up to ``last``) while no writer could be running on the ledger (replay's
    final catch-up under its table lock), ``h`` being the horizon then.
    Without the horizon's guard it may have read rows above ``h``, and a
    transaction above ``h`` that had not written yet may still append: so
    not ``last`` but ``(h, 0)``. Everything below ``h`` is applied, anything
    later sorts after it; rows above it that were read are applied again by
    the next reader, which projections' idempotent writes make harmless."""
    return last if h is None else (h, 0)


@dataclass(frozen=True, slots=True)
class Lag:
    """How far followers are held back."""

    #: Events committed but above the horizon (not readable by followers yet).
    held_back: int
    #: Age in seconds of the oldest transaction that holds a transaction id
    #: (what the horizon waits for); 0 when none.
    oldest_xact_seconds: float
    #: The horizon itself (None on SQLite).
    horizon: int | None


_LAG = f"""SELECT
  (SELECT count(*) FROM ledger_events WHERE xid >= {HORIZON_SQL}) AS held_back,
  COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - LEAST(
     (SELECT min(xact_start) FROM pg_stat_activity
      WHERE backend_xid IS NOT NULL AND datname = current_database()),
     (SELECT min(prepared) FROM pg_prepared_xacts WHERE database = current_database()))),
     0) AS oldest,
  {HORIZON_SQL} AS horizon"""  # noqa: S608 (constants only)


async def lag(engine: AsyncEngine) -> Lag:
    """The horizon's lag: events held back above it, and the age of the
    oldest writing transaction (PostgreSQL; nothing on SQLite)."""
    if not postgres(engine):
        return Lag(0, 0.0, None)
    async with engine.connect() as conn:
        row = (await conn.execute(text(_LAG))).one()
    return Lag(int(row.held_back), max(0.0, float(row.oldest)), int(row.horizon))
