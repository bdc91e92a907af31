"""Alembic environment: runs migrations on a connection handed over by
``migrations.upgrade`` or, from the alembic command line, on the database
named by SESSION_LEDGER_DATABASE_URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection

from session_ledger.migrations.target import include_object, target_metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from session_ledger.ledger.db import make_engine

    url = os.environ.get("SESSION_LEDGER_DATABASE_URL", "sqlite+aiosqlite:///./session-ledger.db")

    async def run_async() -> None:
        engine = make_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(_run)
        await engine.dispose()

    asyncio.run(run_async())


_run_online()
