"""Email and password sign-up / sign-in on the built-in user store."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from session_ledger.api.cookies import pending
from session_ledger.api.deps import Auth, request_context
from session_ledger.api.errors import ApiError
from session_ledger.api.routes.common import AuthDep, errors, respond
from session_ledger.api.urls import parse_absolute
from session_ledger.api.users.store import MAX_IMAGE, MAX_NAME, SqlUserStore
from session_ledger.ledger.domain.errors import ServerBusyError
from session_ledger.ledger.ports import UserRecord
from session_ledger.ledger.service import ValidatedSession, user_json

email_router = APIRouter(tags=["email"])

#: Longer than any valid password (``password.max_length`` is at most 1024),
#: so that PASSWORD_TOO_LONG (not a generic validation error) answers a
#: too-long password.
_MAX_PASSWORD_FIELD = 8 * 1024


class SignUpBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    #: Any string: a malformed one (too long included) is INVALID_EMAIL, as in
    #: BetterAuth; the body limit bounds it.
    email: str
    password: Annotated[str, Field(max_length=_MAX_PASSWORD_FIELD)]
    name: Annotated[str, Field(max_length=MAX_NAME)] = ""
    image: Annotated[str | None, Field(max_length=MAX_IMAGE)] = None
    rememberMe: bool = True  # noqa: N815  (BetterAuth's wire name)
    callbackURL: Annotated[str | None, Field(max_length=2048)] = None  # noqa: N815


class SignInBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    email: Annotated[str, Field(max_length=4096)]
    password: Annotated[str, Field(max_length=_MAX_PASSWORD_FIELD)]
    rememberMe: bool = True  # noqa: N815
    callbackURL: Annotated[str | None, Field(max_length=2048)] = None  # noqa: N815


def _users(auth: Auth) -> SqlUserStore:
    users = auth.users
    if users is None:
        raise ApiError(404, "EMAIL_PASSWORD_DISABLED", "email and password sign-in is not enabled")
    return users


#: C0 and C1 controls and DEL: browsers drop some of them (tab, newline) from
#: URLs before parsing, which turns "/\t/evil.example" into "//evil.example".
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _callback(auth: Auth, url: str | None) -> str | None:
    """The redirect target (403 unless it stays on a trusted origin).

    A relative target must be a path on this origin: ``/`` not followed by
    ``/`` or ``\\``, and no backslash or control character anywhere (browsers
    read ``\\`` as ``/`` and drop tabs and newlines). An absolute one is parsed
    as a browser parses it (WHATWG rules, ada) and its origin must be the base
    URL's or a trusted one; the normalised URL is what we hand back."""
    if url is None:
        return None
    if url.startswith("/"):
        if url[1:2] != "/" and "\\" not in url and _CONTROL.search(url) is None:
            return url
    else:
        parsed = parse_absolute(url)
        if parsed is not None and auth.origins.trusted(parsed.origin):
            return parsed.href
    raise ApiError(403, "INVALID_CALLBACK_URL", "callbackURL is not a trusted origin")


async def _start_session(
    request: Request, auth: Auth, user: UserRecord, remember_me: bool
) -> tuple[str, dict[str, Any]]:
    """Create the session and queue its cookies; returns (token, user json)."""
    view, token = await auth.ledger.create_session(
        user.id, request_context(request, auth), remember_me=remember_me
    )
    queued = pending(request)
    queued.cookies.append(auth.jar.token(token, auth.token_max_age(remember_me)))
    if remember_me:
        if auth.jar.names.dont_remember in request.cookies:
            queued.cookies.append(auth.jar.clear(auth.jar.names.dont_remember))
    else:
        queued.cookies.append(auth.jar.dont_remember())
    payload = await auth.ledger.payload(ValidatedSession(session=view, token=token))
    user_body = payload["user"] if payload is not None else user_json(user)
    if auth.cache_enabled and payload is not None:
        auth.validated.add(view.id, token)
        queued.cookies += auth.cache.set_cookies(
            payload["session"], payload["user"], auth.clock.now(), request.cookies
        )
    # BetterAuth's bearer plugin: non-browser clients read the signed token here.
    queued.headers["set-auth-token"] = auth.signer.sign(token)
    queued.headers["access-control-expose-headers"] = "set-auth-token"
    return token, user_body


@email_router.post("/sign-up/email", responses=errors(403, 422, 429, 503))
async def sign_up(request: Request, auth: AuthDep, body: SignUpBody) -> JSONResponse:
    callback = _callback(auth, body.callbackURL)
    try:
        user = await _users(auth).create_user(
            body.email, body.password, name=body.name, image=body.image
        )
    except ServerBusyError:
        auth.metrics.hashing_busy.inc()
        raise
    token, user_body = await _start_session(request, auth, user, body.rememberMe)
    result: dict[str, Any] = {"token": token, "user": user_body}
    if callback is not None:
        result["url"] = callback
    return respond(request, result)


@email_router.post("/sign-in/email", responses=errors(401, 403, 429, 503))
async def sign_in(request: Request, auth: AuthDep, body: SignInBody) -> JSONResponse:
    callback = _callback(auth, body.callbackURL)
    ctx = request_context(request, auth)
    user = await auth.guard.authenticate(_users(auth), body.email, body.password, ctx)
    token, user_body = await _start_session(request, auth, user, body.rememberMe)
    result: dict[str, Any] = {"redirect": callback is not None, "token": token, "user": user_body}
    if callback is not None:
        result["url"] = callback
    return respond(request, result)
