"""The FastAPI application: ``create_app(settings)`` for the service, and
``install`` for host applications that build their own app around our
``router`` (see examples/protected_app.py).

Startup (lifespan): build the Container (unless one is given, as tests do),
start the revocation feed and register it on the event store; shutdown stops
the feed and, for a Container we built, closes it.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from session_ledger.api.audit_routes import audit_router
from session_ledger.api.bootstrap import Container, build
from session_ledger.api.deps import STATE_KEY, Auth
from session_ledger.api.errors import UnhandledErrors, install_error_handlers
from session_ledger.api.metrics import METRICS_PORT_ENV
from session_ledger.api.middleware import (
    PAGE_CSP,
    LimitsMiddleware,
    RateLimitMiddleware,
    SecurityHeadersMiddleware,
    SessionCookieMiddleware,
)
from session_ledger.api.routes import health_router, router
from session_ledger.ledger.clock import Clock
from session_ledger.ledger.config import Settings, load_settings
from session_ledger.ledger.domain.errors import ConfigError

STATIC = Path(__file__).parent / "static"

ContainerFactory = Callable[[Settings], Awaitable[Container]]


def install(app: FastAPI) -> None:
    """Error handlers and middleware of the service, on any FastAPI app."""
    install_error_handlers(app)
    # Order (the last added is outermost): UnhandledErrors around everything,
    # then Limits, so nothing runs for an oversized request; then the rate
    # limits, before any route.
    app.add_middleware(SessionCookieMiddleware)
    app.add_middleware(RateLimitMiddleware)
    app.add_middleware(LimitsMiddleware)
    app.add_middleware(UnhandledErrors)


@asynccontextmanager
async def session_ledger(
    app: FastAPI,
    settings: Settings,
    container: Container | None = None,
    *,
    clock: Clock | None = None,
    migrate: bool = False,
    factory: ContainerFactory | None = None,
) -> AsyncIterator[Auth]:
    """Set the service up on ``app`` for the duration of the block (use in a lifespan).

    The Container is ``container``, else ``await factory(settings)``, else the
    default build (built-in user store); one built here is closed on exit."""
    owned = container is None
    if container is None and factory is not None:
        container = await factory(settings)
    elif container is None:
        container = await build(settings, clock=clock, migrate=migrate, builtin_users=True)
    auth = Auth.create(container)
    await auth.start()
    setattr(app.state, STATE_KEY, auth)
    try:
        yield auth
    finally:
        await auth.stop()
        if owned:
            await container.close()


def create_app(
    settings: Settings | None = None,
    container: Container | None = None,
    *,
    clock: Clock | None = None,
    migrate: bool = False,
    demo: bool = True,
    factory: ContainerFactory | None = None,
) -> FastAPI:
    """The service: /api/auth, /healthz and (``demo``) the demo page at /."""
    settings = settings or (container.settings if container else load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with session_ledger(
            app, settings, container, clock=clock, migrate=migrate, factory=factory
        ):
            yield

    docs = settings.docs_enabled
    app = FastAPI(
        title="session-ledger",
        version="0.1.0",
        description="BetterAuth-compatible session endpoints on an event-sourced ledger.",
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    install(app)
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(router)
    app.include_router(audit_router)
    app.include_router(health_router)
    if demo:
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(
                STATIC / "index.html",
                headers={"cache-control": "no-cache", "content-security-policy": PAGE_CSP},
            )

        @app.get("/favicon.ico", include_in_schema=False)
        async def favicon() -> FileResponse:
            # Browsers ask for it whatever the page links; the same picture.
            return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    return app


def get_auth_of(app: FastAPI) -> Auth:
    auth = getattr(app.state, STATE_KEY)
    assert isinstance(auth, Auth)
    return auth


def app_from_env() -> FastAPI:
    """uvicorn factory (``session-ledger serve``): settings from the environment.

    Settings that cannot load (a bad value, unreadable TOML, a missing config
    file) are one line in uvicorn's log and exit code 2, not a traceback."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        logging.getLogger("uvicorn.error").error("%s", exc.message)
        raise SystemExit(2) from None
    app = create_app(settings)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with inner(app):
            port = os.environ.get(METRICS_PORT_ENV)
            if port:
                get_auth_of(app).metrics.serve(int(port))
            # Everything built at startup (SQLAlchemy's metadata, pydantic's
            # validators, the routes) lives as long as the process: moved out
            # of the collector's generations, full collections no longer walk
            # it. Full collections over it paused every request in flight
            # for tens of milliseconds (get-session p99).
            gc.freeze()
            yield

    app.router.lifespan_context = lifespan
    return app
