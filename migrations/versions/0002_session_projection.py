"""The current-session projection table and the retired-token index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("previous_token_hash", sa.String(64), nullable=True),
        sa.Column("grace_until", TS, nullable=True),
        sa.Column("retired_token_hashes", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("authenticated_at", TS, nullable=False),
        sa.Column("max_expires_at", TS, nullable=True),
        sa.Column("last_active_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("ip", sa.String(1024), nullable=True),
        sa.Column("user_agent", sa.String(1024), nullable=True),
        sa.Column("device", sa.String(256), nullable=False),
        sa.Column("remember_me", sa.Boolean(), nullable=False),
        sa.Column("fields", JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("ended_by", sa.String(1024), nullable=True),
        sa.PrimaryKeyConstraint("session_id", name="pk_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
    )
    op.create_index("ix_sessions_user_id_status", "sessions", ["user_id", "status"])
    op.create_index(
        "ix_sessions_active_expires_at",
        "sessions",
        ["expires_at"],
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "session_retired_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_session_retired_tokens"),
    )
    op.create_index(
        "ix_session_retired_tokens_session_id", "session_retired_tokens", ["session_id"]
    )


def downgrade() -> None:
    op.drop_table("session_retired_tokens")
    op.drop_table("sessions")
