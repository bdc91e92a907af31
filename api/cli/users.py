"""``session-ledger users ...``: the built-in user store (create, list,
show, link a provider account)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from session_ledger.api.cli.base import (
    DatabaseOption,
    ReadableGroup,
    app,
    console,
    run,
    settings_for,
)

if TYPE_CHECKING:
    from session_ledger.api.users.store import SqlUserStore
    from session_ledger.ledger.config import Settings

users_app = typer.Typer(
    cls=ReadableGroup, no_args_is_help=True, help="Users of the built-in user store."
)
app.add_typer(users_app, name="users")
T = TypeVar("T")


def _with_store(settings: Settings, body: Callable[[SqlUserStore], Awaitable[T]]) -> T:
    """Run ``body`` on the built-in user store of ``settings``' database."""

    async def main() -> T:
        from session_ledger.api.bootstrap import build
        from session_ledger.api.users.store import SqlUserStore

        container = await build(settings, builtin_users=True)
        try:
            store = container.ledger.users
            assert isinstance(store, SqlUserStore)
            return await body(store)
        finally:
            await container.close()

    return run(main)


@users_app.command("create")
def create_user(
    email: Annotated[str, typer.Argument(help="Any address sign-up accepts.")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    name: Annotated[str, typer.Option(metavar="NAME", help="Display name.")] = "",
    role: Annotated[
        list[str] | None, typer.Option(metavar="ROLE", help="A role (repeatable).")
    ] = None,
    verified: Annotated[
        bool, typer.Option("--verified", help="Mark the email as verified.")
    ] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Create a user with an email and password (for administrators); prints its id."""

    async def body(store: SqlUserStore) -> str:
        user = await store.create_user(
            email, password, name=name, roles=role or (), email_verified=verified
        )
        return user.id

    console.print(_with_store(settings_for(database_url), body), highlight=False)


@users_app.command("list")
def list_users(
    email: Annotated[
        str | None,
        typer.Option(
            "--email",
            metavar="PATTERN",
            help="Only emails matching this pattern (* and ? wildcards; "
            "without them, emails containing it).",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most this many.")] = 100,
    database_url: DatabaseOption = None,
) -> None:
    """Users by email: id, email, name, roles (`users show` has the rest)."""
    from session_ledger.api.cli.tables import fitted_table

    async def body(store: SqlUserStore) -> list[list[str]]:
        users = await store.find_users(email, limit=limit)
        return [[u.id, u.email, u.name, ",".join(u.roles)] for u in users]

    rows = _with_store(settings_for(database_url), body)
    # The id in full (what the other commands take); the rest may be cut.
    names = ["id", "email", "name", "roles"]
    flexible = {"email": 20, "name": 4, "roles": 5}
    console.print(fitted_table(names, rows, width=console.width, flexible=flexible))
    console.print(f"{len(rows)} user(s)", highlight=False, style="dim")


@users_app.command("show")
def show_user(
    who: Annotated[str, typer.Argument(metavar="EMAIL|ID", help="The user's email or id.")],
    database_url: DatabaseOption = None,
) -> None:
    """One user: id, email, name, roles, verified, created, linked accounts."""
    from rich.table import Table

    from session_ledger.api.users.errors import UserNotFoundError

    async def body(store: SqlUserStore) -> list[tuple[str, str]]:
        user = await store.find_user(who)
        if user is None:
            raise UserNotFoundError(f"no user with email or id {who!r}")
        accounts = await store.get_accounts(user.id)
        return [
            ("id", user.id),
            ("email", user.email),
            ("name", user.name),
            ("roles", ", ".join(user.roles) or "-"),
            ("email verified", "yes" if user.email_verified else "no"),
            ("created (UTC)", _time(user.created_at)),
            ("accounts", ", ".join(f"{a.provider_id}:{a.account_id}" for a in accounts) or "-"),
        ]

    rows = _with_store(settings_for(database_url), body)
    table = Table(show_header=False)
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@users_app.command("link-account")
def link_account(
    user_id: str,
    provider: str,
    account_id: str,
    access_token: Annotated[str | None, typer.Option(metavar="TOKEN")] = None,
    refresh_token: Annotated[str | None, typer.Option(metavar="TOKEN")] = None,
    id_token: Annotated[str | None, typer.Option(metavar="TOKEN")] = None,
    token_type: Annotated[str | None, typer.Option(metavar="TYPE")] = None,
    scope: Annotated[str | None, typer.Option(metavar="SCOPE")] = None,
    expires_at: Annotated[int | None, typer.Option(metavar="EPOCH", help="Epoch seconds.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Link a provider account to a user (tokens are encrypted at rest)."""
    from session_ledger.ledger.ports import ProviderAccount

    account = ProviderAccount(
        provider_id=provider,
        account_id=account_id,
        access_token=access_token,
        refresh_token=refresh_token,
        id_token=id_token,
        token_type=token_type,
        scope=scope,
        expires_at=expires_at,
    )

    async def body(store: SqlUserStore) -> None:
        await store.link_account(user_id, account)

    _with_store(settings_for(database_url), body)
    console.print(f"linked {provider} account {account_id} to user {user_id}", highlight=False)


def _time(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at else "-"
