"""``session-ledger replay`` and ``session-ledger verify --projections``:
exit 0 when consistent, 1 on differences, 2 on bad arguments."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from session_ledger.api.cli import app
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.service import SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel

runner = CliRunner()


async def seed(url: str) -> None:
    engine = make_engine(url)
    try:
        store = EventStore(engine, inline_projections=[SessionTableProjection()])
        ledger = SessionLedger(store=store, read_model=SqlSessionReadModel(engine))
        for i in range(3):
            _, token = await ledger.create_session(f"u{i}")
        await ledger.sign_out(token)
    finally:
        await engine.dispose()


async def tamper(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE sessions SET ip = '6.6.6.6'"))
    finally:
        await engine.dispose()


@pytest.fixture
def cli_db(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("SESSION_LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("SESSION_LEDGER_REDIS__URL", raising=False)
    return sqlite_url


def test_verify_and_replay_exit_codes(cli_db: str) -> None:
    asyncio.run(seed(cli_db))
    result = runner.invoke(app, ["verify", "--projections"])
    assert result.exit_code == 0, result.output
    assert "0 difference(s)" in result.output
    asyncio.run(tamper(cli_db))
    result = runner.invoke(app, ["verify", "--projections"])
    assert result.exit_code == 1
    assert "ip: expected None, got '6.6.6.6'" in result.output
    result = runner.invoke(app, ["replay", "--projection", "table", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["verify", "--projections"]).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["verify"],
        ["replay", "--projection", "bogus"],
        ["replay", "--batch-size", "0"],
        ["replay", "--projection", "redis"],
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(cli_db: str, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
