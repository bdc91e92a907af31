"""``session-ledger serve`` and the ``users`` commands of the built-in store."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
import uvicorn
from sqlalchemy.exc import DBAPIError

from api.bootstrap import build
from api.cli.base import DatabaseOption, app, console, err, run, settings_for
from api.metrics import METRICS_PORT_ENV
from api.server_protocol import BoundedHttpToolsProtocol
from api.signing_secrets import signing_secrets
from api.users.errors import UserError
from api.users.store import SqlUserStore
from ledger.db import make_engine
from ledger.ports import ProviderAccount
from migrations import upgrade

users_app = typer.Typer(no_args_is_help=True, help="Users of the built-in user store.")
app.add_typer(users_app, name="users")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve Prometheus metrics on this loopback port."),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Serve the HTTP API and the demo page (uvicorn, uvloop + httptools).

    Migrates the database first, so the embedded SQLite default works on
    the very first run.
    """
    settings = settings_for(database_url)
    # Refused here, in one line, rather than in uvicorn's lifespan.
    resolved = signing_secrets(settings, bind_host=host)
    # The app is built by uvicorn's factory from the environment.
    if database_url:
        os.environ["SESSION_LEDGER_DATABASE_URL"] = database_url
    if resolved.development_file is not None:
        err.print(
            "[yellow]warning:[/yellow] no secrets configured: signing cookies with the "
            f"development secret generated in {resolved.development_file} "
            "(set SESSION_LEDGER_SECRETS anywhere else)",
            highlight=False,
            soft_wrap=True,
        )
        # Every process of this server (uvicorn's reload or worker processes)
        # builds its app from the environment: hand them the same secret.
        os.environ["SESSION_LEDGER_SECRETS"] = json.dumps(resolved.values)
    url = f"http://{host}:{port}"
    if "base_url" not in settings.model_fields_set:
        # Unconfigured, the base URL (the CSRF check's trusted origin) is
        # where we serve, under each name a browser may use for loopback:
        # otherwise the demo page's own requests fail as INVALID_ORIGIN.
        origins = _served_origins(host, port)
        url = origins[0]
        os.environ["SESSION_LEDGER_BASE_URL"] = url
        if "trusted_origins" not in settings.model_fields_set:
            os.environ["SESSION_LEDGER_TRUSTED_ORIGINS"] = json.dumps(origins[1:])

    async def migrate() -> None:
        engine = make_engine(settings.database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    run(migrate)
    if metrics_port is not None:
        os.environ[METRICS_PORT_ENV] = str(metrics_port)
    console.print(f"session-ledger: serving on [bold]{url}/[/bold]", highlight=False)
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        reload=reload,
        loop="uvloop",
        # httptools, with a cap on the request head (431 past 16 KiB).
        http=BoundedHttpToolsProtocol,
        # Forwarding headers are read by the app alone, from trusted_proxies
        # only (api.client_ip): uvicorn's own handling trusts X-Forwarded-For
        # from loopback and would let any local client rewrite its address.
        proxy_headers=False,
        access_log=access_log,
        log_level="info",
    )


LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}  # noqa: S104  (names, not binds)


def _served_origins(host: str, port: int) -> list[str]:
    """The origins a browser uses for this server, the preferred one first."""
    if host not in LOOPBACK:
        return [f"http://{host}:{port}"]
    return [f"http://localhost:{port}", f"http://127.0.0.1:{port}", f"http://[::1]:{port}"]


@users_app.command("create")
def create_user(
    email: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    role: Annotated[list[str] | None, typer.Option(help="A role (repeatable).")] = None,
    verified: Annotated[bool, typer.Option(help="Mark the email as verified.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Create a user with an email and password (for administrators)."""

    async def main() -> str:
        container = await build(settings_for(database_url), builtin_users=True)
        try:
            store = container.ledger.users
            assert isinstance(store, SqlUserStore)
            user = await store.create_user(
                email, password, name=name, roles=role or (), email_verified=verified
            )
            return user.id
        except DBAPIError as exc:
            raise UserError(f"database error ({exc.orig}); has it been migrated?") from None
        finally:
            await container.close()

    console.print(run(main), highlight=False)


@users_app.command("link-account")
def link_account(
    user_id: str,
    provider: str,
    account_id: str,
    access_token: Annotated[str | None, typer.Option()] = None,
    refresh_token: Annotated[str | None, typer.Option()] = None,
    id_token: Annotated[str | None, typer.Option()] = None,
    token_type: Annotated[str | None, typer.Option()] = None,
    scope: Annotated[str | None, typer.Option()] = None,
    expires_at: Annotated[int | None, typer.Option(help="Epoch seconds.")] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Link a provider account to a user (tokens are encrypted at rest)."""
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

    async def main() -> None:
        container = await build(settings_for(database_url), builtin_users=True)
        try:
            store = container.ledger.users
            assert isinstance(store, SqlUserStore)
            await store.link_account(user_id, account)
        except DBAPIError as exc:
            raise UserError(f"database error ({exc.orig}); has it been migrated?") from None
        finally:
            await container.close()

    run(main)
    console.print(f"linked {provider} account {account_id} to user {user_id}", highlight=False)
