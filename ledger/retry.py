"""The one retry policy for conflicting appends (optimistic concurrency).

A command reads a session, decides, and appends at the version it read; a
ConcurrencyError means someone else moved the session on first. The command
is then run again from the read, at most MAX_ATTEMPTS times in all.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from session_ledger.ledger.domain.errors import ConcurrencyError, RetryLaterError

#: Conflicts are retried this many times (each retry re-reads and re-decides).
MAX_ATTEMPTS = 8
#: Retry n waits a random time up to min(RETRY_CAP, RETRY_BASE * 2 ** (n - 1)) s.
RETRY_BASE = 0.005
RETRY_CAP = 0.1

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[object]]


def backoff_limit(retry: int) -> float:
    """The longest wait before retry number ``retry`` (1, 2, ...)."""
    return min(RETRY_CAP, RETRY_BASE * 2.0 ** (retry - 1))


async def retry_on_conflict(
    attempt: Callable[[bool], Awaitable[T]],
    subject: str,
    *,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """``attempt(fresh)`` until it ends without a ConcurrencyError, at most
    MAX_ATTEMPTS times; then RetryLaterError (503 with Retry-After: the
    session is busy, not the request wrong).

    Only the first attempt may read through a cache (``fresh=False``): a
    conflict proves that what it read was out of date, and a cache that
    served it once may serve it again (Redis refusing writes, or an
    after-commit write still in flight), so every retry reads the store.
    Retries wait a random, growing time (full jitter): writers racing for
    one session would otherwise collide again in lockstep."""
    for n in range(MAX_ATTEMPTS):
        if n:
            await sleep(random.uniform(0, backoff_limit(n)))
        try:
            return await attempt(n > 0)
        except ConcurrencyError:
            continue
    raise RetryLaterError(
        f"gave up after {MAX_ATTEMPTS} conflicting attempts ({subject[:12]}…)", retry_after=1
    )
