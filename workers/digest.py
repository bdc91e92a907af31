"""The digest job: records a ledger digest whenever the head has moved.

The worker scheduler calls :func:`record_digest` periodically. Each digest
extends the previous one (see ledger.integrity), so a run costs the events
appended since the last run, not the ledger's size.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import Clock
from session_ledger.ledger.integrity import record_digest as record_ledger_digest
from session_ledger.workers.logging import get_logger

log = get_logger("digest")


class HasLedger(Protocol):
    """What the job needs from session_ledger.api.bootstrap.Container."""

    engine: AsyncEngine
    clock: Clock


async def record_digest(container: HasLedger) -> None:
    """Record a digest of the ledger up to its head, if the head moved."""
    digest = await record_ledger_digest(container.engine, container.clock)
    if digest is not None:
        # The line an operator ships off the database host (write-once log,
        # object lock, another account): verify --expect checks against it.
        log.info(
            "ledger_digest",
            position=digest.position,
            event_count=digest.event_count,
            digest=digest.digest,
        )
