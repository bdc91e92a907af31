"""Table of the periodic ledger digests (registered on the ledger's MetaData).

A digest row says "the ledger held ``event_count`` events up to the mark
``(xid, position)`` and their hashes, folded in that commit-safe order
(ledger.horizon), give ``digest``". Each digest is
computed from the previous one (see ledger.integrity), so the rows form a
chain too (``prev_digest``). Rows are append-only, enforced by triggers
(migration 0006), like the events themselves.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, String, Table, text

from session_ledger.ledger.schema import Position, metadata

ledger_digests = Table(
    "ledger_digests",
    metadata,
    # The mark the digest covers (every event at or before (xid, position) in
    # commit-safe order; migration 0008, 0 for digests taken before).
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("event_count", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("prev_digest", String(64), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("xid", BigInteger, nullable=False, server_default=text("0")),
)
