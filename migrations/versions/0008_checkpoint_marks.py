"""Checkpoints and digests become marks: ``(xid, position)``.

Followers read the ledger in commit-safe order (``ledger.horizon``: by
writing transaction, then position, below the oldest running transaction),
so a place in it is a pair. Two tables store such places:

* ``projection_checkpoints`` (replay's resumable progress) gets ``xid``;
* ``ledger_digests`` gets ``xid``: a digest covers every event up to its
  mark in that order, exactly what a follower below the horizon has seen.

Both ``BIGINT NOT NULL DEFAULT 0``: every existing row (a checkpoint or a
digest taken by position, when appends committed in position order and
every event had xid 0) is the mark ``(0, position)``, which means the same
thing. Adding a column with a constant default rewrites nothing (and fires
no trigger: ``ledger_digests`` rejects UPDATE and DELETE).

Downgrade drops both columns: a replay in progress then resumes by position
(run it again from the start to be safe), and a digest recorded since this
revision no longer verifies by position (see 0007's downgrade).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("projection_checkpoints", "ledger_digests")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(
            table, sa.Column("xid", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    # A plain DROP COLUMN on SQLite too (3.35+), as 0007: a batch rebuild of
    # ledger_digests would lose its append-only triggers.
    for table in TABLES:
        op.drop_column(table, "xid")
