"""Helpers for the HTTP benchmarks: a throw-away database, a service
process (``session-ledger serve``: uvicorn, uvloop + httptools, one worker)
on a free loopback port, and a signed-in user's cookies."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PG_ENV = "SESSION_LEDGER_TEST_PG"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SECRET = "bench-secret-" + "0123456789abcdef" * 2
PASSWORD = "bench password 1234"  # noqa: S105  (a throw-away bench user)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def admin_dsn() -> str:
    url = make_url(os.environ.get(PG_ENV, DEFAULT_PG)).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@contextmanager
def database(backend: str) -> Iterator[str]:
    """A fresh database URL (SQLite file or PostgreSQL database), removed after."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite+aiosqlite:///{tmp}/bench.db"
        return
    name = f"sl_bench_{secrets.token_hex(4)}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(admin_dsn())
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(os.environ.get(PG_ENV, DEFAULT_PG)).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


#: How bench/asgi_servers.py runs the same app on granian (migrated first, as
#: ``serve`` does): one worker, one runtime thread, uvloop, no websockets.
GRANIAN = [
    "granian", "--interface", "asgi", "--factory", "--loop", "uvloop", "--workers", "1",
    "--no-ws", "--log-level", "warning", "session_ledger.api.app:app_from_env",
]  # fmt: skip


def _environment(database_url: str, base: str, env: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "SESSION_LEDGER_ENVIRONMENT": "test",
        "SESSION_LEDGER_DATABASE_URL": database_url,
        "SESSION_LEDGER_BASE_URL": base,
        "SESSION_LEDGER_SECRETS": f'["{SECRET}"]',
        **env,
    }


@contextmanager
def service(database_url: str, *, server: str = "uvicorn", **env: str) -> Iterator[str]:
    """``session-ledger serve`` (or the same app on granian) in a subprocess;
    yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = _environment(database_url, base, env)
    bin_dir = Path(sys.executable).parent
    command = [str(bin_dir / "session-ledger"), "serve", "--port", str(port)]
    if server == "granian":
        migrate = [str(bin_dir / "session-ledger"), "migrate"]
        subprocess.run(migrate, cwd=ROOT, env=environment, check=True, capture_output=True)
        command = [str(bin_dir / GRANIAN[0]), *GRANIAN[1:], "--port", str(port)]
    with running(command, cwd=ROOT, env=environment, ready=f"{base}/healthz"):
        yield base


@contextmanager
def running(
    command: list[str], *, cwd: Path, env: dict[str, str], ready: str | None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, until ``ready`` answers 200 (60 s at most; its
    output in the error otherwise; None: no waiting); terminated on exit."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while ready is not None:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{command[0]} did not start:\n" + log.read().decode())
                try:
                    if httpx.get(ready, timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def worker(database_url: str, *args: str, **env: str) -> Iterator[None]:
    """``session-ledger worker`` in a subprocess (with Redis: the projector
    that keeps the cache's checkpoint, without which no service believes
    Redis; see projections.freshness)."""
    environment = _environment(database_url, "http://127.0.0.1", env)
    command = [str(Path(sys.executable).parent / "session-ledger"), "worker", *args]
    with running(command, cwd=ROOT, env=environment, ready=None):
        yield


@contextmanager
def server(
    database_url: str, code: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``session-ledger serve`` in a subprocess: (base URL, process). ``code``:
    run that source tree instead of this one (an older commit, extracted by
    :func:`checkout`), with this virtualenv's packages."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = _environment(database_url, base, env or {})
    command = [str(Path(sys.executable).parent / "session-ledger"), "serve", "--port", str(port)]
    cwd = ROOT
    if code is not None:
        # The first entry of sys.path: the old tree's packages win over the
        # editable install of this one.
        path, cli = source_path(code)
        command = [sys.executable, "-c", f"from {cli} import main; main()", *command[1:]]
        environment["PYTHONPATH"] = str(path)
        cwd = code
    with running(command, cwd=cwd, env=environment, ready=f"{base}/healthz") as process:
        yield base, process


PACKAGES = ("ledger", "projections", "workers", "api", "migrations")


def source_path(code: Path) -> tuple[Path, str]:
    """(sys.path entry, CLI module) that run the source tree ``code``.

    Trees from before the single namespace import their packages by their
    directory names. Later ones import ``session_ledger.<dir>``: a link farm
    beside the tree (``session_ledger/<dir>`` -> ``<dir>``) makes them
    importable as installed, ahead of this checkout's editable install."""
    if "session_ledger" not in (code / "pyproject.toml").read_text():
        return code, "api.cli"
    farm = code / ".namespace" / "session_ledger"
    farm.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        link = farm / package
        if not link.exists():
            link.symlink_to(code / package, target_is_directory=True)
    return farm.parent, "session_ledger.api.cli"


@contextmanager
def checkout(rev: str) -> Iterator[Path]:
    """The source tree of commit ``rev`` in a temporary directory (git archive:
    no worktree, nothing in the repository changes)."""
    with tempfile.TemporaryDirectory(prefix="sl-bench-") as tmp:
        archive = subprocess.run(
            ["git", "archive", rev], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def sign_up(base: str, email: str = "bench@example.com") -> dict[str, str]:
    """Create a user and sign in; returns the session cookies (token + cache)."""
    response = httpx.post(
        f"{base}/api/auth/sign-up/email",
        json={"email": email, "password": PASSWORD, "name": "Bench"},
        timeout=30,
    )
    response.raise_for_status()
    return dict(response.cookies)


def sign_in(base: str, client: httpx.Client, email: str = "bench@example.com") -> dict[str, str]:
    response = client.post(
        f"{base}/api/auth/sign-in/email", json={"email": email, "password": PASSWORD}
    )
    response.raise_for_status()
    return dict(response.cookies)


def cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())
