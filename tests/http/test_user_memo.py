"""The user memo of get-session: the user is read once per process, and a
change of the user (from this process, another one, or any other writer on
the database) is seen as soon as the feed delivers it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.store import SqlUserStore
from tests.http.conftest import FERNET_KEY, Service, StatementCounter
from tests.http.test_cookie_cache import copy_to, eventually

STORE_READ = "/api/auth/get-session?disableCookieCache=true"


def user_reads(counter: StatementCounter) -> list[str]:
    return [s for s in counter.statements if "FROM users" in s]


async def roles_of(client: Any) -> list[str]:
    response = await client.get(STORE_READ)
    assert response.headers["x-session-source"] == "store"
    roles: list[str] = response.json()["user"]["roles"]
    return roles


async def test_the_user_is_read_once_while_the_feed_is_live(
    service: Service, count_statements: Callable[[AsyncEngine], StatementCounter]
) -> None:
    await service.sign_up()
    await eventually(lambda: service.auth.revocations.caught_up, "feed connected")
    await service.client.get(STORE_READ)
    with count_statements(service.engine) as counter:
        for _ in range(3):
            response = await service.client.get(STORE_READ)
            assert response.json()["user"]["email"] == "ada@example.com"
    assert user_reads(counter) == []
    assert counter.statements  # the session itself still comes from the store

    feed = service.auth.revocations
    await feed.stop()  # without the feed, the memo is off: every read asks
    with count_statements(service.engine) as counter:
        await service.client.get(STORE_READ)
        await service.client.get(STORE_READ)
    assert len(user_reads(counter)) == 2
    await feed.start()
    with count_statements(service.engine) as counter:
        await service.client.get(STORE_READ)
        await service.client.get(STORE_READ)
    assert len(user_reads(counter)) == 1


async def test_a_change_in_this_process_is_seen_at_once(service: Service) -> None:
    response = await service.sign_up()
    user_id = response.json()["user"]["id"]
    await eventually(lambda: service.auth.revocations.caught_up, "feed connected")
    assert await roles_of(service.client) == []
    users = service.auth.users
    assert users is not None
    await users.set_roles(user_id, ["admin"])
    assert await roles_of(service.client) == ["admin"]  # no waiting for NOTIFY


async def test_a_change_by_any_writer_reaches_every_process(
    service: Service, make_service: Any, pg_url: str, pg_engine: AsyncEngine
) -> None:
    """A writer with no feed of its own (a script, the CLI) changes the user:
    its NOTIFY, sent in its transaction, reaches process B's memo."""
    async with make_service(pg_url) as other_process:
        response = await service.sign_up()
        user_id = response.json()["user"]["id"]
        on_b = copy_to(other_process, service.client)
        await eventually(lambda: other_process.auth.revocations.caught_up, "B's feed connected")
        assert await roles_of(on_b) == []
        memo = other_process.auth.users.memo
        assert memo.get(user_id) is not None

        script = SqlUserStore(pg_engine, TokenBox(FERNET_KEY))
        await script.set_roles(user_id, ["admin", "auditor"])
        await eventually(lambda: memo.get(user_id) is None, "NOTIFY reached process B")
        assert await roles_of(on_b) == ["admin", "auditor"]


async def test_sqlite_reads_the_user_every_time(
    sqlite_service: Service, count_statements: Callable[[AsyncEngine], StatementCounter]
) -> None:
    """No cross-process user changes on SQLite: the memo stays off."""
    await sqlite_service.sign_up()
    with count_statements(sqlite_service.engine) as counter:
        await sqlite_service.client.get(STORE_READ)
        await sqlite_service.client.get(STORE_READ)
    assert len(user_reads(counter)) == 2
