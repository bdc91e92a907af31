"""Table of the periodic ledger digests (registered on the ledger's MetaData).

A digest row says "the ledger held ``event_count`` events up to ``position``
and their hashes, folded in position order, give ``digest``". Each digest is
computed from the previous one (see ledger.integrity), so the rows form a
chain too (``prev_digest``). Rows are append-only, enforced by triggers
(migration 0006), like the events themselves.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, String, Table

from session_ledger.ledger.schema import Position, metadata

ledger_digests = Table(
    "ledger_digests",
    metadata,
    # The ledger position the digest covers (every event with position <= it).
    Column("position", Position, primary_key=True, autoincrement=False),
    Column("event_count", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("prev_digest", String(64), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
