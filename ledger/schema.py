"""Table definitions of the ledger (SQLAlchemy Core metadata).

Alembic migrations are the only way these tables reach a database; this
metadata is what migrations are checked against (no drift).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    FetchedValue,
    Identity,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import UserDefinedType

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: BIGINT everywhere, but SQLite only autoincrements an INTEGER PRIMARY KEY.
Position = BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
#: Plain JSON (text) on PostgreSQL, not JSONB: the hash chain covers the
#: payload exactly as hashed, and JSONB rewrites numbers (1e20, -0.0) on the
#: way in, which would break the chain on read-back.
Json = JSON()


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id (``xid8``, an int to asyncpg)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


#: Objects of this metadata that only PostgreSQL has (``info`` key), which
#: a comparison with a SQLite database must leave out.
POSTGRESQL_ONLY = "postgresql_only"

events = Table(
    "ledger_events",
    metadata,
    Column("position", Position, Identity(), primary_key=True),
    Column("stream_id", String(64), nullable=False),
    Column("stream_version", Integer, nullable=False),
    Column("type", String(64), nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    Column("data", Json, nullable=False),
    Column("meta", Json, nullable=False),
    Column("user_id", String(128), nullable=True),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # The transaction that wrote the row, filled in by the database
    # (migration 0007: pg_current_xact_id(); 0 on SQLite and for rows older
    # than the column). Not part of the hash chain.
    Column(
        "xid",
        Xid8().with_variant(BigInteger(), "sqlite"),
        server_default=FetchedValue(),
        nullable=False,
    ),
    UniqueConstraint("stream_id", "stream_version"),
    # Audit: a user's history in ledger order, and time-range scans.
    Index(None, "user_id", "position"),
    Index(None, "recorded_at"),
    # Followers read in (xid, position) order (PostgreSQL; SQLite, with one
    # writer, reads by position).
    Index(None, "xid", "position", info={POSTGRESQL_ONLY: True}),
    # AUTOINCREMENT: SQLite never reuses a position, even after a rollback of the newest rows.
    sqlite_autoincrement=True,
)
