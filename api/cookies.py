"""The session cookies: names, attributes, signed values, set and clear.

Names follow BetterAuth: the token cookie has the configured name
(``better-auth.session-token``); the cookie cache and the remember-me marker
share its prefix (the part before the last dot): ``<prefix>.session_data``
and ``<prefix>.dont_remember``. With secure cookies (production, an https
base URL, or forced) every name gets the ``__Secure-`` prefix and ``Secure``;
with ``cookie.host_prefix`` the ``__Host-`` prefix instead (no Domain, Path=/).

Values are BetterAuth's signed ``token.signature``, URL-encoded like
JavaScript's ``encodeURIComponent``.

Every ``Set-Cookie`` value is built by :meth:`CookieJar.header`. Whatever a
request wants sent back is queued on it (:func:`pending`) and taken off
once, by :func:`take_queued`: from a route's response (:func:`finish`) or,
for host applications' routes and error responses, by
:class:`api.middleware.SessionCookieMiddleware`.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.requests import HTTPConnection
from starlette.responses import Response

from session_ledger.ledger.config import Settings
from session_ledger.ledger.domain.tokens import Signer

PENDING_KEY = "session_ledger_pending"
SECURE_PREFIX = "__Secure-"
HOST_PREFIX = "__Host-"


@dataclass(frozen=True, slots=True)
class CookieNames:
    token: str
    data: str
    dont_remember: str


def cookie_names(settings: Settings) -> CookieNames:
    name = settings.cookie.name
    prefix = name.rpartition(".")[0] or name
    if settings.cookie.host_prefix:
        secure = HOST_PREFIX
    else:
        secure = SECURE_PREFIX if settings.secure_cookies else ""
    return CookieNames(
        token=f"{secure}{name}",
        data=f"{secure}{prefix}.session_data",
        dont_remember=f"{secure}{prefix}.dont_remember",
    )


class CookieJar:
    """Builds ``Set-Cookie`` header values and reads signed cookies."""

    __slots__ = ("_attributes", "names", "signer")

    def __init__(self, settings: Settings, signer: Signer) -> None:
        self.names = cookie_names(settings)
        self.signer = signer
        options = settings.cookie.options
        parts = [f"Path={options.path}"]
        if options.domain:
            parts.append(f"Domain={options.domain}")
        if options.http_only:
            parts.append("HttpOnly")
        parts.append(f"SameSite={options.same_site.capitalize()}")
        if settings.secure_cookies or options.same_site == "none":
            parts.append("Secure")
        self._attributes = "; ".join(parts)

    # ------------------------------------------------------------ writing

    def header(self, name: str, value: str, max_age: int | None) -> str:
        """One Set-Cookie value; ``max_age`` None = a browser-session cookie."""
        age = "" if max_age is None else f"Max-Age={max_age}; "
        return f"{name}={value}; {age}{self._attributes}"

    def token(self, token: str, max_age: int | None) -> str:
        return self.header(self.names.token, encode(self.signer.sign(token)), max_age)

    def dont_remember(self) -> str:
        return self.header(self.names.dont_remember, encode(self.signer.sign("true")), None)

    def clear(self, name: str) -> str:
        return self.header(name, "", 0)

    def clear_all(self, request_cookies: Mapping[str, str] = {}) -> list[str]:
        """Clear token, data (and any data chunks the client holds) and dont_remember."""
        names = [self.names.token, self.names.data, self.names.dont_remember]
        chunk_prefix = self.names.data + "."
        names += sorted(n for n in request_cookies if n.startswith(chunk_prefix))
        return [self.clear(n) for n in names]

    # ------------------------------------------------------------ reading

    def read_token(self, cookies: Mapping[str, str]) -> str | None:
        """The token of a validly signed token cookie, else None (no cookie)."""
        value = cookies.get(self.names.token)
        return None if value is None else self.signer.unsign(value)

    def remember_me(self, cookies: Mapping[str, str]) -> bool:
        value = cookies.get(self.names.dont_remember)
        return value is None or self.signer.unsign(value) != "true"


def encode(value: str) -> str:
    """JavaScript's encodeURIComponent (what BetterAuth applies to cookie values)."""
    return quote(value, safe="-_.!~*'()")


# ------------------------------------------------------------ the queue


@dataclass
class Pending:
    """Set-Cookie values and headers queued for the response."""

    cookies: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.cookies or self.headers)


def pending(request: HTTPConnection) -> Pending:
    """The request's queue (created on first use)."""
    # The scope's state dict itself (what request.state wraps, and what the
    # middleware reads): request.state costs an exception per missing key.
    state = request.scope.setdefault("state", {})
    queued = state.get(PENDING_KEY)
    if queued is None:
        queued = state[PENDING_KEY] = Pending()
    assert isinstance(queued, Pending)
    return queued


def take_queued(state: MutableMapping[str, Any]) -> list[tuple[str, str]]:
    """The queued cookies and headers as response headers, once (the queue
    is emptied). A response that sets a cookie says ``Cache-Control:
    no-store``: the cookies carry the token. Every header but ``set-cookie``
    replaces one of the same name."""
    queued = state.get(PENDING_KEY)
    if not isinstance(queued, Pending) or not queued:
        return []
    state[PENDING_KEY] = Pending()
    headers = [("cache-control", "no-store")] if queued.cookies else []
    headers += [("set-cookie", cookie) for cookie in queued.cookies]
    headers += queued.headers.items()
    return headers


def finish(request: HTTPConnection, response: Response) -> Response:
    """Write the queued cookies and headers onto ``response`` (once)."""
    for name, value in take_queued(request.scope.setdefault("state", {})):
        if name == "set-cookie":
            response.headers.append(name, value)
        else:
            response.headers[name] = value
    return response
