"""The writing transaction of every event: ``ledger_events.xid``.

PostgreSQL: ``xid xid8 NOT NULL DEFAULT pg_current_xact_id()`` and an index
on ``(xid, position)``. A reader that follows the ledger in ``(xid,
position)`` order and stops below the oldest transaction still running
(``pg_snapshot_xmin(pg_current_snapshot())``) never skips an event that
commits late, without the global lock appends take today (issue 18).

**Existing rows** all get ``xid = 0``, one value below every real one:
``0`` is InvalidTransactionId, which no transaction ever has (real ones
start at 3), so

* among themselves they keep position order, and they were written under
  the global append lock, which handed positions out in commit order: their
  ``(xid, position)`` order is the order every reader saw;
* they come before every event written after this migration, whose real
  xids are all higher, so a reader checkpoint ``(0, P)`` taken from an old
  position checkpoint ``P`` resumes exactly where it stood;
* ``0`` is below any horizon: they are never held back.

Their true writing transactions are not recoverable anyway (the ``xmin``
system column is 32 bits without its epoch, and freezing overwrites it).

**No UPDATE, so the immutability triggers stay as they are**: the column is
added with the *constant* default ``'0'``, which PostgreSQL (11 and later)
records in the catalogue as the value of every existing row, without
rewriting or touching a row; the default then becomes
``pg_current_xact_id()`` for rows inserted from then on. (Adding it with
the volatile default directly would rewrite the table under an ACCESS
EXCLUSIVE lock and give every old row the migrating transaction's xid.) No
trigger is disabled, so the ledger is never writable in place, not even
during the migration. Building the index reads the whole table and holds
appends off while it runs (SHARE lock): on a large ledger, build it first
with ``CREATE INDEX CONCURRENTLY ix_ledger_events_xid_position ON
ledger_events (xid, position)``; this migration then leaves it as it is.

xid8 values count transactions of this cluster: a physical copy (replica,
base backup, ``pg_upgrade``) keeps the counter, but a logical restore
(``pg_dump`` into a new cluster) starts it again below the stored values,
and readers would then wait, or order new events before old ones, until
the new cluster's counter passed them. Advance it first (``pg_resetwal
-x`` above ``max(xid)``'s low 32 bits, ``-e`` above its epoch).

**SQLite** gets ``xid INTEGER NOT NULL DEFAULT 0`` and no index: it has one
writer at a time, so positions are committed in order and its recorder
keeps reading by position (and reports ``(0, position)`` wherever a reader
checkpoint is a pair). The column exists so that both databases have the
same table (one ``ledger/schema.py``, the same checkpoint shape); adding it
rewrites nothing either, and a stored 0 takes no payload byte in SQLite's
record format. An index on it would only repeat the primary key's order
and cost every append.

Downgrade drops the index and the column. After appends ran in parallel
(issue 18), position order is no longer commit order, so a downgrade also
forgets the only order in which readers and digests saw them: check the
digests (``session-ledger verify --ledger``) before, and expect a digest
recorded since this revision not to verify by position afterwards.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_ledger_events_xid_position"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Two statements: see "No UPDATE" above.
        op.execute("ALTER TABLE ledger_events ADD COLUMN xid xid8 NOT NULL DEFAULT '0'")
        op.execute("ALTER TABLE ledger_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id()")
        op.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON ledger_events (xid, position)")
    else:
        op.add_column(
            "ledger_events",
            sa.Column("xid", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index(INDEX, table_name="ledger_events")
    op.drop_column("ledger_events", "xid")
