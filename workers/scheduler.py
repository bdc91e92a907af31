"""The worker process: the expiry sweep and the ledger digest as APScheduler 3
interval jobs (AsyncIOScheduler), and the projection worker as a long-running
task, all in one event loop.

Multi-process safety: the expiry sweep and the digest run only in the
maintenance leader, the projector only in the projector leader
(workers/leader.py: PostgreSQL advisory locks; SQLite assumes one worker
process). Leadership avoids duplicate work; correctness rests on the event
store's optimistic concurrency (expiry) and on the runners' idempotent,
version-ordered writes (projections).

Shutdown: ``stop`` (set on SIGTERM/SIGINT by the CLI) is checked between
batches, so the batch in hand always finishes; ``shutdown`` then waits for
running jobs before stopping the scheduler (APScheduler 3 would cancel them).
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import Clock
from session_ledger.ledger.config import Settings
from session_ledger.ledger.failures import describe_failure
from session_ledger.ledger.store import EventStore
from session_ledger.workers.expiry import ExpirySweep
from session_ledger.workers.health import Heartbeats, JobStates
from session_ledger.workers.jobs import DIGEST, EXPIRY, JOBS, PROJECTOR
from session_ledger.workers.leader import PROJECTOR_LOCK_KEY, Leadership, leadership_for
from session_ledger.workers.logging import get_logger
from session_ledger.workers.metrics import WorkerMetrics
from session_ledger.workers.projector import ProjectorWorker

#: The projector records a heartbeat at most this often (it runs every second).
PROJECTOR_HEARTBEAT_EVERY = 15.0

JobResult = dict[str, Any]


class WorkerContext(Protocol):
    """What the workers need of the wiring (api.bootstrap.Container has it)."""

    settings: Settings
    engine: AsyncEngine
    store: EventStore
    clock: Clock


async def _lead(leader: Leadership) -> bool:
    """True when this process leads; raises when that cannot be known (the
    database is unreachable): the job failed, it is not standing by."""
    if await leader.acquire():
        return True
    error = getattr(leader, "error", None)
    if error is not None:
        raise error
    return False


class Worker:
    def __init__(
        self,
        context: WorkerContext,
        *,
        jobs: Collection[str] = JOBS,
        projector: ProjectorWorker | None = None,
        leader: Leadership | None = None,
        metrics: WorkerMetrics | None = None,
        heartbeats: Heartbeats | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        unknown = set(jobs) - set(JOBS)
        if unknown:
            raise ValueError(f"unknown jobs: {', '.join(sorted(unknown))}")
        self.context = context
        self.settings = context.settings
        self.jobs = [j for j in JOBS if j in jobs]
        self.metrics = metrics or WorkerMetrics()
        self.heartbeats = heartbeats or Heartbeats(context.engine, context.clock)
        self.leader = leader or leadership_for(self.settings.database_url)
        self.stop = stop or asyncio.Event()
        self.sweep = ExpirySweep(
            context.store,
            self.settings.session,
            context.clock,
            batch_size=self.settings.worker.expiry_batch_size,
            metrics=self.metrics,
        )
        self.projector = projector
        if self.projector is not None:
            self.projector.metrics = self.projector.metrics or self.metrics
            self.projector.on_success = self._projector_heartbeat
            self.projector.on_failure = self._projector_failed
            if self.projector.leader is None:
                # One catching-up process per database is enough; the others
                # stand by (their catch-up would be idempotent, only wasted).
                self.projector.leader = leadership_for(
                    self.settings.database_url, PROJECTOR_LOCK_KEY
                )
        self._locks = {job: asyncio.Lock() for job in JOBS}
        #: Jobs whose last run failed (``--once`` exits non-zero when any did),
        #: and why, in one line.
        self.failed: list[str] = []
        self.errors: dict[str, str] = {}
        self.states = JobStates()
        #: Only the rate limit of "heartbeat.failed" logs (not the jobs' health).
        self._beats = JobStates()
        self._last_projector_beat = 0.0
        self._digest: Callable[[Any], Awaitable[Any]] | None = None
        self._log = get_logger("workers.scheduler", worker_id=self.heartbeats.worker_id)

    # ------------------------------------------------------------- jobs

    async def run_expiry(self) -> JobResult | None:
        """One sweep, if this process leads; None when another one does."""
        if not await self._lead():
            self._log.debug("expiry.standby")
            return None
        result = await self.sweep.run(stop=self.stop, keep_going=self.leader.acquire)
        return {
            "expired": result.expired,
            "skipped": result.skipped,
            "conflicts": result.conflicts,
            "deferred": result.deferred,
            "batches": result.batches,
            "interrupted": result.interrupted,
            "duration_s": round(result.duration, 3),
        }

    async def run_digest(self) -> JobResult | None:
        record = self._load_digest()
        if record is None or not await self._lead():
            return None
        outcome = await record(self.context)
        return outcome if isinstance(outcome, dict) else {}

    async def run_projector_once(self) -> JobResult | None:
        if self.projector is None:
            return None
        leader = self.projector.leader
        if leader is not None and not await _lead(leader):
            return None
        try:
            return await self.projector.catch_up()
        finally:
            if leader is not None:
                await leader.release()

    async def _lead(self) -> bool:
        return await _lead(self.leader)

    def _load_digest(self) -> Callable[[Any], Awaitable[Any]] | None:
        if self._digest is None:
            # Imported lazily: the digest job is optional (workers/digest.py).
            try:
                module = importlib.import_module("session_ledger.workers.digest")
            except ModuleNotFoundError as exc:
                if exc.name != "session_ledger.workers.digest":
                    raise
                self._log.info("digest.unavailable", reason="workers.digest is not installed")
                return None
            self._digest = module.record_digest
        return self._digest

    async def run_job(self, job: str) -> JobResult | None:
        """Run one job with its heartbeat, metrics and logs; never raises."""
        runner = {
            EXPIRY: self.run_expiry,
            DIGEST: self.run_digest,
            PROJECTOR: self.run_projector_once,
        }[job]
        # max_instances=1 already stops overlapping scheduler runs; the lock
        # also covers --once and lets shutdown wait for the job in hand.
        async with self._locks[job]:
            if self.stop.is_set():
                return None
            try:
                details = await runner()
            except Exception as exc:  # a failed run is recorded; the next run retries
                await self.job_failed(job, exc)
                return None
            if details is not None:
                await self.job_succeeded(job, details)
            return details

    async def job_failed(self, job: str, exc: BaseException) -> None:
        """Count, remember and (rate-limited) log a failed run, and record
        it in the job's heartbeat when the database can take it."""
        message = (
            describe_failure(
                exc,
                database_url=self.settings.database_url,
                redis_url=self.settings.redis.url,
            )
            or f"{type(exc).__name__}: {exc}"
        )
        self.metrics.job_failures.labels(job=job).inc()
        self.failed.append(job)
        self.errors[job] = message
        logged = self.states.failed(job, message, self.context.clock.now())
        if logged is not None:
            self._log.error("job.failed", job=job, error=message, failures=logged)
            await self._beat(self.heartbeats.failure(job, message))

    async def job_succeeded(self, job: str, details: JobResult) -> None:
        self.metrics.job_succeeded(job, self.context.clock.now())
        ended = self.states.succeeded(job, self.context.clock.now())
        if ended:
            self._log.info("job.recovered", job=job, after_failures=ended)
        await self._beat(self.heartbeats.success(job, details))

    async def _projector_heartbeat(self, details: JobResult) -> None:
        now = asyncio.get_running_loop().time()
        self.metrics.job_succeeded(PROJECTOR, self.context.clock.now())
        ended = self.states.succeeded(PROJECTOR, self.context.clock.now())
        if ended:
            self._log.info("job.recovered", job=PROJECTOR, after_failures=ended)
        if ended or now - self._last_projector_beat >= PROJECTOR_HEARTBEAT_EVERY:
            self._last_projector_beat = now
            await self._beat(self.heartbeats.success(PROJECTOR, details))

    async def _projector_failed(self, exc: BaseException) -> None:
        await self.job_failed(PROJECTOR, exc)

    async def _beat(self, write: Awaitable[Any]) -> None:
        try:
            await write
        except Exception as exc:  # health reporting must never stop the work
            message = describe_failure(exc, database_url=self.settings.database_url)
            message = message or f"{type(exc).__name__}: {exc}"
            if self._beats.failed("heartbeat", message, self.context.clock.now()) is not None:
                self._log.warning("heartbeat.failed", error=message)
            return
        self._beats.succeeded("heartbeat", self.context.clock.now())

    def health(self) -> tuple[bool, dict[str, Any]]:
        """This process's jobs: healthy or failing with the last error (/healthz)."""
        return self.states.ok, {"workerId": self.heartbeats.worker_id, **self.states.to_json()}

    # ---------------------------------------------------------- process

    async def run_once(self) -> dict[str, JobResult | None]:
        """Each selected job once (the projector: one catch-up pass)."""
        results: dict[str, JobResult | None] = {}
        for job in self.jobs:
            results[job] = await self.run_job(job)
        await self.leader.release()
        return results

    async def run_forever(self) -> None:
        """Run the jobs until ``stop`` is set, then shut down gracefully."""
        port = self.settings.worker.metrics_port
        if port:
            self.metrics.serve(port, health=self.health)
            self._log.info("metrics.serving", port=port)
        scheduler = AsyncIOScheduler(timezone=UTC)
        first = datetime.now(UTC)
        intervals = {
            EXPIRY: self.settings.worker.expiry_interval,
            DIGEST: self.settings.worker.digest_interval,
        }
        for job, seconds in intervals.items():
            if job not in self.jobs or (job == DIGEST and self._load_digest() is None):
                continue
            scheduler.add_job(
                self.run_job,
                IntervalTrigger(seconds=seconds, timezone=UTC),
                args=[job],
                id=job,
                max_instances=1,
                # A run late because the previous one was long: run once, now.
                coalesce=True,
                misfire_grace_time=None,
                next_run_time=first,
            )
        scheduler.start()
        projector_task: asyncio.Task[None] | None = None
        if PROJECTOR in self.jobs and self.projector is not None:
            projector_task = asyncio.create_task(self.projector.run(self.stop))
        elif PROJECTOR in self.jobs:
            self._log.info("projector.unavailable", reason="no Redis configured")
        self._log.info("worker.started", jobs=self.jobs)
        try:
            await self.stop.wait()
        finally:
            await self.shutdown(scheduler, projector_task)

    async def shutdown(
        self, scheduler: AsyncIOScheduler, projector_task: asyncio.Task[None] | None
    ) -> None:
        self.stop.set()
        scheduler.pause()
        # Wait for the job in hand: each job checks ``stop`` between batches.
        for lock in self._locks.values():
            async with lock:
                pass
        if projector_task is not None:
            await projector_task
        scheduler.shutdown(wait=False)
        await self.leader.release()
        self._log.info("worker.stopped")
