"""The Redis cache projection: BetterAuth's "secondary storage", made safe.

Key layout (``P`` = ``settings.redis.prefix``, ``N`` = the live generation)::

    P{sl-meta}:gen               the live generation N (absent: 0)
    P{sl-meta}:prev              the previous generation, only during a switch
    P{sl-meta}:building          the generation a replay is building
    PgN:checkpoint               "<xid>:<position>", the last ledger mark the runner
                                 applied to N (ledger.horizon; a bare position P
                                 written before marks is the mark (0, P))
    PgN:t:<token hash>           "<session id>|<user id>" (a token never changes owner)
    PgN:{u:<user id>}:s:<sid>    "<version>|<SessionState JSON>", TTL = time to expiry
    PgN:{u:<user id>}:act        sorted set: active session ids, score = expires_at (ms)
    PgN:{u:<user id>}:ver        hash: session id -> last version applied to the index
    PgN:{u:<user id>}:user       the user's record (JSON), TTL USER_RECORD_SECONDS

A user's sessions, index and record share one hash slot (``{u:...}``): a
cache hit is one script reading the state and the user together, and a
state write is one script updating the state and the index together. Every
script touches the keys of one slot only, so the layout works on Redis
Cluster. Writes carry the session's stream version and the scripts apply
them only when newer than what Redis holds: a stale writer (a slow cache
fill, an old after-commit write, a replay) can never overwrite a newer
state. Ended sessions stay as a tombstone (their final, ended state) for
:func:`tombstone_ttl` seconds, longer than any fill may be in flight, so a
fill that read the database before a revoke can never bring the session back.

Whether a process may *believe* what it reads here is another question,
answered by :mod:`projections.freshness`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from redis.exceptions import NoScriptError
from sqlalchemy import select

from session_ledger.ledger.clock import Clock, SystemClock
from session_ledger.ledger.config import CookieCacheSettings, RedisSettings
from session_ledger.ledger.domain.events import (
    RecordedEvent,
    SessionCreated,
    deserialize,
    session_events,
)
from session_ledger.ledger.domain.state import SessionState, evolve
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.schema import events as events_table
from session_ledger.projections.redis_wire import WireConnection, wire_for
from session_ledger.projections.state_codec import decode_state, encode_state

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from session_ledger.ledger.store import EventStore

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
#: A cached user record lives this long: the bound on how stale a record
#: changed behind the user store's back (raw SQL) can be, as for the memo.
USER_RECORD_SECONDS = 60
#: How long readers trust their cached generation number (see switch_generation).
GENERATION_CACHE_SECONDS = 1.0
#: After a replay switches generation, writers keep writing the old one this
#: long, so that a reader still on the old generation never misses a write.
DUAL_WRITE_SECONDS = 5.0
#: token hash -> (session id, user id) memo (immutable, so never stale).
OWNER_MEMO_SIZE = 100_000
#: session id -> (stored bytes, decoded state) of recently read sessions.
DECODED_MEMO_SIZE = 10_000
META_TAG = "{sl-meta}"

# KEYS[1] state, KEYS[2] active zset, KEYS[3] index version hash (one {u:...}
# slot). ARGV: version, state ttl ms, value ("<version>|<json>"), session id,
# active (1/0), score (expires_at ms), index ttl ms. The state and the index
# entry are each applied only when newer than what they hold; returns 1 when
# the state was written.
PUT_SESSION = """
local version = tonumber(ARGV[1])
local written = 0
local cur = redis.call('GET', KEYS[1])
local held = cur and tonumber(string.match(cur, '^(%d+)|'))
if not (held and held >= version) then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
  written = 1
end
if tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0') < version then
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
  if ARGV[5] == '1' then
    redis.call('ZADD', KEYS[2], ARGV[6], ARGV[4])
  else
    redis.call('ZREM', KEYS[2], ARGV[4])
  end
  local ttl = tonumber(ARGV[7])
  for i = 2, 3 do
    local left = redis.call('PTTL', KEYS[i])
    if left ~= -2 and left < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
return written
"""

# KEYS[1] token pointer. ARGV: owner ("<sid>|<uid>"), ttl ms, ended (1/0).
# A pointer lives as long as its session: an ended session's pointer goes
# with its tombstone, a live one's is only ever extended (a stale fill of an
# older state, with an earlier expiry, must not cut it short).
PUT_POINTER = """
if ARGV[3] == '0' then
  local left = redis.call('PTTL', KEYS[1])
  if left == -1 or left >= tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1] state, KEYS[2] user record (one {u:...} slot): a cache hit in one
# round trip. Returns nil (no state), {state}, or {state, user, user's PTTL}
# (the record's age follows from its TTL: see projections.freshness).
READ_SESSION = """
local state = redis.call('GET', KEYS[1])
if not state then return false end
local user = redis.call('GET', KEYS[2])
if not user then return {state} end
return {state, user, redis.call('PTTL', KEYS[2])}
"""

# KEYS[1] checkpoint. ARGV: the new mark's xid and position. Only moves
# forward in (xid, position) order (ledger.horizon), and only while the key
# exists: a missing checkpoint means Redis lost data (FLUSHDB, restart,
# eviction) since the runner started, and it must rebuild (-1). A bare
# position (written before marks) is the mark (0, position).
ADVANCE_CHECKPOINT = """
local cur = redis.call('GET', KEYS[1])
if not cur then return -1 end
local x, p = string.match(cur, '^(%d+):(%d+)$')
if not x then x, p = 0, cur end
x, p = tonumber(x), tonumber(p)
local nx, np = tonumber(ARGV[1]), tonumber(ARGV[2])
if x > nx or (x == nx and p >= np) then return 0 end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2])
return 1
"""


_SCRIPTS = {
    "session": PUT_SESSION,
    "pointer": PUT_POINTER,
    "read": READ_SESSION,
    "checkpoint": ADVANCE_CHECKPOINT,
}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_mark(raw: str) -> Mark:
    """A stored checkpoint: ``"<xid>:<position>"``, or a bare position (0, P)."""
    xid, colon, position = raw.partition(":")
    return (int(xid), int(position)) if colon else (0, int(xid))


# ------------------------------------------------------------------ keys


@dataclass(frozen=True, slots=True)
class Keys:
    """The key names of one generation (namespace) under the prefix."""

    prefix: str
    generation: int

    @property
    def ns(self) -> str:
        return f"{self.prefix}g{self.generation}:"

    def state(self, user_id: str, session_id: str) -> str:
        return f"{self.ns}{{u:{user_id}}}:s:{session_id}"

    def user(self, user_id: str) -> str:
        return f"{self.ns}{{u:{user_id}}}:user"

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


def owner_value(state: SessionState) -> str:
    """What a token pointer holds: ``"<session id>|<user id>"``."""
    return f"{state.session_id}|{state.user_id}"


def parse_owner(raw: bytes | str) -> tuple[str, str] | None:
    """(session id, user id) of a token pointer; None for anything else (a
    value of an older layout reads as a miss and is filled again)."""
    sid, bar, uid = _text(raw).partition("|")
    return (sid, uid) if bar and sid and uid else None


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A session state read from Redis, with its user's record when cached."""

    state: SessionState
    #: The user's record as stored (JSON bytes), or None.
    user: bytes | None = None
    #: Milliseconds since the record was written (from its remaining TTL).
    user_age_ms: int | None = None


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
        self._owners: dict[str, tuple[str, str]] = {}
        self._decoded: dict[str, tuple[bytes, SessionState]] = {}
        self._read_keys: Keys | None = None
        self._read_keys_at = 0.0
        #: The hot reads' own connection (projections.redis_wire), when used.
        self.wire: WireConnection | None = None

    def use_wire(self) -> None:
        """Serve the hot reads (a hit, the checkpoint) on one pipelined
        connection of their own when the client allows (not TLS, not
        Cluster); :meth:`close` closes it."""
        self.wire = wire_for(self.client)

    def close(self) -> None:
        if self.wire is not None:
            self.wire.close()

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
        for name, body in _SCRIPTS.items():
            # SCRIPT LOAD goes to every primary on a cluster.
            sha = await self.client.script_load(body)
            self._shas[name] = _text(sha)

    async def _sha(self, name: str) -> str:
        if name not in self._shas:
            await self._load_scripts()
        return self._shas[name]

    async def _command(self, *args: Any) -> Any:
        """One command: on the hot reads' connection when there is one."""
        if self.wire is not None:
            return await self.wire.call(*args)
        client: Any = self.client  # execute_command is untyped in the stubs
        return await client.execute_command(*args)

    async def _evalsha(self, name: str, *args: Any) -> Any:
        """One script call; scripts are reloaded once when Redis lost them
        (a restart, SCRIPT FLUSH)."""
        sha = self._shas.get(name) or await self._sha(name)
        try:
            return await self._command("EVALSHA", sha, *args)
        except NoScriptError:
            await self._load_scripts()
            return await self._command("EVALSHA", self._shas[name], *args)

    # -------------------------------------------------------------- reads

    async def owner_of(self, keys: Keys, token_hash: str) -> tuple[str, str] | None:
        """(session id, user id) of a token, remembered once read."""
        owner = self._owners.get(token_hash)
        if owner is None:
            raw = await self.client.get(keys.token(token_hash))
            owner = None if raw is None else parse_owner(raw)
            if owner is None:
                return None
            if len(self._owners) >= OWNER_MEMO_SIZE:
                self._owners.pop(next(iter(self._owners)))
            self._owners[token_hash] = owner
        return owner

    async def lookup(self, token_hash: str, *, with_user: bool = False) -> CacheHit | None:
        """The cached state of the session holding this token (and, with
        ``with_user``, its user's record) in one round trip once the token's
        owner is known; None on a miss."""
        # The hot path: no await but the round trip while the generation
        # and the token's owner are remembered.
        keys = self._read_keys
        if keys is None or time.monotonic() - self._read_keys_at > GENERATION_CACHE_SECONDS:
            keys = await self.read_keys()
        owner = self._owners.get(token_hash) or await self.owner_of(keys, token_hash)
        if owner is None:
            return None
        sid, uid = owner
        if not with_user:
            # The client is built with decode_responses=False: values are bytes.
            raw = cast("bytes | None", await self._command("GET", keys.state(uid, sid)))
            return None if raw is None else CacheHit(self._decode(sid, raw))
        answer = await self._evalsha("read", 2, keys.state(uid, sid), keys.user(uid))
        if answer is None:
            return None
        state = self._decode(sid, answer[0])
        if len(answer) == 3 and int(answer[2]) > 0:
            return CacheHit(state, answer[1], max(0, USER_RECORD_SECONDS * 1000 - int(answer[2])))
        return CacheHit(state)

    def _decode(self, sid: str, raw: bytes) -> SessionState:
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

    async def by_token_hash(self, token_hash: str) -> SessionState | None:
        """The cached state of the session holding this token; None on a miss."""
        hit = await self.lookup(token_hash)
        return None if hit is None else hit.state

    async def get_states(
        self, keys: Keys, owners: Sequence[tuple[str, str]]
    ) -> dict[str, SessionState]:
        """Cached states by session id, for (user id, session id) pairs."""
        if not owners:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for uid, sid in owners:
            pipe.get(keys.state(uid, sid))
        raws = await pipe.execute()
        return {
            sid: decode_state(raw)
            for (_, sid), raw in zip(owners, raws, strict=True)
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
        index entries, in one pipeline. ``extra_tokens`` (token hash ->
        session id) are further pointers to write, with their session's TTL
        (a fill by a retired token). Returns the state script's result per
        state and target (1 written, 0 already as new or newer)."""
        states = list(states)
        if not states:
            return []
        extras: dict[str, list[str]] = {}
        for token_hash, sid in (extra_tokens or {}).items():
            extras.setdefault(sid, []).append(token_hash)
        for attempt in (1, 2):
            shas = await self._sha("session"), await self._sha("pointer")
            pipe = self.client.pipeline(transaction=False)
            state_results: list[int] = []  # pipeline index of each PUT_SESSION
            queued = 0
            for keys in targets:
                for state in states:
                    state_results.append(queued)
                    tokens = extras.get(state.session_id, ())
                    queued += self._queue_state(pipe, keys, state, shas, tokens)
            try:
                results = await pipe.execute()
            except NoScriptError:
                if attempt == 2:
                    raise
                # Redis restarted (or SCRIPT FLUSH): reload and redo; every
                # write in the pipeline is idempotent.
                await self._load_scripts()
                continue
            return [int(results[i]) for i in state_results]
        raise AssertionError("unreachable")

    def _queue_state(
        self,
        pipe: Any,
        keys: Keys,
        state: SessionState,
        shas: tuple[str, str],
        extra_tokens: Iterable[str],
    ) -> int:
        """Queue the writes of one state; returns how many commands it queued."""
        ttl = self.ttl_ms(state)
        sid, uid = state.session_id, state.user_id
        # execute_command, not pipe.evalsha(): redis-py's cluster pipeline
        # blocks the evalsha() method, though the command routes fine by key.
        pipe.execute_command(
            "EVALSHA",
            shas[0],
            3,
            keys.state(uid, sid),
            keys.active(uid),
            keys.versions(uid),
            state.version,
            ttl,
            encode_state(state),
            sid,
            0 if state.is_ended else 1,
            int(state.expires_at.timestamp() * 1000),
            max(ttl, self.tombstone_seconds * 1000),
        )
        # Token pointers never change owner: no version needed, only a TTL
        # as long as the session's (see PUT_POINTER).
        owner, ended = owner_value(state), 1 if state.is_ended else 0
        tokens = dict.fromkeys([state.token_hash, *extra_tokens])
        if state.previous_token_hash is not None:
            tokens[state.previous_token_hash] = None
        for token_hash in tokens:
            pipe.execute_command("EVALSHA", shas[1], 1, keys.token(token_hash), owner, ttl, ended)
        return 1 + len(tokens)

    async def forget(self, owners: Mapping[str, str]) -> None:
        """Delete the cached states of these sessions (session id -> user id)
        in every generation written to."""
        pipe = self.client.pipeline(transaction=False)
        for keys in await self.write_keys():
            for sid, uid in owners.items():
                # execute_command: one key per command (cluster slots).
                pipe.execute_command("DEL", keys.state(uid, sid))
        await pipe.execute()

    async def put_user(self, keys: Keys, user_id: str, record: str) -> None:
        """Cache a user's record (JSON) for USER_RECORD_SECONDS."""
        await self.client.set(keys.user(user_id), record, px=USER_RECORD_SECONDS * 1000)

    # -------------------------------------------------------- checkpoints

    async def checkpoint(self, keys: Keys) -> Mark | None:
        """The last mark applied to ``keys``' generation (None: missing)."""
        raw = await self._command("GET", keys.checkpoint)
        return None if raw is None else parse_mark(_text(raw))

    async def init_checkpoint(self, keys: Keys) -> None:
        await self.client.set(keys.checkpoint, "0:0", nx=True)

    async def advance_checkpoint(self, keys: Keys, mark: Mark) -> int:
        """1 moved, 0 already there, -1 the checkpoint vanished (rebuild)."""
        return int(await self._evalsha("checkpoint", 1, keys.checkpoint, mark[0], mark[1]))

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
        self._warnings = RateLimitedWarning(log)

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
        need_prior = [
            (evs[0].user_id, sid)
            for sid, evs in by_stream.items()
            if evs[0].stream_version > 1 and evs[0].user_id is not None
        ]
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

        A failure is logged (rate-limited) and never fails the command that
        appended the events: the runner catches up from its checkpoint, and
        until then no process believes what Redis holds of these sessions
        (projections.freshness hears of every append from the ledger).

        Another process hears of the append a few milliseconds after it
        committed, possibly after this command was acknowledged and the
        client asked that process. So a failed write also deletes what Redis
        holds of these sessions, before the command is acknowledged: Redis
        refusing writes at ``maxmemory`` still deletes (DEL frees memory),
        and a miss reads the store."""
        try:
            await self.apply(recorded)
        except Exception as exc:  # the append already succeeded: never fail it
            self._warnings.warn(
                "redis cache write failed at position %s (%s: %s); the runner will catch up",
                recorded[-1].position,
                type(exc).__name__,
                exc,
            )
            with contextlib.suppress(Exception):  # best effort, see above
                await self.cache.forget(
                    {r.stream_id: r.user_id for r in recorded if r.user_id is not None}
                )


class RateLimitedWarning:
    """A warning logged at most once per ``interval`` seconds, with the number
    of similar ones suppressed meanwhile (an outage must not flood the log)."""

    def __init__(self, logger: logging.Logger, interval: float = 30.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last = -interval
        self._suppressed = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} similar warnings suppressed)" if self._suppressed else ""
        self.logger.warning(message + suffix, *args)
        self._last, self._suppressed = now, 0
