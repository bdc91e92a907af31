"""Audit and tamper evidence: ledger digests, the IP sightings index, and an
index for scans of one event type.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSITION = sa.BigInteger().with_variant(sqlite.INTEGER(), "sqlite")
TS = sa.DateTime(timezone=True)

PG_TRIGGERS = [
    """
    CREATE FUNCTION ledger_digests_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'ledger_digests is append-only: % is not allowed', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE TRIGGER ledger_digests_no_update_delete
    BEFORE UPDATE OR DELETE ON ledger_digests
    FOR EACH ROW EXECUTE FUNCTION ledger_digests_append_only()
    """,
    """
    CREATE TRIGGER ledger_digests_no_truncate
    BEFORE TRUNCATE ON ledger_digests
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_digests_append_only()
    """,
]

SQLITE_TRIGGERS = [
    """
    CREATE TRIGGER ledger_digests_no_update BEFORE UPDATE ON ledger_digests
    BEGIN SELECT RAISE(ABORT, 'ledger_digests is append-only: UPDATE is not allowed'); END
    """,
    """
    CREATE TRIGGER ledger_digests_no_delete BEFORE DELETE ON ledger_digests
    BEGIN SELECT RAISE(ABORT, 'ledger_digests is append-only: DELETE is not allowed'); END
    """,
]


def upgrade() -> None:
    op.create_table(
        "ledger_digests",
        sa.Column("position", POSITION, nullable=False, autoincrement=False),
        sa.Column("event_count", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("prev_digest", sa.String(64), nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_ledger_digests"),
    )
    op.create_table(
        "audit_ips",
        sa.Column("position", POSITION, nullable=False, autoincrement=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("ip", sa.String(1024), nullable=False),
        sa.Column("ip_key", sa.String(34), nullable=True),
        sa.Column("recorded_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_audit_ips"),
    )
    op.create_index("ix_audit_ips_ip_key_position", "audit_ips", ["ip_key", "position"])
    op.create_index("ix_ledger_events_type_position", "ledger_events", ["type", "position"])
    bind = op.get_bind()
    statements = PG_TRIGGERS if bind.dialect.name == "postgresql" else SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)
    _backfill_audit_ips(bind)


def downgrade() -> None:
    op.drop_index("ix_ledger_events_type_position", table_name="ledger_events")
    op.drop_table("audit_ips")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE ledger_digests")
        op.execute("DROP FUNCTION ledger_digests_append_only()")
    else:
        op.drop_table("ledger_digests")


# A frozen copy of projections.audit_ips' encoding: a migration must keep
# doing what it did when it was written, whatever the application becomes.
def _ip_key(text: str) -> str | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return f"4:{int(address):08x}"
    return f"6:{int(address):032x}"


def _backfill_audit_ips(bind: sa.engine.Connection) -> None:
    """Index the sightings of events recorded before this migration."""
    result = bind.execute(
        sa.text(
            "SELECT position, stream_id, user_id, type, data, recorded_at FROM ledger_events "
            "WHERE type IN ('SessionCreated', 'SessionTouched') ORDER BY position"
        )
    )
    insert = sa.text(
        "INSERT INTO audit_ips (position, session_id, user_id, ip, ip_key, recorded_at) "
        "VALUES (:position, :session_id, :user_id, :ip, :ip_key, :recorded_at)"
    )
    batch: list[dict[str, Any]] = []
    for row in result:
        data = row.data if isinstance(row.data, dict) else json.loads(row.data)
        ip = data.get("ip")
        if ip is None:
            continue
        batch.append(
            {
                "position": row.position,
                "session_id": row.stream_id,
                "user_id": row.user_id,
                "ip": ip,
                "ip_key": _ip_key(ip),
                "recorded_at": row.recorded_at,
            }
        )
        if len(batch) >= 5000:
            bind.execute(insert, batch)
            batch = []
    if batch:
        bind.execute(insert, batch)
