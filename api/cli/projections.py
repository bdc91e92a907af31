"""Projection commands: ``session-ledger replay`` and ``session-ledger verify``.

``verify`` is one command whose flags choose what is checked; each check is a
``check_*`` coroutine returning its differences, so another check (the
ledger's hash chain) is one more flag and one more function.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from session_ledger.api.cli.base import DatabaseOption, app, console, error, run, settings_for

if TYPE_CHECKING:
    from session_ledger.api.bootstrap import Container
    from session_ledger.projections.redis_cache import RedisCacheProjection
    from session_ledger.projections.verify import Difference

#: Differences printed one per line; beyond that, only the count.
MAX_SHOWN = 200


class Target(StrEnum):
    table = "table"
    redis = "redis"
    all = "all"


def _redis_projection(container: Container) -> RedisCacheProjection:
    from session_ledger.ledger.domain.errors import ConfigError

    runner = container.runner
    if runner is None:
        raise ConfigError("no Redis configured (set SESSION_LEDGER_REDIS__URL)")
    return runner.projection


@app.command()
def replay(
    projection: Annotated[
        Target,
        typer.Option(
            "--projection",
            help="What to rebuild; all: every configured projection (redis only with Redis).",
            case_sensitive=False,
            metavar="NAME",
        ),
    ] = Target.all,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            max=100_000,
            metavar="N",
            help="Events per batch (default: each projection's own).",
        ),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Rebuild projections from the ledger beside the live ones, then switch
    atomically. Resumable: run it again after an interruption."""
    settings = settings_for(database_url)

    async def main() -> None:
        from session_ledger.api.bootstrap import build
        from session_ledger.projections.replay import (
            DEFAULT_BATCH,
            DEFAULT_REDIS_BATCH,
            RichProgress,
            replay_redis,
            replay_table,
        )

        container = await build(settings)
        try:
            if projection is Target.all:
                # Every configured projection: the cache only where there is one.
                targets = [Target.table] + ([Target.redis] if container.runner else [])
            else:
                targets = [projection]
            if Target.redis in targets:
                _redis_projection(container)  # fail before any work without Redis
            for target in targets:
                bar = RichProgress(f"replay {target.value}")
                async with bar.shown():
                    if target is Target.table:
                        result = await replay_table(
                            container.engine,
                            container.store,
                            batch_size=batch_size or DEFAULT_BATCH,
                            progress=bar,
                            clock=container.clock,
                        )
                    else:
                        result = await replay_redis(
                            container.store,
                            _redis_projection(container),
                            batch_size=batch_size or DEFAULT_REDIS_BATCH,
                            progress=bar,
                        )
                resumed = f" (resumed at {result.resumed_from})" if result.resumed_from else ""
                console.print(
                    f"{target.value}: {result.events} events applied up to position "
                    f"{result.head}{resumed}; switched"
                )
        finally:
            await container.close()

    run(main)


# ------------------------------------------------------------------ verify


async def check_projections(container: Container) -> list[Difference]:
    """The SQL table and (when configured) the Redis cache vs the ledger."""
    from session_ledger.projections.verify import verify_redis, verify_table

    differences = await verify_table(container.engine)
    if container.runner is not None:
        differences += await verify_redis(
            container.engine, container.runner.cache, clock=container.clock
        )
    return differences


Check = Callable[["Container"], Awaitable[list["Difference"]]]


@app.command()
def verify(
    projections: Annotated[
        bool,
        typer.Option("--projections", help="Compare every projection with a fold of the ledger."),
    ] = False,
    ledger: Annotated[
        bool,
        typer.Option("--ledger", help="Recompute every hash chain and check the ledger digests."),
    ] = False,
    expect: Annotated[
        list[str] | None,
        typer.Option(
            "--expect",
            help="With --ledger: [XID:]POSITION:DIGEST kept outside the database (repeatable).",
            metavar="[XID:]POSITION:DIGEST",
        ),
    ] = None,
    database_url: DatabaseOption = None,
) -> None:
    """Consistency checks. Exit code 1 when a difference is found."""
    checks: list[tuple[str, Check]] = []
    if projections:
        checks.append(("projections", check_projections))
    if not checks and not ledger:
        error("nothing to verify: pass --projections and/or --ledger")
    settings = settings_for(database_url)

    async def main() -> int:
        from session_ledger.api.bootstrap import build
        from session_ledger.api.cli.audit import check_ledger

        container = await build(settings)
        try:
            found = 0
            if ledger:
                intact = await check_ledger(settings.database_url, expect=expect or [])
                found += 0 if intact else 1
            for name, check in checks:
                differences = await check(container)
                for difference in differences[:MAX_SHOWN]:
                    console.print(str(difference), highlight=False, markup=False, soft_wrap=True)
                if len(differences) > MAX_SHOWN:
                    console.print(f"… and {len(differences) - MAX_SHOWN} more")
                console.print(f"{name}: {len(differences)} difference(s)")
                found += len(differences)
            return found
        finally:
            await container.close()

    if run(main):
        raise typer.Exit(1)
