"""Failed sign-ins are ledger facts (SignInFailed): recorded with reason,
account, IP and user agent (never the password, never an unknown email in
clear), covered by the hash chains, digests, verify and replay, and
queryable from the CLI, the admin endpoint and the user's own view."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from session_ledger.api.cli import app
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.audit import AuditLog, attempt_network
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.integrity import record_digest, verify_ledger
from session_ledger.ledger.schema import events as events_table
from session_ledger.projections.replay import replay_table
from session_ledger.projections.verify import verify_table
from tests.abuse.clients import client_at
from tests.audit.tamper import set_ip
from tests.http.conftest import PASSWORD, Service, running
from tests.support.chain import raw_rows

SIGN_IN = "/api/auth/sign-in/email"
WRONG_PASSWORD = "Pa55word-that-is-wrong"


ATTACKS = [
    ("203.0.113.5", "ada@example.com"),
    ("203.0.113.77", "ADA@example.com "),
    ("2001:db8:5:6::1", "ada@example.com"),
    ("198.51.100.7", "eve@example.com"),
    ("198.51.100.8", "Eve@Example.com"),
]


async def attack(svc: Service, clock: ManualClock) -> str:
    """Ada signed up and was attacked: two wrong passwords from 203.0.113.0/24,
    one from IPv6, and two attempts on an unknown email. Ada's user id."""
    user_id = str((await svc.sign_up()).json()["user"]["id"])
    clock.advance(60)
    for ip, email in ATTACKS:
        answer = await at(svc, ip).post(SIGN_IN, json={"email": email, "password": WRONG_PASSWORD})
        assert answer.status_code == 401
        clock.advance(10)
    return user_id


@pytest.fixture
async def attacked(engine_url: str, clock: ManualClock) -> AsyncIterator[tuple[Service, str]]:
    async with running(engine_url, clock) as svc:
        yield svc, await attack(svc, clock)


def at(svc: Service, ip: str) -> httpx.AsyncClient:
    return client_at(svc, ip, user_agent="curl/8.0")


async def test_each_failure_is_one_event_in_its_own_stream(
    attacked: tuple[Service, str],
) -> None:
    svc, user_id = attacked
    rows = [r for r in await raw_rows(svc.engine) if r["type"] == "SignInFailed"]
    assert len(rows) == 5
    assert len({r["stream_id"] for r in rows}) == 5
    assert all(r["stream_version"] == 1 and r["stream_id"].startswith("signin-") for r in rows)
    reasons = [(r["data"]["reason"], r["user_id"], r["data"]["ip"]) for r in rows]
    assert reasons == [
        ("wrong_password", user_id, "203.0.113.5"),
        ("wrong_password", user_id, "203.0.113.77"),
        ("wrong_password", user_id, "2001:db8:5:6::1"),
        ("unknown_email", None, "198.51.100.7"),
        ("unknown_email", None, "198.51.100.8"),
    ]
    assert all(r["data"]["user_agent"] == "curl/8.0" for r in rows)
    keys = [r["data"]["email_key"] for r in rows]
    # One keyed hash per email as the store compares them: groupable, not readable.
    assert keys[0] == keys[1] == keys[2] != keys[3] == keys[4]
    stored = json.dumps([r["data"] for r in rows] + [r["meta"] for r in rows])
    assert WRONG_PASSWORD not in stored
    assert "eve@" not in stored.lower()
    assert rows[3]["meta"]["actor"] == "anonymous"


async def test_attempts_are_queryable_by_account_network_and_time(
    attacked: tuple[Service, str], clock: ManualClock
) -> None:
    svc, user_id = attacked
    audit = AuditLog(svc.engine)
    mine = await audit.sign_in_attempts(user_id=user_id)
    assert [e.ip for e in mine.items] == ["203.0.113.5", "203.0.113.77", "2001:db8:5:6::1"]
    assert all(e.type == "SignInFailed" and e.reason == "wrong_password" for e in mine.items)
    net = await audit.sign_in_attempts(network="203.0.113.0/24")
    assert [e.ip for e in net.items] == ["203.0.113.5", "203.0.113.77"]
    v6 = await audit.sign_in_attempts(network="2001:db8:5::/48", user_id=user_id)
    assert [e.ip for e in v6.items] == ["2001:db8:5:6::1"]
    recent = await audit.sign_in_attempts(since=clock.now().replace(microsecond=0) - _seconds(25))
    assert [e.reason for e in recent.items] == ["unknown_email", "unknown_email"]
    everyone = await audit.sign_in_attempts(limit=2)
    assert len(everyone.items) == 2
    assert everyone.next_after is not None
    # An IP query finds the attempts beside the sessions seen there.
    sightings = await audit.ip_sightings("198.51.100.0/24")
    assert len(sightings.items) == 2


def _seconds(n: int) -> timedelta:
    return timedelta(seconds=n)


async def test_chains_digests_verify_and_replay_cover_attempts(
    attacked: tuple[Service, str], clock: ManualClock
) -> None:
    svc, _ = attacked
    engine = svc.engine
    await record_digest(engine, clock)
    report = await verify_ledger(engine)
    assert report.ok, report.problems
    assert report.events_checked == await svc.head()
    assert await verify_table(engine) == []
    await replay_table(engine, svc.container.store, clock=clock)
    assert await verify_table(engine) == []
    # A changed attempt breaks its chain like any other event.
    attempt = next(r for r in await raw_rows(engine) if r["type"] == "SignInFailed")
    await set_ip(engine, attempt["position"], "10.9.9.9")
    tampered = await verify_ledger(engine)
    assert not tampered.ok
    assert {p.stream_id for p in tampered.problems} == {attempt["stream_id"]}


async def test_the_admin_endpoint_and_the_users_own_views(
    attacked: tuple[Service, str], clock: ManualClock
) -> None:
    svc, user_id = attacked
    root = svc.new_client()
    root_id = (await svc.sign_up("root@example.com", client=root, name="Root")).json()["user"]
    users = svc.container.ledger.users
    assert isinstance(users, SqlUserStore)
    await users.set_roles(root_id["id"], ["admin"])
    admin = "/api/auth/admin/audit/attempts"
    page = (await root.get(admin, params={"userId": user_id})).json()
    assert [i["reason"] for i in page["items"]] == ["wrong_password"] * 3
    page = (await root.get(admin, params={"network": "198.51.100.0/24"})).json()
    assert [i["userId"] for i in page["items"]] == [None, None]
    assert (await root.get(admin, params={"network": "nope"})).status_code == 400
    assert (await svc.client.get(admin)).status_code == 403

    # Ada signs in again: the failures since her last visit, by network.
    clock.advance(3600)
    ada = svc.new_client()
    await svc.sign_in(client=ada)
    summary = (await ada.get("/api/auth/audit/failed-sign-ins")).json()
    assert summary["total"] == 3
    assert summary["since"] is not None
    assert [(n["network"], n["count"]) for n in summary["networks"]] == [
        ("203.0.113.0/24", 2),
        ("2001:db8:5:6::/64", 1),
    ]
    # Seen once: the next visit starts from this one.
    clock.advance(3600)
    later = svc.new_client()
    await svc.sign_in(client=later)
    assert (await later.get("/api/auth/audit/failed-sign-ins")).json()["total"] == 0
    # The timeline and the session history show them too.
    activity = (await ada.get("/api/auth/audit/activity")).json()["items"]
    assert [e["type"] for e in activity].count("SignInFailed") == 3
    history = (await ada.get("/api/auth/session-history")).json()["events"]
    failed = [e for e in history if e["type"] == "SignInFailed"]
    assert {(e["reason"], e["ipAddress"]) for e in failed} == {
        ("wrong_password", "203.0.113.5"),
        ("wrong_password", "203.0.113.77"),
        ("wrong_password", "2001:db8:5:6::1"),
    }
    assert (await svc.new_client().get("/api/auth/audit/failed-sign-ins")).status_code == 401


def test_attempt_networks() -> None:
    assert attempt_network("203.0.113.77") == "203.0.113.0/24"
    assert attempt_network("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert attempt_network("2001:db8:5:6:7::1") == "2001:db8:5:6::/64"
    assert attempt_network("not-an-ip") == "not-an-ip"
    assert attempt_network(None) == "unknown"


def test_the_cli(engine_url: str) -> None:
    async def populate() -> str:
        clock = ManualClock()
        async with running(engine_url, clock) as svc:
            return await attack(svc, clock)

    user_id = asyncio.run(populate())
    url = engine_url
    runner = CliRunner()
    base = ["audit", "attempts", "--database-url", url, "--format", "json"]
    mine = runner.invoke(app, [*base, "--user", user_id])
    assert mine.exit_code == 0, mine.output
    assert [e["ip"] for e in json.loads(mine.stdout)] == [
        "203.0.113.5",
        "203.0.113.77",
        "2001:db8:5:6::1",
    ]
    net = runner.invoke(app, [*base, "--ip", "198.51.100.0/24", "--since", "2020-01-01"])
    assert net.exit_code == 0, net.output
    assert [e["reason"] for e in json.loads(net.stdout)] == ["unknown_email"] * 2
    table = CliRunner(env={"COLUMNS": "80"}).invoke(
        app, ["audit", "attempts", "--database-url", url]
    )
    assert table.exit_code == 0, table.output
    assert "5 row(s)" in table.stderr
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines  # fits, as every audit table
    rows = [line for line in lines if "203.0.113." in line or "198.51.100." in line]
    assert len(rows) == 4
    assert all(user_id[-8:] in row and "wrong_password" in row for row in rows[:2])
    assert "email key" not in table.stdout  # from 132 columns on
    key = json.loads(mine.stdout)[0]["data"]["email_key"][:16]
    wide = CliRunner(env={"COLUMNS": "160"}).invoke(
        app, ["audit", "attempts", "--user", user_id, "--database-url", url]
    )
    assert wide.exit_code == 0, wide.output
    assert "email key" in wide.stdout
    assert wide.stdout.count(key) == 3
    assert wide.stdout.count(user_id) == 3  # ids in full when wide
    bad = runner.invoke(app, ["audit", "attempts", "--ip", "10.0.0.0/99", "--database-url", url])
    assert bad.exit_code == 2
    assert "not an IP address or CIDR network" in bad.output
    verify = runner.invoke(app, ["verify", "--ledger", "--projections", "--database-url", url])
    assert verify.exit_code == 0, verify.output


async def test_a_right_password_writes_no_attempt(service: Service) -> None:
    await service.sign_up()
    await service.sign_in()
    async with service.engine.connect() as conn:
        n = await conn.scalar(select(func.count()).where(events_table.c.type == "SignInFailed"))
    assert n == 0
    assert PASSWORD
