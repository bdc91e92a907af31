"""The built-in user store: argon2id, lower-cased unique emails, linked
accounts with tokens encrypted at rest, and ``accounts`` in the session
payload with store_tokens."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.errors import (
    EncryptionKeyError,
    InvalidEmailOrPasswordError,
    InvalidUserInputError,
    PasswordTooLongError,
    UserAlreadyExistsError,
    UserNotFoundError,
)
from session_ledger.api.users.schema import accounts, users
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.ports import ProviderAccount
from tests.http.conftest import FERNET_KEY, PASSWORD


@pytest.fixture
def store(pg_engine: AsyncEngine) -> SqlUserStore:
    return SqlUserStore(pg_engine, TokenBox(FERNET_KEY))


async def test_passwords_are_argon2id_with_production_parameters(
    store: SqlUserStore, pg_engine: AsyncEngine
) -> None:
    user = await store.create_user("Grace@Example.com", PASSWORD, name="Grace")
    async with pg_engine.connect() as conn:
        row = (await conn.execute(select(users).where(users.c.id == user.id))).one()
    assert row.email == "grace@example.com"
    # OWASP's first recommended argon2id set (settings.password).
    assert row.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert (await store.authenticate("GRACE@example.com", PASSWORD)).id == user.id
    with pytest.raises(InvalidEmailOrPasswordError):
        await store.authenticate("grace@example.com", "wrong password")
    with pytest.raises(InvalidEmailOrPasswordError):
        await store.authenticate("nobody@example.com", PASSWORD)


async def test_emails_are_unique_regardless_of_case(pg_engine: AsyncEngine) -> None:
    store = SqlUserStore(pg_engine, TokenBox(None), hasher=PasswordHasher(1, 1024, 1))
    await store.create_user("a@example.com", PASSWORD)
    with pytest.raises(UserAlreadyExistsError):
        await store.create_user("A@EXAMPLE.COM", PASSWORD)
    with pytest.raises(PasswordTooLongError):
        await store.create_user("b@example.com", "x" * 129)
    with pytest.raises(InvalidUserInputError):
        await store.create_user("c@example.com", PASSWORD, name="n" * 300)


async def test_linked_account_tokens_are_encrypted_at_rest(
    pg_engine: AsyncEngine,
) -> None:
    store = SqlUserStore(pg_engine, TokenBox(FERNET_KEY), hasher=PasswordHasher(1, 1024, 1))
    user = await store.create_user("l@example.com", None)
    account = ProviderAccount("github", "12345", access_token="gho_secret", scope="read:user")
    await store.link_account(user.id, account)
    async with pg_engine.connect() as conn:
        row = (await conn.execute(select(accounts))).one()
    assert "gho_secret" not in str(tuple(row))
    assert (await store.get_accounts(user.id)) == [account]
    updated = ProviderAccount("github", "12345", access_token="gho_new", expires_at=99)
    await store.link_account(user.id, updated)
    assert (await store.get_accounts(user.id)) == [updated]
    other = await store.create_user("m@example.com", None)
    with pytest.raises(InvalidUserInputError):
        await store.link_account(other.id, account)
    with pytest.raises(UserNotFoundError):
        await store.link_account("no-such-user", account)
    with pytest.raises(EncryptionKeyError):
        await SqlUserStore(pg_engine, TokenBox(None)).link_account(user.id, account)
    with pytest.raises(EncryptionKeyError):
        TokenBox("not a fernet key")


async def test_store_tokens_puts_accounts_in_the_session(make_service: Any, pg_url: str) -> None:
    async with make_service(pg_url, store_tokens=True) as svc:
        signed_up = await svc.sign_up()
        users_store = svc.auth.users
        assert users_store is not None
        await users_store.link_account(
            signed_up.json()["user"]["id"],
            ProviderAccount("google", "g-1", access_token="ya29.token", refresh_token="1//r"),
        )
        response = await svc.client.get("/api/auth/get-session")
        body = response.json()
        assert body["accounts"]["google"]["access_token"] == "ya29.token"
        assert body["accounts"]["google"]["refresh_token"] == "1//r"
        # Provider tokens never go into a cookie: no cookie cache with store_tokens.
        assert response.headers["x-session-source"] == "store"
        assert not any("session_data" in c for c in signed_up.headers.get_list("set-cookie"))


async def test_admins_link_provider_accounts_over_http(make_service: Any, pg_url: str) -> None:
    async with make_service(pg_url, store_tokens=True) as svc:
        ada_id = (await svc.sign_up()).json()["user"]["id"]
        url = f"/api/auth/admin/users/{ada_id}/accounts"
        body = {
            "providerId": "microsoft",
            "accountId": "ms-1",
            "accessToken": "ms-access",
            "refreshToken": "ms-refresh",
            "tokenType": "Bearer",
            "scope": "openid profile email User.Read",
            "expiresAt": 1682345678,
        }
        # Not an admin: refused, nothing linked.
        refused = await svc.client.post(url, json=body)
        assert (refused.status_code, refused.json()["code"]) == (403, "FORBIDDEN")

        root = svc.new_client()
        root_id = (await svc.sign_up("root@example.com", client=root)).json()["user"]["id"]
        assert svc.auth.users is not None
        await svc.auth.users.set_roles(root_id, ["admin"])
        linked = await root.post(url, json=body)
        assert linked.status_code == 200, linked.text
        assert linked.json() == {"status": True}

        session = (await svc.client.get("/api/auth/get-session")).json()
        assert session["accounts"]["microsoft"] == {
            "access_token": "ms-access",
            "refresh_token": "ms-refresh",
            "id_token": None,
            "token_type": "Bearer",
            "scope": "openid profile email User.Read",
            "expires_at": 1682345678,
        }
        unknown = await root.post("/api/auth/admin/users/nobody/accounts", json=body)
        assert (unknown.status_code, unknown.json()["code"]) == (404, "USER_NOT_FOUND")
        bad = await root.post(url, json={"providerId": "", "accountId": "x"})
        assert bad.status_code == 400
        assert set(bad.json()) == {"code", "message"}
