"""How a request finds its session, and the FastAPI dependencies built on it.

The read path, in order:

1. the token: ``Authorization: Bearer <signed token>`` (non-browser clients)
   or the signed token cookie; anything unsigned or forged counts as none;
2. the cookie cache, when allowed: a verified, unexpired value for this very
   token, for a (session, token) pair this process has seen the store vouch
   for (:mod:`api.validated_sessions`), whose session this process's
   revocation feed vouches for, and whose sliding refresh is not due — no
   I/O at all;
3. otherwise the SessionLedger (read model, may refresh / rotate / touch).

Cookies to send back (a rotated token, a fresh cache value, or the clearing
cookies for a dead session) are queued on the request
(:func:`api.cookies.pending`) and written by the route
(:func:`api.cookies.finish`) or, for host applications' routes, by
:class:`api.middleware.SessionCookieMiddleware`: both take them with
:func:`api.cookies.take_queued`.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from session_ledger.api.bootstrap import Container
from session_ledger.api.client_ip import ClientIp
from session_ledger.api.cookie_cache import CachedSession, CookieCache
from session_ledger.api.cookies import CookieJar, pending
from session_ledger.api.csrf import SAFE_METHODS, OriginCheck, is_csrf_exempt
from session_ledger.api.errors import ApiError
from session_ledger.api.metrics import ServiceMetrics
from session_ledger.api.rate_limit import RateLimiter
from session_ledger.api.revocations import RevocationFeed
from session_ledger.api.sign_in_guard import SignInGuard
from session_ledger.api.signing_secrets import signing_secrets
from session_ledger.api.users.store import SqlUserStore
from session_ledger.api.validated_sessions import ValidatedSessions
from session_ledger.ledger.attempts import SignInAttempts
from session_ledger.ledger.clock import Clock
from session_ledger.ledger.config import Settings
from session_ledger.ledger.domain.rules import expiry_or_refresh_due
from session_ledger.ledger.domain.tokens import Signer, tokens_equal
from session_ledger.ledger.service import (
    Payload,
    RequestContext,
    SessionLedger,
    SessionView,
    ValidatedSession,
)

STATE_KEY = "session_ledger"
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class _RequestIds:
    """Unique request ids without a syscall per request: a random per-process
    prefix and a counter (a fork starts a new prefix)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self.prefix = secrets.token_hex(8)
        self.counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.prefix}-{next(self.counter):x}"


_request_ids = _RequestIds()


@dataclass
class Auth:
    """Everything the HTTP layer needs, built once per app from a Container."""

    container: Container
    signer: Signer
    jar: CookieJar
    cache: CookieCache
    revocations: RevocationFeed
    client_ip: ClientIp
    origins: OriginCheck
    limiter: RateLimiter
    guard: SignInGuard
    metrics: ServiceMetrics
    validated: ValidatedSessions = field(default_factory=ValidatedSessions)

    @classmethod
    def create(cls, container: Container) -> Auth:
        settings = container.settings
        secrets_in_use = signing_secrets(settings).values
        signer = Signer(secrets_in_use)
        jar = CookieJar(settings, signer)
        metrics = ServiceMetrics()
        limiter = RateLimiter(settings, metrics)
        # Keyed email hashes under the signing secret (ledger.attempts).
        attempts = SignInAttempts(container.store, secrets_in_use[0], container.clock)
        return cls(
            container=container,
            signer=signer,
            jar=jar,
            cache=CookieCache(jar, signer, settings.cookie_cache.max_age),
            revocations=container.revocations,
            client_ip=ClientIp(settings.trusted_proxies),
            origins=OriginCheck(settings.base_url, settings.trusted_origins),
            limiter=limiter,
            guard=SignInGuard(limiter, attempts, metrics),
            metrics=metrics,
        )

    @property
    def settings(self) -> Settings:
        return self.container.settings

    @property
    def ledger(self) -> SessionLedger:
        return self.container.ledger

    @property
    def clock(self) -> Clock:
        return self.container.clock

    @property
    def users(self) -> SqlUserStore | None:
        users = self.ledger.users
        return users if isinstance(users, SqlUserStore) else None

    @property
    def cache_enabled(self) -> bool:
        # Provider tokens (store_tokens) must never sit in a cookie.
        return self.settings.cookie_cache.enabled and not self.settings.store_tokens

    def token_max_age(self, remember_me: bool) -> int | None:
        return self.settings.session.expires_in if remember_me else None

    async def start(self) -> None:
        """Start the revocation feed (built and connected by api.bootstrap) and the
        rate limiter's background flush."""
        await self.revocations.start()
        self.limiter.start()

    async def stop(self) -> None:
        await self.limiter.close()
        await self.revocations.stop()


@dataclass(frozen=True, slots=True)
class AuthSession:
    """The signed-in session as routes see it."""

    session: dict[str, Any]
    user: dict[str, Any]
    payload: Payload
    #: The token the client holds from now on (new when rotated).
    token: str
    source: Literal["cookie-cache", "store"]
    via_bearer: bool = False
    #: The full view (store reads only; None on cookie-cache hits).
    view: SessionView | None = None

    @property
    def id(self) -> str:
        return str(self.session["id"])

    @property
    def user_id(self) -> str:
        return str(self.session["userId"])


def get_auth(conn: HTTPConnection) -> Auth:
    auth = getattr(conn.app.state, STATE_KEY, None)
    if not isinstance(auth, Auth):
        raise RuntimeError(
            "session-ledger is not set up on this app: use api.app.create_app, or "
            "api.app.install(app, container) in your lifespan"
        )
    return auth


def queue_clear(request: HTTPConnection, auth: Auth) -> None:
    """Queue the clearing cookies, replacing anything queued (all of it is ours)."""
    pending(request).cookies = auth.jar.clear_all(request.cookies)


def request_context(request: HTTPConnection, auth: Auth) -> RequestContext:
    incoming = request.headers.get("x-request-id", "")
    request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else _request_ids.next()
    return RequestContext(
        ip=auth.client_ip.of(request),
        user_agent=request.headers.get("user-agent"),
        request_id=request_id,
    )


def presented_token(request: HTTPConnection, auth: Auth) -> tuple[str | None, bool]:
    """(token, via_bearer). A bearer header wins over the cookie, as in BetterAuth."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            return auth.signer.unsign(value.strip()), True
    return auth.jar.read_token(request.cookies), False


async def resolve(
    request: HTTPConnection, *, allow_cache: bool, disable_refresh: bool = False
) -> AuthSession | None:
    """The request's live session, or None. See the module docstring."""
    auth = get_auth(request)
    token, bearer = presented_token(request, auth)
    if token is None:
        return None
    if (
        not bearer
        and request.scope.get("method") not in SAFE_METHODS
        and not is_csrf_exempt(request)
    ):
        # A cookie rides along on cross-site requests; a bearer header never
        # does. So a state-changing request that authenticates by cookie must
        # come from a trusted origin, on host applications' routes too.
        auth.origins.check(request)
    now = auth.clock.now()
    if allow_cache and not bearer and auth.cache_enabled:
        hit = _cookie_cache_hit(request, auth, token, now)
        if hit is not None:
            return hit
    result = await auth.ledger.get_session_payload(
        token, request_context(request, auth), disable_refresh=disable_refresh
    )
    if result is None:
        if not bearer:
            queue_clear(request, auth)
        return None
    payload, validated = result
    _queue_store_answer(request, auth, validated, payload, now, bearer=bearer)
    return AuthSession(
        session=payload["session"],
        user=payload["user"],
        payload=payload,
        token=validated.token,
        source="store",
        via_bearer=bearer,
        view=validated.session,
    )


def _cookie_cache_hit(
    request: HTTPConnection, auth: Auth, token: str, now: datetime
) -> AuthSession | None:
    """The session from the cookie cache, when every condition of the module
    docstring's step 2 holds; None sends the request to the store."""
    cached = auth.cache.read(request.cookies, now)
    if (
        cached is None
        or not tokens_equal(str(cached.session["token"]), token)
        or not auth.validated.vouches(str(cached.session["id"]), token)
        or not auth.revocations.trusts(str(cached.session["id"]))
        or _store_must_answer(cached, now, auth, auth.jar.remember_me(request.cookies))
    ):
        return None
    return AuthSession(
        session=cached.session,
        user=cached.user,
        payload={"session": cached.session, "user": cached.user},
        token=token,
        source="cookie-cache",
    )


def _store_must_answer(cached: CachedSession, now: datetime, auth: Auth, remember: bool) -> bool:
    """Whether the store would refresh (or expire) this session now: then the
    cache must not hide it (the rule: ledger.domain.rules)."""
    try:
        expires_at = datetime.fromisoformat(str(cached.session["expiresAt"]))
    except (KeyError, ValueError):
        return True
    if expires_at.tzinfo is None:
        return True
    return expiry_or_refresh_due(expires_at, remember, now, auth.settings.session)


def _queue_store_answer(
    request: HTTPConnection,
    auth: Auth,
    validated: ValidatedSession,
    payload: Payload,
    now: datetime,
    *,
    bearer: bool,
) -> None:
    """Queue what the client must hold after a store answer: the new token
    when it rotated or slid, and (browsers) a fresh cookie-cache value."""
    queued = pending(request)
    if validated.rotated or validated.refreshed:
        if bearer:
            queued.headers["set-auth-token"] = auth.signer.sign(validated.token)
        else:
            max_age = auth.token_max_age(validated.session.remember_me)
            queued.cookies.append(auth.jar.token(validated.token, max_age))
    if auth.cache_enabled and not bearer:
        auth.validated.add(validated.session.id, validated.token)
        queued.cookies += auth.cache.set_cookies(
            payload["session"], payload["user"], now, request.cookies
        )


# ------------------------------------------------------------ dependencies


async def current_session(request: Request) -> AuthSession | None:
    """The session, if any (cookie cache allowed). Never raises for bad credentials."""
    return await resolve(request, allow_cache=True)


async def require_session(
    session: Annotated[AuthSession | None, Depends(current_session)],
) -> AuthSession:
    """401 UNAUTHORIZED without a live session."""
    if session is None:
        raise ApiError(401, "UNAUTHORIZED", "sign in to continue")
    return session


async def store_session(request: Request) -> AuthSession:
    """Like require_session, but always read from the store (sensitive operations)."""
    session = await resolve(request, allow_cache=False)
    if session is None:
        raise ApiError(401, "UNAUTHORIZED", "sign in to continue")
    return session


async def require_fresh_session(
    request: Request, session: Annotated[AuthSession, Depends(store_session)]
) -> AuthSession:
    """403 SESSION_NOT_FRESH unless the user signed in within ``fresh_age``."""
    # store_session never answers from the cookie cache: the view is there.
    assert session.view is not None
    get_auth(request).ledger.require_fresh(session.view)
    return session


async def check_origin(request: Request) -> None:
    """CSRF guard for the auth router (no-op on GET)."""
    get_auth(request).origins.check(request)


OptionalSession = Annotated[AuthSession | None, Depends(current_session)]
RequiredSession = Annotated[AuthSession, Depends(require_session)]
StoreSession = Annotated[AuthSession, Depends(store_session)]
FreshSession = Annotated[AuthSession, Depends(require_fresh_session)]

ADMIN_ROLE = "admin"


async def require_admin(session: StoreSession) -> AuthSession:
    """403 FORBIDDEN unless "admin" is among the user's roles (read from the store)."""
    if ADMIN_ROLE not in (session.user.get("roles") or []):
        raise ApiError(403, "FORBIDDEN", "administrators only")
    return session
