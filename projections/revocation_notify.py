"""The revocation notice: an inline projection that tells every process of
the sessions an append ends (revoked, expired), delivered exactly when, and
only if, the append commits (``NOTIFY`` on PostgreSQL; the other recorders
send nothing, their followers read the ledger's tail). The listening side is
``api.revocations.RevocationFeed``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from session_ledger.ledger.domain.events import TERMINAL_EVENT_TYPES
from session_ledger.ledger.writes import FromEvents, Notify, Projected, Rows, Write

CHANNEL = "session_ledger_revocations"
#: NOTIFY payloads must stay under 8000 bytes.
NOTIFY_BATCH = 150


def ended_session_ids(recorded: Iterable[Projected]) -> list[str]:
    return [r.stream_id for r in recorded if r.type in TERMINAL_EVENT_TYPES]


class RevocationNotifier(FromEvents):
    """``NOTIFY session_ledger_revocations, '<session>,<session>,...'``."""

    def writes(self, events: Sequence[Projected], prior: Rows, *, locked: bool) -> list[Write]:
        ids = ended_session_ids(events)
        return [
            Notify(CHANNEL, ",".join(ids[i : i + NOTIFY_BATCH]))
            for i in range(0, len(ids), NOTIFY_BATCH)
        ]
