"""Rate limits over HTTP: BetterAuth's rules per IP and path, the 429 shape,
windows that reset, IPv6 /64 grouping, shared Redis counters across two app
instances, Redis down (open for the default rule, closed for sign-in), and
the per-account throttle on failed sign-ins across many IPs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from limits.storage import MemoryStorage

from session_ledger.api.rate_limit import SweptMemoryStorage
from session_ledger.ledger.config import load_settings
from tests.abuse.clients import client_at
from tests.http.conftest import PASSWORD, Service
from tests.support.redis import RedisProcess

SIGN_IN = "/api/auth/sign-in/email"
WRONG = {"email": "ada@example.com", "password": "not the password at all"}
RIGHT = {"email": "ada@example.com", "password": PASSWORD}


def limits(**rate_limit: Any) -> dict[str, Any]:
    return {"rate_limit": {"enabled": True, **rate_limit}}


async def statuses(client: httpx.AsyncClient, n: int, path: str = SIGN_IN) -> list[int]:
    out = []
    for _ in range(n):
        if path == SIGN_IN:
            out.append((await client.post(path, json=WRONG)).status_code)
        else:
            out.append((await client.get(path)).status_code)
    return out


def test_on_in_production_off_in_development_and_test_unless_enabled() -> None:
    secret = "abuse-test-secret-0123456789abcdef-0123456789"
    assert load_settings(environment="production", secrets=[secret]).rate_limit_enabled
    assert not load_settings(environment="development").rate_limit_enabled
    assert not load_settings(environment="test").rate_limit_enabled
    assert load_settings(environment="test", rate_limit={"enabled": True}).rate_limit_enabled
    off = {"enabled": False}
    assert not load_settings(
        environment="production", secrets=[secret], rate_limit=off
    ).rate_limit_enabled
    rules = load_settings().rate_limit
    assert (rules.window, rules.max) == (60, 100)
    assert {k: (r.window, r.max) for k, r in rules.custom_rules.items() if r} == {
        "/sign-in/*": (10, 3),
        "/sign-up/*": (10, 3),
    }


async def test_nothing_is_limited_in_the_test_environment(service: Service) -> None:
    await service.sign_up()
    assert set(await statuses(service.client, 12)) == {401}


async def test_sign_in_is_limited_per_ip_with_betterauths_429(
    make_service: Any, pg_url: str
) -> None:
    async with make_service(pg_url, **limits()) as svc:
        await svc.sign_up(client=client_at(svc, "198.51.100.9"))
        a, b = client_at(svc, "203.0.113.1"), client_at(svc, "203.0.113.2")
        assert await statuses(a, 3) == [401, 401, 401]
        refused = await a.post(SIGN_IN, json=RIGHT)
        assert refused.status_code == 429
        assert refused.json() == {
            "code": "TOO_MANY_REQUESTS",
            "message": "Too many requests. Please try again later.",
        }
        assert refused.headers["retry-after"] == refused.headers["x-retry-after"]
        assert 1 <= int(refused.headers["retry-after"]) <= 10
        assert refused.headers["cache-control"] == "no-store"
        # Another IP, and another path of the same IP, have counters of their own.
        assert (await b.post(SIGN_IN, json=RIGHT)).status_code == 200
        assert (await a.get("/api/auth/get-session")).status_code == 200


async def test_limits_reset_when_the_window_passes(make_service: Any, pg_url: str) -> None:
    rules = {"/sign-in/*": {"window": 1, "max": 1}}
    async with make_service(pg_url, **limits(window=1, max=2, custom_rules=rules)) as svc:
        client = client_at(svc, "203.0.113.7")
        assert await statuses(client, 3, "/api/auth/get-session") == [200, 200, 429]
        assert await statuses(client, 2) == [401, 429]
        await asyncio.sleep(1.1)
        assert await statuses(client, 1, "/api/auth/get-session") == [200]
        assert await statuses(client, 1) == [401]


async def test_ipv6_clients_share_a_counter_per_64(make_service: Any, pg_url: str) -> None:
    async with make_service(pg_url, **limits()) as svc:
        first = client_at(svc, "2001:db8:1:2::10")
        same_64 = client_at(svc, "2001:db8:1:2:ffff::99")
        other_64 = client_at(svc, "2001:db8:1:3::10")
        assert await statuses(first, 2) == [401, 401]
        assert await statuses(same_64, 2) == [401, 429]
        assert await statuses(other_64, 1) == [401]


async def test_a_null_custom_rule_exempts_a_path(make_service: Any, pg_url: str) -> None:
    rules = {"/get-session": None}
    async with make_service(pg_url, **limits(window=60, max=1, custom_rules=rules)) as svc:
        client = client_at(svc, "203.0.113.8")
        assert set(await statuses(client, 5, "/api/auth/get-session")) == {200}
        assert await statuses(client, 2, "/api/auth/list-sessions") == [401, 429]


@asynccontextmanager
async def two_instances(
    make_service: Any, pg_url: str, redis_url: str, prefix: str, **rate_limit: Any
) -> AsyncIterator[tuple[Service, Service]]:
    settings = {
        "redis": {"url": redis_url, "prefix": prefix},
        **limits(storage="redis", **rate_limit),
    }
    async with make_service(pg_url, **settings) as a, make_service(pg_url, **settings) as b:
        yield a, b


async def test_two_instances_share_the_redis_counters(
    make_service: Any, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    async with two_instances(make_service, pg_url, redis_url, redis_prefix, max=20) as (a, b):
        await a.sign_up(client=client_at(a, "198.51.100.9"))
        ip = "203.0.113.20"
        on_a, on_b = client_at(a, ip), client_at(b, ip)
        # The sign-in rule (3 per 10 s): every hit goes to Redis.
        assert [*await statuses(on_a, 1), *await statuses(on_b, 1)] == [401, 401]
        assert await statuses(on_a, 1) == [401]
        assert await statuses(on_b, 1) == [429]
        # The default rule (20 per 60 s), counted in each process and sent in
        # batches of 2: two processes admit fewer than 20 + 2 * 2.
        answers = []
        for i in range(30):
            client = on_a if i % 2 else on_b
            answers.append((await client.get("/api/auth/get-session")).status_code)
        allowed = answers.count(200)
        assert 20 <= allowed < 24, answers
        assert answers[-1] == 429
        refused = await on_a.get("/api/auth/get-session")
        assert refused.status_code == 429
        assert refused.json() == {
            "code": "TOO_MANY_REQUESTS",
            "message": "Too many requests. Please try again later.",
        }
        assert refused.headers["retry-after"] == refused.headers["x-retry-after"]
        assert 1 <= int(refused.headers["retry-after"]) <= 120


async def test_redis_down_fails_open_for_the_default_rule_and_closed_for_sign_in(
    make_service: Any, pg_url: str, private_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # max 10: batches of 1, so requests wait for flushes while Redis answers.
    settings = {"redis": {"url": private_redis.url}, **limits(storage="redis", max=10)}
    async with make_service(pg_url, **settings) as svc:
        client = client_at(svc, "203.0.113.30")
        await svc.sign_up(client=client_at(svc, "198.51.100.9"))
        assert (await client.post(SIGN_IN, json=RIGHT)).status_code == 200
        private_redis.kill()
        for _ in range(3):
            assert (await client.get("/api/auth/get-session")).status_code == 200
        refused = await client.post(SIGN_IN, json=RIGHT)
        assert refused.status_code == 503
        assert refused.json()["code"] == "RATE_LIMIT_UNAVAILABLE"
        assert refused.headers["retry-after"] == refused.headers["x-retry-after"] == "5"
        registry = svc.auth.metrics.registry
        name = "session_ledger_rate_limit_storage_errors_total"
        assert registry.get_sample_value(name, {"outcome": "open"}) >= 1
        assert registry.get_sample_value(name, {"outcome": "closed"}) >= 1
        # One warning line says so; the next ones are counted, not logged.
        warnings = [
            r.getMessage() for r in caplog.records if r.name == "session_ledger.api.rate_limit"
        ]
        assert len(warnings) == 1
        assert "rate limit storage failed" in warnings[0]
        assert "sign-in and sign-up closed, the rest open" in warnings[0]


# ------------------------------------------------------------- per account

MANY_IPS = {"/sign-in/*": {"window": 10, "max": 100}}


def attacker(svc: Service, i: int) -> httpx.AsyncClient:
    return client_at(svc, f"192.0.2.{i + 1}")


async def failed_attempts(svc: Service, before: int) -> list[tuple[str, str | None]]:
    recorded = await svc.container.store.read_all(before)
    return [
        (r.event.reason.value, r.user_id)  # type: ignore[union-attr]
        for r in recorded
        if r.type == "SignInFailed"
    ]


async def test_one_account_is_throttled_whatever_the_ip(make_service: Any, pg_url: str) -> None:
    account = [{"window": 60, "max": 5}]
    async with make_service(
        pg_url, **limits(custom_rules=MANY_IPS, account_failures=account)
    ) as svc:
        signed_up = await svc.sign_up(client=client_at(svc, "198.51.100.9"))
        user_id = signed_up.json()["user"]["id"]
        before = await svc.head()
        for i in range(5):
            assert (await attacker(svc, i).post(SIGN_IN, json=WRONG)).status_code == 401
        # The right password, from yet another IP: the account waits.
        throttled = await attacker(svc, 9).post(SIGN_IN, json=RIGHT)
        assert throttled.status_code == 429
        assert throttled.json()["code"] == "TOO_MANY_REQUESTS"
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert throttled.headers["x-retry-after"] == throttled.headers["retry-after"]
        for i in range(10, 13):
            assert (await attacker(svc, i).post(SIGN_IN, json=WRONG)).status_code == 429
        attempts = await failed_attempts(svc, before)
        # Five wrong passwords and the first throttled attempt are written;
        # the three after it only counted.
        assert attempts == [("wrong_password", user_id)] * 5 + [("throttled", user_id)]
        metric = svc.auth.metrics.registry.get_sample_value(
            "session_ledger_sign_in_failures_unrecorded_total", {"reason": "throttled"}
        )
        assert metric == 3
        # Another account is not affected.
        await svc.sign_up("bob@example.com", client=client_at(svc, "198.51.100.10"))
        bob = {"email": "bob@example.com", "password": PASSWORD}
        assert (await attacker(svc, 20).post(SIGN_IN, json=bob)).status_code == 200


async def test_unknown_emails_are_throttled_alike(make_service: Any, pg_url: str) -> None:
    account = [{"window": 60, "max": 2}]
    async with make_service(
        pg_url, **limits(custom_rules=MANY_IPS, account_failures=account)
    ) as svc:
        ghost = {"email": "nobody@example.com", "password": PASSWORD}
        answers = [(await attacker(svc, i).post(SIGN_IN, json=ghost)).status_code for i in range(3)]
        assert answers == [401, 401, 429]
        attempts = await failed_attempts(svc, 0)
        assert attempts == [("unknown_email", None)] * 2 + [("throttled", None)]
        # Input no email can be (PostgreSQL refuses NUL) is throttled alike, never a 500.
        nul = {"email": "a\u0000b@example.com", "password": PASSWORD}
        answers = [(await attacker(svc, i).post(SIGN_IN, json=nul)).status_code for i in range(3)]
        assert answers == [401, 401, 429]


async def test_the_delay_grows_with_the_run_of_failures(make_service: Any, pg_url: str) -> None:
    tiers = [{"window": 1, "max": 2}, {"window": 30, "max": 4}]
    async with make_service(pg_url, **limits(custom_rules=MANY_IPS, account_failures=tiers)) as svc:
        await svc.sign_up(client=client_at(svc, "198.51.100.9"))
        for i in range(2):
            assert (await attacker(svc, i).post(SIGN_IN, json=WRONG)).status_code == 401
        short = await attacker(svc, 2).post(SIGN_IN, json=WRONG)
        assert short.status_code == 429
        assert int(short.headers["retry-after"]) == 1
        await asyncio.sleep(1.1)
        for i in range(3, 5):
            assert (await attacker(svc, i).post(SIGN_IN, json=WRONG)).status_code == 401
        longer = await attacker(svc, 5).post(SIGN_IN, json=WRONG)
        assert longer.status_code == 429
        assert int(longer.headers["retry-after"]) >= 25


async def test_a_successful_sign_in_clears_the_failures(make_service: Any, pg_url: str) -> None:
    account = [{"window": 60, "max": 3}]
    async with make_service(
        pg_url, **limits(custom_rules=MANY_IPS, account_failures=account)
    ) as svc:
        await svc.sign_up(client=client_at(svc, "198.51.100.9"))
        for i in range(2):
            assert (await attacker(svc, i).post(SIGN_IN, json=WRONG)).status_code == 401
        assert (await attacker(svc, 5).post(SIGN_IN, json=RIGHT)).status_code == 200
        for i in range(2):
            assert (await attacker(svc, i).post(SIGN_IN, json=WRONG)).status_code == 401
        assert (await attacker(svc, 6).post(SIGN_IN, json=RIGHT)).status_code == 200


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_the_account_throttle_fails_closed_only_on_a_shared_storage_outage(
    make_service: Any, pg_url: str, private_redis: RedisProcess, kind: str
) -> None:
    settings: dict[str, Any] = limits(storage=kind, custom_rules=MANY_IPS)
    if kind == "redis":
        settings["redis"] = {"url": private_redis.url}
    async with make_service(pg_url, **settings) as svc:
        await svc.sign_up(client=client_at(svc, "198.51.100.9"))
        private_redis.kill()
        answer = await attacker(svc, 1).post(SIGN_IN, json=RIGHT)
        assert answer.status_code == (503 if kind == "redis" else 200)


async def test_the_default_rule_holds_to_within_one_batch_in_memory(
    make_service: Any, pg_url: str
) -> None:
    # max 50: counted in batches of 5 (api.rate_limit._Batch).
    async with make_service(pg_url, **limits(storage="memory", max=50)) as svc:
        client = client_at(svc, "203.0.113.60")
        answers = await statuses(client, 60, "/api/auth/get-session")
        allowed = answers.count(200)
        assert 50 <= allowed <= 54, answers
        assert answers[allowed:] == [429] * (60 - allowed)


def test_the_memory_storage_sweeps_once_a_second() -> None:
    # limits still calls the private hook SweptMemoryStorage replaces.
    assert hasattr(MemoryStorage, "_MemoryStorage__schedule_expiry")
    storage = SweptMemoryStorage()
    time.sleep(0.05)  # the timer limits starts itself in __init__ is done
    storage.incr("key", expiry=1)
    assert storage.timer.interval == SweptMemoryStorage.SWEEP_SECONDS
    assert storage.timer.daemon
    # Expiry never waits for the sweep: reads check it themselves.
    storage.incr("short", expiry=0.05)
    time.sleep(0.1)
    assert storage.get("short") == 0


async def test_the_default_rule_can_stay_in_each_process_with_redis(
    make_service: Any, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """shared_default_rule=false: get-session is counted per process (no
    round trip), while sign-in is still shared through Redis."""
    async with two_instances(
        make_service, pg_url, redis_url, redis_prefix, max=3, shared_default_rule=False
    ) as (a, b):
        ip = "203.0.113.70"
        on_a, on_b = client_at(a, ip), client_at(b, ip)
        assert await statuses(on_a, 4, "/api/auth/get-session") == [200, 200, 200, 429]
        assert await statuses(on_b, 3, "/api/auth/get-session") == [200, 200, 200]
        assert [*await statuses(on_a, 2), *await statuses(on_b, 2)] == [401, 401, 401, 429]
