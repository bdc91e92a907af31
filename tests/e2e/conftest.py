"""A real server for browser tests: ``session-ledger serve`` (uvicorn) in a
subprocess on a free loopback port, on a fresh SQLite file (the embedded
default, migrated by serve on start)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: run scripts/browser.sh (apt-get install chromium)"
        )
    return CHROMIUM


@contextmanager
def running_server(
    workdir: Path, env: dict[str, str], port: int, wait_for: str, *args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``session-ledger serve`` in a subprocess until the block ends (yields the
    process; ``args``: more of serve's options)."""
    log = (workdir / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "session-ledger"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError((workdir / "server.log").read_text())
            try:
                if httpx.get(f"{wait_for}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start: " + (workdir / "server.log").read_text())
        yield process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def e2e_database(tmp_path: Path) -> str:
    """The SQLite file a test's server serves from."""
    return f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}"


def server_env(tmp_path: Path, base: str) -> dict[str, str]:
    return {
        **os.environ,
        "SESSION_LEDGER_ENVIRONMENT": "test",
        "SESSION_LEDGER_DATABASE_URL": e2e_database(tmp_path),
        "SESSION_LEDGER_BASE_URL": base,
        "SESSION_LEDGER_SECRETS": '["e2e-secret-0123456789abcdef0123456789"]',
    }


@pytest.fixture
def server_database(tmp_path: Path) -> str:
    """The database ``server`` serves from."""
    return e2e_database(tmp_path)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(tmp_path, server_env(tmp_path, base), port, base):
        yield base


@pytest.fixture
def default_server(tmp_path: Path) -> Iterator[int]:
    """``serve`` exactly as the README's first command runs it: no settings at
    all (SQLite in the working directory, development secret). The port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_LEDGER_")}
    with running_server(tmp_path, env, port, f"http://127.0.0.1:{port}"):
        yield port
