"""Wiring happens once, in api.bootstrap: starting and stopping the app
connects nothing new (no callbacks appended, no memo attached on the way)."""

from __future__ import annotations

from session_ledger.api.app import create_app
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.clock import ManualClock
from tests.http.conftest import build_container


async def _check(url: str, clock: ManualClock, *, memo_kept: bool) -> None:
    container = await build_container(url, clock)
    try:
        callbacks = list(container.store.after_commit)
        assert container.revocations.on_commit in callbacks
        users = container.ledger.users
        assert isinstance(users, SqlUserStore)
        assert (container.revocations._users is users.memo) == memo_kept
        app = create_app(container=container)
        async with app.router.lifespan_context(app):
            assert container.store.after_commit == callbacks
        assert container.store.after_commit == callbacks
    finally:
        await container.close()


async def test_postgres_wiring_is_built_once(pg_url: str, clock: ManualClock) -> None:
    await _check(pg_url, clock, memo_kept=True)


async def test_sqlite_wiring_is_built_once(sqlite_url: str, clock: ManualClock) -> None:
    # No cross-process user changes on SQLite: the memo is not kept (stays off).
    await _check(sqlite_url, clock, memo_kept=False)
