"""The append-only events table, with immutability enforced by triggers.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSITION = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
#: Plain JSON, not JSONB: see ledger/schema.py (the hash chain needs the text kept).
JSON = sa.JSON()

PG_TRIGGERS = [
    """
    CREATE FUNCTION ledger_events_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger_events is append-only: % is not allowed', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE TRIGGER ledger_events_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_events
    FOR EACH ROW EXECUTE FUNCTION ledger_events_append_only()
    """,
    """
    CREATE TRIGGER ledger_events_no_truncate
    BEFORE TRUNCATE ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_events_append_only()
    """,
]

SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER ledger_events_no_update BEFORE UPDATE ON ledger_events
    BEGIN SELECT RAISE(ABORT, 'ledger_events is append-only: UPDATE is not allowed'); END
    """,
    """
    CREATE TRIGGER ledger_events_no_delete BEFORE DELETE ON ledger_events
    BEGIN SELECT RAISE(ABORT, 'ledger_events is append-only: DELETE is not allowed'); END
    """,
]


def upgrade() -> None:
    op.create_table(
        "ledger_events",
        sa.Column("position", POSITION, sa.Identity(), primary_key=True),
        sa.Column("stream_id", sa.String(64), nullable=False),
        sa.Column("stream_version", sa.Integer, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("schema_version", sa.SmallInteger, nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_ledger_events"),
        sa.UniqueConstraint(
            "stream_id", "stream_version", name="uq_ledger_events_stream_id_stream_version"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ledger_events_user_id_position", "ledger_events", ["user_id", "position"])
    op.create_index("ix_ledger_events_recorded_at", "ledger_events", ["recorded_at"])
    statements = PG_TRIGGERS if op.get_bind().dialect.name == "postgresql" else SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE ledger_events")
        op.execute("DROP FUNCTION ledger_events_append_only()")
    else:
        op.drop_table("ledger_events")
