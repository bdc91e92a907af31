"""Every command, against a database it cannot use, prints one line saying
what could not be reached and how to fix it, and exits 2 (never a
traceback); ``--debug`` shows the traceback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from session_ledger.api.cli.serve import _warn_if_limits_per_process
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.policy import SessionPolicy
from tests.audit.history import make_ledger
from tests.cli.conftest import cli, console_script
from tests.e2e.conftest import ROOT, free_port
from tests.support.db import PgServer, migrate, unique_name
from tests.support.events import T0

#: One invocation of every command that touches the database.
COMMANDS = [
    ["migrate"],
    ["status"],
    ["audit", "user", "u1"],
    ["audit", "session", "s1", "-f", "json"],
    ["audit", "ip", "10.0.0.0/8"],
    ["audit", "attempts", "--ip", "10.0.0.0/8"],
    ["audit", "active-at", "now"],
    ["audit", "revocations"],
    ["audit", "counts"],
    ["audit", "digest"],
    ["verify", "--ledger"],
    ["verify", "--projections"],
    ["verify-ledger"],
    ["replay"],
    ["users", "list"],
    ["users", "show", "a@b.c"],
    ["users", "create", "a@b.c", "--password", "correct horse battery"],
    ["users", "link-account", "u1", "github", "42"],
]
IDS = [" ".join(c[:2]) for c in COMMANDS]


def _unreachable() -> tuple[str, str]:
    port = free_port()
    return f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x", (
        f"error: cannot reach the database on 127.0.0.1:{port}/x (connection refused): "
        "start it or fix SESSION_LEDGER_DATABASE_URL"
    )


def _missing_database(pg_server: PgServer) -> tuple[str, str]:
    name = unique_name("sl_missing_")
    return pg_server.url_for(name), f'error: PostgreSQL database "{name}" does not exist on '


def _unopenable(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "no" / "such" / "dir" / "ledger.db"
    return f"sqlite+aiosqlite:///{path}", f"error: cannot open the SQLite database {path}: "


def _assert_one_line(stderr: str, start: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(start), lines[0]
    assert "Traceback" not in stderr


def _fails_in_one_line(args: list[str], url: str, message: str) -> None:
    result = cli(*args, "--database-url", url)
    assert result.exit_code == 2, result.output
    _assert_one_line(result.stderr, message)
    assert result.stdout == ""


@pytest.mark.parametrize("args", COMMANDS, ids=IDS)
def test_unreachable_server(args: list[str]) -> None:
    _fails_in_one_line(args, *_unreachable())


@pytest.mark.pg
@pytest.mark.parametrize("args", COMMANDS, ids=IDS)
def test_missing_database(args: list[str], pg_server: PgServer) -> None:
    _fails_in_one_line(args, *_missing_database(pg_server))


@pytest.mark.parametrize("args", COMMANDS, ids=IDS)
def test_unopenable_sqlite_file(args: list[str], tmp_path: Path) -> None:
    _fails_in_one_line(args, *_unopenable(tmp_path))


def test_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    result = cli("audit", "user", "u1", "--database-url", url)
    assert result.exit_code == 2
    _assert_one_line(result.stderr, "error: the database ")
    assert "run `session-ledger migrate`" in result.stderr


# ------------------------------------------------- the installed script


def test_console_script_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    url, message = _unopenable(tmp_path)
    done = console_script("status", "--database-url", url)
    assert done.returncode == 2
    _assert_one_line(done.stderr, message)
    assert done.stdout == ""
    debug = console_script("--debug", "status", "--database-url", url)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "unable to open database file" in debug.stderr


def test_the_debug_variable_shows_the_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = _unopenable(tmp_path)
    monkeypatch.setenv("SESSION_LEDGER_DEBUG", "1")
    result = cli("status", "--database-url", url)
    assert result.exit_code != 0
    assert "unable to open database file" in str(result.exception)  # raised, not described


def test_bad_settings_are_one_line_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bad.toml").write_text("[session\n")
    monkeypatch.setenv("SESSION_LEDGER_CONFIG_FILE", str(tmp_path / "bad.toml"))
    for args in (["status"], ["serve"], ["worker", "--once"]):
        result = cli(*args)
        assert result.exit_code == 2, result.output
        _assert_one_line(result.stderr, f"error: config file {tmp_path / 'bad.toml'}: invalid TOML")
    monkeypatch.delenv("SESSION_LEDGER_CONFIG_FILE")
    monkeypatch.setenv("SESSION_LEDGER_TRUSTED_ORIGINS", '["http://a.example"')
    result = cli("serve")
    _assert_one_line(result.stderr, "error: invalid setting trusted_origins: ")


def test_uvicorn_alone_says_the_same_in_one_line(tmp_path: Path) -> None:
    """The factory of plain uvicorn (``serve``'s too): one line, exit 2."""
    (tmp_path / "bad.toml").write_text("x = \n")
    env = {"SESSION_LEDGER_CONFIG_FILE": str(tmp_path / "bad.toml")}
    done = console_script(
        "session_ledger.api.app:app_from_env",
        "--factory",
        "--port",
        "0",
        env=env,
        program="uvicorn",
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"ERROR:    config file {tmp_path / 'bad.toml'}: invalid TOML")


def test_run_sh_is_one_line_too(tmp_path: Path) -> None:
    """scripts/run.sh: set up, then serve (here on a SQLite file it cannot open)."""
    url, message = _unopenable(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
    done = subprocess.run(
        [str(ROOT / "scripts" / "run.sh"), "--port", "0"],
        env={**env, "SESSION_LEDGER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    _assert_one_line(done.stderr, message)


# ---------------------------------------------------------------- serve


def test_a_port_in_use_is_said_before_serving(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = console_script("serve", "--port", str(port), "--database-url", url)
    assert done.returncode == 2
    _assert_one_line(done.stderr, f"error: port {port} on 127.0.0.1 is in use")
    assert "serving on" not in done.stdout
    assert not (tmp_path / "ledger.db").exists()  # said before anything was done


def test_reload_and_workers_do_not_go_together() -> None:
    result = cli("serve", "--reload", "--workers", "2")
    assert result.exit_code == 2
    _assert_one_line(result.stderr, "error: --reload runs one process")


def test_metrics_port_is_one_process_and_must_be_free(tmp_path: Path) -> None:
    """Each worker would bind the metrics port (the second failing in its
    lifespan, a traceback); a taken port is said before anything is done."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    workers = cli("serve", "--workers", "2", "--metrics-port", str(free_port()))
    assert workers.exit_code == 2
    _assert_one_line(workers.stderr, "error: --metrics-port serves one process's metrics")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("serve", "--port", "0", "--metrics-port", str(port), "--database-url", url)
    assert done.exit_code == 2
    _assert_one_line(
        done.stderr,
        f"error: port {port} on 127.0.0.1 is in use (another server?): pick one "
        "with --metrics-port",
    )
    assert not (tmp_path / "ledger.db").exists()


@pytest.mark.parametrize(
    ("workers", "settings", "warned"),
    [
        (2, {"rate_limit": {"enabled": True}}, True),
        (1, {"rate_limit": {"enabled": True}}, False),
        (2, {"rate_limit": {"enabled": True}, "redis": {"url": "redis://127.0.0.1:1"}}, False),
        (2, {}, False),  # limits off (development)
    ],
)
def test_several_processes_counting_limits_in_memory_are_warned(
    workers: int, settings: dict[str, Any], warned: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    _warn_if_limits_per_process(load_settings(**settings), workers)
    stderr = capsys.readouterr().err
    assert ("warning: rate limits are counted in each process's memory" in stderr) is warned
    assert stderr.count("\n") == (1 if warned else 0)


# ------------------------------------------------------ what used to fail


def test_replay_all_is_every_configured_projection(tmp_path: Path) -> None:
    """On the default SQLite setup (no Redis) ``all`` is the table alone."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    asyncio.run(migrate(url))
    done = console_script("replay", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].startswith("table: 0 events applied")
    assert "redis" not in done.stdout


async def _one_session(url: str) -> None:
    await migrate(url)
    engine = make_engine(url)
    try:
        await make_ledger(engine, ManualClock(T0), SessionPolicy()).create_session("u1")
    finally:
        await engine.dispose()


def test_audit_digest_says_how_to_record_one(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"
    asyncio.run(migrate(url))
    empty = cli("audit", "digest", "--database-url", url)
    assert (empty.exit_code, empty.stderr.strip()) == (1, "no digest: the ledger is empty")

    asyncio.run(_one_session(url))
    none_yet = cli("audit", "digest", "--database-url", url, columns=200)
    assert none_yet.exit_code == 1
    assert "no digest recorded yet (the ledger has 1 events)" in none_yet.stderr
    assert "`session-ledger worker --once --only digest`" in none_yet.stderr
    assert "ledger is empty" not in none_yet.stderr
    # (A process of its own: the worker configures the process's logging.)
    recorded = console_script("worker", "--once", "--only", "digest", "--database-url", url)
    assert recorded.returncode == 0, recorded.stderr
    token = cli("audit", "digest", "--database-url", url)
    assert token.exit_code == 0
    assert token.stdout.startswith("1:")
