"""Bounded password hashing, rehash on parameter change, and the password
policy at sign-up (HTTP) and in ``session-ledger users create``."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from typer.testing import CliRunner

from session_ledger.api.cli import app
from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.errors import InvalidEmailOrPasswordError
from session_ledger.api.users.passwords import BoundedHashing
from session_ledger.api.users.schema import users
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.config import PasswordSettings
from session_ledger.ledger.domain.errors import ServerBusyError
from tests.http.conftest import PASSWORD, Service

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Gate:
    """Work that blocks until released, recording how many ran at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def work(self) -> str:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.open.wait(10)
        with self.lock:
            self.running -= 1
        return "done"


async def test_a_burst_runs_at_most_concurrency_at_once_and_refuses_past_the_queue() -> None:
    hashing = BoundedHashing(CHEAP, PasswordSettings(hash_concurrency=2, hash_queue=3))
    gate = Gate()
    try:
        tasks = [asyncio.create_task(hashing.run(gate.work)) for _ in range(10)]
        await asyncio.sleep(0.2)
        refused = [t for t in tasks if t.done()]
        assert len(refused) == 5  # 2 running, 3 queued, 5 turned away at once
        for task in refused:
            error = task.exception()
            assert isinstance(error, ServerBusyError)
            assert error.code == "SERVER_BUSY"
            assert error.retry_after >= 1
        gate.open.set()
        done = await asyncio.gather(*(t for t in tasks if t not in refused))
        assert done == ["done"] * 5
        assert gate.peak == 2
        assert hashing.refused == 5
    finally:
        gate.open.set()
        hashing.close()


async def test_a_wait_longer_than_hash_wait_is_refused() -> None:
    hashing = BoundedHashing(
        CHEAP, PasswordSettings(hash_concurrency=1, hash_queue=5, hash_wait=0.2)
    )
    gate = Gate()
    try:
        first = asyncio.create_task(hashing.run(gate.work))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(ServerBusyError):
            await hashing.run(gate.work)
        assert 0.15 < time.monotonic() - started < 2
        gate.open.set()
        assert await first == "done"
    finally:
        gate.open.set()
        hashing.close()


async def test_a_cancelled_caller_keeps_its_slot_until_the_thread_is_done() -> None:
    hashing = BoundedHashing(CHEAP, PasswordSettings(hash_concurrency=1, hash_queue=0))
    gate = Gate()
    try:
        first = asyncio.create_task(hashing.run(gate.work))
        await asyncio.sleep(0.05)
        first.cancel()
        await asyncio.sleep(0.05)
        # The computation still runs: a new one must not start beside it.
        with pytest.raises(ServerBusyError):
            await hashing.run(gate.work)
        gate.open.set()
        await asyncio.sleep(0.1)
        assert await hashing.run(lambda: "next") == "next"
        assert gate.peak == 1
    finally:
        gate.open.set()
        hashing.close()


async def test_hashes_made_with_other_parameters_are_redone_at_sign_in(
    pg_engine: AsyncEngine,
) -> None:
    old = SqlUserStore(pg_engine, TokenBox(None), hasher=CHEAP)
    user = await old.create_user("grace@example.com", PASSWORD)
    settings = PasswordSettings(hash_memory_kib=2048, hash_time_cost=1, hash_parallelism=1)
    new = SqlUserStore(pg_engine, TokenBox(None), password=settings)

    async def stored() -> str:
        async with pg_engine.connect() as conn:
            value = await conn.scalar(select(users.c.password_hash).where(users.c.id == user.id))
        assert isinstance(value, str)
        return value

    before = await stored()
    assert before.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    with pytest.raises(InvalidEmailOrPasswordError) as wrong:
        await new.authenticate("grace@example.com", "not the password")
    assert wrong.value.user_id == user.id
    assert await stored() == before  # a wrong password never rewrites the hash
    assert (await new.authenticate("grace@example.com", PASSWORD)).id == user.id
    after = await stored()
    assert after.startswith("$argon2id$v=19$m=2048,t=1,p=1$")
    assert (await new.authenticate("grace@example.com", PASSWORD)).id == user.id
    assert await stored() == after  # current parameters: left alone
    old.close()
    new.close()


async def test_sign_up_refuses_weak_passwords_with_a_helpful_message(service: Service) -> None:
    for password in ["password", "        ", "ada@example.com", "zzzzyyyy"]:
        response = await service.client.post(
            "/api/auth/sign-up/email",
            json={"email": "ada@example.com", "password": password, "name": "Ada"},
        )
        assert response.status_code == 400, password
        body = response.json()
        assert body["code"] == "PASSWORD_TOO_WEAK"
        assert body["message"]
    assert await service.head() == 0


async def test_a_sign_in_burst_past_the_hashing_queue_answers_503_server_busy(
    make_service: Any, pg_url: str
) -> None:
    password = {"hash_concurrency": 1, "hash_queue": 0}
    async with make_service(pg_url, password=password) as svc:
        await svc.sign_up()
        # A slow hasher, so the burst really overlaps.
        svc.auth.users.hashing.hasher = PasswordHasher(time_cost=3, memory_cost=32768)
        body = {"email": "ada@example.com", "password": "wrong but long enough"}
        answers = await asyncio.gather(
            *(svc.client.post("/api/auth/sign-in/email", json=body) for _ in range(8))
        )
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {401, 503}
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.json()["code"] == "SERVER_BUSY"
    assert busy.headers["retry-after"] == busy.headers["x-retry-after"] == "1"


def test_users_create_applies_the_policy(pg_url: str) -> None:
    runner = CliRunner()
    weak = runner.invoke(
        app,
        ["users", "create", "ops@example.com", "--password", "password", "--database-url", pg_url],
    )
    assert weak.exit_code == 2
    assert "common passwords" in weak.output
    assert "Traceback" not in weak.output
    strong = runner.invoke(
        app,
        [
            "users",
            "create",
            "ops@example.com",
            "--password",
            "glacier 7 marmalade",
            "--database-url",
            pg_url,
        ],
    )
    assert strong.exit_code == 0, strong.output
