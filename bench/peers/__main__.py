"""session-ledger against the systems users would pick instead, in one run
on the same PostgreSQL, Redis and SQLite, in alternating rounds.

    python -m bench.peers            # everything (make bench-peers), under 15 minutes
    python -m bench.peers --quick    # shorter rounds, under 3 minutes
    python -m bench.peers --smoke    # one short round of one pair per peer (the smoke test)
    python -m bench.peers --only django-db-postgres,http:sqlite

In process: Django sessions (db, cached_db, cache), fastapi-users
(DatabaseStrategy, RedisStrategy) and eventsourcing (PostgreSQL, SQLite),
each against our Python API in the matching configuration, one process per
pair. Over HTTP: BetterAuth (node:http) against ``session-ledger serve``,
get-session with wrk. Writes peers.json, peers.md and the charts into
``--out`` (bench/results by default). Needs ``pip install -e '.[bench]'``,
``npm ci`` in bench/peers/betterauth and wrk; says in one line what is
missing and runs the rest. Exit status: 0 when everything ran, 1 when a
comparison failed, 3 when something was skipped for lack of a package.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import asyncpg
import redis

from bench.peers import betterauth_peer, charts, requirements
from bench.peers.harness import Comparison
from bench.peers.pairs import PAIRS, Pair
from bench.peers.report import Report, terminal
from bench.peers.workload import redis_url
from bench.server import ROOT, admin_dsn

MODES: dict[str, dict[str, int]] = {
    "full": {"calls": 2000, "rounds": 5, "duration": 8, "http_rounds": 3},
    "quick": {"calls": 400, "rounds": 3, "duration": 3, "http_rounds": 2},
    "smoke": {"calls": 30, "rounds": 1, "duration": 1, "http_rounds": 1},
}
#: The smoke run: every peer module once, on the cheapest configuration.
SMOKE = ("django-db-sqlite", "fastapi-users-redis", "eventsourcing-sqlite", "http:sqlite")


def log(line: str) -> None:
    print(line, flush=True)


def service_versions() -> dict[str, str]:
    """The shared servers' versions; raises with one line when one is down."""

    async def pg() -> str:
        conn = await asyncpg.connect(admin_dsn(), timeout=5)
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    try:
        pg_version = asyncio.run(pg())
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(
            f"bench.peers: PostgreSQL unreachable ({exc}): run make services"
        ) from None
    try:
        client = redis.Redis.from_url(redis_url(), socket_connect_timeout=5)
        info: dict[str, object] = client.info("server")
        redis_version = str(info["redis_version"])
        client.close()
    except redis.RedisError as exc:
        raise SystemExit(f"bench.peers: Redis unreachable ({exc}): run make services") from None
    return {
        "PostgreSQL": pg_version.split()[0],
        "Redis": redis_version,
        "SQLite": sqlite3.sqlite_version,
    }


def our_version() -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return (
        f"session-ledger {version('session-ledger')} ({commit or 'no git'}), "
        f"Python {platform.python_version()}, uvicorn {version('uvicorn')}, "
        f"SQLAlchemy {version('sqlalchemy')}"
    )


def run_pair(pair: Pair, calls: int, rounds: int) -> tuple[list[Comparison], str]:
    """One pair in a process of its own; its comparisons and the peer's version."""
    done = subprocess.run(
        [
            sys.executable, "-m", "bench.peers.worker", pair.key,
            "--calls", str(calls), "--rounds", str(rounds),
        ],
        cwd=ROOT, capture_output=True, text=True, env=os.environ, check=False,
    )  # fmt: skip
    for line in done.stderr.splitlines():
        if line.startswith(pair.peer):
            log(f"  {line}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{pair.key}: exit {done.returncode}: {last}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return [Comparison.from_json(c) for c in data["comparisons"]], str(data["version"])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="shorter rounds (under 3 minutes)")
    mode.add_argument("--smoke", action="store_true", help="one short round of one pair per peer")
    parser.add_argument("--only", help="comma-separated pair keys and http:<config> keys")
    parser.add_argument("--calls", type=int, help="in-process calls per operation and contender")
    parser.add_argument("--rounds", type=int, help="in-process alternating rounds")
    parser.add_argument("--duration", type=int, help="seconds of wrk per HTTP round")
    parser.add_argument("--http-rounds", type=int, help="HTTP alternating rounds")
    parser.add_argument("--out", type=Path, default=charts.RESULTS, help="where results go")
    parser.add_argument("--list", action="store_true", help="print the keys and exit")
    args = parser.parse_args()

    http_keys = [f"http:{c.key}" for c in betterauth_peer.CONFIGS]
    if args.list:
        print("\n".join([p.key for p in PAIRS] + http_keys))
        return 0
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = dict(MODES[name])
    for key in settings:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    wanted = args.only.split(",") if args.only else list(SMOKE if args.smoke else ())
    unknown = set(wanted) - {p.key for p in PAIRS} - set(http_keys)
    if unknown:
        parser.error(f"unknown keys {', '.join(sorted(unknown))} (see --list)")

    def chosen(key: str) -> bool:
        return not wanted or key in wanted

    versions = {"ours": our_version(), **service_versions()}
    report = Report(
        started=datetime.now(UTC).isoformat(timespec="seconds"),
        mode=name,
        settings=dict(settings),
        versions=versions,
    )
    began = time.monotonic()
    # The machine is shared: say how busy it was (1-minute load, start and end).
    report.settings["load at start"] = round(os.getloadavg()[0], 1)
    for pair in PAIRS:
        if not chosen(pair.key):
            continue
        lacking = requirements.missing_for(pair.module)
        if lacking:
            log(f"bench.peers: skipped {pair.key}: {lacking}")
            report.skipped.append(f"{pair.key} ({lacking})")
            continue
        log(f"{pair.key}: {pair.peer} against session-ledger on {pair.config}")
        try:
            comparisons, peer_version = run_pair(pair, settings["calls"], settings["rounds"])
        except (RuntimeError, ValueError) as exc:
            log(f"bench.peers: FAILED {exc}")
            report.failed.append(str(exc))
            continue
        report.comparisons += comparisons
        versions[pair.module] = peer_version

    http_configs = [c for c in betterauth_peer.CONFIGS if chosen(f"http:{c.key}")]
    lacking = requirements.missing_for_http() if http_configs else None
    if lacking:
        log(f"bench.peers: skipped BetterAuth over HTTP: {lacking}")
        report.skipped.append(lacking)
    elif http_configs:
        versions["BetterAuth"] = betterauth_peer.versions()
        for config in http_configs:
            log(f"http:{config.key}: BetterAuth against session-ledger serve on {config.name}")
            try:
                report.comparisons.append(
                    betterauth_peer.compare(
                        config,
                        settings["duration"],
                        settings["http_rounds"],
                        lambda s: log("  " + s),
                    )
                )
            except (RuntimeError, AssertionError, OSError, subprocess.SubprocessError) as exc:
                log(f"bench.peers: FAILED http:{config.key}: {exc}")
                report.failed.append(f"http:{config.key}: {exc}")

    report.settings["load at end"] = round(os.getloadavg()[0], 1)
    log("")
    log(terminal(report.comparisons))
    log("")
    for key, value in versions.items():
        log(f"{key}: {value}")
    written = report.write(args.out)
    lacking = requirements.missing_for_charts()
    if lacking:
        log(f"bench.peers: no charts: {lacking}")
        report.skipped.append(lacking)
    else:
        written += charts.draw(report, args.out)
    log(f"wrote {', '.join(str(p) for p in written)} in {time.monotonic() - began:.0f} s")
    if report.failed:
        return 1
    return 3 if report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
