"""Appends in parallel: ``create_session`` and ``update_session`` (the public
Python API, wired by ``api.bootstrap.build`` as README's "Using it from
Python" does) with 1, 8 and 32 concurrent writers spread over 2 processes,
beside raw single-row INSERT transactions (asyncpg, one connection per
writer) with the same concurrency.

    .venv/bin/python -m bench.concurrency                      # 3 rounds of 4 s, private server
    .venv/bin/python -m bench.concurrency --label after --merge   # add this run's lines
    .venv/bin/python -m bench.concurrency --pgbench            # plus pgbench context
    .venv/bin/python -m bench.concurrency --server shared --writers 1,8 --rounds 1 --seconds 2

Targets (issue 18): the ratio ours / raw at 32 writers at least 80 % of the
ratio at 1 writer (ours scales as raw does), and at least 50 % of raw at
every concurrency.

How it measures:

* **Writers**: ``--processes`` (2) processes on uvloop, the writers split
  between them (1 writer: one process); each writer is an asyncio task
  calling the operation in a loop. Ours: one ``build()`` container per
  process (its pool: 10 + 10 connections), user ids per writer;
  ``update_session`` updates the writer's own session (created before the
  clock starts), so writers never conflict. Raw: one asyncpg connection per
  writer, ``INSERT`` of an event-sized row with a unique key, committed on
  its own (the store sends an append as one statement in its own implicit
  transaction too).
* **Timing**: every process sets up and warms up (3 calls per writer), then
  all start together (two barriers) and count the calls that finished
  within ``--seconds``; the rate is the sum over processes / seconds.
* **Fresh database per run**: ours a copy of a migrated template, raw an
  empty table. Contenders alternate: each round runs every (operation,
  writers) pair as ours then raw or raw then ours, the order flipping.
  The ratio printed is the median of the rounds' ratios, with their range;
  the rates are the medians of the rounds.
* **Server**: ``--server private`` (default) starts a throw-away PostgreSQL
  of the installed version on a free port, durable as in production (fsync
  and full page writes on, ``max_connections`` 200) and checkpointed before
  every run: the shared test server's 100 connections are shared with the
  other engineers' test runs, and 32 writers on each side would take a good
  part of them. ``--server shared`` uses ``SESSION_LEDGER_TEST_PG``.
* **pgbench** (``--pgbench``): the same INSERT from pgbench's C client,
  alone, behind the global advisory lock our appends took before issue 18
  (``pg_advisory_xact_lock`` inside the INSERT), with a ``pg_notify`` in the
  transaction as every append of a PostgreSQL ``build()`` sent, with both,
  and with the NOTIFY after the commit, in a transaction of its own (what
  appends do now): how much each serialisation point costs without any
  Python.

Writes ``bench/results/concurrency.json`` (the shape ``bench.peers.charts``
draws its scaling chart from; ``--merge`` keeps the series of other labels)
and redraws ``bench/results/scaling.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import hashlib
import json
import multiprocessing
import os
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any, Literal, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from bench.lifecycle import PAYLOAD, RAW_TABLE
from bench.peers.workload import IP, USER_AGENT, new_runner
from session_ledger.api.bootstrap import Container, build
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.service import RequestContext
from tests.support.db import PgServer, migrate
from tests.support.postgres import DURABLE_SERVER_OPTIONS, PostgresProcess

RESULTS = Path(__file__).resolve().parent / "results"
OUTPUT = RESULTS / "concurrency.json"
OPERATIONS = ("create_session", "update_session")
CTX = RequestContext(ip=IP, user_agent=USER_AGENT)
WARM_UP = 3
#: Seconds a process may take to start, build and warm up.
SETUP_TIMEOUT = 180.0
RAW_PG_TABLE = RAW_TABLE.replace("INTEGER PRIMARY KEY", "BIGSERIAL PRIMARY KEY")
#: pgbench's statements: the raw INSERT, alone and with each of the two
#: serialisation points an append on PostgreSQL had before issue 18 (the
#: advisory lock inside the INSERT; a NOTIFY in the transaction, as build()'s
#: inline projections sent one), and with the NOTIFY sent after the commit
#: in a transaction of its own, as projections.runner.NotifyAfterCommit does
#: now (at most one in flight per process there; one per INSERT here). The
#: payload is a literal (JSON without single quotes).
_ROW = f"'s', '{PAYLOAD}', gen_random_uuid()::text"
_INSERT = "INSERT INTO raw_events (stream_id, data, token_hash)"
_LOCKED = f"{_INSERT} SELECT {_ROW} WHERE EXISTS (SELECT FROM pg_advisory_xact_lock(1))"
_NOTIFY = "SELECT pg_notify('ledger_events', position::text) FROM i"
PGBENCH_SCRIPTS = {
    "INSERT": f"{_INSERT} VALUES ({_ROW});",
    "INSERT + advisory lock": f"{_LOCKED};",
    "INSERT + NOTIFY": f"WITH i AS ({_INSERT} VALUES ({_ROW}) RETURNING position) {_NOTIFY};",
    "INSERT + lock + NOTIFY": f"WITH i AS ({_LOCKED} RETURNING position) {_NOTIFY};",
    "INSERT; NOTIFY after": f"{_INSERT} VALUES ({_ROW});\nSELECT pg_notify('ledger_events', '1');",
}

Kind = Literal["ours", "raw"]
CONTENDERS: tuple[tuple[Kind, str], ...] = (("ours", "session-ledger"), ("raw", "raw INSERT"))


# --------------------------------------------------------------- the writers


@dataclass(frozen=True)
class Job:
    """What one writer process does (picklable: sent to a spawned process)."""

    kind: Kind
    operation: str
    url: str
    writers: int
    seconds: float
    process: int


class Writers(Protocol):
    async def prepare(self, writer: int) -> None: ...
    async def call(self, writer: int, i: int) -> None: ...
    async def close(self) -> None: ...


@dataclass
class OurWriters:
    """The public Python API of one process: one container, its own pool."""

    job: Job
    container: Container
    tokens: dict[int, str] = field(default_factory=dict)

    @classmethod
    async def open(cls, job: Job) -> OurWriters:
        settings = load_settings(environment="test", database_url=job.url)
        return cls(job, await build(settings))

    def _user(self, writer: int) -> str:
        return f"user-{self.job.process}-{writer}"

    async def prepare(self, writer: int) -> None:
        if self.job.operation == "update_session":
            _, token = await self.container.ledger.create_session(
                self._user(writer), CTX, remember_me=True
            )
            self.tokens[writer] = token
        for i in range(-WARM_UP, 0):
            await self.call(writer, i)

    async def call(self, writer: int, i: int) -> None:
        ledger = self.container.ledger
        if self.job.operation == "create_session":
            await ledger.create_session(self._user(writer), CTX, remember_me=True)
        else:
            await ledger.update_session(self.tokens[writer], {"seen": i}, CTX)

    async def close(self) -> None:
        await self.container.close()


@dataclass
class RawWriters:
    """Raw asyncpg: one connection per writer, one INSERT per transaction."""

    job: Job
    connections: list[asyncpg.Connection] = field(default_factory=list)

    @classmethod
    async def open(cls, job: Job) -> RawWriters:
        dsn = job.url.replace("+asyncpg", "")
        return cls(job, [await asyncpg.connect(dsn) for _ in range(job.writers)])

    async def prepare(self, writer: int) -> None:
        for i in range(-WARM_UP, 0):
            await self.call(writer, i)

    async def call(self, writer: int, i: int) -> None:
        key = f"{self.job.process}:{writer}:{i}".encode()
        await self.connections[writer].execute(
            "INSERT INTO raw_events (stream_id, data, token_hash) VALUES ($1, $2, $3)",
            str(writer),
            PAYLOAD,
            hashlib.sha256(key).hexdigest(),
        )

    async def close(self) -> None:
        for connection in self.connections:
            await connection.close()


async def _drive(
    job: Job,
    ready: Barrier,
    go: Barrier,
    start: Synchronized[float],
) -> int:
    """Set up, wait for everyone, call for ``job.seconds``: calls finished in time."""
    writers: Writers = await (OurWriters.open(job) if job.kind == "ours" else RawWriters.open(job))
    try:
        await asyncio.gather(*(writers.prepare(w) for w in range(job.writers)))
        await asyncio.to_thread(ready.wait, SETUP_TIMEOUT)
        await asyncio.to_thread(go.wait, SETUP_TIMEOUT)
        begin = start.value
        end = begin + job.seconds
        await asyncio.sleep(max(0.0, begin - time.monotonic()))

        async def loop(writer: int) -> int:
            done = 0
            while True:
                await writers.call(writer, done)
                if time.monotonic() > end:
                    return done
                done += 1

        return sum(await asyncio.gather(*(loop(w) for w in range(job.writers))))
    finally:
        await writers.close()


def _process(
    job: Job,
    ready: Barrier,
    go: Barrier,
    start: Synchronized[float],
    out: multiprocessing.Queue[tuple[str, Any]],
) -> None:
    """A writer process: its count, or its error (the barriers then break so
    that nobody waits for it)."""
    try:
        with new_runner() as runner:
            out.put(("calls", runner.run(_drive(job, ready, go, start))))
    except BaseException as exc:
        ready.abort()
        go.abort()
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def split(writers: int, processes: int) -> list[int]:
    """Writers per process: as even as it gets, no process without writers."""
    per, extra = divmod(writers, processes)
    return [n for n in (per + (i < extra) for i in range(processes)) if n]


async def run_writers(
    kind: Kind, operation: str, url: str, writers: int, processes: int, seconds: float
) -> float:
    """Calls per second of ``writers`` writers spread over ``processes`` processes."""
    context = multiprocessing.get_context("spawn")
    shares = split(writers, processes)
    ready, go = context.Barrier(len(shares) + 1), context.Barrier(len(shares) + 1)
    start = context.Value("d", 0.0)
    out: multiprocessing.Queue[tuple[str, Any]] = context.Queue()
    children = [
        context.Process(
            target=_process,
            args=(Job(kind, operation, url, n, seconds, i), ready, go, start, out),
            daemon=True,
        )
        for i, n in enumerate(shares)
    ]
    for child in children:
        child.start()
    calls, errors = 0, []
    try:
        try:
            await asyncio.to_thread(ready.wait, SETUP_TIMEOUT)
            start.value = time.monotonic() + 0.2  # every process reads it after `go`
            await asyncio.to_thread(go.wait, SETUP_TIMEOUT)
        except threading.BrokenBarrierError:
            pass  # a process failed: its error is in the queue
        for _ in children:
            what, value = await asyncio.to_thread(out.get, True, SETUP_TIMEOUT + seconds)
            if what == "error":
                errors.append(value)
            else:
                calls += int(value)
        for child in children:
            await asyncio.to_thread(child.join, 30)
    except BaseException:
        # Interrupted: stop the writers and release the threads still waiting
        # for them, or the event loop's shutdown would wait minutes for them.
        ready.abort()
        go.abort()
        for child in children:
            child.terminate()
            out.put(("error", "interrupted"))
        raise
    if errors:
        raise RuntimeError(f"{kind} {operation} with {writers} writers failed: {errors[0]}")
    return calls / seconds


# ----------------------------------------------------------------- the server


@dataclass
class Server:
    admin: PgServer
    private: PostgresProcess | None
    migrated_template: str = ""

    @property
    def description(self) -> str:
        if self.private is None:
            return f"shared server {self.admin.url.render_as_string(hide_password=True)}"
        return f"private server (fsync on) on port {self.private.port}"

    async def checkpoint(self) -> None:
        """Flush dirty buffers before a run (private server only: never
        force I/O on the shared one)."""
        if self.private is None:
            return
        connection = await asyncpg.connect(self.admin.url_for("postgres").replace("+asyncpg", ""))
        try:
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()

    @asynccontextmanager
    async def fresh_database(self, kind: Kind) -> AsyncIterator[str]:
        """The URL of a new database for one run, dropped afterwards."""
        if kind == "ours":
            name = await self.admin.create_database("sl_conc_", self.migrated_template)
        else:
            name = await self.admin.create_database("sl_conc_raw_")
        try:
            url = self.admin.url_for(name)
            if kind == "raw":
                connection = await asyncpg.connect(url.replace("+asyncpg", ""))
                try:
                    await connection.execute(RAW_PG_TABLE)
                finally:
                    await connection.close()
            await self.checkpoint()
            yield url
        finally:
            await self.admin.drop_database(name)


@asynccontextmanager
async def server(which: str) -> AsyncIterator[Server]:
    private = None
    if which == "private":
        private = PostgresProcess(options=DURABLE_SERVER_OPTIONS)
        private.init()
        private.start()
    try:
        url = None
        if private is not None:
            url = make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{private.port}/postgres")
        admin = await PgServer.connect(url)
        handle = Server(admin, private)
        handle.migrated_template = await admin.create_database("sl_conc_tpl_")
        try:
            await migrate(admin.url_for(handle.migrated_template))
            yield handle
        finally:
            await admin.drop_database(handle.migrated_template)
            await admin.close()
    finally:
        if private is not None:
            private.destroy()


# ------------------------------------------------------------------ pgbench


def _pgbench() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if not found:
        raise RuntimeError("pgbench not found under /usr/lib/postgresql/*/bin")
    return found[-1]


async def pgbench_context(
    handle: Server, clients: list[int], rounds: int, seconds: float
) -> dict[str, Any]:
    """tps of each PGBENCH_SCRIPTS variant, alternating, per client count."""
    binary = _pgbench()
    tps: dict[str, dict[int, list[float]]] = {v: {c: [] for c in clients} for v in PGBENCH_SCRIPTS}
    url = make_url(handle.admin.url_for("postgres"))
    with tempfile.TemporaryDirectory() as tmp:
        for variant, sql in PGBENCH_SCRIPTS.items():
            (Path(tmp) / f"{_slug(variant)}.sql").write_text(sql + "\n")
        for r in range(rounds):
            for c in clients:
                order = list(PGBENCH_SCRIPTS)
                shift = r % len(order)
                for variant in order[shift:] + order[:shift]:
                    async with handle.fresh_database("raw") as db:
                        command = [
                            binary, "-n", "-h", str(url.host), "-p", str(url.port or 5432),
                            "-U", str(url.username), "-c", str(c), "-j", str(min(c, 2)),
                            "-T", str(max(1, round(seconds))),
                            "-f", str(Path(tmp) / f"{_slug(variant)}.sql"),
                            make_url(db).database or "",
                        ]  # fmt: skip
                        done = await asyncio.to_thread(
                            subprocess.run, command, capture_output=True, text=True, check=False
                        )
                    found = re.search(r"tps = ([\d.]+) \(without initial", done.stdout)
                    if done.returncode != 0 or found is None:
                        raise RuntimeError(f"pgbench failed: {done.stderr.strip()[-500:]}")
                    tps[variant][c].append(float(found.group(1)))
    print("\npgbench, tps (median of rounds, [range]); ratio = variant / plain INSERT")
    for c in clients:
        plain = statistics.median(tps["INSERT"][c])
        for variant, by_clients in tps.items():
            rates = by_clients[c]
            median = statistics.median(rates)
            print(
                f"  {c:3} clients  {variant:24} {median:8.0f} "
                f"[{min(rates):.0f}-{max(rates):.0f}]  ratio {median / plain:4.2f}"
            )
    return {v: {str(c): rates for c, rates in by_c.items()} for v, by_c in tps.items()}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z]+", "_", text.lower()).strip("_")


# ------------------------------------------------------------------- report


@dataclass
class Results:
    writers: list[int]
    #: operation -> writers -> contender -> rate per round
    rates: dict[str, dict[int, dict[Kind, list[float]]]]

    def ratios(self, operation: str, writers: int) -> list[float]:
        by = self.rates[operation][writers]
        return [o / r for o, r in zip(by["ours"], by["raw"], strict=True)]

    def ratio(self, operation: str, writers: int) -> float:
        return statistics.median(self.ratios(operation, writers))

    def median(self, operation: str, writers: int, kind: Kind) -> float:
        return statistics.median(self.rates[operation][writers][kind])


def print_table(results: Results) -> None:
    print("\noperation        writers      ours/s    raw INSERT/s   ratio  [rounds' range]")
    for operation in results.rates:
        for w in results.writers:
            ratios = results.ratios(operation, w)
            print(
                f"{operation:16} {w:7} {results.median(operation, w, 'ours'):11.0f} "
                f"{results.median(operation, w, 'raw'):15.0f}   {results.ratio(operation, w):5.2f}"
                f"  [{min(ratios):.2f}-{max(ratios):.2f}]"
            )


def check_targets(results: Results) -> dict[str, dict[str, Any]]:
    """Issue 18's targets, printed and returned."""
    checks: dict[str, dict[str, Any]] = {}
    low, high = min(results.writers), max(results.writers)
    print()
    for operation in results.rates:
        scaling = results.ratio(operation, high) / results.ratio(operation, low)
        worst = min(results.writers, key=lambda w: results.ratio(operation, w))
        scales, floor = scaling >= 0.8, results.ratio(operation, worst) >= 0.5
        print(
            f"{operation}: ratio at {high} writers is {scaling:.0%} of the ratio at {low} "
            f"(target ≥ 80 %): {'met' if scales else 'NOT met'}; lowest ratio "
            f"{results.ratio(operation, worst):.2f} at {worst} writers (target ≥ 0.50 "
            f"everywhere): {'met' if floor else 'NOT met'}"
        )
        checks[operation] = {
            "scaling": scaling,
            "scaling_met": scales,
            "lowest_ratio": results.ratio(operation, worst),
            "floor_met": floor,
        }
    return checks


def write_json(results: Results, details: dict[str, Any], label: str, merge: bool) -> None:
    """concurrency.json in the shape bench.peers.charts draws (``series``:
    one list of rates per line, by writer count), with this run's details."""
    series = {}
    for operation in results.rates:
        for kind, name in CONTENDERS:
            rates = [results.median(operation, w, kind) for w in results.writers]
            series[f"{operation} · {name} ({label})"] = rates
    data: dict[str, Any] = {"series": {}, "details": {}}
    if merge and OUTPUT.is_file():
        previous = json.loads(OUTPUT.read_text())
        if previous.get("writers") == results.writers:
            data = previous
        else:
            print(f"--merge: {OUTPUT.name} has other writer counts; starting afresh")
    data["started"] = details["started"]
    data["operation"] = "calls"
    data["writers"] = results.writers
    data["series"] = {
        name: rates for name, rates in data["series"].items() if not name.endswith(f"({label})")
    } | series
    data.setdefault("details", {})[label] = details
    RESULTS.mkdir(exist_ok=True)
    OUTPUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nwrote {OUTPUT}")
    try:
        from bench.peers.charts import scaling_chart
    except ImportError as exc:  # matplotlib is in the bench extra
        print(f"no chart: {exc} (pip install -e '.[bench]')")
        return
    chart = scaling_chart(RESULTS)
    if chart is not None:
        print(f"wrote {chart}")


# --------------------------------------------------------------------- main


async def measure(args: argparse.Namespace) -> None:
    writers = [int(w) for w in args.writers.split(",")]
    operations = [o for o in args.operations.split(",") if o]
    unknown = set(operations) - set(OPERATIONS)
    if unknown:
        raise SystemExit(f"unknown operation {sorted(unknown)[0]!r}: {', '.join(OPERATIONS)}")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    load = [os.getloadavg()[0]]
    results = Results(
        writers, {o: {w: {"ours": [], "raw": []} for w in writers} for o in operations}
    )
    async with server(args.server) as handle:
        print(f"{handle.description}; {args.processes} processes; {args.seconds} s per run")
        pgbench = None
        if args.pgbench:
            pgbench = await pgbench_context(handle, writers, args.rounds, args.seconds)
        for r in range(args.rounds):
            for operation in operations:
                for index, w in enumerate(writers):
                    order: list[Kind] = ["ours", "raw"] if (r + index) % 2 == 0 else ["raw", "ours"]
                    for kind in order:
                        async with handle.fresh_database(kind) as url:
                            rate = await run_writers(
                                kind, operation, url, w, args.processes, args.seconds
                            )
                        results.rates[operation][w][kind].append(rate)
                        print(f"round {r + 1}: {operation:15} {w:3} writers {kind:5} {rate:8.0f}/s")
        description = handle.description
    load.append(os.getloadavg()[0])
    print_table(results)
    checks = check_targets(results)
    print(f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    details = {
        "started": started,
        "server": description,
        "processes": args.processes,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "load": load,
        "rates": {o: {str(w): by for w, by in by_w.items()} for o, by_w in results.rates.items()},
        "targets": checks,
        "pgbench": pgbench,
    }
    write_json(results, details, args.label, args.merge)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--writers", default="1,8,32", help="writer counts (default 1,8,32)")
    parser.add_argument("--operations", default=",".join(OPERATIONS))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="per run (default 4)")
    parser.add_argument("--server", choices=["private", "shared"], default="private")
    parser.add_argument("--label", default="this run", help="names this run's series")
    parser.add_argument("--merge", action="store_true", help="keep other labels' series")
    parser.add_argument("--pgbench", action="store_true", help="pgbench context first")
    args = parser.parse_args()
    # SIGTERM, and SIGINT even where a shell started us in the background
    # with it ignored, stop the run cleanly: the databases are dropped and a
    # private server is stopped and removed.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    asyncio.run(measure(args))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
