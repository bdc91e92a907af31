"""Prometheus metrics of the workers (prometheus_client).

Each WorkerMetrics owns its registry, so several workers (or tests) in one
process never collide on metric names; ``serve`` exposes that registry on
an HTTP port (``settings.worker.metrics_port``).
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: Batch durations are tens of milliseconds; the buckets spread around that.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.sessions_expired = Counter(
            "session_ledger_sessions_expired",
            "Sessions the expiry sweep recorded as expired.",
            ["reason"],
            registry=self.registry,
        )
        self.expiry_conflicts = Counter(
            "session_ledger_expiry_conflicts",
            "Expiry appends that lost a race (the session changed meanwhile).",
            registry=self.registry,
        )
        self.expiry_batch_duration = Histogram(
            "session_ledger_expiry_batch_duration_seconds",
            "Time to expire one batch of sessions.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.projection_lag_events = Gauge(
            "session_ledger_projection_lag_events",
            "Events in the ledger that the projection has not applied yet.",
            ["projection"],
            registry=self.registry,
        )
        self.projection_lag_seconds = Gauge(
            "session_ledger_projection_lag_seconds",
            "Age of the oldest event the projection has not applied yet (0 when caught up).",
            ["projection"],
            registry=self.registry,
        )
        self.job_last_success = Gauge(
            "session_ledger_job_last_success_timestamp_seconds",
            "Unix time of the job's last successful run in this process.",
            ["job"],
            registry=self.registry,
        )
        self.job_failures = Counter(
            "session_ledger_job_failures",
            "Job runs that failed with an error.",
            ["job"],
            registry=self.registry,
        )

    def job_succeeded(self, job: str, at: datetime) -> None:
        self.job_last_success.labels(job=job).set(at.timestamp())

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104  (scraped from outside)
        """Expose the metrics over HTTP on ``port`` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
