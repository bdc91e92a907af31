"""One recorder per database (see ledger.recorder): ``postgres``, ``sqlite``
and ``memory``; :func:`recorder_for` picks the one for an engine."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.recorders.postgres import PostgresRecorder
from session_ledger.ledger.recorders.sql import SqlRecorder
from session_ledger.ledger.recorders.sqlite import SqliteRecorder

_BY_DIALECT: dict[str, type[SqlRecorder]] = {
    "postgresql": PostgresRecorder,
    "sqlite": SqliteRecorder,
}


def recorder_for(engine: AsyncEngine) -> SqlRecorder:
    """The recorder of ``engine``'s database."""
    return _BY_DIALECT[engine.dialect.name](engine)
