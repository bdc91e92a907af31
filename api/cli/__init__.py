"""The ``session-ledger`` command line: one typer app, commands grouped in
modules by topic (each module registers its commands on ``app``).

Start-up is kept quick: these modules import typer and rich only; each
command imports what it needs when it runs (``session-ledger --help`` does
not load SQLAlchemy, pydantic, FastAPI or uvicorn)."""

from __future__ import annotations

from session_ledger.api.cli.base import app, main

# Importing a module registers its commands.
from session_ledger.api.cli import ops  # noqa: F401  isort: skip
from session_ledger.api.cli import audit  # noqa: F401  isort: skip
from session_ledger.api.cli import projections  # noqa: F401  isort: skip
from session_ledger.api.cli import worker  # noqa: F401  isort: skip
from session_ledger.api.cli import serve  # noqa: F401  isort: skip
from session_ledger.api.cli import users  # noqa: F401  isort: skip

__all__ = ["app", "main"]
