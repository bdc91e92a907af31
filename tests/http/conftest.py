"""The HTTP service under test: the real app (create_app) on a real database,
driven in-process by httpx.AsyncClient over ASGITransport, with a ManualClock.

``service`` runs on PostgreSQL (the production store); ``sqlite_service`` on
the embedded default. Password hashing uses cheap argon2id parameters: the
production parameters are tested once in test_users.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from cryptography.fernet import Fernet
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api.app import create_app
from session_ledger.api.bootstrap import Container, build
from session_ledger.api.deps import STATE_KEY, Auth
from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.clock import Clock, ManualClock
from session_ledger.ledger.config import Settings, load_settings
from session_ledger.ledger.db import make_engine

BASE_URL = "http://testserver"
SECRET = "http-test-secret-0123456789abcdef-0123456789"
PASSWORD = "correct horse battery"
FERNET_KEY = Fernet.generate_key().decode()
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


#: The session fields the tests set over HTTP (update-session takes only declared ones).
ADDITIONAL_FIELDS: dict[str, Any] = {
    "theme": {"type": "string"},
    "notes": {"type": "string"},
    "a": {"type": "number"},
    "k": {"type": "number"},
    "x": {"type": "array"},
    "plan": {"type": "string", "default": "free", "input": False},
}


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "base_url": BASE_URL,
        "secrets": [SECRET],
        "encryption_key": FERNET_KEY,
        "session": {"additional_fields": ADDITIONAL_FIELDS},
    }
    values.update(overrides)
    return load_settings(**values)


@dataclass
class Service:
    """One running app instance (one "process") and helpers to drive it."""

    app: FastAPI
    container: Container
    clock: ManualClock
    client: httpx.AsyncClient
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def auth(self) -> Auth:
        auth = getattr(self.app.state, STATE_KEY)
        assert isinstance(auth, Auth)
        return auth

    @property
    def engine(self) -> AsyncEngine:
        return self.container.engine

    @property
    def settings(self) -> Settings:
        return self.container.settings

    def new_client(self, **headers: str) -> httpx.AsyncClient:
        """A separate browser: its own cookie jar, same app."""
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app),
            base_url=BASE_URL,
            headers={"origin": BASE_URL, "user-agent": "pytest-browser", **headers},
        )
        self.clients.append(client)
        return client

    async def sign_up(
        self,
        email: str = "ada@example.com",
        *,
        client: httpx.AsyncClient | None = None,
        remember_me: bool = True,
        name: str = "Ada",
    ) -> httpx.Response:
        response = await (client or self.client).post(
            "/api/auth/sign-up/email",
            json={"email": email, "password": PASSWORD, "name": name, "rememberMe": remember_me},
        )
        assert response.status_code == 200, response.text
        return response

    async def sign_in(
        self,
        email: str = "ada@example.com",
        *,
        client: httpx.AsyncClient | None = None,
        remember_me: bool = True,
    ) -> httpx.Response:
        response = await (client or self.client).post(
            "/api/auth/sign-in/email",
            json={"email": email, "password": PASSWORD, "rememberMe": remember_me},
        )
        assert response.status_code == 200, response.text
        return response

    async def head(self) -> int:
        return await self.container.store.head()


async def build_container(url: str, clock: Clock, **overrides: Any) -> Container:
    settings = make_settings(url, **overrides)
    engine = make_engine(url)
    key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    users = SqlUserStore(
        engine, TokenBox(key), clock=clock, hasher=CHEAP_HASHER, password=settings.password
    )
    return await build(settings, clock=clock, users=users, engine=engine)


@asynccontextmanager
async def running(url: str, clock: ManualClock, **overrides: Any) -> AsyncIterator[Service]:
    container = await build_container(url, clock, **overrides)
    app = create_app(container=container)
    try:
        async with app.router.lifespan_context(app):
            service = Service(app, container, clock, client=httpx.AsyncClient())
            service.client = service.new_client()
            try:
                yield service
            finally:
                for client in service.clients:
                    await client.aclose()
    finally:
        await container.close()


ServiceFactory = Callable[..., Any]


@pytest.fixture
async def service(pg_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    """The app on a fresh PostgreSQL database."""
    async with running(pg_url, clock) as svc:
        yield svc


@pytest.fixture
async def sqlite_service(sqlite_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    """The app on a fresh SQLite file (the embedded default)."""
    async with running(sqlite_url, clock) as svc:
        yield svc


@pytest.fixture
def make_service(clock: ManualClock) -> ServiceFactory:
    """``async with make_service(url, **settings) as svc``: more app instances."""

    def factory(url: str, **overrides: Any) -> Any:
        return running(url, clock, **overrides)

    return factory


class StatementCounter:
    """Counts SQL statements sent through an engine (cursor executions)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine.sync_engine
        self.statements: list[str] = []

    def _on_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._on_execute)


@pytest.fixture
def count_statements() -> Callable[[AsyncEngine], StatementCounter]:
    return StatementCounter


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def cookie_named(response: httpx.Response, name: str) -> str | None:
    for header in set_cookies(response):
        if header.split("=", 1)[0] == name:
            return header
    return None
