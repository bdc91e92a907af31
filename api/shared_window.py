"""The default rate-limit rule shared through Redis without a round trip per
request.

Each process counts the default rule's hits (every ``/api/auth`` route,
``max`` per ``window`` per client IP and path) in its own memory, and a
background task (:meth:`SharedWindow.start`, with the app's lifespan) sends
them to Redis every ``flush_interval`` seconds, or sooner once a key's
unsent hits reach half its ``batch``, in one script call for all keys: the
call adds each key's hits and returns each key's total over every process,
which the next requests are checked against. A request waits for a flush
only when this process already holds ``batch`` unsent hits of its key.

Why one script call for all keys rather than a pipeline of INCRBY and
EXPIRE per key: redis-py spends CPU on every command, pipelined or not, and
a client under its limit sends about one request per flush, so commands per
key would cost each request nearly what its own round trip did (figures in
bench/README.md). The script is limits' ``incr_expire.lua`` looped over the keys,
plus a read of each key's previous window.

Windows and names are ``limits``' own: the sliding window counter of its
memory storage (windows aligned on the clock, named ``<key>/<window
number>`` by ``TimestampedSlidingWindow.sliding_window_keys``; the previous
window weighs by the part of it still within the last ``window`` seconds),
under the rule's key for the client and path (``item.key_for``) and the
Redis storage's prefix.

**Bound.** A process admits a hit when every process's total as it last read
it, plus its own hits not read back yet, stays under ``max``: its own hits
are always counted, other processes' only once they have sent them and this
process has read them back. Each process holds at most ``batch`` unsent hits
per key, so once Redis holds ``max``, each of N processes admits at most
``batch`` more before a read shows it: fewer than ``max + N * batch`` in a
window (one process alone never goes over ``max``).

**Redis down**: the rule fails open. Hits stay counted here (the limit then
holds per process), no request waits for a flush until one succeeds, and
every failed flush goes to ``on_error`` (a rate-limited warning and a
metric in :class:`api.rate_limit.RateLimiter`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem
from limits.aio.storage import RedisStorage
from limits.errors import StorageError
from limits.storage.base import TimestampedSlidingWindow
from redis.exceptions import RedisError

#: What a flush that could not reach Redis raises.
FLUSH_ERRORS = (StorageError, RedisError, OSError, TimeoutError)
#: Longest wait for one script call, and for the last flush at shutdown.
FLUSH_TIMEOUT = 1.0
#: Longest a request waits for a flush (then it goes on: fail open).
WAIT_TIMEOUT = 0.5
#: Keys per script call: a call blocks Redis while it runs.
CHUNK = 500
#: Keys held here before those with nothing unsent are forgotten.
MAX_KEYS = 100_000

# limits' incr_expire.lua over many keys, each followed by a read of the key's
# previous window. KEYS: current and previous window of each key, in pairs;
# ARGV[1]: the expiry of a new current window; ARGV[1 + i]: pair i's hits.
SCRIPT = """
local totals = {}
for i = 1, #KEYS, 2 do
  local amount = tonumber(ARGV[1 + (i + 1) / 2])
  local current = redis.call('incrby', KEYS[i], amount)
  if current == amount then
    redis.call('expire', KEYS[i], ARGV[1])
  end
  totals[i] = current
  totals[i + 1] = tonumber(redis.call('get', KEYS[i + 1]) or 0)
end
return totals
"""

#: (client, path, window number)
Key = tuple[str, str, int]


@dataclass(slots=True)
class _Count:
    """One key's hits in one window."""

    #: Every process's total, as last read from Redis.
    read: int = 0
    #: This process's hits not sent yet.
    unsent: int = 0
    #: This process's hits in the flush under way.
    sending: int = 0
    #: Its current and previous window's names in Redis (made at the first flush).
    names: tuple[bytes, bytes] | None = None

    @property
    def total(self) -> int:
        return self.read + self.sending + self.unsent


def seconds_until_below(previous: int, current: int, now: float, expiry: int, limit: int) -> float:
    """How long until a sliding window counter at ``previous`` / ``current``
    (the previous and the current window's counts at ``now``) weighs less than
    ``limit`` again, with no more hits."""
    start = int(now / expiry) * expiry
    if current < limit:
        # Within this window, as the previous one weighs less and less.
        return start + expiry * (1 - (limit - current) / previous) - now
    # From the next window on, as this one weighs less and less.
    return start + 2 * expiry - expiry * limit / current - now


class SharedWindow:
    """The default rule's counts, kept here and shared through Redis in batches."""

    def __init__(
        self,
        storage: RedisStorage,
        item: RateLimitItem,
        batch: int,
        interval: float,
        on_error: Callable[[BaseException], None],
    ) -> None:
        bridge: Any = storage.bridge  # the redis-py bridge: its client runs the script
        self._script = bridge.get_connection().register_script(SCRIPT)
        self._prefixed = bridge.prefixed_key
        self.item = item
        self.limit = item.amount
        self.expiry = item.get_expiry()
        self.batch = batch
        self.interval = interval
        self._on_error = on_error
        self._counts: dict[Key, _Count] = {}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        #: Resolved when the next flush is done (waiting requests).
        self._next_flush: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        #: False after a failed flush, until one succeeds: nothing waits.
        self.healthy = True

    # ------------------------------------------------------- the requests

    async def hit(self, client: str, path: str) -> float | None:
        """Count one request of ``client`` to ``path``; when it is over the
        limit, the seconds until it is not (the request is not counted)."""
        now = time.time()
        number = int(now / self.expiry)
        count = self._counts.get((client, path, number))
        if count is not None and count.unsent + count.sending >= self.batch:
            # Requests in flight at once share a flush: each flush frees `batch`.
            deadline = now + WAIT_TIMEOUT
            while count is not None and count.unsent + count.sending >= self.batch:
                if not await self._flushed(deadline - now):
                    break  # no flush in time, or Redis down: fail open
                now = time.time()
                number = int(now / self.expiry)
                count = self._counts.get((client, path, number))
        previous = self._counts.get((client, path, number - 1))
        before = previous.total if previous is not None else 0
        current = count.total if count is not None else 0
        # limits' weighting: the previous window counts for the part of it
        # still within the last `expiry` seconds.
        weighted = before * (1 - ((now - self.expiry) / self.expiry) % 1) + current
        if math.floor(weighted) + 1 > self.limit:
            return max(0.0, seconds_until_below(before, current, now, self.expiry, self.limit))
        if count is None:
            if len(self._counts) >= MAX_KEYS:
                self._shed(number)
            count = self._counts[(client, path, number)] = _Count()
        count.unsent += 1
        if 2 * count.unsent >= self.batch:
            self._wake.set()
        return None

    async def _flushed(self, patience: float) -> bool:
        """Wait, at most ``patience`` seconds, for a flush that sends what is
        unsent now; whether one did."""
        if self._task is None or self._task.done() or not self.healthy or patience <= 0:
            return False  # no flusher, or Redis is down: fail open
        if self._next_flush is None:
            self._next_flush = asyncio.get_running_loop().create_future()
        waited = self._next_flush
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(waited), patience)
        except TimeoutError:
            return False
        return self.healthy

    # ---------------------------------------------------------- the flush

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="rate-limit flush"
            )

    async def stop(self) -> None:
        """Stop the flusher, then send what is left (bounded: never holds
        shutdown up for more than a few seconds)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=FLUSH_TIMEOUT)
        with suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_TIMEOUT):
                await self.flush()

    async def _run(self) -> None:
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # a bug must not stop the counting: logged, next round
                self._on_error(exc)

    async def flush(self) -> None:
        """Send the hits counted here; read every process's totals back."""
        # One at a time (the flusher, stop, a test): a count has one flush
        # in flight at most, whose hits the others must not take or undo.
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        done, self._next_flush = self._next_flush, None
        number = int(time.time() / self.expiry)
        self._prune(number)
        sending = [(key, count) for key, count in self._counts.items() if count.unsent]
        for _, count in sending:
            count.sending, count.unsent = count.unsent, 0
        try:
            for start in range(0, len(sending), CHUNK):
                chunk = sending[start : start + CHUNK]
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    totals = await self._send(chunk)
                self._read_back(chunk, totals)
        except FLUSH_ERRORS as exc:
            self._unsend(sending)
            self.healthy = False
            self._on_error(exc)
        except BaseException:
            self._unsend(sending)  # cancelled: the next flush (or stop) sends them
            raise
        else:
            if sending:
                self.healthy = True
        finally:
            if done is not None and not done.done():
                done.set_result(None)

    async def _send(self, chunk: list[tuple[Key, _Count]]) -> list[int]:
        keys: list[bytes] = []
        args: list[int] = [2 * self.expiry]  # as limits: a window's count outlives it by one
        for key, count in chunk:
            names = count.names
            if names is None:
                names = count.names = self._names(*key)
            keys += names
            args.append(count.sending)
        totals: list[int] = await self._script(keys=keys, args=args)
        return totals

    def _names(self, client: str, path: str, number: int) -> tuple[bytes, bytes]:
        # Encoded once per key and window: the client encodes every argument
        # of every flush, and a key is flushed up to every interval.
        previous, current = TimestampedSlidingWindow.sliding_window_keys(
            self.item.key_for(client, path), self.expiry, number * self.expiry
        )
        return self._prefixed(current).encode(), self._prefixed(previous).encode()

    def _read_back(self, chunk: list[tuple[Key, _Count]], totals: list[int]) -> None:
        for ((client, path, number), count), i in zip(chunk, range(0, len(totals), 2), strict=True):
            # The total includes the hits just sent.
            count.read, count.sending = int(totals[i]), 0
            before = int(totals[i + 1])
            previous = self._counts.get((client, path, number - 1))
            if previous is not None:
                previous.read = before
            elif before:
                self._counts[(client, path, number - 1)] = _Count(read=before)

    @staticmethod
    def _unsend(sending: list[tuple[Key, _Count]]) -> None:
        for _, count in sending:
            count.unsent, count.sending = count.unsent + count.sending, 0

    def _shed(self, number: int) -> None:
        # A key forgotten here is as one not read back yet: within the bound.
        self._prune(number)
        if len(self._counts) >= MAX_KEYS:
            idle = [key for key, count in self._counts.items() if not count.unsent + count.sending]
            for key in idle:
                del self._counts[key]

    def _prune(self, number: int) -> None:
        # Windows before the previous one weigh nothing any more; their
        # unsent hits (only after a failed flush) are dropped with them.
        stale = [key for key, count in self._counts.items() if key[2] < number - 1]
        for key in stale:
            del self._counts[key]
