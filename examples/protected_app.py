"""A host application protecting its own routes with session-ledger.

The FastAPI counterpart of the spec's Next.js examples:

* ``auth.api.getSession({headers})`` in a server component / route handler
  -> the ``current_session`` dependency (``OptionalSession``);
* middleware redirecting signed-out users -> ``require_session``
  (``RequiredSession``: 401 ``{code, message}``), or a redirect by hand;
* a sensitive action -> ``require_fresh_session`` (403 SESSION_NOT_FRESH);
* CSRF: POST / PUT / PATCH / DELETE routes that authenticate by cookie get
  the same Origin check as /api/auth (403 INVALID_ORIGIN from elsewhere);
  ``@csrf_exempt`` opts a route out, bearer requests never need it.

Run it with the virtualenv active (SQLite in ./session-ledger.db, migrated on
start; a secret is required, and forwarding headers are ours to read, not
uvicorn's)::

    export SESSION_LEDGER_SECRETS=$(openssl rand -base64 32)
    export SESSION_LEDGER_BASE_URL=http://127.0.0.1:8000
    uvicorn examples.protected_app:app --port 8000 --no-proxy-headers

then sign up on http://127.0.0.1:8000/api/auth/sign-up/email and call
http://127.0.0.1:8000/api/protected with the cookie.

``SESSION_LEDGER_BASE_URL`` is the origin browsers use for this app: the
CSRF check accepts state-changing requests (sign-in, sign-out, revoke) only
from it and ``trusted_origins``. ``session-ledger serve`` sets it from its
own address; under plain uvicorn say it yourself (the default,
``http://localhost:8000``, does not match ``127.0.0.1`` or another port).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from session_ledger.api.app import install, session_ledger
from session_ledger.api.csrf import csrf_exempt
from session_ledger.api.deps import FreshSession, OptionalSession, RequiredSession
from session_ledger.api.routes import router
from session_ledger.ledger.config import load_settings

settings = load_settings()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with session_ledger(app, settings, migrate=True):
        yield


app = FastAPI(title="protected example", lifespan=lifespan)
install(app)  # {code, message} errors, body/cookie limits, cookie refresh on the way out
app.include_router(router)  # /api/auth/*: sign-in, get-session, list-sessions, ...


@app.get("/api/protected")
async def protected(session: RequiredSession) -> dict[str, Any]:
    """Like a route handler that returns 401 unless getSession() finds a session."""
    return {"message": f"hello {session.user['email']}", "sessionId": session.id}


@app.get("/dashboard", response_model=None)
async def dashboard(session: OptionalSession) -> dict[str, Any] | RedirectResponse:
    """Like middleware.ts: signed-out visitors are sent to the sign-in page."""
    if session is None:
        return RedirectResponse("/sign-in", status_code=307)
    return {"user": session.user, "expiresAt": session.session["expiresAt"]}


@app.post("/api/change-email")
async def change_email(session: FreshSession) -> dict[str, Any]:
    """A sensitive action: needs a session younger than ``fresh_age``."""
    return {"ok": True, "userId": session.user_id}


@app.post("/api/preferences")
async def save_preferences(session: RequiredSession) -> dict[str, Any]:
    """A state-changing route: refused (403) when posted from another origin."""
    return {"saved": True, "userId": session.user_id}


@app.post("/api/hooks/ping")
@csrf_exempt
async def ping(session: OptionalSession) -> dict[str, Any]:
    """Opted out of the Origin check (e.g. posted by a partner site by design)."""
    return {"pong": True, "signedIn": session is not None}
