"""The fault suite's rig, shared by its scenarios (they run in file order,
each leaving everything healthy for the next): a private PostgreSQL
(initdb / pg_ctl, fsync off, started once), a private Redis, two
``session-ledger serve`` and two ``session-ledger worker`` processes, and a
load driver (tests/support/scenarios.py). Nothing here touches the shared
PostgreSQL or Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.scenarios import Rig, rig


@pytest.fixture(scope="package")
async def fault_rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    async with rig(tmp_path_factory.mktemp("faults")) as started:
        yield started
