"""The one conflict-retry policy (ledger.retry), without a database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from session_ledger.ledger.domain.errors import ConcurrencyError, RetryLaterError
from session_ledger.ledger.retry import (
    MAX_ATTEMPTS,
    RETRY_BASE,
    RETRY_CAP,
    backoff_limit,
    retry_on_conflict,
)


class Conflicts:
    """An attempt that conflicts ``times`` times, then answers."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.fresh: list[bool] = []
        self.waits: list[float] = []

    async def __call__(self, fresh: bool) -> str:
        self.fresh.append(fresh)
        if len(self.fresh) <= self.times:
            raise ConcurrencyError("s1", 1, 2)
        return "done"

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


@given(st.integers(min_value=0, max_value=MAX_ATTEMPTS - 1))
async def test_retries_until_no_conflict_reading_the_store_after_the_first(times: int) -> None:
    attempt = Conflicts(times)
    assert await retry_on_conflict(attempt, "s1", sleep=attempt.sleep) == "done"
    # Only the first attempt may read through a cache.
    assert attempt.fresh == [False] + [True] * times
    assert len(attempt.waits) == times
    for n, wait in enumerate(attempt.waits, start=1):
        assert 0 <= wait <= backoff_limit(n)


async def test_gives_up_as_busy_after_max_attempts() -> None:
    attempt = Conflicts(MAX_ATTEMPTS)
    with pytest.raises(RetryLaterError) as caught:
        await retry_on_conflict(attempt, "0123456789abcdef", sleep=attempt.sleep)
    assert len(attempt.fresh) == MAX_ATTEMPTS
    assert caught.value.retry_after == 1
    assert "0123456789ab…" in caught.value.message


async def test_other_errors_are_not_retried() -> None:
    async def broken(_fresh: bool) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await retry_on_conflict(broken, "s1")


def test_backoff_grows_to_its_cap() -> None:
    assert backoff_limit(1) == RETRY_BASE
    assert backoff_limit(2) == 2 * RETRY_BASE
    assert backoff_limit(50) == RETRY_CAP
    limits = [backoff_limit(n) for n in range(1, MAX_ATTEMPTS)]
    assert limits == sorted(limits)
