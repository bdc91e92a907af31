"""Shared pieces of the CLI: the app, consoles, settings and failure handling.

Every failure is one line on stderr and exit code 2 (``--debug`` or
``SESSION_LEDGER_DEBUG=1`` shows the traceback instead). This module, like
every command module, imports only typer and rich at import time: the
libraries a command needs are imported inside it, so ``--help`` is quick.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer import _click
from typer.core import TyperArgument, TyperGroup, TyperOption

if TYPE_CHECKING:
    from session_ledger.ledger.config import Settings


class _State:
    debug = False
    #: The settings the command runs with, to name what could not be reached.
    settings: Settings | None = None


state = _State()
DEBUG_FLAG = "--debug"
DEBUG_ENV = "SESSION_LEDGER_DEBUG"


class ReadableGroup(TyperGroup):
    """A command group whose help shows what to type: a flag is just the
    flag (no ``<bool>``), an option its metavar (``--since TIME``), an
    argument its name (no ``<str>``)."""

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        if ctx.parent is None:
            # --debug before the command, read here rather than declared as
            # the group's option: typer coerces a declared option through
            # pydantic, whose import alone doubled `audit user --help`.
            state.debug = DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "") not in ("", "0")
            args = [a for a in args if a != DEBUG_FLAG]
        return super().parse_args(ctx, args)

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        return _readable(super().get_params(ctx))

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None and not isinstance(command, ReadableGroup):
            _readable([*command.params, command.get_help_option(ctx)])
        return command


def _readable(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, TyperOption) and param.is_bool_flag:
            param.metavar = ""
            # A flag not given arrives as None (--help's default), and typer
            # then builds a pydantic validator to make it a bool; a bool
            # default skips that, and with it pydantic's import in --help.
            param.default = bool(param.default)
        elif isinstance(param, TyperOption) and param.metavar is None:
            choice = param.type_descriptor.is_choice
            param.metavar = None if choice else (param.name or "value").upper()
        elif isinstance(param, TyperArgument):
            param.metavar = param.metavar or (param.name or "value").upper()
            param.display_type_rich = _no_type  # type: ignore[method-assign]
    return params


def _no_type(ctx: _click.Context) -> None:
    return None


app = typer.Typer(
    cls=ReadableGroup,
    no_args_is_help=True,
    add_completion=False,
    # Failures are one line (``fail``); a traceback only with --debug, plain.
    pretty_exceptions_enable=False,
    help="session-ledger: an event-sourced session ledger.\n\n"
    "A failure is one line on stderr and exit code 2; session-ledger --debug COMMAND "
    "(or SESSION_LEDGER_DEBUG=1) shows its traceback.",
)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database-url", metavar="URL", help="Overrides SESSION_LEDGER_DATABASE_URL."),
]


def settings_for(database_url: str | None = None) -> Settings:
    from session_ledger.ledger.config import load_settings

    overrides = {"database_url": database_url} if database_url else {}
    try:
        settings = load_settings(**overrides)
    except Exception as exc:
        fail(exc)
    state.settings = settings
    return settings


def fail(exc: BaseException) -> NoReturn:
    """One line on stderr saying what failed and how to fix it; exit 2."""
    if state.debug:
        raise exc
    from session_ledger.ledger.failures import describe_failure

    settings = state.settings
    message = describe_failure(
        exc,
        database_url=settings.database_url if settings else None,
        redis_url=settings.redis.url if settings else None,
    )
    if message is None:
        first = str(exc).strip().splitlines()
        detail = f": {first[0]}" if first else ""
        message = (
            f"unexpected {type(exc).__name__}{detail} "
            "(run with --debug for the traceback, and please report it)"
        )
    error(message)


def error(message: str, code: int = 2) -> NoReturn:
    """``error: message`` on stderr, then exit ``code``."""
    print_error(message)
    raise typer.Exit(code)


def print_error(message: str) -> None:
    """``error: message`` on stderr, on one line whatever the terminal's width."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; any failure becomes one line on stderr and exit 2."""
    import asyncio

    async def wrapper() -> T:
        from session_ledger.ledger.db import settle_sqlite_threads, sqlite_threads

        before = sqlite_threads()
        try:
            return await main()
        except Exception:
            await settle_sqlite_threads(before)
            raise

    try:
        return asyncio.run(wrapper())
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:
        fail(exc)


def main() -> None:
    """The console script: failures outside a command body are one line too."""
    try:
        app()
    except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        try:
            fail(exc)
        except typer.Exit as done:
            sys.exit(done.exit_code)
