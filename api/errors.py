"""Every error leaves the service as JSON ``{code, message}``.

* ApiError: raised by the HTTP layer with its own status.
* LedgerError (and the user store's errors): status from ``STATUS_BY_CODE``.
* Request validation (bad JSON, wrong types, missing fields): 400
  VALIDATION_ERROR with the first problem spelled out.
* Starlette's own HTTP errors (404, 405, ...): their status, a code derived
  from it.
* A database or Redis that cannot be reached or cannot serve now
  (:func:`ledger.db.unavailable`): 503 SERVICE_UNAVAILABLE with
  ``Retry-After``, one log line.
* Anything else is a bug: 500 INTERNAL_SERVER_ERROR, logged with its
  traceback, no details out.

The last two are answered by :class:`UnhandledErrors`, the outermost
middleware, and never by Starlette's ServerErrorMiddleware: that one
re-raises after answering, and uvicorn then closes the keep-alive
connection (without saying ``Connection: close``), so the client's next
request on it failed too.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from session_ledger.ledger.db import unavailable
from session_ledger.ledger.domain.errors import LedgerError, RetryLaterError

log = logging.getLogger(__name__)

NO_STORE = {"cache-control": "no-store"}
#: Seconds a client should wait before retrying when a dependency is down.
RETRY_AFTER = 1

STATUS_BY_CODE: dict[str, int] = {
    "SESSION_NOT_FOUND": 404,
    "NOT_SESSION_OWNER": 404,
    "SESSION_ENDED": 401,
    "INVALID_TOKEN": 401,
    "SESSION_NOT_FRESH": 403,
    "INVALID_COMMAND": 400,
    "INVALID_FIELDS": 400,
    "CONCURRENCY_CONFLICT": 409,
    "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL": 422,
    "INVALID_EMAIL_OR_PASSWORD": 401,
    "PASSWORD_TOO_SHORT": 400,
    "PASSWORD_TOO_LONG": 400,
    "INVALID_EMAIL": 400,
    "VALIDATION_ERROR": 400,
    "USER_NOT_FOUND": 404,
    "PASSWORD_TOO_WEAK": 400,
    "TOO_MANY_REQUESTS": 429,
    "SERVER_BUSY": 503,
    "LEDGER_ERROR": 503,
}


_HTTP_CODES = {413: "PAYLOAD_TOO_LARGE", 400: "VALIDATION_ERROR"}


class ErrorBody(BaseModel):
    """The shape of every error response."""

    code: str
    message: str


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message},
        status_code=status,
        headers={**NO_STORE, **(headers or {})},
    )


def status_for(exc: LedgerError) -> int:
    return STATUS_BY_CODE.get(exc.code, 400)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _ledger_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LedgerError)
    code = "VALIDATION_ERROR" if exc.code == "INVALID_COMMAND" else exc.code
    headers = retry_headers(exc.retry_after) if isinstance(exc, RetryLaterError) else None
    return error_response(status_for(exc), code, exc.message, headers)


def retry_headers(seconds: int) -> dict[str, str]:
    """``Retry-After`` (HTTP) and ``X-Retry-After`` (what BetterAuth sends)."""
    value = str(max(1, seconds))
    return {"retry-after": value, "x-retry-after": value}


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "VALIDATION_ERROR", describe_validation(exc.errors()))


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "Error"
    code = _HTTP_CODES.get(exc.status_code) or phrase.upper().replace(" ", "_").replace("-", "_")
    message = exc.detail if isinstance(exc.detail, str) else phrase
    return error_response(exc.status_code, code, message, dict(exc.headers or {}))


def is_unavailable(exc: BaseException) -> bool:
    """A dependency that cannot be reached or cannot serve now."""
    return unavailable(exc) or isinstance(exc, RedisConnectionError | RedisTimeoutError)


def unhandled_response(exc: Exception, scope: Scope) -> JSONResponse:
    """503 for an unavailable dependency (one log line), else 500 (a bug:
    logged with its traceback)."""
    if is_unavailable(exc):
        log.warning(
            "service unavailable: %s %s: %s: %s",
            scope.get("method", ""),
            scope.get("path", ""),
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
        return error_response(
            503,
            "SERVICE_UNAVAILABLE",
            "a service this request needs is unavailable; retry shortly",
            retry_headers(RETRY_AFTER),
        )
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL_SERVER_ERROR", "internal server error")


class UnhandledErrors:
    """The outermost middleware: an exception no handler took becomes a
    response here (see the module docstring). When the response had already
    started there is nothing left to answer with: the error goes on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise
            await unhandled_response(exc, scope)(scope, receive, send)


def describe_validation(errors: Any) -> str:
    """One line naming the first problem: ``body.email: Field required``."""
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON"
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    return f"{loc}: {first.get('msg', 'invalid value')}"


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Everything else: UnhandledErrors (api.app.install adds it outermost).
