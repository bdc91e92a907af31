"""Prometheus metrics of the workers (prometheus_client).

Each WorkerMetrics owns its registry, so several workers (or tests) in one
process never collide on metric names; ``serve`` exposes that registry on
an HTTP port (``settings.worker.metrics_port``), beside ``/healthz``: the
worker's jobs as JSON, 200 while none is failing, else 503.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

#: ``(healthy, body)`` of the worker's jobs, for /healthz.
HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]

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
        self.horizon_held_back = Gauge(
            "session_ledger_ledger_horizon_held_back_events",
            "Committed events above the horizon (ledger.horizon): followers cannot "
            "read them until the transactions below finish.",
            registry=self.registry,
        )
        self.oldest_transaction_seconds = Gauge(
            "session_ledger_ledger_oldest_transaction_seconds",
            "Age of the oldest transaction of the database holding a transaction id "
            "(what the horizon waits for); 0 when none.",
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

    def serve(
        self,
        port: int,
        addr: str = "0.0.0.0",  # noqa: S104  (scraped from outside)
        health: HealthCheck | None = None,
    ) -> WSGIServer:
        """Expose the metrics (and ``/healthz``) over HTTP on ``port``, in a
        daemon thread; ``shutdown()`` on the server returned stops it."""
        metrics = make_wsgi_app(self.registry)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            if health is not None and environ.get("PATH_INFO") == "/healthz":
                ok, body = health()
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(status, [("Content-Type", "application/json")])
                return [json.dumps(body).encode()]
            scraped: Iterable[bytes] = metrics(environ, start_response)
            return scraped

        server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""
