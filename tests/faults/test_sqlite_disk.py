"""SQLite on a full disk: two services and a worker on one database file
whose disk fills up under load (a small tmpfs, or RLIMIT_FSIZE where none
can be mounted). Writes answer 503 (never 500), reads go on, nothing
acknowledged is lost, and once space is back the services write again
without a restart."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faults import assert_clean, describe
from tests.support.scenarios import SmallDisk, Timing, sqlite_full_disk


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
    outcome = await sqlite_full_disk(small_disk, tmp_path / "deployment", Timing())
    print(describe(outcome))
    assert_clean(outcome)
    assert outcome.transport_errors == {}
    assert any(status == 503 for _, status, _ in outcome.errors), outcome.errors
    assert outcome.notes["tracebacks"] == 0
