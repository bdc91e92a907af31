"""Fault scenarios on a :class:`~tests.support.deployment.Deployment` under
:class:`~tests.support.load.Load`, and what must hold after each: shared by
``tests/faults`` (which asserts) and ``bench.faults`` (which prints figures).

A scenario: load runs, the fault is injected, held, healed; the time until
both services answer a store read again is the *recovery*, the time until
the Redis runner's checkpoint reaches what the ledger held at the heal is
the *cache catch-up* (from the fault itself for one that is over at once,
a FLUSHALL); the load runs a little longer and stops. Then: every acknowledged
action is in the ledger, every ended session is refused by both services
(with and without the cookie cache), and ``session-ledger verify --ledger
--projections`` finds nothing.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine
from uuid6 import uuid7

from session_ledger.api.bootstrap import build
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger import horizon
from session_ledger.ledger.domain.decide import CreateSession, decide
from session_ledger.ledger.domain.events import EventMetadata
from session_ledger.ledger.domain.tokens import hash_token, new_token
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.integrity import verify_ledger
from session_ledger.ledger.store import StreamAppend
from session_ledger.projections.redis_cache import RedisSessionCache
from session_ledger.projections.verify import verify_redis, verify_table
from tests.support.deployment import Deployment, wait_until
from tests.support.load import CHEAP_HASHER, Load, lost_actions

Step = Callable[[], Awaitable[None]]


@dataclass
class Outcome:
    name: str
    #: Non-2xx responses while the fault lasted, by (service, status, code).
    errors: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    #: Seconds from healing the fault until both services serve store reads.
    recovery: float = 0.0
    #: Seconds from healing the fault until Redis's checkpoint reached the
    #: ledger's head of that moment.
    catch_up: float | None = None
    lost: list[str] = field(default_factory=list)
    violations: list[tuple[str, str, str]] = field(default_factory=list)
    #: Seconds another service's cookie cache still accepted a just-ended
    #: session (its change feed not yet delivered; within FEED_BOUND).
    late: list[float] = field(default_factory=list)
    #: Figures and facts of a scenario's own (a takeover time, ...).
    notes: dict[str, float] = field(default_factory=dict)
    #: What ``verify --ledger --projections`` would report.
    ledger_problems: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)

    def errors_by_kind(self) -> dict[str, int]:
        kinds: Counter[str] = Counter()
        for (_service, status, code), n in self.errors.items():
            kinds[f"{status} {code}".strip()] += n
        for service, n in self.transport_errors.items():
            kinds[f"connection error ({service})"] += n
        return dict(kinds)


@dataclass
class Canary:
    """A session of our own, to tell when a service serves store reads again."""

    cookie: str

    @classmethod
    async def create(cls, dep: Deployment) -> Canary:
        container = await build(dep.settings(), builtin_users=True)
        try:
            users = container.ledger.users
            assert isinstance(users, SqlUserStore)
            users.hasher = CHEAP_HASHER
            user = await users.create_user(f"canary-{secrets.token_hex(4)}@example.com", None)
            _view, token = await container.ledger.create_session(user.id)
        finally:
            await container.close()
        return cls(dep.cookie(token))

    async def served(self, dep: Deployment) -> bool:
        async with httpx.AsyncClient(timeout=2.0) as client:
            for service in dep.services:
                try:
                    response = await client.get(
                        f"{service.base}/api/auth/get-session?disableCookieCache=true",
                        headers={"cookie": self.cookie},
                    )
                except httpx.TransportError:
                    return False
                if response.status_code != 200 or response.json() is None:
                    return False
        return True


async def short_sessions(dep: Deployment, count: int, users: int = 4) -> list[str]:
    """``count`` sessions with remember-me off (they end after the
    deployment's ``short_session_expires_in``) of ``users`` real users; their
    Cookie headers. Created by this process through the wiring the services
    use (their feeds hear of them), a few hundred per append."""
    container = await build(dep.settings(), builtin_users=True)
    try:
        store = container.ledger.users
        assert isinstance(store, SqlUserStore)
        store.hasher = CHEAP_HASHER
        owners = [
            (await store.create_user(f"short-{secrets.token_hex(4)}@example.com", None)).id
            for _ in range(users)
        ]
        now, policy = container.clock.now(), container.settings.session
        cookies: list[str] = []
        appends: list[StreamAppend] = []
        for i in range(count):
            token, user = new_token(), owners[i % users]
            sid = str(uuid7())
            command = CreateSession(sid, user, hash_token(token), remember_me=False)
            appends.append(StreamAppend(sid, 0, decide(None, command, now, policy), user))
            cookies.append(dep.cookie(token))
            if len(appends) == 200 or i == count - 1:
                await container.store.append_batch(appends, metadata=EventMetadata(actor="test"))
                appends = []
        return cookies
    finally:
        await container.close()


async def head(engine: AsyncEngine) -> Mark:
    """The last mark a follower can read now (ledger.horizon)."""
    return await horizon.head(engine)


async def cache_caught_up(
    engine: AsyncEngine, cache: RedisSessionCache, position: Mark | None = None
) -> bool:
    """Whether the runner's checkpoint reached ``position`` (default: the head)."""
    try:
        checkpoint = await cache.checkpoint((await cache.write_keys())[0])
    except (RedisError, OSError):  # Redis restarting
        return False
    target = await head(engine) if position is None else position
    return checkpoint is not None and checkpoint >= target


async def run_scenario(
    name: str,
    dep: Deployment,
    load: Load,
    engine: AsyncEngine,
    canary: Canary,
    *,
    fault: Step,
    heal: Step,
    hold: float = 1.5,
    before: float = 1.0,
    after: float = 1.0,
    cache: RedisSessionCache | None = None,
    recovery_timeout: float = 30.0,
    instant: bool = False,
) -> Outcome:
    """Run one scenario (see the module docstring); checks are the caller's."""
    outcome = Outcome(name)
    failures, transport = Counter(load.failures), Counter(load.transport_errors)
    requests, late = sum(load.outcomes.values()), len(load.late)
    load.start()
    catching_up: asyncio.Task[float] | None = None

    async def catch_up() -> None:
        # From now until the cache holds everything appended so far.
        nonlocal catching_up
        if cache is not None:
            now = await head(engine)
            catching_up = asyncio.create_task(
                wait_until(lambda: cache_caught_up(engine, cache, now), f"{name}: cache", 60)
            )

    try:
        await asyncio.sleep(before)
        await fault()
        if instant:  # over as soon as done (a FLUSHALL): the rebuild starts now
            await catch_up()
        await asyncio.sleep(hold)
        await heal()
        if not instant:
            await catch_up()
        outcome.recovery = await wait_until(
            lambda: canary.served(dep), f"{name}: recovery", recovery_timeout
        )
        outcome.errors = load.failures - failures
        outcome.transport_errors = load.transport_errors - transport
        await asyncio.sleep(after)
    finally:
        await load.stop()
        if catching_up is not None:
            outcome.catch_up = await catching_up
    outcome.requests = sum(load.outcomes.values()) - requests
    outcome.late = load.late[late:]
    if cache is not None:  # the checks compare the whole cache with the ledger
        await wait_until(lambda: cache_caught_up(engine, cache), f"{name}: cache at the head", 60)
    await check(outcome, load, engine, cache)
    return outcome


async def check(
    outcome: Outcome, load: Load, engine: AsyncEngine, cache: RedisSessionCache | None
) -> None:
    """Acknowledged actions, ended sessions, and what ``session-ledger verify
    --ledger --projections`` checks (the same functions, in this process:
    the command itself runs once at the end of the suite), into ``outcome``."""
    outcome.lost = await lost_actions(engine, load.acks)
    await load.probe_all()
    outcome.violations = list(load.violations)
    report = await verify_ledger(engine)
    outcome.ledger_problems = [f"{p.kind}: {p.message}" for p in report.problems]
    differences = await verify_table(engine)
    if cache is not None:
        differences += await verify_redis(engine, cache)
    outcome.differences = [str(d) for d in differences]


def assert_clean(outcome: Outcome) -> None:
    """Nothing acknowledged lost, no ended session accepted, verify clean,
    and no 5xx but 503 (a dependency down) while the fault lasted."""
    unexpected = {k: n for k, n in outcome.errors.items() if k[1] == 400}
    assert unexpected == {}, unexpected  # the load's own requests are all valid
    assert outcome.lost == [], outcome.lost[:10]
    assert outcome.violations == [], outcome.violations[:10]
    assert outcome.ledger_problems == [], outcome.ledger_problems[:10]
    assert outcome.differences == [], outcome.differences[:10]
    others = {key: n for key, n in outcome.errors.items() if key[1] >= 500 and key[1] != 503}
    assert others == {}, others


def describe(outcome: Outcome) -> dict[str, Any]:
    return {
        "scenario": outcome.name,
        "requests": outcome.requests,
        "errors during the fault": outcome.errors_by_kind(),
        "recovery s": round(outcome.recovery, 2),
        "cache catch-up s": None if outcome.catch_up is None else round(outcome.catch_up, 2),
        "lost": len(outcome.lost),
        "stale accepts": len(outcome.violations),
        "cookie cache accepts before the feed delivered": len(outcome.late),
        "longest such, ms": round(max(outcome.late, default=0.0) * 1000),
        "verify differences": len(outcome.ledger_problems) + len(outcome.differences),
        **{k: round(v, 2) for k, v in outcome.notes.items() if k != "back at"},
    }
