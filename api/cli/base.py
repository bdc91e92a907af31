"""Shared pieces of the CLI: the app, consoles, settings and error handling."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from ledger.config import Settings, load_settings
from ledger.errors import LedgerError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="session-ledger: an event-sourced session ledger.",
)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", help="Overrides SESSION_LEDGER_DATABASE_URL."),
]


def settings_for(database_url: str | None = None) -> Settings:
    overrides = {"database_url": database_url} if database_url else {}
    return load_settings(**overrides)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; ledger errors become one line on stderr and exit 2."""

    async def wrapper() -> T:
        return await main()

    try:
        return asyncio.run(wrapper())
    except LedgerError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
