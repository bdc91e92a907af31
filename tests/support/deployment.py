"""A small production-like deployment for the fault suite (and
``bench.faults``): two ``session-ledger serve`` processes and two
``session-ledger worker`` processes on one database and one Redis, each a
real OS process that can be killed with SIGKILL and started again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from session_ledger.ledger.config import Settings, load_settings
from session_ledger.ledger.domain.tokens import Signer
from tests.support.redis import free_port

CLI = str(Path(sys.executable).parent / "session-ledger")
SECRET = "fault-suite-secret-0123456789abcdef-0123456789"
PASSWORD = "fault suite password"
COOKIE = "better-auth.session-token"


@dataclass
class Process:
    """One ``session-ledger`` process (serve or worker) and its log."""

    name: str
    args: list[str]
    env: dict[str, str]
    workdir: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [CLI, *self.args],
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class Deployment:
    """Two services (A, B) and two workers on one database (and Redis)."""

    database_url: str
    workdir: Path
    redis_url: str | None = None
    #: Worker processes (SQLite: one per database file).
    worker_count: int = 2
    #: SESSION_LEDGER_* variables on top of the deployment's own.
    overrides: Mapping[str, str] = field(default_factory=dict)
    services: list[Process] = field(default_factory=list)
    workers: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ports = [free_port(), free_port()]
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
        env |= {
            "SESSION_LEDGER_ENVIRONMENT": "test",
            "SESSION_LEDGER_DATABASE_URL": self.database_url,
            "SESSION_LEDGER_SECRETS": json.dumps([SECRET]),
            "SESSION_LEDGER_BASE_URL": bases[0],
            "SESSION_LEDGER_TRUSTED_ORIGINS": json.dumps(bases[1:]),
            # Log lines reach the files at once (the tests read them).
            "PYTHONUNBUFFERED": "1",
            "SESSION_LEDGER_WORKER__EXPIRY_INTERVAL": "1",
            "SESSION_LEDGER_WORKER__PROJECTOR_POLL_INTERVAL": "0.2",
        }
        if self.redis_url is not None:
            env["SESSION_LEDGER_REDIS__URL"] = self.redis_url
        env |= self.overrides
        self.env = env
        self.services = [
            Process(name, ["serve", "--port", str(port)], env, self.workdir, port)
            for name, port in zip(("A", "B"), ports, strict=True)
        ]
        self.workers = [
            Process(f"W{i}", ["worker"], env, self.workdir) for i in range(1, self.worker_count + 1)
        ]
        self.signer = Signer([SECRET])

    @property
    def origin(self) -> str:
        return self.services[0].base

    @property
    def processes(self) -> list[Process]:
        return [*self.services, *self.workers]

    def start(self, timeout: float = 60) -> None:
        for process in self.processes:
            process.start()
        for service in self.services:
            wait_healthy(service, timeout)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def restart(self, process: Process, timeout: float = 60) -> None:
        process.kill()
        process.start()
        if process.port is not None:
            wait_healthy(process, timeout)

    def settings(self) -> Settings:
        """The deployment's settings, as its processes read them."""
        saved = dict(os.environ)
        try:
            os.environ.clear()
            os.environ.update(self.env)
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def cookie(self, token: str) -> str:
        """The Cookie header of a session token (signed as the service signs it)."""
        return f"{COOKIE}={self.signer.sign(token)}"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLI, *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def wait_healthy(service: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not service.alive():
            raise RuntimeError(f"{service.name} exited:\n{service.log()[-3000:]}")
        try:
            if httpx.get(f"{service.base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{service.name} did not start:\n{service.log()[-3000:]}")
        time.sleep(0.05)


async def wait_until(predicate: Any, what: str, limit: float = 30.0) -> float:
    """Await ``predicate()`` (sync or async) until true; the seconds it took."""
    started = time.monotonic()
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise AssertionError(f"timed out after {limit} s waiting for {what}")
        await asyncio.sleep(0.05)


@contextmanager
def deployment(**kwargs: Any) -> Iterator[Deployment]:
    dep = Deployment(**kwargs)
    try:
        dep.start()
        yield dep
    finally:
        dep.stop()
