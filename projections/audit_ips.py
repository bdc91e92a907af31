"""The IP sightings index (``audit_ips``): an inline projection, written in
the append transaction, so an audit query by address sees every committed
event and nothing that rolled back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from session_ledger.ledger.audit_schema import audit_ips, ip_key
from session_ledger.ledger.domain.events import (
    RecordedEvent,
    SessionCreated,
    SessionTouched,
    SignInFailed,
)
from session_ledger.ledger.writes import Insert, PendingEvent, Write, WritesFromEvents


def sightings(recorded: Sequence[RecordedEvent | PendingEvent]) -> list[dict[str, Any]]:
    """One ``audit_ips`` row per event that saw its session, or a failed
    sign-in (its ``session_id`` is then the attempt's stream), at an address."""
    rows: list[dict[str, Any]] = []
    for r in recorded:
        event = r.event
        if (
            not isinstance(event, SessionCreated | SessionTouched | SignInFailed)
            or event.ip is None
        ):
            continue
        rows.append(
            {
                "position": r.position,
                "session_id": r.stream_id,
                "user_id": r.user_id,
                "ip": event.ip,
                "ip_key": ip_key(event.ip),
                "recorded_at": r.recorded_at,
            }
        )
    return rows


class AuditIpProjection(WritesFromEvents):
    """Keeps ``audit_ips`` in step with the ledger (EventStore inline projection)."""

    async def apply(self, conn: AsyncConnection, recorded: Sequence[RecordedEvent]) -> None:
        rows = sightings(recorded)
        if rows:
            await conn.execute(audit_ips.insert(), rows)

    def new_stream_writes(self, pending: Sequence[PendingEvent]) -> list[Write]:
        """The same rows for new streams, as data (see ledger.writes); the
        position is filled in by the append."""
        rows = sightings(pending)
        return [Insert(audit_ips, rows)] if rows else []
