"""The ``session-ledger`` command line: one typer app, commands grouped in
modules by topic (each module registers its commands on ``app``)."""

from __future__ import annotations

import sys

from api.cli.base import app, err
from ledger.errors import LedgerError

# Importing a module registers its commands.
from api.cli import ops  # noqa: F401  isort: skip
from api.cli import audit  # noqa: F401  isort: skip
from api.cli import projections  # noqa: F401  isort: skip
from api.cli import worker  # noqa: F401  isort: skip
from api.cli import serve  # noqa: F401  isort: skip


def main() -> None:
    try:
        app()
    except LedgerError as exc:  # e.g. invalid settings, raised before a command runs
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(2)


__all__ = ["app", "main"]
