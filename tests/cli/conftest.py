"""The command line as users run it: ``cli`` invokes the typer app in
process (fast), ``console_script`` the installed ``session-ledger`` in a
subprocess (real stderr, exit codes, the whole start-up)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from session_ledger.api.cli import app
from session_ledger.api.cli.base import state

SCRIPT = str(Path(sys.executable).parent / "session-ledger")


def cli(*args: str, columns: int = 100, input: str | None = None) -> Result:
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(app, list(args), input=input)


def console_script(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    program: str = "session-ledger",
) -> subprocess.CompletedProcess[str]:
    """``program`` (a console script of the virtualenv) with only ``env``'s settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
    return subprocess.run(
        [str(Path(SCRIPT).parent / program), *args],
        env={**clean, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No settings of the developer's, and none left behind (``serve`` writes
    the base URL into the environment for its uvicorn processes)."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("SESSION_LEDGER_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield
    os.environ.clear()
    os.environ.update(saved)
    state.debug, state.settings = False, None
