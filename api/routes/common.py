"""Helpers shared by the route modules."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from session_ledger.api.cookies import finish
from session_ledger.api.deps import Auth, get_auth
from session_ledger.api.errors import NO_STORE, ErrorBody


def auth_of(request: Request) -> Auth:
    return get_auth(request)


AuthDep = Annotated[Auth, Depends(auth_of)]


def respond(request: Request, content: Any, status: int = 200) -> JSONResponse:
    """JSON with ``Cache-Control: no-store`` and the queued session cookies."""
    response = JSONResponse(content, status_code=status, headers=dict(NO_STORE))
    finish(request, response)
    return response


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries: these statuses answer ``{code, message}``."""
    return {s: {"model": ErrorBody, "description": "error"} for s in (400, *statuses)}
