"""The fault suite's rig, shared by its scenarios (they run in file order,
each leaving everything healthy for the next): a private PostgreSQL
(initdb / pg_ctl, fsync off, started once), a private Redis, two
``session-ledger serve`` and two ``session-ledger worker`` processes, and a
load driver (tests/support/scenarios.py). Nothing here touches the shared
PostgreSQL or Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import profile
from tests.support.scenarios import Rig, Timing, rig


@pytest.fixture(scope="package")
async def fault_rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    # The full profile (--slow) holds every phase longer.
    timing = Timing(before=1.5, hold=2.5, after=1.5) if profile.full() else Timing()
    async with rig(tmp_path_factory.mktemp("faults"), timing) as started:
        yield started
