"""SQLite on a full disk: two services and a worker on one database file
whose disk fills up under load. Writes answer 503 (never 500), reads go
on, nothing acknowledged is lost, and once space is back the services write
again without a restart.

The disk is a small tmpfs when one can be mounted (root); elsewhere the
processes get a file-size limit (RLIMIT_FSIZE) at the database's current
size, which SQLite meets the same way (its writes fail), and which is
lifted to heal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.db import make_engine
from tests.support.db import migrate, sqlite_file_url
from tests.support.deployment import Deployment
from tests.support.faults import Canary, assert_clean, describe, run_scenario
from tests.support.load import Load

DISK_MB = 32


class SmallDisk:
    """Where the database lives, and how to fill it up and free it again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False
        self.filler = path / "filler"
        self.limited: list[int] = []

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(self.path)],
            capture_output=True,
            check=False,
        )
        self.mounted = done.returncode == 0

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def fill(self, pids: list[int]) -> None:
        if self.mounted:
            with contextlib.suppress(OSError), self.filler.open("wb") as out:
                chunk = b"\0" * (1 << 20)
                while True:
                    out.write(chunk)
                    out.flush()
            return
        # No tmpfs: a file-size limit at what the files hold now.
        largest = max(f.stat().st_size for f in self.path.iterdir() if f.is_file())
        for pid in pids:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (largest, resource.RLIM_INFINITY))
            self.limited.append(pid)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        for pid in self.limited:
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, resource.RLIMIT_FSIZE, unlimited)
        self.limited = []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk")
    if os.geteuid() == 0:
        disk.mount()
    disk.path.mkdir(parents=True, exist_ok=True)
    try:
        yield disk
    finally:
        disk.free()
        disk.unmount()


async def test_sqlite_on_a_full_disk(small_disk: SmallDisk, tmp_path: Path) -> None:
    url = sqlite_file_url(small_disk.path / "ledger.db")
    await migrate(url)
    dep = Deployment(database_url=url, workdir=tmp_path / "deployment", worker_count=1)
    engine: AsyncEngine = make_engine(url)
    load = Load(dep, users=3, devices_per_user=2, seed=11)
    try:
        await asyncio.to_thread(dep.start)
        await load.prepare(engine)
        canary = await Canary.create(dep)

        async def fault() -> None:
            pids = [p.proc.pid for p in dep.processes if p.proc is not None]
            await asyncio.to_thread(small_disk.fill, pids)

        async def heal() -> None:
            small_disk.free()

        outcome = await run_scenario(
            f"sqlite full disk ({'tmpfs' if small_disk.mounted else 'RLIMIT_FSIZE'})",
            dep,
            load,
            engine,
            canary,
            fault=fault,
            heal=heal,
            hold=1.5,
        )
    finally:
        await load.close()
        await asyncio.to_thread(dep.stop)
        await engine.dispose()
    print(describe(outcome))
    assert_clean(outcome)
    assert outcome.transport_errors == {}
    assert any(status == 503 for _, status, _ in outcome.errors), outcome.errors
    for service in dep.services:
        assert "Traceback" not in service.log()
