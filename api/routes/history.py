"""GET /session-history: the signed-in user's own session events (and the
failed sign-ins on their account, ``SignInFailed``), newest first, straight
from the ledger (a paginated read by user id; the audit
module offers the full query language)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select

from session_ledger.api.deps import StoreSession
from session_ledger.api.routes.common import AuthDep, errors, respond
from session_ledger.ledger.audit import MAX_POSITION
from session_ledger.ledger.clock import iso_ms, utc
from session_ledger.ledger.devices import describe_device
from session_ledger.ledger.domain.events import (
    Event,
    EventMetadata,
    SessionCreated,
    SessionExpired,
    SessionRevoked,
    SessionTouched,
    SignInFailed,
    deserialize,
)
from session_ledger.ledger.schema import events as events_table

history_router = APIRouter(tags=["history"])


def _entry(
    position: int, stream_id: str, event: Event, meta: EventMetadata, at: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "position": position,
        "sessionId": stream_id,
        "type": event.type,
        "at": iso_ms(at),
        "actor": meta.actor,
        "reason": None,
        "ipAddress": None,
        "userAgent": None,
        "device": None,
    }
    if isinstance(event, SessionCreated | SessionTouched | SignInFailed):
        entry.update(
            ipAddress=event.ip,
            userAgent=event.user_agent,
            device=describe_device(event.user_agent) if event.user_agent else None,
        )
    if isinstance(event, SessionRevoked):
        entry.update(reason=event.reason.value, actor=event.actor)
    if isinstance(event, SessionExpired | SignInFailed):
        entry.update(reason=event.reason.value)
    return entry


@history_router.get("/session-history", responses=errors(401))
async def session_history(
    request: Request,
    auth: AuthDep,
    session: StoreSession,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_POSITION, description="position to page back from")
    ] = None,
) -> JSONResponse:
    query = (
        select(events_table)
        .where(events_table.c.user_id == session.user_id)
        .order_by(events_table.c.position.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(events_table.c.position < before)
    async with auth.container.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    entries = [
        _entry(
            row.position,
            row.stream_id,
            deserialize(row.type, row.schema_version, row.data),
            EventMetadata.model_validate(row.meta),
            utc(row.recorded_at),
        )
        for row in rows
    ]
    next_before = entries[-1]["position"] if len(entries) == limit else None
    return respond(request, {"events": entries, "nextBefore": next_before})
