"""Writes to existing sessions: update_session/s and sign_out/s (an append
to an existing stream with the service's inline projections) on PostgreSQL
and SQLite, beside the raw-driver INSERT of bench.lifecycle measured in the
same run.

    .venv/bin/python -m bench.writes [--n 1000]

No target: this shows what a refresh, an update or a revoke costs against
the cheapest durable write the driver can make. On PostgreSQL the two
contenders alternate in rounds, as in bench.lifecycle.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from bench.lifecycle import (
    POLICY,
    RawPgContender,
    alternate,
    bench_raw_aiosqlite,
    migrated_pg_database,
    rate,
)
from session_ledger.ledger.clock import SystemClock
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.service import SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.audit_ips import AuditIpProjection
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel
from tests.support.db import migrate


class Writer:
    """The real service with the HTTP service's SQL projections."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        store = EventStore(
            self.engine, inline_projections=[SessionTableProjection(), AuditIpProjection()]
        )
        self.ledger = SessionLedger(store, SqlSessionReadModel(self.engine), POLICY, SystemClock())
        self.tokens: list[str] = []

    async def sign_in(self, n: int) -> None:
        for i in range(n):
            _, token = await self.ledger.create_session(f"user-{i % 100}", remember_me=True)
            self.tokens.append(token)

    async def update(self, i: int) -> None:
        await self.ledger.update_session(self.tokens[i], {"theme": f"t{i}"})

    async def sign_out(self, i: int) -> None:
        await self.ledger.sign_out(self.tokens[i])

    async def close(self) -> None:
        await self.engine.dispose()


def line(name: str, what: str, ours: float, raw: float, ratios: list[float] | None) -> None:
    ratio = statistics.median(ratios) if ratios else ours / raw
    spread = f"   median of {len(ratios)} rounds" if ratios else ""
    print(
        f"{name:18} {what:15} {ours:9.0f}/s   raw INSERT {raw:9.0f}/s   ratio {ratio:5.2f}{spread}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="PostgreSQL: alternating rounds")
    args = parser.parse_args()
    n = args.n

    async with migrated_pg_database() as url:
        ours = Writer(url)
        raw = await RawPgContender.connect(url.replace("+asyncpg", ""))
        try:
            await ours.sign_in(n)
            # Insert keys must not repeat across the two phases (unique hash).
            u_ours, u_raw, u_ratios = await alternate(n, args.rounds, ours.update, raw.insert)
            s_ours, s_raw, s_ratios = await alternate(
                n, args.rounds, ours.sign_out, lambda i: raw.insert(n + i)
            )
        finally:
            await ours.close()
            await raw.conn.close()
    line("postgres/asyncpg", "update_session", u_ours, u_raw, u_ratios)
    line("postgres/asyncpg", "sign_out", s_ours, s_raw, s_ratios)

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/ledger.db"
        await migrate(url)
        ours = Writer(url)
        try:
            await ours.sign_in(n)
            updates = await rate(n, ours.update)
            sign_outs = await rate(n, ours.sign_out)
        finally:
            await ours.close()
        inserts, _ = await bench_raw_aiosqlite(Path(tmp) / "raw.db", n)
        line("sqlite/aiosqlite", "update_session", updates, inserts, None)
        line("sqlite/aiosqlite", "sign_out", sign_outs, inserts, None)


if __name__ == "__main__":
    asyncio.run(main())
