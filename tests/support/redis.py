"""Redis helpers for tests: every test writes under its own key prefix."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis


def client(url: str) -> Any:
    """A redis.asyncio.Redis client. Typed Any on purpose: the installed
    types-redis stubs (redis 4.x) shadow redis 8's own annotations and lack
    ``aclose()``; annotate parameters in tests as ``redis.asyncio.Redis``."""
    return aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=5)


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key starting with ``prefix``; the number deleted."""
    if not prefix or any(c in prefix for c in "*?[]\\"):
        raise ValueError(f"refusing to delete by unsafe prefix {prefix!r}")
    redis = client(url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=500)]
        return int(await redis.unlink(*keys)) if keys else 0
    finally:
        await redis.aclose()


# ------------------------------------------------------- a Redis of our own


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A free loopback port whose cluster bus port (+10000) is free too."""
    rnd = random.Random()
    for _ in range(200):
        port = rnd.randrange(20000, 50000)
        if _port_free(port) and _port_free(port + 10000):
            return port
    raise RuntimeError("no free loopback port pair found")


class RedisProcess:
    """A throw-away redis-server on a free loopback port (no persistence):
    FLUSHDB, restarts and outages here cannot touch anyone else's keys."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.workdir = workdir
        self.extra = extra
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        """A clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        """A crash: SIGKILL, nothing kept (no persistence)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
