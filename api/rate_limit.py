"""Rate limits: BetterAuth's ``rateLimit`` rules per client IP, and a limit on
failed sign-ins per account, on the ``limits`` package (moving windows).

* **Per IP and path** (every ``/api/auth`` route, as BetterAuth): ``max``
  requests per ``window`` seconds (100 per 60 s), or a path's own rule
  (``/sign-in/*`` and ``/sign-up/*``: 3 per 10 s). The client IP is the one
  the rest of the app sees (``trusted_proxies``); IPv6 clients share one
  counter per /64 (``ipv6_subnet``), since one subscriber holds a whole /64.
* **Per account** (:meth:`RateLimiter.account_wait` and friends): failed
  sign-ins per email, whatever the IP, in tiers (5 per minute, 10 per 15
  minutes): a botnet spread over many addresses still cannot guess one
  account's password quickly. A throttle, not a lockout: the wait ends when
  the tier's window frees, and a success clears the count.

Storage: Redis when ``redis.url`` is set (every process shares the
counters), else this process's memory (``rate_limit.storage`` chooses).
Windows: the default rule is a sliding window counter (two counters per key,
O(1) per hit whatever ``max``); the strict rules and the account tiers are
moving windows (exact: never more than ``max`` in any ``window`` seconds).

When Redis cannot answer, the default rule **fails open** (the request goes
on: an outage of a cache must not take the service down), while the sign-in
and sign-up rules and the account throttle **fail closed** (503
``RATE_LIMIT_UNAVAILABLE`` with ``Retry-After``): unlimited password
guessing is worse than a short refusal. Either way a rate-limited warning
is logged and ``session_ledger_rate_limit_storage_errors_total`` counts it.

Cost on the hot path (every get-session). A call into ``limits`` is a
sizeable share of a get-session answered from the cookie cache on memory
(the *synchronous* memory storage, sweeping once a second: see
:class:`SweptMemoryStorage`; its asyncio twin starts a task per call that
walks every key, with a thread hop per key for moving windows) and a round
trip on Redis (figures in bench/README.md). So the default rule never waits
for either on most requests:

* with Redis (``shared_default_rule``, the default), its hits are counted
  here and sent to Redis in the background, all keys in one call every
  ``flush_interval``, and every process's totals read back
  (:class:`api.shared_window.SharedWindow`, where the bound is: N processes
  admit fewer than ``max + N * max // 10`` per window);
* in memory, its hits are handed to ``limits`` in batches of up to 10
  (``_Batch``, ``max // 10`` for small limits); a key the storage refused
  stays refused here until that window frees.

The strict rules (sign-in, sign-up, the account throttle) are counted in the
storage on every request.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond, WindowStats
from limits import strategies as sync_strategies
from limits.aio import strategies as async_strategies
from limits.aio.storage import RedisStorage
from limits.errors import StorageError
from limits.storage import MemoryStorage
from redis.exceptions import RedisError

from session_ledger.api.metrics import ServiceMetrics
from session_ledger.api.shared_window import SharedWindow
from session_ledger.ledger.config import RateLimitRule, Settings
from session_ledger.ledger.domain.errors import ConfigError, RetryLaterError

log = logging.getLogger(__name__)

#: Where the limited routes live (BetterAuth's basePath).
BASE_PATH = "/api/auth"
#: Rules on these paths fail closed when the storage is unreachable.
CREDENTIAL_PREFIXES = ("/sign-in", "/sign-up")
#: Longest batch of default-rule hits handed to the storage at once.
MAX_BATCH = 10
#: Retry-After when the storage is unreachable (fail closed).
UNAVAILABLE_RETRY = 5
WARNING_INTERVAL = 30.0
#: What a storage that cannot answer raises (limits wraps Redis's errors).
STORAGE_ERRORS = (StorageError, RedisError, OSError)
#: Bounds on the per-process memos (paths seen, batches in flight).
_MAX_PATHS = 1024
_MAX_BATCHES = 100_000


class RateLimitUnavailableError(RetryLaterError):
    """The shared counters cannot be read (Redis down) on a rule that fails closed."""

    code = "RATE_LIMIT_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    item: RateLimitItem
    #: Refuse (503) rather than allow when the storage cannot answer.
    closed: bool
    #: Hits counted locally per round trip to a shared storage (1: every hit).
    batch: int
    #: A moving window (exact); else a sliding window counter (O(1)).
    exact: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the limiter refused: 429 after ``retry_after`` seconds, or
    503 when the storage could not answer (``unavailable``)."""

    rule: str
    retry_after: int
    unavailable: bool = False


@dataclass(slots=True)
class _Batch:
    """Default-rule hits of one key not yet handed to the storage."""

    pending: int = 0
    since: float = 0.0
    blocked_until: float = 0.0


def _item(rule: RateLimitRule) -> RateLimitItem:
    return RateLimitItemPerSecond(rule.max, rule.window)


class SweptMemoryStorage(MemoryStorage):
    """limits' synchronous memory storage, sweeping expired keys once a
    second instead of every 10 ms. The sweep only frees memory (every read
    checks expiry itself), but limits runs it in a new thread 10 ms after
    each use while the last one is done: under load some 100 thread starts
    a second, which cost get-session more than the counting itself. Hooks
    the private ``__schedule_expiry`` (tests/abuse/test_rate_limits.py
    checks it is still there)."""

    SWEEP_SECONDS = 1.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 (the name limits calls)
        if not self.timer.is_alive():
            sweep = self._MemoryStorage__expire_events  # type: ignore[attr-defined]
            self.timer = threading.Timer(self.SWEEP_SECONDS, sweep)
            self.timer.daemon = True  # never holds the process up at exit
            self.timer.start()


class _Window:
    """One ``limits`` strategy, called the same way whether its storage is
    synchronous (memory: plain calls, no I/O) or asynchronous (Redis)."""

    def __init__(self, sync: sync_strategies.RateLimiter | None, aio: Any = None) -> None:
        self._sync = sync
        self._aio = aio

    async def hit(self, item: RateLimitItem, *ids: str, cost: int = 1) -> bool:
        if self._sync is not None:
            return self._sync.hit(item, *ids, cost=cost)
        return bool(await self._aio.hit(item, *ids, cost=cost))

    async def test(self, item: RateLimitItem, *ids: str) -> bool:
        if self._sync is not None:
            return self._sync.test(item, *ids)
        return bool(await self._aio.test(item, *ids))

    async def stats(self, item: RateLimitItem, *ids: str) -> WindowStats:
        if self._sync is not None:
            return self._sync.get_window_stats(item, *ids)
        stats: WindowStats = await self._aio.get_window_stats(item, *ids)
        return stats

    async def clear(self, item: RateLimitItem, *ids: str) -> None:
        if self._sync is not None:
            self._sync.clear(item, *ids)
        else:
            await self._aio.clear(item, *ids)


@dataclass
class RateLimiter:
    settings: Settings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)

    def __post_init__(self) -> None:
        rl = self.settings.rate_limit
        self.enabled = self.settings.rate_limit_enabled
        storage_kind = self.settings.rate_limit_storage
        self.shared = storage_kind == "redis"
        self.storage: MemoryStorage | RedisStorage
        #: Exact windows (strict rules, account tiers) and the cheap one (default rule).
        self.moving: _Window
        self.sliding: _Window
        if self.shared:
            url = self.settings.redis.url
            if url is None:
                raise ConfigError("rate_limit.storage: redis needs redis.url")
            self.storage = RedisStorage(
                f"async+{url}",
                implementation="redispy",
                key_prefix=f"{self.settings.redis.prefix}rl",
                wrap_exceptions=True,
                # As the cache's client: long enough for a loaded Redis, short
                # enough that an outage answers within a request's patience.
                socket_timeout=2,
                socket_connect_timeout=2,
            )
            self.moving = _Window(None, async_strategies.MovingWindowRateLimiter(self.storage))
            self.sliding = _Window(
                None, async_strategies.SlidingWindowCounterRateLimiter(self.storage)
            )
        else:
            memory = SweptMemoryStorage()
            self.storage = memory
            self.moving = _Window(sync_strategies.MovingWindowRateLimiter(memory))
            self.sliding = _Window(sync_strategies.SlidingWindowCounterRateLimiter(memory))
        if self.shared and not rl.shared_default_rule:
            # The default rule in this process's memory, the rest in Redis.
            local = SweptMemoryStorage()
            self.sliding = _Window(sync_strategies.SlidingWindowCounterRateLimiter(local))
        default = _item(RateLimitRule(window=rl.window, max=rl.max))
        #: The default rule shared through Redis in batches (None: in memory).
        self.shared_window: SharedWindow | None = None
        if self.shared and rl.shared_default_rule:
            assert isinstance(self.storage, RedisStorage)
            batch = max(1, rl.max // 10)
            self.shared_window = SharedWindow(
                self.storage, default, batch, rl.flush_interval, self._flush_failed
            )
        else:
            batch = min(MAX_BATCH, max(1, rl.max // 10))
        self.default = Rule("default", default, closed=False, batch=batch, exact=False)
        self._exact: dict[str, Rule | None] = {}
        self._prefixes: list[tuple[str, Rule | None]] = []
        for pattern, custom in rl.custom_rules.items():
            rule = None
            if custom is not None:
                closed = pattern.startswith(CREDENTIAL_PREFIXES)
                rule = Rule(pattern, _item(custom), closed=closed, batch=1, exact=True)
            if pattern.endswith("*"):
                self._prefixes.append((pattern[:-1], rule))
            else:
                self._exact[pattern] = rule
        self._prefixes.sort(key=lambda p: -len(p[0]))  # the longest prefix wins
        self._rules: dict[str, Rule | None] = {}
        self._batches: dict[tuple[str, str], _Batch] = {}
        self.account_items = [_item(r) for r in rl.account_failures]
        self.throttled_item = _item(rl.throttled_recorded)
        self._ipv6_prefix = rl.ipv6_subnet
        self._last_warning = -WARNING_INTERVAL
        self._suppressed = 0

    def start(self) -> None:
        """Start sending the default rule's counts to Redis (in a lifespan)."""
        if self.shared_window is not None and self.enabled:
            self.shared_window.start()

    async def close(self) -> None:
        if self.shared_window is not None:
            await self.shared_window.stop()  # bounded, sends what is left
        # The redis-py client the limits bridge made (no close of its own).
        client = getattr(getattr(self.storage, "bridge", None), "storage", None)
        if client is not None:
            await client.aclose()

    # ------------------------------------------------------------ per IP

    def rule_for(self, path: str) -> Rule | None:
        """The rule of a path under BASE_PATH (None: not limited)."""
        try:
            return self._rules[path]
        except KeyError:
            pass
        rule: Rule | None = self.default
        if path in self._exact:
            rule = self._exact[path]
        else:
            for prefix, candidate in self._prefixes:
                if path.startswith(prefix):
                    rule = candidate
                    break
        if len(self._rules) < _MAX_PATHS:
            self._rules[path] = rule
        return rule

    def client_key(self, ip: str | None) -> str:
        """The counter's client: the address, an IPv6 address's network."""
        if ip is None:
            return "unknown"
        if ":" not in ip:
            return ip
        try:
            address = ipaddress.IPv6Address(ip)
        except ValueError:
            return ip
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/{self._ipv6_prefix}", strict=False))

    async def check(self, ip: str | None, path: str) -> Refusal | None:
        """Count one request of ``ip`` to ``path`` (under BASE_PATH); a
        Refusal when it is over its rule."""
        rule = self.rule_for(path)
        if rule is None:
            return None
        client = self.client_key(ip)
        if rule is self.default and self.shared_window is not None:
            wait = await self.shared_window.hit(client, path)  # no I/O: never raises
            return None if wait is None else self._refusal(rule, wait)
        window = self.moving if rule.exact else self.sliding
        try:
            if rule.batch > 1:
                return await self._batched(window, rule, client, path)
            if await window.hit(rule.item, client, path):
                return None
            stats = await window.stats(rule.item, client, path)
            return self._refusal(rule, stats.reset_time - time.time())
        except STORAGE_ERRORS as exc:
            return self._storage_failed(rule, exc)

    async def _batched(self, window: _Window, rule: Rule, client: str, path: str) -> Refusal | None:
        key = (client, path)
        now = time.time()
        batch = self._batches.get(key)
        if batch is None:
            if len(self._batches) >= _MAX_BATCHES:
                self._prune(now)
            batch = self._batches[key] = _Batch(since=now)
        elif batch.blocked_until > now:
            return self._refusal(rule, batch.blocked_until - now)
        elif now - batch.since >= rule.item.get_expiry():
            batch.pending, batch.since = 0, now  # hits older than the window count no more
        batch.pending += 1
        if batch.pending < rule.batch:
            return None
        cost, batch.pending, batch.since = batch.pending, 0, now
        if await window.hit(rule.item, client, path, cost=cost):
            return None
        stats = await window.stats(rule.item, client, path)
        batch.blocked_until = max(stats.reset_time, now + 1)
        return self._refusal(rule, batch.blocked_until - now)

    def _prune(self, now: float) -> None:
        # Unsent hits of idle keys are dropped (the count trails by at most
        # a batch); refused keys are kept until their window frees.
        self._batches = {k: b for k, b in self._batches.items() if b.blocked_until > now}

    def _refusal(self, rule: Rule, seconds: float) -> Refusal:
        self.metrics.rate_limited.labels(rule=rule.name).inc()
        return Refusal(rule.name, max(1, math.ceil(seconds)))

    def _flush_failed(self, exc: BaseException) -> None:
        self._storage_failed(self.default, exc)

    def _storage_failed(self, rule: Rule, exc: BaseException) -> Refusal | None:
        outcome = "closed" if rule.closed else "open"
        self.metrics.limit_storage_errors.labels(outcome=outcome).inc()
        self._warn(rule.name, outcome, exc)
        if rule.closed:
            return Refusal(rule.name, UNAVAILABLE_RETRY, unavailable=True)
        return None

    def _warn(self, what: str, outcome: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning < WARNING_INTERVAL:
            self._suppressed += 1
            return
        log.warning(
            "rate limit storage failed (%s: %s); rule %s fails %s "
            "(sign-in and sign-up closed, the rest open; %d similar warnings suppressed)",
            type(exc).__name__,
            exc,
            what,
            outcome,
            self._suppressed,
        )
        self._last_warning, self._suppressed = now, 0

    # ------------------------------------------------------- per account

    async def account_wait(self, account: str) -> int | None:
        """Seconds this account must wait before its next sign-in attempt
        (None: it may try now). Fails closed."""
        if not self.enabled:
            return None
        wait = 0.0
        try:
            for item in self.account_items:
                if not await self.moving.test(item, "account", account):
                    stats = await self.moving.stats(item, "account", account)
                    wait = max(wait, stats.reset_time - time.time(), 1)
        except STORAGE_ERRORS as exc:
            raise self._account_unavailable(exc) from None
        if not wait:
            return None
        self.metrics.rate_limited.labels(rule="account").inc()
        return math.ceil(wait)

    async def account_failed(self, account: str) -> None:
        """Count a failed sign-in against the account (every tier)."""
        if not self.enabled:
            return
        try:
            for item in self.account_items:
                await self.moving.hit(item, "account", account)
        except STORAGE_ERRORS as exc:
            raise self._account_unavailable(exc) from None

    async def account_succeeded(self, account: str) -> None:
        """A successful sign-in clears the account's failures."""
        if not self.enabled:
            return
        try:
            for item in self.account_items:
                await self.moving.clear(item, "account", account)
        except STORAGE_ERRORS as exc:
            # The sign-in succeeded: a stale count only means an earlier wait.
            self._warn("account", "open", exc)

    async def record_throttled(self, account: str) -> bool:
        """Whether this throttled attempt is written to the ledger (the first
        per ``throttled_recorded`` window), rather than only counted."""
        try:
            return await self.moving.hit(self.throttled_item, "throttled", account)
        except STORAGE_ERRORS as exc:
            self._warn("throttled", "open", exc)
            return False

    def _account_unavailable(self, exc: BaseException) -> RateLimitUnavailableError:
        self.metrics.limit_storage_errors.labels(outcome="closed").inc()
        self._warn("account", "closed", exc)
        return RateLimitUnavailableError(
            "sign-in is unavailable for a moment (rate limits cannot be checked)",
            UNAVAILABLE_RETRY,
        )
