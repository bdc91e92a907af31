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

When Redis cannot answer, the default rule **fails open** (the request goes
on: an outage of a cache must not take the service down), while the sign-in
and sign-up rules and the account throttle **fail closed** (503
``RATE_LIMIT_UNAVAILABLE`` with ``Retry-After``): unlimited password
guessing is worse than a short refusal. Either way a rate-limited warning
is logged and ``session_ledger_rate_limit_storage_errors_total`` counts it.

Cost on the hot path: on memory storage each request is one moving-window
hit (a few microseconds). On Redis the default rule would cost a round trip
per request (get-session's whole budget on the cookie-cache path), so it is
counted here and sent to Redis in batches of up to 10 (``_Batch``); a key
the shared counter refused stays refused here until that window frees.
The shared count may therefore trail by up to a batch per process; the
strict rules (sign-in, sign-up, the account throttle) go to Redis on every
request.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass, field

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from api.metrics import ServiceMetrics
from ledger.config import RateLimitRule, Settings
from ledger.errors import ConfigError, RetryLaterError

log = logging.getLogger(__name__)

#: Where the limited routes live (BetterAuth's basePath).
BASE_PATH = "/api/auth"
#: Rules on these paths fail closed when the storage is unreachable.
CREDENTIAL_PREFIXES = ("/sign-in", "/sign-up")
#: Longest batch of default-rule hits sent to Redis at once.
MAX_BATCH = 10
#: Retry-After when the storage is unreachable (fail closed).
UNAVAILABLE_RETRY = 5
WARNING_INTERVAL = 30.0
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


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the limiter refused: 429 after ``retry_after`` seconds, or
    503 when the storage could not answer (``unavailable``)."""

    rule: str
    retry_after: int
    unavailable: bool = False


@dataclass(slots=True)
class _Batch:
    """Default-rule hits of one key not yet sent to the shared storage."""

    pending: int = 0
    since: float = 0.0
    blocked_until: float = 0.0


def _item(rule: RateLimitRule) -> RateLimitItem:
    return RateLimitItemPerSecond(rule.max, rule.window)


@dataclass
class RateLimiter:
    settings: Settings
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)

    def __post_init__(self) -> None:
        rl = self.settings.rate_limit
        self.enabled = self.settings.rate_limit_enabled
        storage_kind = rl.storage or ("redis" if self.settings.redis.url else "memory")
        self.shared = storage_kind == "redis"
        self.storage: MemoryStorage | RedisStorage
        if self.shared:
            url = self.settings.redis.url
            if url is None:
                raise ConfigError("rate_limit.storage: redis needs redis.url")
            self.storage = RedisStorage(
                f"async+{url}",
                implementation="redispy",
                key_prefix=f"{self.settings.redis.prefix}rl",
                wrap_exceptions=True,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
            )
        else:
            self.storage = MemoryStorage()
        self.strategy = MovingWindowRateLimiter(self.storage)
        batch = min(MAX_BATCH, max(1, rl.max // 10)) if self.shared else 1
        self.default = Rule(
            "default", _item(RateLimitRule(window=rl.window, max=rl.max)), False, batch
        )
        self._exact: dict[str, Rule | None] = {}
        self._prefixes: list[tuple[str, Rule | None]] = []
        for pattern, custom in rl.custom_rules.items():
            rule = None
            if custom is not None:
                rule = Rule(pattern, _item(custom), pattern.startswith(CREDENTIAL_PREFIXES), 1)
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

    async def close(self) -> None:
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
        try:
            if rule.batch > 1:
                return await self._batched(rule, client, path)
            if await self.strategy.hit(rule.item, client, path):
                return None
            return await self._refused(rule, client, path)
        except (StorageError, RedisError, OSError) as exc:
            return self._storage_failed(rule, exc)

    async def _batched(self, rule: Rule, client: str, path: str) -> Refusal | None:
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
        if await self.strategy.hit(rule.item, client, path, cost=cost):
            return None
        stats = await self.strategy.get_window_stats(rule.item, client, path)
        batch.blocked_until = max(stats.reset_time, now + 1)
        return self._refusal(rule, batch.blocked_until - now)

    def _prune(self, now: float) -> None:
        # Unsent hits of idle keys are dropped (the shared count trails by
        # at most a batch); refused keys are kept until their window frees.
        self._batches = {k: b for k, b in self._batches.items() if b.blocked_until > now}

    async def _refused(self, rule: Rule, *identifiers: str) -> Refusal:
        stats = await self.strategy.get_window_stats(rule.item, *identifiers)
        return self._refusal(rule, stats.reset_time - time.time())

    def _refusal(self, rule: Rule, seconds: float) -> Refusal:
        self.metrics.rate_limited.labels(rule=rule.name).inc()
        return Refusal(rule.name, max(1, math.ceil(seconds)))

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
                if not await self.strategy.test(item, "account", account):
                    stats = await self.strategy.get_window_stats(item, "account", account)
                    wait = max(wait, stats.reset_time - time.time(), 1)
        except (StorageError, RedisError, OSError) as exc:
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
                await self.strategy.hit(item, "account", account)
        except (StorageError, RedisError, OSError) as exc:
            raise self._account_unavailable(exc) from None

    async def account_succeeded(self, account: str) -> None:
        """A successful sign-in clears the account's failures."""
        if not self.enabled:
            return
        try:
            for item in self.account_items:
                await self.strategy.clear(item, "account", account)
        except (StorageError, RedisError, OSError) as exc:
            # The sign-in succeeded: a stale count only means an earlier wait.
            self._warn("account", "open", exc)

    async def record_throttled(self, account: str) -> bool:
        """Whether this throttled attempt is written to the ledger (the first
        per ``throttled_recorded`` window), rather than only counted."""
        try:
            return await self.strategy.hit(self.throttled_item, "throttled", account)
        except (StorageError, RedisError, OSError) as exc:
            self._warn("throttled", "open", exc)
            return False

    def _account_unavailable(self, exc: BaseException) -> RateLimitUnavailableError:
        self.metrics.limit_storage_errors.labels(outcome="closed").inc()
        self._warn("account", "closed", exc)
        return RateLimitUnavailableError(
            "sign-in is unavailable for a moment (rate limits cannot be checked)",
            UNAVAILABLE_RETRY,
        )
