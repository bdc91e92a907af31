"""The HTTP endpoints. ``router`` holds everything under ``/api/auth``; host
applications mount it with ``app.include_router(router)`` (see
examples/protected_app.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from session_ledger.api.deps import check_origin
from session_ledger.api.routes.accounts import accounts_router
from session_ledger.api.routes.email import email_router
from session_ledger.api.routes.health import health_router
from session_ledger.api.routes.history import history_router
from session_ledger.api.routes.session import session_router

router = APIRouter(prefix="/api/auth", dependencies=[Depends(check_origin)])
router.include_router(session_router)
router.include_router(email_router)
router.include_router(history_router)
router.include_router(accounts_router)

__all__ = ["health_router", "router"]
