"""``session-ledger users create|list|show``: finding a user without the
demo page, and one email rule for the CLI and HTTP sign-up."""

from __future__ import annotations

import asyncio
import re

from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.db import make_engine
from tests.cli.conftest import cli
from tests.http.conftest import CHEAP_HASHER, PASSWORD, Service, running

EMAILS = [
    "a@b.c",
    "Ä+Tag@Ü.DE",
    "x@localhost",
    "@b.c",
    "a@b",
    "a b@c.de",
    "a@b.c.",
    "x" * 65 + "@b.c",
]


async def _create(url: str, *emails: str) -> list[str]:
    """Users by the store (a cheap hash: the CLI's real one takes a second)."""
    engine = make_engine(url)
    try:
        store = SqlUserStore(engine, TokenBox(None), hasher=CHEAP_HASHER)
        roles = {"ada@example.com": ["admin"]}
        return [(await store.create_user(e, PASSWORD, roles=roles.get(e, []))).id for e in emails]
    finally:
        await engine.dispose()


def test_users_list_and_show(engine_url: str) -> None:
    ada, bob, _ = asyncio.run(
        _create(engine_url, "ada@example.com", "bob@example.org", "a_b%c@example.net")
    )

    listed = cli("users", "list", "--database-url", engine_url, columns=80)
    assert listed.exit_code == 0, listed.output
    assert all(len(line) <= 80 for line in listed.stdout.splitlines())
    assert ada in listed.stdout  # the id in full: what the other commands take
    assert listed.stdout.index("ada@example.com") < listed.stdout.index("bob@example.org")
    assert "3 user(s)" in listed.stdout

    def emails(pattern: str) -> set[str]:
        out = cli("users", "list", "--email", pattern, "--database-url", engine_url).stdout
        return set(re.findall(r"[\w%.]+@[\w.]+", out))

    assert emails("example.org") == {"bob@example.org"}
    assert emails("*@example.*") == {"ada@example.com", "bob@example.org", "a_b%c@example.net"}
    assert emails("ADA@*") == {"ada@example.com"}
    assert emails("_") == {"a_b%c@example.net"}  # LIKE's wildcards are plain characters
    assert emails("%") == {"a_b%c@example.net"}
    assert emails("a?b*") == {"a_b%c@example.net"}
    assert emails("nobody") == set()

    for who in ("ADA@example.com", ada):
        shown = cli("users", "show", who, "--database-url", engine_url)
        assert shown.exit_code == 0, shown.output
        assert ada in shown.stdout
        assert "admin" in shown.stdout
    missing = cli("users", "show", "nobody@example.com", "--database-url", engine_url)
    assert missing.exit_code == 2
    assert missing.stderr.strip() == "error: no user with email or id 'nobody@example.com'"
    assert bob not in missing.stdout


async def test_users_create_accepts_what_http_sign_up_accepts(
    sqlite_url: str, clock: ManualClock
) -> None:
    async with running(sqlite_url, clock) as service:
        verdicts = await _verdicts(service, sqlite_url)
    assert [v for v in verdicts if v[1] != v[2]] == []
    assert dict((e, ok) for e, ok, _ in verdicts)["a@b.c"] is True


async def _verdicts(service: Service, url: str) -> list[tuple[str, bool, bool]]:
    """(email, HTTP sign-up accepted it, ``users create`` accepted it)."""
    verdicts = []
    for email in EMAILS:
        http = await service.new_client().post(
            "/api/auth/sign-up/email", json={"email": email, "password": PASSWORD}
        )
        assert http.status_code in (200, 400), http.text
        other = email.replace("@", "+cli@", 1) if http.status_code == 200 else email
        result = await asyncio.to_thread(
            cli, "users", "create", other, "--password", PASSWORD, "--database-url", url
        )
        verdicts.append((email, http.status_code == 200, result.exit_code == 0))
        if result.exit_code:
            assert result.stderr.strip() == "error: invalid email address"
    return verdicts
