"""Audit over HTTP.

* ``/api/auth/admin/audit/...``: the audit queries of ledger.audit, for
  admins only ("admin" among the user's roles; others 403 FORBIDDEN, no
  session 401 UNAUTHORIZED). The session is always read from the store,
  never from the cookie cache: a role removed a moment ago must count.
* ``/api/auth/audit/activity``: the signed-in user's own history (the demo
  page's Activity timeline), failed sign-ins on their account included, and
  ``/api/auth/audit/failed-sign-ins``: those since their last visit, by
  network ("3 failed sign-ins from 203.0.113.0/24 since your last visit").

Lists answer ``{"items": [...], "nextAfter": <position> | null}``; pass
``nextAfter`` back as ``after`` for the next page. Times take ISO 8601,
``now`` or an age (``7d``); a malformed time, network or reason is 400
``INVALID_AUDIT_QUERY`` (a LedgerError, rendered by api.errors).
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from session_ledger.api.deps import StoreSession, require_admin
from session_ledger.api.errors import ApiError
from session_ledger.api.routes.common import AuthDep, errors, respond
from session_ledger.ledger.audit import MAX_LIMIT, AuditLog, Page, parse_instant
from session_ledger.ledger.devices import describe_device
from session_ledger.ledger.integrity import latest_digest

Since = Annotated[str | None, Query(description="ISO 8601, 'now', or an age like 7d")]
Until = Annotated[str | None, Query(description="exclusive upper bound; as since")]
After = Annotated[int, Query(ge=0, description="ledger position to continue after")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


class _Json(Protocol):
    def to_json(self) -> dict[str, Any]: ...


audit_router = APIRouter(prefix="/api/auth", tags=["audit"])
admin = APIRouter(prefix="/admin/audit", dependencies=[Depends(require_admin)])


def _audit(auth: AuthDep) -> AuditLog:
    return AuditLog(auth.container.engine)


AuditDep = Annotated[AuditLog, Depends(_audit)]


def _times(since: str | None, until: str | None, now: Any) -> dict[str, Any]:
    return {
        "since": None if since is None else parse_instant(since, now),
        "until": None if until is None else parse_instant(until, now),
    }


def _page(request: Request, page: Page[Any]) -> JSONResponse:
    items: list[_Json] = page.items
    return respond(request, {"items": [i.to_json() for i in items], "nextAfter": page.next_after})


@admin.get("/users/{user_id}/history", responses=errors(401, 403))
async def user_history(
    request: Request,
    auth: AuthDep,
    audit: AuditDep,
    user_id: str,
    since: Since = None,
    until: Until = None,
    after: After = 0,
    limit: Limit = 100,
) -> JSONResponse:
    times = _times(since, until, auth.clock.now())
    return _page(request, await audit.user_history(user_id, after=after, limit=limit, **times))


@admin.get("/sessions/{session_id}/history", responses=errors(401, 403))
async def session_history(
    request: Request,
    auth: AuthDep,
    audit: AuditDep,
    session_id: str,
    since: Since = None,
    until: Until = None,
    after: After = 0,
    limit: Limit = 100,
) -> JSONResponse:
    times = _times(since, until, auth.clock.now())
    page = await audit.session_history(session_id, after=after, limit=limit, **times)
    return _page(request, page)


@admin.get("/ip", responses=errors(401, 403))
async def ip_sightings(
    request: Request,
    auth: AuthDep,
    audit: AuditDep,
    network: Annotated[str, Query(description="an address or a CIDR network")],
    since: Since = None,
    until: Until = None,
    after: After = 0,
    limit: Limit = 100,
) -> JSONResponse:
    times = _times(since, until, auth.clock.now())
    return _page(request, await audit.ip_sightings(network, after=after, limit=limit, **times))


@admin.get("/attempts", responses=errors(401, 403))
async def sign_in_attempts(
    request: Request,
    auth: AuthDep,
    audit: AuditDep,
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    network: Annotated[str | None, Query(description="an address or a CIDR network")] = None,
    since: Since = None,
    until: Until = None,
    after: After = 0,
    limit: Limit = 100,
) -> JSONResponse:
    """Failed sign-ins (SignInFailed), of one account and / or from a network."""
    times = _times(since, until, auth.clock.now())
    page = await audit.sign_in_attempts(
        user_id=user_id, network=network, after=after, limit=limit, **times
    )
    return _page(request, page)


@admin.get("/active-at", responses=errors(401, 403))
async def active_at(
    request: Request,
    auth: AuthDep,
    audit: AuditDep,
    at: Annotated[str, Query(description="the instant")],
    user_id: Annotated[str | None, Query(alias="userId")] = None,
    after: After = 0,
    limit: Limit = 100,
) -> JSONResponse:
    instant = parse_instant(at, auth.clock.now())
    page = await audit.active_at(instant, user_id=user_id, after=after, limit=limit)
    return _page(request, page)


@admin.get("/revocations", responses=errors(401, 403))
async def revocations(
    request: Request,
    auth: AuthDep,
    audit: AuditDep,
    reason: str | None = None,
    actor: str | None = None,
    since: Since = None,
    until: Until = None,
    after: After = 0,
    limit: Limit = 100,
) -> JSONResponse:
    times = _times(since, until, auth.clock.now())
    page = await audit.revocations(reason=reason, actor=actor, after=after, limit=limit, **times)
    return _page(request, page)


@admin.get("/counts", responses=errors(401, 403))
async def counts(
    request: Request,
    auth: AuthDep,
    audit: AuditDep,
    since: Since = None,
    until: Until = None,
    event_type: Annotated[list[str] | None, Query(alias="type")] = None,
) -> JSONResponse:
    times = _times(since, until, auth.clock.now())
    rows = await audit.counts_per_day(types=event_type or None, **times)
    return respond(request, {"items": [r.to_json() for r in rows]})


@admin.get("/digest", responses=errors(401, 403, 404))
async def digest(request: Request, auth: AuthDep) -> JSONResponse:
    latest = await latest_digest(auth.container.engine)
    if latest is None:
        raise ApiError(404, "NO_DIGEST", "no ledger digest has been recorded yet")
    return respond(request, {**latest.to_json(), "token": latest.token})


@audit_router.get("/audit/activity", responses=errors(401))
async def my_activity(
    request: Request,
    auth: AuthDep,
    audit: AuditDep,
    session: StoreSession,
    since: Since = None,
    until: Until = None,
    after: After = 0,
    limit: Limit = 100,
) -> JSONResponse:
    """The signed-in user's own session history, oldest first; events that
    saw a user agent also name the device ("Chrome 120 on Mac OS X")."""
    times = _times(since, until, auth.clock.now())
    page = await audit.user_history(session.user_id, after=after, limit=limit, **times)
    items = [
        {**e.to_json(), "device": describe_device(e.user_agent) if e.user_agent else None}
        for e in page.items
    ]
    return respond(request, {"items": items, "nextAfter": page.next_after})


@audit_router.get("/audit/failed-sign-ins", responses=errors(401))
async def my_failed_sign_ins(
    request: Request, audit: AuditDep, session: StoreSession
) -> JSONResponse:
    """Failed sign-ins on the signed-in user's account since their last visit
    (the latest activity of their sessions before this one), by network."""
    summary = await audit.failed_sign_ins_since_last_visit(session.user_id, session.id)
    return respond(request, summary.to_json())


audit_router.include_router(admin)
