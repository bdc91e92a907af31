"""Passwords of the built-in user store: the policy a new password must meet
(:class:`PasswordPolicy`) and argon2id work off the event loop with bounded
concurrency (:class:`BoundedHashing`).

Why bounded: one argon2id computation holds ``hash_memory_kib`` of memory
and a CPU for tens of milliseconds. Run on the default thread pool, a burst
of sign-ins ran dozens at once (memory grew by their number; every other
request waited for the CPUs). Here at most ``hash_concurrency`` run (one per
CPU by default), at most ``hash_queue`` wait for a turn, and a request that
would wait longer than ``hash_wait`` seconds, or find the queue full, gets
503 ``SERVER_BUSY`` with ``Retry-After`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from session_ledger.api.users.errors import (
    PasswordTooLongError,
    PasswordTooShortError,
    PasswordTooWeakError,
)
from session_ledger.ledger.config import PasswordSettings
from session_ledger.ledger.domain.errors import ServerBusyError

T = TypeVar("T")

#: zxcvbn refuses longer input (its matching grows fast with length); a
#: longer password is scored on its first 72 characters.
_ZXCVBN_MAX = 72
_SCORES = ("very weak", "weak", "fair", "strong", "very strong")


def hasher_for(settings: PasswordSettings) -> PasswordHasher:
    """argon2id with the configured parameters."""
    return PasswordHasher(
        time_cost=settings.hash_time_cost,
        memory_cost=settings.hash_memory_kib,
        parallelism=settings.hash_parallelism,
        type=Type.ID,
    )


class PasswordPolicy:
    """Length (BetterAuth's 8-128 by default), not one of the most common
    passwords (zxcvbn's list of 30,000 from public breaches), not the
    account's own email or name, and a zxcvbn score of at least
    ``min_score``. Pure CPU work, no network."""

    def __init__(self, settings: PasswordSettings) -> None:
        self.settings = settings

    def check(self, password: str, *, email: str = "", name: str = "") -> None:
        s = self.settings
        if len(password) < s.min_length:
            raise PasswordTooShortError(f"password must be at least {s.min_length} characters")
        if len(password) > s.max_length:
            raise PasswordTooLongError(f"password must be at most {s.max_length} characters")
        folded = password.strip().casefold()
        own = [v.strip().casefold() for v in (email, email.partition("@")[0], name) if v.strip()]
        if folded in own:
            raise PasswordTooWeakError("password must not be your email address or your name")
        # zxcvbn's dictionaries take some 13 MiB: loaded on the first check,
        # not in every process that imports the user store (CLI, workers).
        from zxcvbn import zxcvbn
        from zxcvbn.matching import RANKED_DICTIONARIES

        if folded in RANKED_DICTIONARIES["passwords"]:
            raise PasswordTooWeakError(
                "this password is on a list of the most common passwords: choose another"
            )
        result = zxcvbn(password[:_ZXCVBN_MAX], user_inputs=[v for v in (email, name) if v])
        score = int(result["score"])
        if score < s.min_score:
            feedback = result["feedback"]
            hints = [feedback.get("warning") or "", *feedback.get("suggestions", [])]
            advice = " ".join(h for h in hints if h)
            raise PasswordTooWeakError(
                f"password is too easy to guess ({_SCORES[score]}; needs "
                f"{_SCORES[s.min_score]} or better)." + (f" {advice}" if advice else "")
            )


class BoundedHashing:
    """argon2id in a pool of ``concurrency`` threads behind a short queue
    (see the module doc)."""

    def __init__(self, hasher: PasswordHasher, settings: PasswordSettings) -> None:
        self.hasher = hasher
        self.concurrency = settings.hash_concurrency or os.cpu_count() or 1
        self.queue = settings.hash_queue
        self.wait = settings.hash_wait
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(self.concurrency)
        self._waiting = 0
        #: Requests refused as busy (a metric; read by tests and benches).
        self.refused = 0

    async def run(self, work: Callable[[], T]) -> T:
        """``work()`` in a hashing thread, once a slot is free; ServerBusyError
        when the queue is full or the wait too long."""
        if self._slots.locked():
            if self._waiting >= self.queue:
                raise self._busy()
            self._waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), self.wait)
            except TimeoutError:
                raise self._busy() from None
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        loop = asyncio.get_running_loop()
        try:
            future: Future[T] = self._executor.submit(work)
        except BaseException:
            self._slots.release()
            raise

        def release(_: Future[T]) -> None:
            # In the hashing thread. The slot is freed when the computation
            # is done, not when the caller stops waiting: a cancelled
            # request (client gone) must not let another start beside it.
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._slots.release)

        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    def _busy(self) -> ServerBusyError:
        self.refused += 1
        return ServerBusyError("the server is busy checking passwords: try again shortly", 1)

    async def hash(self, password: str) -> str:
        return await self.run(lambda: self.hasher.hash(password))

    async def verify(self, stored: str, password: str) -> bool:
        return await self.run(lambda: self.verify_now(stored, password))

    def verify_now(self, stored: str, password: str) -> bool:
        """In the calling thread (a hashing thread)."""
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
