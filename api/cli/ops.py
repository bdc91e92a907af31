"""Operations commands: migrate, status."""

from __future__ import annotations

from session_ledger.api.cli.base import DatabaseOption, app, console, run, settings_for


@app.command()
def migrate(database_url: DatabaseOption = None) -> None:
    """Bring the database schema to the newest migration."""
    settings = settings_for(database_url)

    async def main() -> None:
        from session_ledger.ledger.db import make_engine
        from session_ledger.migrations import current_revision, upgrade

        engine = make_engine(settings.database_url)
        try:
            await upgrade(engine)
            console.print(f"schema at revision {await current_revision(engine)}")
        finally:
            await engine.dispose()

    run(main)


@app.command()
def status(database_url: DatabaseOption = None) -> None:
    """Schema revision, ledger head, event counts, sessions by status, worker health."""
    settings = settings_for(database_url)

    async def main() -> None:
        from rich.table import Table
        from sqlalchemy import func, select

        from session_ledger.api.bootstrap import build
        from session_ledger.api.cli.worker import worker_health
        from session_ledger.ledger import horizon
        from session_ledger.ledger.domain.errors import LedgerError
        from session_ledger.migrations import current_revision, head_revision
        from session_ledger.projections.schema import sessions

        container = await build(settings)
        try:
            engine = container.engine
            revision = await current_revision(engine)
            table = Table(title="session-ledger", show_header=False)
            table.add_row("database", engine.url.render_as_string(hide_password=True))
            table.add_row("schema", f"{revision} (newest: {head_revision()})")
            if revision is None:
                console.print(table)
                raise LedgerError("database not migrated: run `session-ledger migrate`")
            table.add_row("ledger head", str(await container.store.head()))
            lag = await horizon.lag(engine)
            if lag.horizon is not None:
                # What followers (the runner, replay, digests) wait for.
                table.add_row(
                    "horizon",
                    f"{lag.held_back} events held back; oldest transaction "
                    f"{lag.oldest_xact_seconds:.1f} s",
                )
            for event_type, count in sorted((await container.store.count_by_type()).items()):
                table.add_row(f"  {event_type}", str(count))
            async with engine.connect() as conn:
                counts = await conn.execute(
                    select(sessions.c.status, func.count()).group_by(sessions.c.status)
                )
                for state, count in sorted(counts.all()):
                    table.add_row(f"sessions {state}", str(count))
            console.print(table)
            console.print(await worker_health(engine))
        finally:
            await container.close()

    run(main)
