"""Help that starts at once and says what to type."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer
from typer import _click
from typer.core import TyperGroup

from session_ledger.api.cli import app
from tests.cli.conftest import cli, console_script

#: Libraries a command imports when it runs, never to show help.
HEAVY = [
    "sqlalchemy",
    "pydantic",
    "fastapi",
    "uvicorn",
    "alembic",
    "redis",
    "asyncpg",
    "prometheus_client",
    "limits",
    "zxcvbn",
]


def _commands() -> list[list[str]]:
    """Every command path: [], ["audit"], ["audit", "user"], ..."""
    paths: list[list[str]] = []

    def walk(command: _click.Command, path: list[str]) -> None:
        paths.append(path)
        if isinstance(command, TyperGroup):
            ctx = _click.Context(command)
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


COMMANDS = _commands()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--help"],
        ["audit", "user", "--help"],
        ["audit", "attempts", "--help"],
        ["serve", "--help"],
    ],
)
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    """What the CLI loads to show help (the start-up that bench.cli_start times)."""
    code = (
        "import contextlib, json, sys\n"
        f"sys.argv = ['session-ledger', *{args!r}]\n"
        "from session_ledger.api.cli import main\n"
        "if sys.argv[1:]:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        "        main()\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == []


def test_help_is_the_console_scripts_first_answer() -> None:
    done = console_script("audit", "user", "--help")
    assert done.returncode == 0
    assert "Usage: session-ledger audit user [OPTIONS] {USER_ID}" in done.stdout


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) or "(top)" for p in COMMANDS])
def test_help_shows_metavars_not_python_types(path: list[str]) -> None:
    result = cli(*path, "--help", columns=200)
    assert result.exit_code == 0, result.output
    assert not re.findall(r"<(?:bool|str|int|float|list\[[^\]]*\]|[a-z_.]+)>", result.stdout), (
        result.stdout
    )


def test_the_metavars_people_read() -> None:
    since = cli("audit", "user", "--help", columns=200).stdout
    assert re.search(r"--since\s+TIME\s", since)
    assert re.search(r"--format\s+-f\s+table\|json\|csv\s", since)
    worker = cli("worker", "--help", columns=200).stdout
    assert re.search(r"--once\s+Run each job once", worker)  # a flag: nothing after it
    assert re.search(r"--only\s+expiry\|projector\|digest\s", worker)
    attempts = cli("audit", "attempts", "--help", columns=200).stdout
    assert re.search(r"--user\s+USER_ID\s", attempts)
    assert re.search(r"--ip\s+NETWORK\s", attempts)
    serve = cli("serve", "--help", columns=200).stdout
    assert re.search(r"--metrics-port\s+PORT\s", serve)
    assert re.search(r"--workers\s+N\s", serve)
