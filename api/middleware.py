"""ASGI middleware of the service (pure ASGI: no per-request task overhead).

* :class:`SessionCookieMiddleware` writes the cookies and headers a session
  dependency queued (a rotated token, a fresh cookie-cache value, clearing
  cookies) onto any response — host applications' routes included, and
  error responses too (a 401 for a dead session clears its cookies).
  Every response that sets a session cookie says ``Cache-Control: no-store``.
* :class:`LimitsMiddleware` refuses oversized cookies (431) and bodies (413)
  before any route runs, with the usual ``{code, message}`` body.
* :class:`RateLimitMiddleware` applies the rate limits (api.rate_limit).
* :class:`SecurityHeadersMiddleware` (the service's own app): ``nosniff``,
  a referrer policy, no framing, and a Content-Security-Policy on JSON
  answers (the demo page sets its own).
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from session_ledger.api.cookies import take_queued
from session_ledger.api.deps import STATE_KEY, Auth
from session_ledger.api.errors import retry_headers
from session_ledger.api.rate_limit import BASE_PATH, Refusal

MAX_COOKIE_BYTES = 8 * 1024
MAX_BODY_BYTES = 64 * 1024


Headers = list[tuple[bytes, bytes]]


class _ResponseHeaders:
    """Pure ASGI middleware that may rewrite each response's headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def rewrite(self, scope: Scope, headers: Headers) -> Headers | None:
        """The new headers, or None to leave them as they are."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def rewriting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = self.rewrite(scope, list(message.get("headers", [])))
                if headers is not None:
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, rewriting_send)


class SessionCookieMiddleware(_ResponseHeaders):
    def rewrite(self, scope: Scope, headers: Headers) -> Headers | None:
        taken = take_queued(scope.get("state") or {})
        if not taken:
            return None
        replaced = {name.encode("latin-1") for name, _ in taken if name != "set-cookie"}
        headers = [(k, v) for k, v in headers if k.lower() not in replaced]
        return headers + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in taken]


class LimitsMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = MAX_BODY_BYTES,
        max_cookie: int = MAX_COOKIE_BYTES,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.max_cookie = max_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie_bytes = 0
        declared = 0
        for name, value in scope["headers"]:
            if name == b"cookie":
                cookie_bytes += len(value)
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else -1
        if cookie_bytes > self.max_cookie:
            await _reject(
                send,
                431,
                "REQUEST_HEADER_FIELDS_TOO_LARGE",
                f"cookies are larger than {self.max_cookie} bytes",
            )
            return
        if declared < 0:
            await _reject(send, 400, "VALIDATION_ERROR", "invalid Content-Length")
            return
        if declared > self.max_body:
            await self._too_large(send)
            return

        received = 0

        async def limited_receive() -> Message:
            # A body without Content-Length (chunked) is counted as it arrives;
            # the HTTPException reaches the app's handlers like any other.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, f"request body is larger than {self.max_body} bytes")
            return message

        await self.app(scope, limited_receive, send)

    async def _too_large(self, send: Send) -> None:
        await _reject(
            send, 413, "PAYLOAD_TOO_LARGE", f"request body is larger than {self.max_body} bytes"
        )


async def _reject(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RateLimitMiddleware:
    """BetterAuth's rate limits on ``/api/auth`` (see api.rate_limit): 429
    ``TOO_MANY_REQUESTS`` with ``Retry-After`` and ``X-Retry-After``, or 503
    ``RATE_LIMIT_UNAVAILABLE`` when a rule that fails closed cannot be
    checked. Before routing, so a refused request costs no more than the
    count."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            auth = getattr(scope["app"].state, STATE_KEY, None) if "app" in scope else None
            if isinstance(auth, Auth) and auth.limiter.enabled and path.startswith(BASE_PATH):
                ip = auth.client_ip.of(HTTPConnection(scope))
                refused = await auth.limiter.check(ip, path[len(BASE_PATH) :])
                if refused is not None:
                    await _refuse(send, refused)
                    return
        await self.app(scope, receive, send)


async def _refuse(send: Send, refused: Refusal) -> None:
    if refused.unavailable:
        status, code = 503, "RATE_LIMIT_UNAVAILABLE"
        message = "rate limits cannot be checked right now: try again shortly"
    else:
        status, code = 429, "TOO_MANY_REQUESTS"
        message = "Too many requests. Please try again later."
    body = json.dumps({"code": code, "message": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    headers += [(k.encode(), v.encode()) for k, v in retry_headers(refused.retry_after).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


#: The demo page: its own scripts, styles and API only; never in a frame.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
_JSON_CSP = b"default-src 'none'; frame-ancestors 'none'"
_ALWAYS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeadersMiddleware(_ResponseHeaders):
    def rewrite(self, scope: Scope, headers: Headers) -> Headers | None:
        names = {k.lower() for k, _ in headers}
        headers += [(k, v) for k, v in _ALWAYS if k not in names]
        json = any(
            k.lower() == b"content-type" and v.startswith(b"application/json") for k, v in headers
        )
        if json and b"content-security-policy" not in names:
            headers.append((b"content-security-policy", _JSON_CSP))
        return headers
