"""Session endpoints (BetterAuth's shapes; see the reference):
get-session, list-sessions, revoke-session(s), revoke-other-sessions,
sign-out, update-session.

Only get-session may answer from the cookie cache; every other endpoint
reads the store (``StoreSession`` / ``FreshSession``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from session_ledger.api.cookies import pending
from session_ledger.api.deps import (
    AuthSession,
    FreshSession,
    StoreSession,
    get_auth,
    presented_token,
    queue_clear,
    request_context,
    resolve,
)
from session_ledger.api.errors import ApiError
from session_ledger.api.routes.common import AuthDep, errors, respond
from session_ledger.ledger.domain.ids import SessionId
from session_ledger.ledger.service import session_json

session_router = APIRouter(tags=["session"])


class RevokeSessionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: A session id, as list-sessions hands it out in ``token``, or the raw
    #: token of a session (what getSession returns in ``session.token``);
    #: anything else is refused before it reaches a query (ledger.domain.ids).
    token: SessionId


class RevokeSessionsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: Annotated[list[SessionId], Field(min_length=1, max_length=100)] | None = None


class StatusBody(BaseModel):
    status: bool


def _clear_if_current(request: Request, auth: AuthDep, session: AuthSession, ids: set[str]) -> None:
    if session.id in ids:
        queue_clear(request, auth)


#: Query flags of get-session, parsed as pydantic parses a bool.
_FLAGS = {
    **dict.fromkeys(("1", "on", "t", "true", "y", "yes"), True),
    **dict.fromkeys(("0", "off", "f", "false", "n", "no"), False),
}
_GET_SESSION_FLAGS = ("disableCookieCache", "disableRefresh")


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = _FLAGS.get(raw.lower())
    if value is None:
        raise ApiError(400, "VALIDATION_ERROR", f"query parameter {name!r} must be a boolean")
    return value


# The flags are read from the query string by hand, not declared as FastAPI
# parameters: get-session is the hottest route, and FastAPI's parameter
# solving is a visible share of its time (bench/README.md). The schema
# still documents them.
@session_router.get(
    "/get-session",
    responses=errors(),
    openapi_extra={
        "parameters": [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "boolean", "default": False},
            }
            for name in _GET_SESSION_FLAGS
        ]
    },
)
async def get_session(request: Request) -> JSONResponse:
    """``{session, user}`` of the caller, or ``null``.

    ``null`` for a token whose session has ended carries the reason in
    ``x-session-ended`` (``revoked_others``, ``idle``, ...): the demo page
    says "ended from another device" with it. The body stays BetterAuth's.
    """
    session = await resolve(
        request,
        allow_cache=not _flag(request, "disableCookieCache"),
        disable_refresh=_flag(request, "disableRefresh"),
    )
    response = respond(request, None if session is None else session.payload)
    if session is not None:
        response.headers["x-session-source"] = session.source
    else:
        auth = get_auth(request)
        token, _bearer = presented_token(request, auth)
        reason = None if token is None else await auth.ledger.ended_reason(token)
        if reason is not None:
            response.headers["x-session-ended"] = reason
            response.headers["access-control-expose-headers"] = "x-session-ended"
    return response


@session_router.get("/list-sessions", responses=errors(401, 403))
async def list_sessions(request: Request, auth: AuthDep, session: FreshSession) -> JSONResponse:
    views = await auth.ledger.list_sessions(session.user_id, session.id)
    return respond(request, [session_json(v) for v in views])


@session_router.post("/revoke-session", responses=errors(401, 403))
async def revoke_session(
    request: Request, auth: AuthDep, session: FreshSession, body: RevokeSessionBody
) -> JSONResponse:
    """As BetterAuth: ``{status: true}`` also for a token or id that is
    unknown or another user's (nothing is written, and ids cannot be probed)."""
    revoked = await auth.ledger.revoke_session_by_id_or_token(
        session.user_id, body.token, request_context(request, auth)
    )
    if revoked is not None:
        _clear_if_current(request, auth, session, {revoked})
    return respond(request, {"status": True})


@session_router.post("/revoke-sessions", responses=errors(401, 403, 404))
async def revoke_sessions(
    request: Request,
    auth: AuthDep,
    session: FreshSession,
    body: Annotated[RevokeSessionsBody | None, Body()] = None,
) -> JSONResponse:
    """No body (or no ``ids``): all the user's sessions; ``{ids}``: exactly those."""
    ctx = request_context(request, auth)
    if body is None or body.ids is None:
        await auth.ledger.revoke_all_sessions(session.user_id, ctx)
        _clear_if_current(request, auth, session, {session.id})
    else:
        await auth.ledger.revoke_sessions(session.user_id, body.ids, ctx)
        _clear_if_current(request, auth, session, set(body.ids))
    return respond(request, {"status": True})


@session_router.post("/revoke-other-sessions", responses=errors(401, 403))
async def revoke_other_sessions(
    request: Request, auth: AuthDep, session: FreshSession
) -> JSONResponse:
    await auth.ledger.revoke_other_sessions(
        session.user_id, session.id, request_context(request, auth)
    )
    return respond(request, {"status": True})


@session_router.post("/sign-out", responses=errors())
async def sign_out(request: Request, auth: AuthDep) -> JSONResponse:
    token, _bearer = presented_token(request, auth)
    queue_clear(request, auth)
    if token is None:
        raise ApiError(400, "FAILED_TO_GET_SESSION", "no session to sign out of")
    await auth.ledger.sign_out(token, request_context(request, auth))
    return respond(request, {"success": True})


@session_router.post("/update-session", responses=errors(401))
async def update_session(
    request: Request,
    auth: AuthDep,
    session: StoreSession,
    fields: Annotated[dict[str, JsonValue], Body()],
) -> JSONResponse:
    """Merge additional fields into the session; answers ``{session}``.

    Only fields declared in ``session.additional_fields`` with ``input`` (as
    BetterAuth's ``additionalFields``): anything else is 400 INVALID_FIELDS."""
    declared = auth.settings.session.additional_fields
    for name in fields:
        spec = declared.get(name)
        if spec is None or not spec.input:
            raise ApiError(400, "INVALID_FIELDS", f"field {name[:64]!r} cannot be set")
    view = await auth.ledger.update_session(session.token, fields, request_context(request, auth))
    body = session_json(view, session.token)
    if auth.cache_enabled and not session.via_bearer:
        queued = pending(request)
        data = auth.jar.names.data
        queued.cookies = [c for c in queued.cookies if not c.startswith(data)]
        queued.cookies += auth.cache.set_cookies(
            body, session.user, auth.clock.now(), request.cookies
        )
    return respond(request, {"session": body})
