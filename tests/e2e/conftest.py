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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SESSION_LEDGER_ENVIRONMENT": "test",
        "SESSION_LEDGER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}",
        "SESSION_LEDGER_BASE_URL": base,
        "SESSION_LEDGER_SECRETS": '["e2e-secret-0123456789abcdef0123456789"]',
    }
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "session-ledger"),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(300):
            if process.poll() is not None:
                raise RuntimeError((tmp_path / "server.log").read_text())
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start: " + (tmp_path / "server.log").read_text())
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
