"""Every error leaves the service as JSON ``{code, message}``.

* ApiError: raised by the HTTP layer with its own status.
* LedgerError (and the user store's errors): status from ``STATUS_BY_CODE``.
* Request validation (bad JSON, wrong types, missing fields): 400
  VALIDATION_ERROR with the first problem spelled out.
* Starlette's own HTTP errors (404, 405, ...): their status, a code derived
  from it.
* Anything else is a bug: 500 INTERNAL_SERVER_ERROR, logged, no details out.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ledger.errors import LedgerError

log = logging.getLogger(__name__)

NO_STORE = {"cache-control": "no-store"}

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
    return error_response(status_for(exc), code, exc.message)


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


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL_SERVER_ERROR", "internal server error")


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
    app.add_exception_handler(Exception, _unexpected)
