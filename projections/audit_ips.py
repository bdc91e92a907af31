"""The IP sightings index (``audit_ips``): an inline projection, written in
the append transaction, so an audit query by address sees every committed
event and nothing that rolled back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from session_ledger.ledger.audit_schema import audit_ips, ip_key
from session_ledger.ledger.domain.events import SessionCreated, SessionTouched, SignInFailed
from session_ledger.ledger.writes import FromEvents, Insert, Projected, Rows, Write


def sightings(recorded: Sequence[Projected]) -> list[dict[str, Any]]:
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


class AuditIpProjection(FromEvents):
    """Keeps ``audit_ips`` in step with the ledger (EventStore inline projection)."""

    def writes(self, events: Sequence[Projected], prior: Rows, *, locked: bool) -> list[Write]:
        """The position is filled in by the append."""
        rows = sightings(events)
        return [Insert(audit_ips, rows)] if rows else []
