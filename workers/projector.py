"""The projection worker: keeps checkpointed projections (the Redis cache)
caught up with the ledger, and survives outages of PostgreSQL and Redis.

Loop per runner: catch up (``run_once``), publish the lag, then sleep until
a NOTIFY on the ledger channel (PostgreSQL) or the poll interval, whichever
comes first. Any error (server gone, connection reset, timeout) is logged and
retried after an exponential back-off with jitter; clients reconnect on
their own (redis-py on the next command; a database connection that died
fails one statement, is invalidated with its pool, and the next checkout
connects anew, pre-pinged when the engine asks for it, as the worker
command's does) and the listener connection is re-opened. Because the runner's writes are
idempotent and ordered by stream version, re-applying a batch after a
failure half-way is harmless.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from sqlalchemy.engine import make_url

from session_ledger.ledger import horizon
from session_ledger.ledger.clock import Clock
from session_ledger.ledger.config import Settings
from session_ledger.ledger.store import EventStore
from session_ledger.projections.runner import CHANNEL, ProjectionRunner
from session_ledger.workers.leader import Leadership
from session_ledger.workers.logging import get_logger
from session_ledger.workers.metrics import WorkerMetrics

#: The channel every writer NOTIFYs after its commits (NotifyAfterCommit).
DEFAULT_CHANNEL = CHANNEL
LISTEN_TIMEOUT = 5.0
#: Lag is counted up to this many events (the count costs as much as it finds).
LAG_COUNT_LIMIT = 100_000


class CatchUpRunner(Protocol):
    """What the worker needs of a checkpointed projection runner."""

    async def run_once(self) -> Any:
        """Apply every event after the checkpoint; returns how many (or anything)."""
        ...


#: The last mark a projection applied (a coroutine function is fine too).
Checkpoint = Callable[[], Any]


# ------------------------------------------------------------------ back-off


class Backoff:
    """Delays of ``initial * 2**n`` capped at ``maximum``, each drawn from
    ``[delay/2, delay]`` so that many workers do not retry in lockstep."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.maximum, self.initial * 2**self.failures)
        self.failures += 1
        return random.uniform(delay / 2, delay)


async def sleep_unless(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep ``seconds``; return True early when ``stop`` is set meanwhile."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


# ------------------------------------------------------------------ wake-up


class LedgerListener:
    """LISTEN on the ledger's NOTIFY channel on a dedicated connection; sets
    ``woken`` on every notification. Re-opened by ``ensure`` after a loss."""

    def __init__(self, database_url: str, channel: str = DEFAULT_CHANNEL) -> None:
        self._dsn = (
            make_url(database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        self.channel = channel
        self.woken = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self._log = get_logger("workers.projector.listener", channel=channel)

    async def ensure(self) -> bool:
        """Listening now? Reconnects when needed; False (polling) while it cannot."""
        if self._conn is not None and not self._conn.is_closed():
            return True
        try:
            conn = await asyncpg.connect(self._dsn, timeout=LISTEN_TIMEOUT)
            await conn.add_listener(self.channel, self._notified)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._log.warning("listener.unavailable", error=f"{type(exc).__name__}: {exc}")
            return False
        self._conn = conn
        # Anything appended while we were not listening is picked up by the
        # catch-up that follows every wake-up, so nothing is missed.
        self.woken.set()
        return True

    def _notified(self, *_args: Any) -> None:
        self.woken.set()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), LISTEN_TIMEOUT)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()


# ------------------------------------------------------------------ worker


class ProjectorWorker:
    def __init__(
        self,
        runners: Sequence[tuple[str, CatchUpRunner, Checkpoint]],
        store: EventStore,
        clock: Clock,
        *,
        poll_interval: float = 1.0,
        listener: LedgerListener | None = None,
        metrics: WorkerMetrics | None = None,
        on_success: Callable[[dict[str, Any]], Any] | None = None,
        on_failure: Callable[[BaseException], Awaitable[None]] | None = None,
        backoff: Backoff | None = None,
        leader: Leadership | None = None,
    ) -> None:
        """``runners``: (name, runner, checkpoint) where ``checkpoint()`` returns
        (or awaits to) the last mark the projection applied (ledger.horizon). With a
        ``leader``, only the process holding it catches up; the others stand
        by and take over within a poll interval when it dies."""
        self.runners = list(runners)
        self.store = store
        self.clock = clock
        self.poll_interval = poll_interval
        self.listener = listener
        self.metrics = metrics
        self.on_success = on_success
        self.on_failure = on_failure
        self.backoff = backoff or Backoff()
        self.leader = leader
        self.lag: dict[str, tuple[int, float]] = {}
        self.horizon_lag: horizon.Lag | None = None
        self._log = get_logger("workers.projector")

    async def catch_up(self) -> dict[str, Any]:
        """One pass: every runner catches up, then the lag is measured."""
        applied: dict[str, Any] = {}
        for name, runner, _checkpoint in self.runners:
            started = time.perf_counter()
            result = await runner.run_once()
            applied[name] = result
            if isinstance(result, int) and result:
                self._log.info(
                    "projector.batch",
                    projection=name,
                    applied=result,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )
        await self.measure_lag()
        return {
            "applied": {k: v for k, v in applied.items() if isinstance(v, int)},
            "lag_events": {k: v[0] for k, v in self.lag.items()},
        }

    async def measure_lag(self) -> dict[str, tuple[int, float]]:
        """Per projection: (events committed after its checkpoint, counted up
        to LAG_COUNT_LIMIT; age in seconds of the oldest of them), and the
        horizon's own lag (ledger.horizon.lag)."""
        engine = self.store.engine
        now = self.clock.now()
        for name, _runner, checkpoint in self.runners:
            mark = checkpoint()
            if asyncio.iscoroutine(mark):
                mark = await mark
            mark = mark or horizon.ORIGIN
            events = await horizon.count_after(engine, mark, LAG_COUNT_LIMIT)
            seconds = 0.0
            if events:
                oldest = await horizon.read(engine, mark, 1, safe=False)
                if oldest.events:
                    seconds = max(0.0, _seconds(now, oldest.events[0].recorded_at))
            self.lag[name] = (events, seconds)
            if self.metrics is not None:
                self.metrics.projection_lag_events.labels(projection=name).set(events)
                self.metrics.projection_lag_seconds.labels(projection=name).set(seconds)
        self.horizon_lag = await horizon.lag(engine)
        if self.metrics is not None:
            self.metrics.horizon_held_back.set(self.horizon_lag.held_back)
            self.metrics.oldest_transaction_seconds.set(self.horizon_lag.oldest_xact_seconds)
        return dict(self.lag)

    async def run(self, stop: asyncio.Event) -> None:
        """Catch up continuously until ``stop`` is set (after the pass in hand)."""
        while not stop.is_set():
            try:
                if self.leader is not None and not await self.leader.acquire():
                    if self.leader.error is not None:
                        raise self.leader.error  # unreachable: failing, not standing by
                    await sleep_unless(stop, self.poll_interval)  # standby
                    continue
                if self.listener is not None:
                    await self.listener.ensure()
                    self.listener.woken.clear()
                details = await self.catch_up()
            except Exception as exc:  # every outage looks different; all are retried
                delay = self.backoff.next_delay()
                if self.on_failure is not None:
                    # The worker counts, records and logs it (rate-limited).
                    await self.on_failure(exc)
                else:
                    self._log.warning(
                        "projector.retry",
                        error=f"{type(exc).__name__}: {exc}",
                        failures=self.backoff.failures,
                        retry_in_s=round(delay, 2),
                    )
                    if self.metrics is not None:
                        self.metrics.job_failures.labels(job="projector").inc()
                if self.listener is not None:
                    await self.listener.close()
                await sleep_unless(stop, delay)
                continue
            if self.backoff.failures:
                self._log.info("projector.recovered", after_failures=self.backoff.failures)
            self.backoff.reset()
            if self.on_success is not None:
                outcome = self.on_success(details)
                if asyncio.iscoroutine(outcome):
                    await outcome
            await self._wait(stop)
        if self.listener is not None:
            await self.listener.close()
        if self.leader is not None:
            await self.leader.release()

    async def _wait(self, stop: asyncio.Event) -> None:
        if self.listener is None:
            await sleep_unless(stop, self.poll_interval)
            return
        stopping = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self.listener.woken.wait())
        try:
            # The poll interval stays as a safety net: a NOTIFY sent while the
            # listener was reconnecting is never delivered.
            await asyncio.wait(
                {stopping, woken}, timeout=self.poll_interval, return_when="FIRST_COMPLETED"
            )
        finally:
            stopping.cancel()
            woken.cancel()


def _seconds(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()


def redis_projector(
    runner: ProjectionRunner, store: EventStore, clock: Clock, settings: Settings
) -> ProjectorWorker:
    """The projection worker over the Redis cache's runner (api.bootstrap builds it)."""

    async def checkpoint() -> horizon.Mark:
        # The live namespace's checkpoint; missing (Redis lost it) counts as
        # the start: the whole ledger is behind until the runner has rebuilt
        # the cache.
        keys = (await runner.cache.write_keys())[0]
        return await runner.cache.checkpoint(keys) or horizon.ORIGIN

    listener = LedgerListener(settings.database_url) if settings.is_postgres else None
    return ProjectorWorker(
        [("redis", runner, checkpoint)],
        store,
        clock,
        poll_interval=settings.worker.projector_poll_interval,
        listener=listener,
    )
