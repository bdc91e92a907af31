"""The Redis cache projection: BetterAuth's "secondary storage", made safe.

Key layout (``P`` = ``settings.redis.prefix``, ``N`` = the live generation)::

    P{sl-meta}:gen               the live generation N (absent: 0)
    P{sl-meta}:prev              the previous generation, only during a switch
    P{sl-meta}:building          the generation a replay is building
    PgN:checkpoint               last ledger position the runner applied to N
    PgN:{s:<session id>}         "<version>|<SessionState JSON>", TTL = time to expiry
    PgN:t:<token hash>           session id of this token (a token never changes owner)
    PgN:{u:<user id>}:act        sorted set: active session ids, score = expires_at (ms)
    PgN:{u:<user id>}:ver        hash: session id -> last version applied to the index

Every script touches the keys of one hash slot only (``{s:...}`` or
``{u:...}`` hash tags), so the layout works on Redis Cluster. Writes carry the
session's stream version and the scripts apply them only when newer than what
Redis holds: a stale writer (a slow cache fill, an old after-commit write, a
replay) can never overwrite a newer state. Ended sessions stay as a tombstone
(their final, ended state) for :func:`tombstone_ttl` seconds, longer than any
fill may be in flight, so a fill that read the database before a revoke can
never bring the session back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from redis.exceptions import NoScriptError
from sqlalchemy import select

from ledger.clock import Clock, SystemClock
from ledger.config import CookieCacheSettings, RedisSettings
from ledger.events import RecordedEvent, SessionCreated, deserialize, session_events
from ledger.schema import events as events_table
from ledger.session import SessionState, evolve
from projections.state_codec import decode_state, encode_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ledger.store import EventStore

    #: redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster (same commands;
    #: typed as Redis because the cluster client's stubs lack most of them).
    RedisClient: TypeAlias = Redis
else:
    RedisClient = Any

log = logging.getLogger(__name__)

#: A cache fill that took longer than this (database read to Redis write) is
#: dropped: the tombstone below must outlive every fill that may still land.
FILL_DEADLINE_SECONDS = 10.0
#: Tombstones never live shorter than this.
MIN_TOMBSTONE_SECONDS = 60
#: How long readers trust their cached generation number (see switch_generation).
GENERATION_CACHE_SECONDS = 1.0
#: After a replay switches generation, writers keep writing the old one this
#: long, so that a reader still on the old generation never misses a write.
DUAL_WRITE_SECONDS = 5.0
#: token hash -> session id memo (the mapping is immutable, so never stale).
SID_MEMO_SIZE = 100_000
#: session id -> (stored bytes, decoded state) of recently read sessions.
DECODED_MEMO_SIZE = 10_000
META_TAG = "{sl-meta}"

# KEYS[1] state key. ARGV: version, ttl ms, value ("<version>|<json>").
PUT_STATE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 1
"""

# KEYS[1] active zset, KEYS[2] version hash (same {u:...} slot).
# ARGV: session id, version, active (1/0), score (expires_at ms), key ttl ms.
PUT_INDEX = """
local cur = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if cur >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local ttl = tonumber(ARGV[5])
for i = 1, 2 do
  local left = redis.call('PTTL', KEYS[i])
  if left ~= -2 and left < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
end
return 1
"""

# KEYS[1] checkpoint. ARGV: new position. Only moves forward, and only while
# the key exists: a missing checkpoint means Redis lost data (FLUSHDB,
# restart, eviction) since the runner started, and it must rebuild (-1).
ADVANCE_CHECKPOINT = """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
if tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ------------------------------------------------------------------ keys


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one generation (namespace) under the prefix."""

    prefix: str
    generation: int

    @property
    def ns(self) -> str:
        return f"{self.prefix}g{self.generation}:"

    def state(self, session_id: str) -> str:
        return f"{self.ns}{{s:{session_id}}}"

    def token(self, token_hash: str) -> str:
        return f"{self.ns}t:{token_hash}"

    def active(self, user_id: str) -> str:
        return f"{self.ns}{{u:{user_id}}}:act"

    def versions(self, user_id: str) -> str:
        return f"{self.ns}{{u:{user_id}}}:ver"

    @property
    def checkpoint(self) -> str:
        return f"{self.ns}checkpoint"


def tombstone_ttl(cookie_cache: CookieCacheSettings) -> int:
    """Seconds an ended session stays visible: longer than a cookie cache entry
    lives and longer than any cache fill may be in flight."""
    return max(cookie_cache.max_age, MIN_TOMBSTONE_SECONDS, int(FILL_DEADLINE_SECONDS * 2))


# ------------------------------------------------------------------ cache


class RedisSessionCache:
    """Reads and version-checked writes of session states in Redis."""

    def __init__(
        self,
        client: RedisClient,
        settings: RedisSettings,
        cookie_cache: CookieCacheSettings | None = None,
        *,
        clock: Clock | None = None,
        dual_write_seconds: float = DUAL_WRITE_SECONDS,
    ) -> None:
        self.client = client
        self.prefix = settings.prefix
        self.ttl_cap = settings.ttl
        self.tombstone_seconds = tombstone_ttl(cookie_cache or CookieCacheSettings())
        self.clock = clock or SystemClock()
        self.dual_write_seconds = dual_write_seconds
        self._shas: dict[str, str] = {}
        self._sids: dict[str, str] = {}
        self._decoded: dict[str, tuple[bytes, SessionState]] = {}
        self._read_keys: Keys | None = None
        self._read_keys_at = 0.0

    # ---------------------------------------------------------- meta keys

    def meta(self, name: str) -> str:
        return f"{self.prefix}{META_TAG}:{name}"

    def keys(self, generation: int) -> Keys:
        return Keys(self.prefix, generation)

    async def generations(self) -> tuple[int, int | None]:
        """(live generation, previous generation still dual-written or None)."""
        gen, prev = await self.client.mget([self.meta("gen"), self.meta("prev")])
        return (int(gen) if gen else 0), (int(prev) if prev else None)

    async def write_keys(self) -> list[Keys]:
        """Namespaces every write goes to: the live one (first) and, during a
        generation switch, the previous one too. Read fresh on every write."""
        gen, prev = await self.generations()
        keys = [self.keys(gen)]
        if prev is not None and prev != gen:
            keys.append(self.keys(prev))
        return keys

    async def read_keys(self) -> Keys:
        """The live namespace, cached for GENERATION_CACHE_SECONDS (hot path).

        A stale cached generation is safe because writers keep writing the
        previous generation for DUAL_WRITE_SECONDS after a switch."""
        now = time.monotonic()
        if self._read_keys is None or now - self._read_keys_at > GENERATION_CACHE_SECONDS:
            gen, _ = await self.generations()
            self._read_keys, self._read_keys_at = self.keys(gen), now
        return self._read_keys

    async def switch_generation(self, generation: int) -> None:
        """Make ``generation`` live; the old one keeps receiving writes for a while."""
        old, _ = await self.generations()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.meta("prev"), old, px=max(1, int(self.dual_write_seconds * 1000)))
        pipe.set(self.meta("gen"), generation)
        await pipe.execute()
        self._read_keys = None

    # ------------------------------------------------------------ scripts

    async def _load_scripts(self) -> None:
        for name, body in (
            ("state", PUT_STATE),
            ("index", PUT_INDEX),
            ("checkpoint", ADVANCE_CHECKPOINT),
        ):
            # SCRIPT LOAD goes to every primary on a cluster.
            sha = await self.client.script_load(body)
            self._shas[name] = _text(sha)

    async def _sha(self, name: str) -> str:
        if name not in self._shas:
            await self._load_scripts()
        return self._shas[name]

    # -------------------------------------------------------------- reads

    async def session_id_for(self, keys: Keys, token_hash: str) -> str | None:
        sid = self._sids.get(token_hash)
        if sid is None:
            raw = await self.client.get(keys.token(token_hash))
            if raw is None:
                return None
            sid = _text(raw)
            if len(self._sids) >= SID_MEMO_SIZE:
                self._sids.pop(next(iter(self._sids)))
            self._sids[token_hash] = sid
        return sid

    async def by_token_hash(self, token_hash: str) -> SessionState | None:
        """The cached state of the session holding this token; None on a miss."""
        keys = await self.read_keys()
        sid = await self.session_id_for(keys, token_hash)
        if sid is None:
            return None
        # The client is built with decode_responses=False: values are bytes.
        raw = cast("bytes | None", await self.client.get(keys.state(sid)))
        if raw is None:
            return None
        # Hot sessions are read far more often than they change: reuse the
        # decoded state while the stored bytes are identical (states are
        # immutable, fields a read-only mapping).
        memo = self._decoded.get(sid)
        if memo is not None and memo[0] == raw:
            return memo[1]
        state = decode_state(raw)
        if len(self._decoded) >= DECODED_MEMO_SIZE:
            self._decoded.pop(next(iter(self._decoded)))
        self._decoded[sid] = (raw, state)
        return state

    async def get_states(self, keys: Keys, session_ids: Sequence[str]) -> dict[str, SessionState]:
        if not session_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for sid in session_ids:
            pipe.get(keys.state(sid))
        raws = await pipe.execute()
        return {
            sid: decode_state(raw)
            for sid, raw in zip(session_ids, raws, strict=True)
            if raw is not None
        }

    async def active_session_ids(self, keys: Keys, user_id: str, now: datetime) -> list[str]:
        """The user's index: sessions active and not past expiry at ``now``."""
        now_ms = int(now.timestamp() * 1000)
        members = await self.client.zrangebyscore(keys.active(user_id), f"({now_ms}", "+inf")
        return [_text(m) for m in members]  # type: ignore[arg-type]  # plain members, no scores

    # ------------------------------------------------------------- writes

    def ttl_ms(self, state: SessionState) -> int:
        """Active: time to expiry (capped by settings.redis.ttl). Ended, or
        already past expiry: the tombstone lifetime (readers then see the
        end, or record the expiry)."""
        tomb = self.tombstone_seconds * 1000
        if state.is_ended:
            return tomb
        left = (state.expires_at - self.clock.now()) / timedelta(milliseconds=1)
        if self.ttl_cap is not None:
            left = min(left, self.ttl_cap * 1000)
        return int(left) if left >= 1000 else tomb

    async def put_states(
        self,
        targets: Sequence[Keys],
        states: Iterable[SessionState],
        extra_tokens: Mapping[str, str] | None = None,
    ) -> list[int]:
        """Write states (version-checked) with their token pointers and user
        index entries, in one pipeline. Returns the state script's result per
        state and target (1 written, 0 already as new or newer)."""
        states = list(states)
        if not states:
            return []
        sha_state, sha_index = await self._sha("state"), await self._sha("index")
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            state_results: list[int] = []  # pipeline index of each PUT_STATE
            queued = 0
            for keys in targets:
                for state in states:
                    state_results.append(queued)
                    queued += self._queue_state(pipe, keys, state, sha_state, sha_index)
                for token_hash, sid in (extra_tokens or {}).items():
                    pipe.set(keys.token(token_hash), sid, px=self.tombstone_seconds * 1000)
                    queued += 1
            try:
                results = await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                # Redis restarted (or SCRIPT FLUSH): reload and redo; every
                # write in the pipeline is idempotent.
                await self._load_scripts()
                sha_state, sha_index = self._shas["state"], self._shas["index"]
                continue
            return [int(results[i]) for i in state_results]
        raise AssertionError("unreachable")

    def _queue_state(
        self, pipe: Any, keys: Keys, state: SessionState, sha_state: str, sha_index: str
    ) -> int:
        """Queue the writes of one state; returns how many commands it queued."""
        ttl = self.ttl_ms(state)
        sid = state.session_id
        # execute_command, not pipe.evalsha(): redis-py's cluster pipeline
        # blocks the evalsha() method, though the command routes fine by key.
        pipe.execute_command(
            "EVALSHA", sha_state, 1, keys.state(sid), state.version, ttl, encode_state(state)
        )
        active = not state.is_ended
        pipe.execute_command(
            "EVALSHA",
            sha_index,
            2,
            keys.active(state.user_id),
            keys.versions(state.user_id),
            sid,
            state.version,
            1 if active else 0,
            int(state.expires_at.timestamp() * 1000),
            max(ttl, self.tombstone_seconds * 1000),
        )
        # Token pointers never change owner: plain SETs, no version needed.
        pipe.set(keys.token(state.token_hash), sid, px=ttl)
        if state.previous_token_hash is None:
            return 3
        pipe.set(keys.token(state.previous_token_hash), sid, px=ttl)
        return 4

    # -------------------------------------------------------- checkpoints

    async def checkpoint(self, keys: Keys) -> int | None:
        raw = await self.client.get(keys.checkpoint)
        return None if raw is None else int(raw)

    async def init_checkpoint(self, keys: Keys) -> None:
        await self.client.set(keys.checkpoint, 0, nx=True)

    async def advance_checkpoint(self, keys: Keys, position: int) -> int:
        """1 moved, 0 already there, -1 the checkpoint vanished (rebuild)."""
        sha = await self._sha("checkpoint")
        for attempt in (1, 2):
            try:
                result = await self.client.evalsha(sha, 1, keys.checkpoint, position)
            except NoScriptError:
                if attempt == 2:
                    raise
                await self._load_scripts()
                sha = self._shas["checkpoint"]
                continue
            return int(result)
        raise AssertionError("unreachable")

    async def drop_namespace(self, keys: Keys, batch: int = 1000) -> int:
        """Delete every key of one generation (SCAN covers every cluster node)."""
        removed = 0
        chunk: list[Any] = []
        async for key in self.client.scan_iter(match=f"{keys.ns}*", count=batch):
            chunk.append(key)
            if len(chunk) >= batch:
                removed += await self._unlink(chunk)
                chunk = []
        if chunk:
            removed += await self._unlink(chunk)
        return removed

    async def _unlink(self, keys: list[Any]) -> int:
        # One key per command: the keys may live in different cluster slots.
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            # execute_command: the cluster pipeline's unlink() is a
            # multi-node coroutine, not a queued command.
            pipe.execute_command("UNLINK", key)
        return sum(int(r) for r in await pipe.execute())


# ------------------------------------------------------------- projection


class RedisCacheProjection:
    """Turns recorded events into cache writes.

    The state of each touched session is its cached state evolved by the new
    events when the cache holds exactly the version before them, and
    otherwise a fold of the session's stream read from the ledger (the cache
    may have lost the key, or never had it). Either way the result is the
    fold of the stream up to the last applied event, and the write is
    version-checked, so applying the same events twice, out of order or
    concurrently with fills is harmless.
    """

    def __init__(self, cache: RedisSessionCache, store: EventStore) -> None:
        self.cache = cache
        self.store = store
        #: Sessions whose after-commit write failed, with the event position:
        #: this process reads them from SQL until the cache is repaired.
        self.dirty: dict[str, int] = {}
        #: Set when too many writes failed to track: bypass Redis entirely
        #: until the runner's checkpoint passes this position.
        self.degraded_until: int | None = None
        self.max_dirty = 100_000

    async def apply(
        self, recorded: Sequence[RecordedEvent], targets: Sequence[Keys] | None = None
    ) -> None:
        recorded = session_events(recorded)
        if not recorded:
            return
        targets = list(targets) if targets is not None else await self.cache.write_keys()
        states = await self.states_after(recorded, targets[0])
        await self.cache.put_states(targets, states.values())

    async def apply_latest(
        self, recorded: Sequence[RecordedEvent], targets: Sequence[Keys] | None = None
    ) -> None:
        """Write the *current* state of every session the events touch, folded
        from the ledger (one query per batch).

        The runner uses this, not :meth:`apply`: when it catches up or
        rebuilds after a FLUSHDB, the live namespace has lost its tombstones,
        and writing a session's state as of an old batch (still active) would
        serve a revoked session until the runner reached the revocation.
        The current state is never older than anything written before it.
        """
        recorded = session_events(recorded)
        if not recorded:
            return
        targets = list(targets) if targets is not None else await self.cache.write_keys()
        ids = list(dict.fromkeys(r.stream_id for r in recorded))
        await self.cache.put_states(targets, await self.current_states(ids))

    async def current_states(self, session_ids: Sequence[str]) -> list[SessionState]:
        query = (
            select(
                events_table.c.stream_id,
                events_table.c.type,
                events_table.c.schema_version,
                events_table.c.data,
            )
            .where(events_table.c.stream_id.in_(session_ids))
            .order_by(events_table.c.stream_id, events_table.c.stream_version)
        )
        states: dict[str, SessionState] = {}
        async with self.store.engine.connect() as conn:
            for row in await conn.execute(query):
                event = deserialize(row.type, row.schema_version, row.data)
                states[row.stream_id] = evolve(states.get(row.stream_id), event)
        return list(states.values())

    async def states_after(
        self, recorded: Sequence[RecordedEvent], keys: Keys
    ) -> dict[str, SessionState]:
        by_stream: dict[str, list[RecordedEvent]] = {}
        for r in recorded:
            by_stream.setdefault(r.stream_id, []).append(r)
        need_prior = [sid for sid, evs in by_stream.items() if evs[0].stream_version > 1]
        cached = await self.cache.get_states(keys, need_prior)
        states: dict[str, SessionState] = {}
        for sid, events in by_stream.items():
            first, last = events[0].stream_version, events[-1].stream_version
            prior = cached.get(sid)
            if isinstance(events[0].event, SessionCreated):
                state = None
            elif prior is not None and prior.version >= last:
                continue  # the cache already holds this or a newer state
            elif prior is not None and prior.version == first - 1:
                state = prior
            else:
                states[sid] = await self._fold_from_ledger(sid, last)
                continue
            for r in events:
                state = evolve(state, r.event)
            assert state is not None
            states[sid] = state
        return states

    async def _fold_from_ledger(self, session_id: str, up_to_version: int) -> SessionState:
        state: SessionState | None = None
        for r in await self.store.read_stream(session_id):
            if r.stream_version > up_to_version:
                break
            state = evolve(state, r.event)
        assert state is not None, f"stream {session_id} has no events"
        return state

    async def after_commit(self, recorded: Sequence[RecordedEvent]) -> None:
        """EventStore.after_commit hook: the events are durable; write the cache.

        A failure is logged and remembered (the runner catches up from its
        checkpoint); it never fails the command that appended the events."""
        try:
            await self.apply(recorded)
        except Exception as exc:  # the append already succeeded: never fail it
            position = recorded[-1].position
            log.warning(
                "redis cache write failed at position %s (%s: %s); the runner will catch up",
                position,
                type(exc).__name__,
                exc,
            )
            self.mark_dirty({r.stream_id for r in recorded}, position)

    def mark_dirty(self, session_ids: Iterable[str], position: int) -> None:
        for sid in session_ids:
            self.dirty[sid] = position
        if len(self.dirty) > self.max_dirty:
            self.dirty.clear()
            self.degraded_until = max(self.degraded_until or 0, position)

    def is_dirty(self, session_id: str) -> bool:
        return session_id in self.dirty

    def repaired(self, session_id: str) -> None:
        self.dirty.pop(session_id, None)

    def caught_up(self, position: int) -> None:
        """The cache holds every event up to ``position`` (runner checkpoint)."""
        if self.dirty:
            for sid in [s for s, p in self.dirty.items() if p <= position]:
                del self.dirty[sid]
        if self.degraded_until is not None and position >= self.degraded_until:
            self.degraded_until = None
