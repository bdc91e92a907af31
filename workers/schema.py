"""Tables of the workers (registered on the ledger's MetaData so that one
Alembic history covers every table)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, String, Table, Text
from sqlalchemy.dialects import postgresql

from session_ledger.ledger.schema import metadata

Json = JSON().with_variant(postgresql.JSONB(), "postgresql")

#: One row per (worker process, job): when the job last succeeded and the last
#: error it hit. Rows are upserted by their worker; ``session-ledger status``
#: reads the newest success per job across all workers.
worker_heartbeats = Table(
    "worker_heartbeats",
    metadata,
    Column("worker_id", String(128), primary_key=True),
    Column("job", String(64), primary_key=True),
    Column("last_success_at", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("details", Json, nullable=False),
)
