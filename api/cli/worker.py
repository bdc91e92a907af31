"""``session-ledger worker``: the background process (expiry sweep,
projection catch-up, ledger digests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from session_ledger.api.cli.base import (
    DatabaseOption,
    app,
    console,
    error,
    print_error,
    run,
    settings_for,
    state,
)
from session_ledger.workers.jobs import DIGEST, EXPIRY, PROJECTOR

if TYPE_CHECKING:
    import asyncio

    from rich.console import Group
    from sqlalchemy.ext.asyncio import AsyncEngine

    from session_ledger.api.bootstrap import Container
    from session_ledger.workers.projector import ProjectorWorker


class Only(StrEnum):
    expiry = EXPIRY
    projector = PROJECTOR
    digest = DIGEST


@app.command()
def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Run each job once, then exit (cron style).")
    ] = False,
    only: Annotated[
        Only | None,
        typer.Option(
            "--only",
            help="Run just this job.",
            case_sensitive=False,
            metavar="expiry|projector|digest",
        ),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Run the background jobs until SIGTERM/SIGINT (the batch in hand finishes).

    With --once, exits 2 naming each job that failed and why. Running on,
    a failing job is logged (the same error at most once a minute) and shown
    by `session-ledger status` and the worker's /healthz (worker.metrics_port).
    """
    import logging

    from session_ledger.workers.jobs import JOBS
    from session_ledger.workers.logging import configure_logging

    settings = settings_for(database_url)
    # --once reports its outcome itself (stdout, and one line per failed job).
    quiet = once and not state.debug
    configure_logging(level=logging.CRITICAL if quiet else logging.INFO)
    jobs = [only.value] if only is not None else list(JOBS)
    if only is Only.projector and not settings.redis.url:
        error("the projector keeps the Redis cache: set SESSION_LEDGER_REDIS__URL")

    async def main() -> dict[str, str]:
        from session_ledger.api.bootstrap import build
        from session_ledger.ledger.db import make_engine
        from session_ledger.workers.scheduler import Worker

        # Pre-ping: a worker is not latency-bound, and a connection that died
        # with a database restart is then replaced at checkout, for every
        # job (the sweep also retries its reads, see workers.expiry).
        engine = make_engine(settings.database_url, pool_pre_ping=True)
        container = await build(settings, engine=engine)
        try:
            w = Worker(container, jobs=jobs, projector=projector_for(container))
            _install_signal_handlers(w.stop)
            if once:
                results = await w.run_once()
                shown = {
                    job: {"error": w.errors[job]} if job in w.errors else result
                    for job, result in results.items()
                }
                console.print_json(json.dumps(shown, default=str))
                return w.errors
            await w.run_forever()
            return {}
        finally:
            await container.close()

    failed = run(main)
    for job, message in failed.items():
        print_error(f"job {job} failed: {message}")
    if failed:
        raise typer.Exit(2)


def projector_for(container: Container) -> ProjectorWorker | None:
    """The projection worker over the container's runner (None without Redis)."""
    from session_ledger.workers.projector import redis_projector

    if container.runner is None:
        return None
    return redis_projector(container.runner, container.store, container.clock, container.settings)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    import asyncio
    import signal

    from session_ledger.workers.logging import get_logger

    loop = asyncio.get_running_loop()
    log = get_logger("workers.signals")
    main_task = asyncio.current_task()

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            # First signal: finish the batch in hand, then exit.
            log.info("worker.stopping", signal=signal.Signals(signum).name)
            stop.set()
        elif main_task is not None:
            # Second signal: the operator insists; abandon the batch (its
            # transaction rolls back, nothing half-written remains).
            log.warning("worker.aborting", signal=signal.Signals(signum).name)
            main_task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def worker_health(engine: AsyncEngine, now: datetime | None = None) -> Group:
    """Per job: ok / FAILING, the last successful run (any worker); below the
    table, each failing job's last error in full."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from session_ledger.workers.health import failing_jobs, latest_by_job, read_health
    from session_ledger.workers.jobs import JOBS

    now = now or datetime.now(UTC)
    rows = await read_health(engine)
    table = Table(title="workers")
    for column in ("job", "state", "last success", "ago", "by worker"):
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    latest = latest_by_job(rows)
    failing = failing_jobs(rows)
    for job in sorted(set(JOBS) | set(latest)):
        best = latest.get(job)
        success = best.last_success_at if best is not None else None
        if job in failing:
            status = "[red]FAILING[/red]"
        elif best is None:
            status = "never ran"
        else:
            status = "[green]ok[/green]"
        table.add_row(
            job,
            status,
            success.isoformat(sep=" ", timespec="seconds") if success else "never",
            _ago(now, success) if success else "-",
            best.worker_id if best is not None and success else "-",
        )
    errors = [
        Text.assemble((f"{job} is failing: ", "red"), f"{h.last_error} (worker {h.worker_id})")
        for job, h in sorted(failing.items())
    ]
    return Group(table, *errors)


def _ago(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
