"""The fault scenarios themselves, on a :class:`Rig` (a private PostgreSQL
and Redis, the deployment, the load): ``tests/faults`` runs each and
asserts, ``bench.faults`` runs them longer and prints the figures."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.config import RedisSettings
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.schema import events as events_table
from session_ledger.projections.redis_cache import RedisSessionCache
from tests.support.db import migrate, sqlite_file_url
from tests.support.deployment import Deployment, Process, wait_healthy, wait_until
from tests.support.faults import Canary, Outcome, Step, run_scenario, short_sessions
from tests.support.load import Load
from tests.support.postgres import PostgresProcess
from tests.support.redis import RedisProcess

PREFIX = "faults:"
#: The session field the load's update-session sets (clients may set only
#: declared fields).
LOAD_SETTINGS = {
    "SESSION_LEDGER_SESSION__ADDITIONAL_FIELDS": '{"n": {"type": "number"}}',
}
#: Sessions signed in with remember-me off end this fast (the expiry scenarios).
SHORT_SESSION_SECONDS = 3


@dataclass
class Timing:
    """How long each phase of a scenario lasts (the bench stretches them)."""

    before: float = 1.0
    hold: float = 1.5
    after: float = 1.0


@dataclass
class Rig:
    pg: PostgresProcess
    redis: RedisProcess
    redis_admin: Any
    dep: Deployment
    load: Load
    engine: AsyncEngine
    cache: RedisSessionCache
    canary: Canary
    timing: Timing = field(default_factory=Timing)

    async def scenario(
        self, name: str, fault: Step, heal: Step, *, instant: bool = False, **phases: float
    ) -> Outcome:
        timing = {"before": self.timing.before, "hold": self.timing.hold}
        timing |= {"after": self.timing.after} | phases
        return await run_scenario(
            name,
            self.dep,
            self.load,
            self.engine,
            self.canary,
            fault=fault,
            heal=heal,
            cache=self.cache,
            instant=instant,
            **timing,
        )


@asynccontextmanager
async def rig(workdir: Path, timing: Timing | None = None, **load: Any) -> AsyncIterator[Rig]:
    """Start everything (a private PostgreSQL once, a private Redis, two
    services and two workers); stop everything."""
    pg = PostgresProcess()
    redis = RedisProcess(workdir / "redis")
    stack = contextlib.AsyncExitStack()
    try:
        pg.init()
        pg.start()
        stack.callback(pg.destroy)
        url = pg.url("postgres")
        await migrate(url)
        redis.start()
        stack.callback(redis.kill)
        dep = Deployment(
            database_url=url,
            redis_url=redis.url,
            workdir=workdir / "deployment",
            overrides={
                "SESSION_LEDGER_REDIS__PREFIX": PREFIX,
                "SESSION_LEDGER_SESSION__SHORT_SESSION_EXPIRES_IN": str(SHORT_SESSION_SECONDS),
                # Sweeps of several batches: a leader can be killed in the middle of one.
                "SESSION_LEDGER_WORKER__EXPIRY_BATCH_SIZE": "200",
                **LOAD_SETTINGS,
            },
        )
        await asyncio.to_thread(dep.start)
        stack.callback(dep.stop)
        # The rig's own reads survive the scenarios' restarts.
        engine = make_engine(url, pool_pre_ping=True, pool_size=2)
        stack.push_async_callback(engine.dispose)
        admin: Any = aioredis.from_url(redis.url, socket_connect_timeout=1, socket_timeout=2)
        stack.push_async_callback(admin.aclose)
        cache = RedisSessionCache(admin, RedisSettings(prefix=PREFIX))
        driver = Load(dep, **load)
        await driver.prepare(engine)
        stack.push_async_callback(driver.close)
        canary = await Canary.create(dep)
        yield Rig(pg, redis, admin, dep, driver, engine, cache, canary, timing or Timing())
    finally:
        await stack.aclose()


async def nothing() -> None:
    pass


# ------------------------------------------------------------- PostgreSQL


async def postgres_restart(rig: Rig) -> Outcome:
    """``pg_ctl restart -m fast``; then sweeps run on the new server."""

    back: dict[str, float] = {}

    async def fault() -> None:
        await asyncio.to_thread(rig.pg.restart, "fast")
        back["at"] = time.time()

    async def heal() -> None:
        await asyncio.sleep(1.5)  # sweeps (every second) run on the new server

    outcome = await rig.scenario("postgres restart -m fast", fault, heal, hold=0.5)
    outcome.notes["back at"] = back["at"]
    return outcome


async def postgres_killed(rig: Rig) -> Outcome:
    """SIGKILL to the postmaster, then a start (crash recovery)."""

    async def fault() -> None:
        await asyncio.to_thread(rig.pg.kill_postmaster)

    async def heal() -> None:
        await asyncio.to_thread(rig.pg.start)

    return await rig.scenario("postgres kill -9 (postmaster)", fault, heal)


# ------------------------------------------------------------------ Redis


async def refuse_writes(client: Any) -> None:
    await client.config_set("maxmemory-policy", "noeviction")
    await client.config_set("maxmemory", "1")
    try:
        await client.set(f"{PREFIX}probe", "x")
    except ResponseError as exc:
        if "maxmemory" not in str(exc):
            raise
    else:
        raise AssertionError("Redis still accepts writes")


async def accept_writes(client: Any) -> None:
    await client.config_set("maxmemory", "0")


async def redis_refusing_writes(rig: Rig) -> Outcome:
    return await rig.scenario(
        "redis refusing writes (maxmemory, noeviction)",
        lambda: refuse_writes(rig.redis_admin),
        lambda: accept_writes(rig.redis_admin),
        hold=rig.timing.hold + 0.5,
    )


async def redis_killed(rig: Rig) -> Outcome:
    async def fault() -> None:
        rig.redis.kill()

    async def heal() -> None:
        await asyncio.to_thread(rig.redis.start)  # same port, empty

    return await rig.scenario("redis kill -9 (restarted empty)", fault, heal)


async def redis_flushall(rig: Rig) -> Outcome:
    async def flush() -> None:
        await rig.redis_admin.flushall()

    return await rig.scenario("redis FLUSHALL", flush, nothing, instant=True, hold=1.0)


# -------------------------------------------------------------- processes


async def expired(engine: AsyncEngine) -> Counter[str]:
    query = select(events_table.c.stream_id, func.count()).where(
        events_table.c.type == "SessionExpired"
    )
    async with engine.connect() as conn:
        rows = await conn.execute(query.group_by(events_table.c.stream_id))
        return Counter({sid: n for sid, n in rows})


async def all_expired(engine: AsyncEngine, at_least: int) -> bool:
    return len(await expired(engine)) >= at_least


async def worker_leader_killed(rig: Rig, sessions: int = 1000) -> Outcome:
    """1,000 short sessions fall due; the expiry leader is killed with SIGKILL
    after its first batch; the standby finishes. Notes: from the kill until
    the standby's first batch, and until every session was expired."""
    dep, engine = rig.dep, rig.engine
    before = len(await expired(engine))
    await short_sessions(dep, sessions, users=10)
    total = before + sessions
    offsets = {w.name: len(w.log()) for w in dep.workers}
    killed: list[Process] = []
    notes: dict[str, float] = {}

    async def fault() -> None:
        leaders: list[Process] = []

        async def mid_sweep() -> bool:
            leaders[:] = [w for w in dep.workers if '"expiry.batch"' in w.log()[offsets[w.name] :]]
            return bool(leaders) and len(await expired(engine)) < total

        await wait_until(mid_sweep, "the sweep under way", 30)
        leaders[0].kill()
        killed.append(leaders[0])
        standby = next(w for w in dep.workers if w is not leaders[0])
        since = len(standby.log())
        started = time.monotonic()

        def leads() -> bool:
            return '"expiry.batch"' in standby.log()[since:]

        notes["standby leads s"] = await wait_until(leads, "the standby leading", 60)
        await wait_until(lambda: all_expired(engine, total), "the standby's sweep", 60)
        notes["all expired s"] = time.monotonic() - started

    async def heal() -> None:
        for worker in killed:
            worker.start()

    outcome = await rig.scenario(
        "worker leader kill -9 mid-sweep",
        fault,
        heal,
        hold=0.2,
        before=max(rig.timing.before, SHORT_SESSION_SECONDS),
    )
    outcome.notes |= notes
    outcome.notes["expired once"] = float(set((await expired(engine)).values()) == {1})
    return outcome


async def service_killed(rig: Rig) -> Outcome:
    service = rig.dep.services[0]

    async def fault() -> None:
        service.kill()

    async def heal() -> None:
        service.start()
        await asyncio.to_thread(wait_healthy, service)

    return await rig.scenario("service kill -9 during writes", fault, heal, hold=1.0)


# ------------------------------------------------------------ SQLite disk

DISK_MB = 32


class SmallDisk:
    """Where a SQLite database lives, and how to fill it up and free it.

    A small tmpfs when one can be mounted (root); elsewhere the processes
    get a file-size limit (RLIMIT_FSIZE) at the files' current size, which
    SQLite meets the same way (its writes fail), and which is lifted to heal.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False
        self.filler = path / "filler"
        self.limited: list[int] = []

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(self.path)],
            capture_output=True,
            check=False,
        )
        self.mounted = done.returncode == 0

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def fill(self, pids: list[int]) -> None:
        if self.mounted:
            with contextlib.suppress(OSError), self.filler.open("wb") as out:
                chunk = b"\0" * (1 << 20)
                while True:
                    out.write(chunk)
                    out.flush()
            return
        largest = max(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        for pid in pids:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (largest, resource.RLIM_INFINITY))
            self.limited.append(pid)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        for pid in self.limited:
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
        self.limited = []


async def sqlite_full_disk(disk: SmallDisk, workdir: Path, timing: Timing) -> Outcome:
    """Two services and a worker on one SQLite file whose disk fills up."""
    url = sqlite_file_url(disk.path / "ledger.db")
    await migrate(url)
    dep = Deployment(database_url=url, workdir=workdir, worker_count=1, overrides=LOAD_SETTINGS)
    engine = make_engine(url)
    load = Load(dep, users=3, devices_per_user=2, seed=11)
    try:
        await asyncio.to_thread(dep.start)
        await load.prepare(engine)
        canary = await Canary.create(dep)

        async def fault() -> None:
            pids = [p.proc.pid for p in dep.processes if p.proc is not None]
            await asyncio.to_thread(disk.fill, pids)

        async def heal() -> None:
            disk.free()

        outcome = await run_scenario(
            f"sqlite full disk ({'tmpfs' if disk.mounted else 'RLIMIT_FSIZE'})",
            dep,
            load,
            engine,
            canary,
            fault=fault,
            heal=heal,
            before=timing.before,
            hold=timing.hold,
            after=timing.after,
        )
        outcome.notes["tracebacks"] = sum(s.log().count("Traceback") for s in dep.services)
        return outcome
    finally:
        await load.close()
        await asyncio.to_thread(dep.stop)
        await engine.dispose()
