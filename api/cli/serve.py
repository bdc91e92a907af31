"""``session-ledger serve``: the HTTP API and the demo page under uvicorn."""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from session_ledger.api.cli.base import (
    DatabaseOption,
    app,
    console,
    err,
    error,
    fail,
    run,
    settings_for,
)

if TYPE_CHECKING:
    from session_ledger.ledger.config import Settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, metavar="PORT", help="Port to listen on.")
    ] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            metavar="N",
            help="Server processes on the one port, each with its own pool and feeds "
            "(about one per CPU core).",
        ),
    ] = 1,
    reload: Annotated[
        bool, typer.Option("--reload", help="Restart on code changes (development).")
    ] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            metavar="PORT",
            help="Serve the process's Prometheus metrics on this loopback port (one process).",
        ),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Serve the HTTP API and the demo page (uvicorn, uvloop + httptools).

    Migrates the database first, so the embedded SQLite default works on
    the very first run.
    """
    from session_ledger.api.signing_secrets import check_signing_secrets

    settings = settings_for(database_url)
    if reload and workers > 1:
        error("--reload runs one process: drop --workers or --reload")
    if metrics_port is not None and workers > 1:
        # Each worker has its own registry and would bind the one port: the
        # second would fail at startup, the first report a share of the load.
        error("--metrics-port serves one process's metrics: drop --workers or --metrics-port")
    try:
        check_signing_secrets(settings, bind_host=host)
    except Exception as exc:
        fail(exc)
    # The app is built by uvicorn's factory from the environment (in each
    # worker process).
    if database_url:
        os.environ["SESSION_LEDGER_DATABASE_URL"] = database_url
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
    _check_port_free(host, port)
    if metrics_port is not None:
        _check_port_free("127.0.0.1", metrics_port, "--metrics-port")

    async def migrate() -> None:
        from session_ledger.ledger.db import make_engine
        from session_ledger.migrations import upgrade

        engine = make_engine(settings.database_url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    run(migrate)
    _signing_secrets(settings, host)
    if metrics_port is not None:
        from session_ledger.api.metrics import METRICS_PORT_ENV

        os.environ[METRICS_PORT_ENV] = str(metrics_port)
    import uvicorn

    from session_ledger.api.server_protocol import BoundedHttpToolsProtocol

    _warn_if_limits_per_process(settings, workers)
    processes = f" ({workers} processes)" if workers > 1 else ""
    console.print(f"session-ledger: serving on [bold]{url}/[/bold]{processes}", highlight=False)
    uvicorn.run(
        "session_ledger.api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
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


def _signing_secrets(settings: Settings, host: str) -> None:
    """Resolved here, after the database opened (a generated development
    secret is kept beside its file), and handed to every process of the
    server; a failure is one line rather than uvicorn's lifespan traceback."""
    from session_ledger.api.signing_secrets import signing_secrets

    try:
        resolved = signing_secrets(settings, bind_host=host)
    except Exception as exc:
        fail(exc)
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


def _warn_if_limits_per_process(settings: Settings, workers: int) -> None:
    """Rate limits counted in memory hold per process: several processes on
    one port let a client through each one's limit."""
    if workers > 1 and settings.rate_limit_enabled and settings.rate_limit_storage == "memory":
        err.print(
            "[yellow]warning:[/yellow] rate limits are counted in each process's memory: "
            f"{workers} processes allow up to {workers} times each limit "
            "(set SESSION_LEDGER_REDIS__URL to share them)",
            highlight=False,
            soft_wrap=True,
        )


LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0", "::"}  # noqa: S104  (names, not binds)


def _served_origins(host: str, port: int) -> list[str]:
    """The origins a browser uses for this server, the preferred one first."""
    if host not in LOOPBACK:
        return [f"http://{host}:{port}"]
    return [f"http://localhost:{port}", f"http://127.0.0.1:{port}", f"http://[::1]:{port}"]


def _check_port_free(host: str, port: int, option: str = "--port") -> None:
    """Fail in one line, before "serving on ...", when the address is taken.

    Bound as uvicorn binds (SO_REUSEADDR), then released for it: only a
    server listening there, not a connection lingering in TIME_WAIT, fails.
    """
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        error(f"cannot serve on {host}: {exc.strerror or exc} (check --host)")
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == 98:  # EADDRINUSE
                error(f"port {port} on {host} is in use (another server?): pick one with {option}")
            error(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
