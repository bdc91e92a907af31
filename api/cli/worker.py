"""``session-ledger worker``: the background process (expiry sweep,
projection catch-up, ledger digests)."""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from api.bootstrap import Container, build
from api.cli.base import DatabaseOption, app, console, err, run, settings_for
from ledger.db import make_engine
from workers.health import latest_by_job, read_health
from workers.logging import configure_logging, get_logger
from workers.projector import ProjectorWorker, redis_projector
from workers.scheduler import EXPIRY, JOBS, PROJECTOR, Worker


class Only(StrEnum):
    expiry = EXPIRY
    projector = PROJECTOR


@app.command()
def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Run each job once, then exit (cron style).")
    ] = False,
    only: Annotated[
        Only | None, typer.Option("--only", help="Run just this job.", case_sensitive=False)
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Run the background jobs until SIGTERM/SIGINT (the batch in hand finishes)."""
    settings = settings_for(database_url)
    configure_logging()
    jobs = [only.value] if only is not None else list(JOBS)
    if only is Only.projector and not settings.redis.url:
        err.print(
            "[red]error:[/red] the projector keeps the Redis cache: set SESSION_LEDGER_REDIS__URL",
            highlight=False,
        )
        raise typer.Exit(2)

    async def main() -> int:
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
                console.print_json(json.dumps(results, default=str))
                return 1 if w.failed else 0
            await w.run_forever()
            return 0
        finally:
            await container.close()

    code = run(main)
    if code:
        raise typer.Exit(code)


def projector_for(container: Container) -> ProjectorWorker | None:
    """The projection worker over the container's runner (None without Redis)."""
    if container.runner is None:
        return None
    return redis_projector(container.runner, container.store, container.clock, container.settings)


def _install_signal_handlers(stop: asyncio.Event) -> None:
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


async def worker_health_table(engine: AsyncEngine, now: datetime | None = None) -> Table:
    """Per job: the last successful run (any worker) and the newest error."""
    now = now or datetime.now(UTC)
    rows = await read_health(engine)
    table = Table(title="workers")
    for column in ("job", "last success", "ago", "by worker", "last error"):
        table.add_column(column)
    latest = latest_by_job(rows)
    for job in sorted(set(JOBS) | set(latest)):
        best = latest.get(job)
        success = best.last_success_at if best is not None else None
        errors = [h for h in rows if h.job == job and h.last_error]
        error = max(errors, key=lambda h: str(h.details.get("failed_at", "")), default=None)
        table.add_row(
            job,
            success.isoformat(timespec="seconds") if success else "never",
            _ago(now, success) if success else "-",
            best.worker_id if best is not None and success else "-",
            error.last_error or "" if error is not None else "",
        )
    return table


def _ago(now: datetime, then: datetime) -> str:
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
