"""CachedSessionReadModel: Redis first, the SQL table when Redis cannot vouch.

Only token lookups (the hot path of every request) are served from Redis,
and only when :class:`~projections.freshness.CacheFreshness` vouches for
what was read: the process's change feed is live, the runner's checkpoint
covers what the feed did not hear, and no newer version of the session was
heard of. Anything else (a miss, a stale or unvouched state, ``fresh=True``
from a retry after a conflict) reads the table and fills the cache.

A hit is one round trip once the token's owner is known (a token never
changes owner, so that is remembered): one script reads the session's state
and its user's record, which share a hash slot. The record goes to the user
sink (the service's user memo), which decides whether to believe it.

Lookups by id and per user feed revocation (revoke-sessions, revoke-others,
revoke-all) and must see every session, so they always read the
authoritative SQL table: a cache that lost a write must never let a session
survive "sign out everywhere".

Redis failing (down, timing out, erroring) is never the caller's problem:
the answer comes from SQL and a warning is logged, at most once per
WARNING_INTERVAL seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

from redis.exceptions import RedisError

from session_ledger.ledger.domain.state import SessionState
from session_ledger.ledger.ports import UserRecord
from session_ledger.projections.freshness import CacheFreshness
from session_ledger.projections.redis_cache import (
    FILL_DEADLINE_SECONDS,
    CacheHit,
    Keys,
    RateLimitedWarning,
    RedisSessionCache,
)
from session_ledger.projections.session_table import SqlSessionReadModel
from session_ledger.projections.state_codec import encode_user

log = logging.getLogger(__name__)

WARNING_INTERVAL = 30.0
#: After a Redis call failed, Redis is left alone this long: an outage (or
#: Redis refusing writes) would otherwise cost every request a failing
#: round trip, or a timeout.
PAUSE_AFTER_FAILURE = 1.0
UNCOVERED_WARNING_INTERVAL = 300.0


class UserSink(Protocol):
    """Where user records read with a session go (the service's user memo)."""

    def mark(self) -> int:
        """Taken before the read; given back to :meth:`offer`."""
        ...

    def wants(self, user_id: str) -> bool: ...

    def offer(self, mark: int, raw: bytes, age_ms: int) -> None:
        """A record as cached, written ``age_ms`` ago."""
        ...


class CachedSessionReadModel:
    """ledger.ports.SessionReadModel over the Redis cache and the SQL table."""

    def __init__(
        self,
        cache: RedisSessionCache,
        sql: SqlSessionReadModel,
        freshness: CacheFreshness,
        users: UserSink | None = None,
    ) -> None:
        self.cache = cache
        self.sql = sql
        self.freshness = freshness
        self.users = users
        self._warnings = RateLimitedWarning(log, WARNING_INTERVAL)
        self._uncovered = RateLimitedWarning(log, UNCOVERED_WARNING_INTERVAL)
        self._paused_until = 0.0

    async def by_token_hash(self, token_hash: str, *, fresh: bool = False) -> SessionState | None:
        if not fresh:
            hit = await self._from_redis(token_hash)
            if hit is not None:
                return hit.state
        started = time.monotonic()
        state = await self.sql.by_token_hash(token_hash)
        if state is not None:
            await self._fill(state, token_hash, started)
        return state

    async def _from_redis(self, token_hash: str) -> CacheHit | None:
        """A hit the freshness rules vouch for, else None."""
        freshness = self.freshness
        if time.monotonic() < self._paused_until:
            return None
        try:
            if freshness.live and freshness.checkpoint_due():
                keys = await self.cache.read_keys()
                freshness.checkpoint_read(await self.cache.checkpoint(keys))
            if not freshness.covered():
                if freshness.live and freshness.checkpoint is None:
                    self._uncovered.warn(
                        "redis cache has no checkpoint (is a worker running the projector?); "
                        "reading SQL until it has"
                    )
                return None
            users = self.users
            mark = users.mark() if users is not None else 0
            hit = await self.cache.lookup(token_hash, with_user=users is not None)
        except (RedisError, OSError) as exc:
            self._failed("read", exc)
            return None
        if hit is None or not freshness.vouches(hit.state):
            return None
        if (
            users is not None
            and hit.user is not None
            and hit.user_age_ms is not None
            and users.wants(hit.state.user_id)
        ):
            users.offer(mark, hit.user, hit.user_age_ms)
        return hit

    async def by_id(self, session_id: str) -> SessionState | None:
        return await self.sql.by_id(session_id)

    async def by_ids(self, session_ids: Sequence[str]) -> list[SessionState]:
        return await self.sql.by_ids(session_ids)

    async def active_for_user(self, user_id: str, now: datetime) -> list[SessionState]:
        return await self.sql.active_for_user(user_id, now)

    async def user_loaded(self, user: UserRecord, started: float) -> None:
        """A user record read from the store (started at ``started``,
        monotonic): cache it beside the user's sessions."""
        await self._fill_with(
            "user fill", started, lambda keys: self.cache.put_user(keys, user.id, encode_user(user))
        )

    # ------------------------------------------------------------- helpers

    async def _fill(self, state: SessionState, token_hash: str, started: float) -> None:
        """Write the database's answer back (version-checked), so the next
        request is a hit."""
        await self._fill_with(
            "fill",
            started,
            lambda keys: self.cache.put_states([keys], [state], {token_hash: state.session_id}),
        )

    async def _fill_with(
        self, what: str, started: float, write: Callable[[Keys], Awaitable[object]]
    ) -> None:
        """Write what the store answered (read from ``started``, monotonic)
        to the live generation. A fill that took too long is dropped: a
        revoke may have come and its tombstone gone (a change been made and
        forgotten) since the store was read (FILL_DEADLINE_SECONDS)."""
        if time.monotonic() < self._paused_until:
            return
        try:
            keys = await self.cache.read_keys()
            if time.monotonic() - started > FILL_DEADLINE_SECONDS:
                return
            await write(keys)
        except (RedisError, OSError) as exc:
            self._failed(what, exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self._paused_until = time.monotonic() + PAUSE_AFTER_FAILURE
        self._warnings.warn(
            "redis %s failed (%s: %s); serving from SQL", what, type(exc).__name__, exc
        )
