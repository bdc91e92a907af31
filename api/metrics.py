"""Prometheus metrics of the service process (prometheus_client).

Each app has its own registry (several apps in one process, as in tests,
never collide); ``session-ledger serve --metrics-port N`` exposes it.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, start_http_server

#: Set by ``serve --metrics-port``: the service exposes its metrics there.
METRICS_PORT_ENV = "SESSION_LEDGER_SERVE_METRICS_PORT"


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.rate_limited = Counter(
            "session_ledger_rate_limited",
            "Requests refused with 429 by a rate limit.",
            ["rule"],
            registry=self.registry,
        )
        self.unrecorded_failures = Counter(
            "session_ledger_sign_in_failures_unrecorded",
            "Failed sign-ins past the per-account limit: counted here, not written to the ledger.",
            ["reason"],
            registry=self.registry,
        )
        self.limit_storage_errors = Counter(
            "session_ledger_rate_limit_storage_errors",
            "Rate-limit checks the storage (Redis) could not answer, by what was done: "
            "open (allowed) or closed (refused with 503).",
            ["outcome"],
            registry=self.registry,
        )
        self.hashing_busy = Counter(
            "session_ledger_password_hashing_busy",
            "Sign-ins and sign-ups refused with 503 SERVER_BUSY: password hashing was saturated.",
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Expose the metrics over HTTP on ``port`` (a daemon thread)."""
        start_http_server(port, addr=addr, registry=self.registry)
