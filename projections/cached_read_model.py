"""CachedSessionReadModel: Redis first, the SQL table on a miss.

Only token lookups (the hot path of every request) are served from Redis.
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
from collections.abc import Sequence
from datetime import datetime

from redis.exceptions import RedisError

from ledger.session import SessionState
from projections.redis_cache import FILL_DEADLINE_SECONDS, RedisCacheProjection, RedisSessionCache
from projections.session_table import SqlSessionReadModel

log = logging.getLogger(__name__)

WARNING_INTERVAL = 30.0
RECHECK_INTERVAL = 5.0


class CachedSessionReadModel:
    """ledger.ports.SessionReadModel over the Redis cache and the SQL table."""

    def __init__(
        self,
        cache: RedisSessionCache,
        sql: SqlSessionReadModel,
        projection: RedisCacheProjection | None = None,
    ) -> None:
        self.cache = cache
        self.sql = sql
        self.projection = projection
        self._last_warning = -WARNING_INTERVAL
        self._suppressed = 0
        self._last_recheck = -RECHECK_INTERVAL

    async def by_token_hash(self, token_hash: str) -> SessionState | None:
        await self._recheck_degraded()
        if not self._degraded():
            try:
                state = await self.cache.by_token_hash(token_hash)
            except (RedisError, OSError) as exc:
                self._warn("read", exc)
                return await self.sql.by_token_hash(token_hash)
            if state is not None and not self._dirty(state.session_id):
                return state
        started = time.monotonic()
        state = await self.sql.by_token_hash(token_hash)
        if state is not None:
            await self._fill(state, token_hash, started)
        return state

    async def by_id(self, session_id: str) -> SessionState | None:
        return await self.sql.by_id(session_id)

    async def by_ids(self, session_ids: Sequence[str]) -> list[SessionState]:
        return await self.sql.by_ids(session_ids)

    async def active_for_user(self, user_id: str, now: datetime) -> list[SessionState]:
        return await self.sql.active_for_user(user_id, now)

    # ------------------------------------------------------------- helpers

    async def _fill(self, state: SessionState, token_hash: str, started: float) -> None:
        """Write the database's answer back (version-checked), so the next
        request is a hit. A fill that took too long is dropped: a revoke may
        have come and its tombstone gone since we read the database."""
        if self._degraded():
            return
        try:
            keys = await self.cache.read_keys()
            if time.monotonic() - started > FILL_DEADLINE_SECONDS:
                return
            await self.cache.put_states([keys], [state], {token_hash: state.session_id})
        except (RedisError, OSError) as exc:
            self._warn("fill", exc)
            return
        if self.projection is not None:
            # Redis now holds this state or a newer one: trust it again.
            self.projection.repaired(state.session_id)

    async def _recheck_degraded(self) -> None:
        """In degraded mode, look at the runner's checkpoint now and then: once
        it passed the last failed write, the cache is whole again."""
        if not self._degraded() or self.projection is None:
            return
        now = time.monotonic()
        if now - self._last_recheck < RECHECK_INTERVAL:
            return
        self._last_recheck = now
        try:
            checkpoint = await self.cache.checkpoint(await self.cache.read_keys())
        except (RedisError, OSError) as exc:
            self._warn("checkpoint read", exc)
            return
        if checkpoint is not None:
            self.projection.caught_up(checkpoint)

    def _dirty(self, session_id: str) -> bool:
        return self.projection is not None and self.projection.is_dirty(session_id)

    def _degraded(self) -> bool:
        return self.projection is not None and self.projection.degraded_until is not None

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARNING_INTERVAL:
            self._suppressed += 1
            return
        log.warning(
            "redis %s failed (%s: %s); serving from SQL (%d similar warnings suppressed)",
            what,
            type(exc).__name__,
            exc,
            self._suppressed,
        )
        self._last_warning, self._suppressed = now, 0
