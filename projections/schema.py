"""Tables of the SQL projections (registered on the ledger's MetaData so that
one Alembic history covers every table)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    text,
)
from sqlalchemy.dialects import postgresql

from session_ledger.ledger.schema import metadata

Json = JSON().with_variant(postgresql.JSONB(), "postgresql")

#: The current state of every session: one row per stream, updated in the
#: same transaction as the append (read-your-writes for every SQL reader).
sessions = Table(
    "sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("previous_token_hash", String(64), nullable=True),
    Column("grace_until", DateTime(timezone=True), nullable=True),
    Column("retired_token_hashes", Json, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("authenticated_at", DateTime(timezone=True), nullable=False),
    Column("max_expires_at", DateTime(timezone=True), nullable=True),
    Column("last_active_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("ip", String(1024), nullable=True),
    Column("user_agent", String(1024), nullable=True),
    Column("device", String(256), nullable=False),
    Column("remember_me", Boolean, nullable=False),
    Column("fields", Json, nullable=False),
    Column("version", Integer, nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("end_reason", String(32), nullable=True),
    Column("ended_by", String(1024), nullable=True),
    Index(None, "user_id", "status"),
    # The expiry worker scans active sessions by deadline: a partial index
    # keeps that scan proportional to the number of expired sessions.
    Index(
        "ix_sessions_active_expires_at",
        "expires_at",
        postgresql_where=text("status = 'active'"),
        sqlite_where=text("status = 'active'"),
    ),
)

#: Every token hash ever rotated out, for reuse detection beyond the previous one.
retired_tokens = Table(
    "session_retired_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(64), nullable=False, index=True),
)

#: Progress of resumable projection rebuilds (replay): the mark (xid,
#: position; ledger.horizon) of the last event applied to the shadow copy
#: named ``name``. Written in the same transaction as the rows it covers, so
#: a killed replay resumes exactly there.
projection_checkpoints = Table(
    "projection_checkpoints",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("xid", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
