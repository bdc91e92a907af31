"""What no route handles: a dependency that cannot be reached is 503
SERVICE_UNAVAILABLE with Retry-After and one log line; anything else is a
500 with its traceback logged once. Either way the answer comes from our
own middleware, not from Starlette's ServerErrorMiddleware, which re-raised
after answering (uvicorn then dropped the keep-alive connection)."""

from __future__ import annotations

import logging
import sqlite3

import httpx
import pytest
from asyncpg.exceptions import CannotConnectNowError
from fastapi import FastAPI
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError, OperationalError

from session_ledger.api.app import install
from session_ledger.ledger.db import unavailable


def _full() -> sqlite3.OperationalError:
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = 13
    return error


RAISED: dict[str, Exception] = {
    "refused": ConnectionRefusedError(111, "Connect call failed"),
    "starting": CannotConnectNowError("the database system is starting up"),
    "lost": DBAPIError("SELECT 1", None, Exception("closed"), connection_invalidated=True),
    "full": OperationalError("INSERT", None, _full()),
    "redis": RedisConnectionError("Error 111 connecting"),
    "bug": RuntimeError("a bug"),
    "bad sql": OperationalError("SELEC", None, sqlite3.OperationalError("syntax error")),
}


def app() -> FastAPI:
    application = FastAPI()
    install(application)

    @application.get("/raise/{kind}")
    async def raising(kind: str) -> None:
        raise RAISED[kind]

    return application


async def raised(kind: str, caplog: pytest.LogCaptureFixture) -> httpx.Response:
    """The answer to a request whose route raises ``RAISED[kind]``; ASGITransport
    would raise what reached it instead."""
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with caplog.at_level(logging.WARNING):
            return await client.get(f"/raise/{kind}")


@pytest.mark.parametrize("kind", ["refused", "starting", "lost", "full", "redis"])
async def test_an_unreachable_dependency_is_503_with_retry_after(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = await raised(kind, caplog)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["code"] == "SERVICE_UNAVAILABLE"
    assert len(caplog.records) == 1
    assert caplog.records[0].exc_info is None  # one line, no traceback


@pytest.mark.parametrize("kind", ["bug", "bad sql"])
async def test_a_bug_is_500_logged_once_with_its_traceback(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = await raised(kind, caplog)
    assert response.status_code == 500
    assert response.json() == {"code": "INTERNAL_SERVER_ERROR", "message": "internal server error"}
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    assert caplog.records[0].exc_info is not None


def test_only_not_now_errors_count_as_unavailable() -> None:
    assert all(unavailable(RAISED[k]) for k in ("refused", "starting", "lost", "full"))
    assert not unavailable(RAISED["bug"])
    assert not unavailable(RAISED["bad sql"])
