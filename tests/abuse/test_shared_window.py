"""The default rule shared through Redis in batches (api.shared_window): two
limiters ("processes") on one real Redis stay within the documented bound,
counts reach Redis without requests, a Redis outage fails open for it while
sign-in fails closed, and shutdown sends what is left without hanging."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.storage.base import TimestampedSlidingWindow

from session_ledger.api.rate_limit import RateLimiter, Refusal
from session_ledger.api.shared_window import seconds_until_below
from session_ledger.ledger.config import load_settings
from tests.support.redis import RedisProcess

PATH = "/get-session"
IP = "203.0.113.50"


async def eventually(condition: Callable[[], Any], what: str, patience: float = 10.0) -> None:
    """Wait (bounded) for the background flush; fails loudly, never times anything."""
    for _ in range(int(patience / 0.02)):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"gave up waiting: {what}")


def limiter(redis_url: str, prefix: str, **rate_limit: Any) -> RateLimiter:
    settings = load_settings(
        environment="test",
        redis={"url": redis_url, "prefix": prefix},
        # An hour's window: no test straddles two windows.
        rate_limit={"enabled": True, "storage": "redis", "window": 3600, **rate_limit},
    )
    return RateLimiter(settings)


@asynccontextmanager
async def started(*limiters: RateLimiter) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for one in limiters:
            one.start()
            stack.push_async_callback(one.close)
        yield


async def redis_total(lim: RateLimiter, client: str = IP, path: str = PATH) -> int:
    """The current window's count in Redis, read under limits' own key names."""
    window = lim.shared_window
    assert window is not None
    key = window.item.key_for(client, path)
    _, current = TimestampedSlidingWindow.sliding_window_keys(key, window.expiry, time.time())
    assert isinstance(lim.storage, RedisStorage)
    return await lim.storage.get(current)


async def test_two_processes_refuse_past_max_plus_the_bound(
    redis_url: str, redis_prefix: str
) -> None:
    # max 20: batch 2, so two processes admit fewer than 20 + 2 * 2.
    a, b = (limiter(redis_url, redis_prefix, max=20, flush_interval=0.05) for _ in range(2))
    async with started(a, b):
        # Requests in flight at once on both, as under load.
        answers = await asyncio.gather(*(lim.check(IP, PATH) for _ in range(40) for lim in (a, b)))
        admitted = answers.count(None)
        assert 20 <= admitted < 20 + 2 * 2, answers
        # Once both have flushed, every admitted hit is in Redis, and both refuse.
        for lim in (a, b):
            assert lim.shared_window is not None
            await lim.shared_window.flush()
        assert await redis_total(a) == admitted
        assert isinstance(await a.check(IP, PATH), Refusal)
        assert isinstance(await b.check(IP, PATH), Refusal)
        # Another client has a count of its own.
        assert await b.check("203.0.113.51", PATH) is None


async def test_one_process_never_goes_over(redis_url: str, redis_prefix: str) -> None:
    one = limiter(redis_url, redis_prefix, max=30, flush_interval=0.05)
    async with started(one):
        answers = await asyncio.gather(*(one.check(IP, PATH) for _ in range(50)))
        assert answers.count(None) == 30
        refusal = answers[-1]
        assert isinstance(refusal, Refusal)
        assert refusal.rule == "default"
        assert 1 <= refusal.retry_after <= 2 * 3600


async def test_counts_reach_redis_without_requests(redis_url: str, redis_prefix: str) -> None:
    lim = limiter(redis_url, redis_prefix, flush_interval=0.05)
    async with started(lim):
        for _ in range(3):
            assert await lim.check(IP, PATH) is None
        assert await redis_total(lim) == 0  # nothing sent on the request path

        async def flushed() -> bool:
            return await redis_total(lim) == 3

        await eventually(flushed, "the flusher sends the 3 hits")


async def test_another_process_hits_are_read_back(redis_url: str, redis_prefix: str) -> None:
    a = limiter(redis_url, redis_prefix, max=10, flush_interval=0.05)
    b = limiter(redis_url, redis_prefix, max=10, flush_interval=0.05)
    async with started(a, b):
        for _ in range(10):
            assert await a.check(IP, PATH) is None
        assert a.shared_window is not None
        assert b.shared_window is not None
        await a.shared_window.flush()
        # b has seen none of them: it admits its first hit, and learns the
        # total when it sends it.
        assert await b.check(IP, PATH) is None
        await b.shared_window.flush()
        assert isinstance(await b.check(IP, PATH), Refusal)
        assert await redis_total(a) == 11


async def test_stop_sends_what_is_left(redis_url: str, redis_prefix: str) -> None:
    lim = limiter(redis_url, redis_prefix, flush_interval=10)
    lim.start()
    for _ in range(4):
        assert await lim.check(IP, PATH) is None
    await lim.close()
    other = limiter(redis_url, redis_prefix)
    try:
        assert await redis_total(other) == 4
    finally:
        await other.close()


async def test_redis_down_fails_open_for_the_default_rule_and_closed_for_sign_in(
    private_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # max 5: batch 1, so every hit after the first waits for a flush while Redis answers.
    lim = limiter(private_redis.url, "", max=5, flush_interval=0.05)
    async with started(lim):
        assert await lim.check(IP, "/sign-in/email") is None
        private_redis.kill()
        # The default rule goes on; the process still holds the limit by itself.
        answers = [await lim.check(IP, PATH) for _ in range(7)]
        assert answers[:5] == [None] * 5
        assert all(isinstance(r, Refusal) and not r.unavailable for r in answers[5:])
        refused = await lim.check(IP, "/sign-in/email")
        assert isinstance(refused, Refusal)
        assert refused.unavailable
        registry = lim.metrics.registry
        name = "session_ledger_rate_limit_storage_errors_total"
        assert (registry.get_sample_value(name, {"outcome": "open"}) or 0) >= 1
        assert (registry.get_sample_value(name, {"outcome": "closed"}) or 0) >= 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "session_ledger.api.rate_limit"]
    assert len(warnings) == 1, warnings  # the rest are counted, not logged
    assert "sign-in and sign-up closed, the rest open" in warnings[0]


async def test_stop_never_hangs_on_a_redis_that_does_not_answer(
    private_redis: RedisProcess,
) -> None:
    lim = limiter(private_redis.url, "", flush_interval=10)
    lim.start()
    assert await lim.check(IP, PATH) is None
    assert private_redis.proc is not None
    os.kill(private_redis.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        # Bounded by the flush timeout; the outer limit only turns a hang into a failure.
        await asyncio.wait_for(lim.close(), 30)
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)


@pytest.mark.parametrize(
    ("previous", "current", "at", "expected"),
    [
        (0, 10, 0.0, 60.0),  # a full window then none: free from the next window on
        (0, 20, 30.0, 60.0),  # twice the limit: half-way through the next window
        (10, 5, 0.0, 30.0),  # the previous window must weigh under 5: at half
        (10, 5, 15.0, 15.0),
    ],
)
def test_seconds_until_below(previous: int, current: int, at: float, expected: float) -> None:
    item = RateLimitItemPerSecond(10, 60)
    start = 60.0 * 1000
    wait = seconds_until_below(previous, current, start + at, item.get_expiry(), item.amount)
    assert wait == pytest.approx(expected)


async def test_flushes_one_at_a_time_lose_no_hit_in_flight(
    redis_url: str, redis_prefix: str
) -> None:
    lim = limiter(redis_url, redis_prefix, max=5)  # not started: flushes by hand only
    window = lim.shared_window
    assert window is not None
    try:
        for _ in range(3):
            assert await lim.check(IP, PATH) is None
        first = asyncio.create_task(window.flush())
        await asyncio.sleep(0)  # the first flush has taken the 3 hits and waits on Redis
        for _ in range(2):
            assert await lim.check(IP, PATH) is None
        second = asyncio.create_task(window.flush())
        await first
        # The 2 hits of the second flush still count here, whatever its progress.
        assert isinstance(await lim.check(IP, PATH), Refusal)
        await second
        assert await redis_total(lim) == 5
    finally:
        await lim.close()
