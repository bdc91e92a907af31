"""CSRF protection as BetterAuth does it: a non-GET request that carries a
cookie (or, without cookies, ``Sec-Fetch-*`` headers, i.e. comes from a
browser) must name a trusted origin in ``Origin`` (or, failing that,
``Referer``). Trusted: the base URL's origin plus ``settings.trusted_origins``
(a ``*.`` host prefix matches any subdomain).

The auth router applies it to every route; the session dependencies
(:mod:`api.deps`) apply it to host applications' routes whenever the session
comes from a cookie, unless the route is marked :func:`csrf_exempt`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from starlette.requests import HTTPConnection

from session_ledger.api.errors import ApiError
from session_ledger.api.urls import origin_of

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_EXEMPT = "__session_ledger_csrf_exempt__"

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def csrf_exempt(endpoint: Endpoint) -> Endpoint:
    """Opt a host application's route out of the Origin check that the session
    dependencies apply to unsafe methods (a webhook, a form posted from a
    partner site by design). Put it under the route decorator::

        @app.post("/hooks/ping")
        @csrf_exempt
        async def ping(session: OptionalSession): ...
    """
    setattr(endpoint, _EXEMPT, True)
    return endpoint


def is_csrf_exempt(conn: HTTPConnection) -> bool:
    return getattr(conn.scope.get("endpoint"), _EXEMPT, False) is True


class OriginCheck:
    __slots__ = ("_exact", "_wildcards")

    def __init__(self, base_url: str, trusted_origins: Sequence[str]) -> None:
        exact: set[str] = set()
        wildcards: list[tuple[str, str]] = []
        for entry in [base_url, *trusted_origins]:
            scheme, sep, rest = entry.partition("://")
            if sep and rest.startswith("*."):
                wildcards.append((scheme.lower() + "://", rest[1:].lower().rstrip("/")))
                continue
            origin = origin_of(entry)
            if origin is not None:
                exact.add(origin)
        self._exact = frozenset(exact)
        self._wildcards = tuple(wildcards)

    def trusted(self, origin: str) -> bool:
        if origin in self._exact:
            return True
        return any(origin.startswith(s) and origin.endswith(h) for s, h in self._wildcards)

    def check(self, request: HTTPConnection) -> None:
        """Raise 403 for a browser-borne state-changing request from elsewhere."""
        if request.scope.get("method") in SAFE_METHODS:
            return
        headers = request.headers
        browser = "cookie" in headers or any(
            h in headers for h in ("sec-fetch-site", "sec-fetch-mode", "sec-fetch-dest")
        )
        if not browser:
            return
        raw = headers.get("origin") or headers.get("referer")
        if not raw or raw == "null":
            raise ApiError(403, "MISSING_OR_NULL_ORIGIN", "missing or null Origin")
        origin = origin_of(raw)
        if origin is None or not self.trusted(origin):
            raise ApiError(403, "INVALID_ORIGIN", "invalid origin")
