"""SqlUserStore: the built-in :class:`ledger.ports.UserStore` on the ``users``
and ``accounts`` tables, plus sign-up, sign-in and account linking.

* Passwords: argon2id with ``settings.password``'s parameters (OWASP's
  19 MiB, t=2, p=1 by default), computed in a bounded pool of threads
  (:mod:`api.users.passwords`); a new password must pass the policy there.
  A hash made with other parameters is redone at the next sign-in.
* Emails are stored lower-cased; the unique constraint then makes them unique
  regardless of case.
* An unknown email costs one argon2 verification against a dummy hash, so
  the answer for "no such user" and "wrong password" takes similar time.
* Provider tokens are Fernet-encrypted before they reach the database.
* ``get_user`` answers from a :class:`~api.users.memo.UserMemo` while a change
  feed vouches for it (the HTTP service's feed, on PostgreSQL). Every change
  of a user record sends ``NOTIFY`` in the changing transaction, so every
  writer tells every process, and drops this process's entry after commit.
  A record read from the database is handed to ``on_read`` (the Redis
  cache keeps it beside the user's sessions, see api.bootstrap).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from uuid6 import uuid7

from session_ledger.api.urls import parse_absolute
from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.errors import (
    InvalidEmailError,
    InvalidEmailOrPasswordError,
    InvalidUserInputError,
    UserAlreadyExistsError,
    UserNotFoundError,
)
from session_ledger.api.users.memo import USERS_CHANNEL, UserMemo
from session_ledger.api.users.passwords import BoundedHashing, PasswordPolicy, hasher_for
from session_ledger.api.users.schema import accounts, users
from session_ledger.ledger.clock import Clock, SystemClock, utc
from session_ledger.ledger.config import PasswordSettings
from session_ledger.ledger.db import read_standalone, retry_stale, row_decoder
from session_ledger.ledger.domain.errors import ServerBusyError
from session_ledger.ledger.ports import ProviderAccount, UserRecord

MAX_NAME = 256
MAX_EMAIL = 320
MAX_IMAGE = 2048
MAX_ROLE = 64
#: One rule for every way in (HTTP sign-up, ``users create``): a local part,
#: ``@``, a dotted domain (a one-letter top-level label included: ``a@b.c``).
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s.]+")


def _printable(text: str) -> bool:
    """No control characters (PostgreSQL refuses NUL in text columns outright)."""
    return text.isprintable()


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > MAX_EMAIL or not _printable(email) or _EMAIL_RE.fullmatch(email) is None:
        raise InvalidEmailError("invalid email address")
    return email


_USER_COLUMNS = ", ".join(c.name for c in users.columns)
_USER_BY_ID_PG = f"SELECT {_USER_COLUMNS} FROM {users.name} WHERE id = $1"  # noqa: S608
_USER_BY_ID_SQLITE = f"SELECT {_USER_COLUMNS} FROM {users.name} WHERE id = ?"  # noqa: S608
#: Told of each record read from the database, with when the read started (monotonic).
OnRead = Callable[[UserRecord, float], Awaitable[None]]


@dataclass
class SqlUserStore:
    engine: AsyncEngine
    tokens: TokenBox
    clock: Clock = field(default_factory=SystemClock)
    #: None: argon2id with ``password``'s parameters.
    hasher: PasswordHasher | None = None
    password: PasswordSettings = field(default_factory=PasswordSettings)

    def __post_init__(self) -> None:
        self._dummy_hash: str | None = None
        self.policy = PasswordPolicy(self.password)
        self.hashing = BoundedHashing(self.hasher or hasher_for(self.password), self.password)
        dialect = self.engine.dialect
        #: Not live until a change feed attaches to it (api.revocations).
        self.memo = UserMemo()
        self.on_read: list[OnRead] = []
        self._by_id = (
            _USER_BY_ID_PG if dialect.name == "postgresql" else _USER_BY_ID_SQLITE,
            row_decoder(dialect, tuple(users.columns)),
        )

    # ----------------------------------------------------------- the port

    async def get_user(self, user_id: str) -> UserRecord | None:
        # On every get-session store read: from the memo while a feed vouches
        # for it, else one statement on the driver (see
        # ledger.db.read_standalone), decoded by SQLAlchemy's type processors.
        memo = self.memo
        record = memo.get(user_id)
        if record is not None:
            return record
        epoch = memo.epoch  # before the read: see UserMemo.put
        started = time.monotonic()
        sql, decode = self._by_id

        async def read() -> UserRecord | None:
            rows = await read_standalone(self.engine, sql, (user_id,))
            return _user_from_mapping(decode(rows[0])) if rows else None

        record = await retry_stale(read)
        if record is not None:
            memo.put(record, epoch)
            for callback in self.on_read:
                await callback(record, started)
        return record

    async def get_accounts(self, user_id: str) -> list[ProviderAccount]:
        query = (
            select(accounts)
            .where(accounts.c.user_id == user_id)
            .order_by(accounts.c.provider_id, accounts.c.account_id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [self._account(row) for row in rows]

    # ------------------------------------------------------------- users

    async def id_for_email(self, email: str) -> str | None:
        """The id of the user with this email as typed; None for none, and
        for input no email can be (too long, control characters)."""
        if len(email) > MAX_EMAIL or not _printable(email):
            return None
        row = await self._row_by_email(email.strip().lower())
        return None if row is None else str(row._mapping["id"])

    async def get_by_email(self, email: str) -> UserRecord | None:
        row = await self._row_by_email(email.strip().lower())
        return None if row is None else _user(row)

    async def find_user(self, email_or_id: str) -> UserRecord | None:
        """The user with this email (any case) or this id."""
        key = email_or_id.strip()
        query = select(users).where((users.c.email == key.lower()) | (users.c.id == key))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _user(row)

    async def find_users(self, pattern: str | None = None, *, limit: int = 100) -> list[UserRecord]:
        """Users by email, in email order: all, or those whose email matches
        ``pattern`` (``*`` and ``?`` wildcards; without any, a substring)."""
        query = select(users).order_by(users.c.email).limit(limit)
        if pattern:
            like = _like(pattern.strip().lower())
            query = query.where(users.c.email.like(like, escape="\\"))
        async with self.engine.connect() as conn:
            return [_user(row) for row in await conn.execute(query)]

    async def create_user(
        self,
        email: str,
        password: str | None,
        *,
        name: str = "",
        image: str | None = None,
        roles: Sequence[str] = (),
        email_verified: bool = False,
    ) -> UserRecord:
        """Create a user (password None: an account-only user). Typed errors for bad input."""
        email = normalise_email(email)
        name = name.strip()
        if len(name) > MAX_NAME or not _printable(name):
            raise InvalidUserInputError(f"name must be at most {MAX_NAME} printable characters")
        if image is not None and (len(image) > MAX_IMAGE or not _printable(image)):
            raise InvalidUserInputError(f"image must be at most {MAX_IMAGE} printable characters")
        if image is not None:
            # Pages put it in <img src>: never javascript:, data: or a relative path.
            parsed = parse_absolute(image)
            if parsed is None:
                raise InvalidUserInputError("image must be an absolute http(s) URL")
            image = parsed.href
        if any(not r or len(r) > MAX_ROLE or not _printable(r) for r in roles):
            raise InvalidUserInputError(f"roles must be 1-{MAX_ROLE} characters each")
        password_hash = None
        if password is not None:
            secret = password

            def checked_hash() -> str:
                # zxcvbn is CPU work too: in the same bounded pool.
                self.policy.check(secret, email=email, name=name)
                return self.hashing.hasher.hash(secret)

            password_hash = await self.hashing.run(checked_hash)
        now = self.clock.now()
        row = {
            "id": str(uuid7()),
            "name": name,
            "email": email,
            "email_verified": email_verified,
            "image": image,
            "roles": list(dict.fromkeys(roles)),
            "password_hash": password_hash,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(users), row)
        except IntegrityError:
            raise UserAlreadyExistsError("user already exists, use another email") from None
        return _user_from_mapping(row)

    async def authenticate(self, email: str, password: str) -> UserRecord:
        """The user with this email and password, or InvalidEmailOrPasswordError
        (its ``user_id`` says whose password was wrong, None for an unknown
        email). ServerBusyError when password hashing is saturated."""
        row = None
        if (
            len(email) <= MAX_EMAIL
            and len(password) <= self.password.max_length
            and _printable(email)
        ):
            row = await self._row_by_email(email.strip().lower())
        stored = row._mapping["password_hash"] if row is not None else None
        user_id = row._mapping["id"] if row is not None else None
        if stored is None:
            # Same work as a real check, so timing does not tell whether the email exists.
            await self.hashing.verify(await self._dummy(), password)
            raise InvalidEmailOrPasswordError("invalid email or password", user_id)
        if not await self.hashing.verify(stored, password):
            raise InvalidEmailOrPasswordError("invalid email or password", user_id)
        assert row is not None
        if self.hashing.needs_rehash(stored):
            await self._rehash(row._mapping["id"], stored, password)
        return _user(row)

    async def _rehash(self, user_id: str, stored: str, password: str) -> None:
        """Hash again with the current parameters (they changed since this
        hash was made). Best effort: when hashing is busy the sign-in still
        succeeds, and the next one tries again. Compare-and-set, so a
        password changed meanwhile is never overwritten."""
        with contextlib.suppress(ServerBusyError):
            fresh = await self.hashing.hash(password)
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(users)
                    .where(users.c.id == user_id, users.c.password_hash == stored)
                    .values(password_hash=fresh)
                )

    async def set_roles(self, user_id: str, roles: Sequence[str]) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(users)
                .where(users.c.id == user_id)
                .values(roles=list(dict.fromkeys(roles)), updated_at=self.clock.now())
            )
            if result.rowcount == 0:
                raise UserNotFoundError(f"no user {user_id!r}")
            await self._notify_change(conn, [user_id])
        self.memo.invalidate([user_id])

    # ---------------------------------------------------------- accounts

    async def link_account(self, user_id: str, account: ProviderAccount) -> None:
        """Link (or update) a provider account; its tokens are encrypted first."""
        ids = (account.provider_id, account.account_id)
        if not 0 < len(ids[0]) <= 64 or not 0 < len(ids[1]) <= 255 or not all(map(_printable, ids)):
            raise InvalidUserInputError("provider id (1-64) and account id (1-255) are required")
        if await self.get_user(user_id) is None:
            raise UserNotFoundError(f"no user {user_id!r}")
        now = self.clock.now()
        values: dict[str, Any] = {
            "access_token": self.tokens.encrypt(account.access_token),
            "refresh_token": self.tokens.encrypt(account.refresh_token),
            "id_token": self.tokens.encrypt(account.id_token),
            "token_type": account.token_type,
            "scope": account.scope,
            "expires_at": account.expires_at,
            "updated_at": now,
        }
        key = (accounts.c.provider_id == account.provider_id) & (
            accounts.c.account_id == account.account_id
        )
        async with self.engine.begin() as conn:
            owner = await conn.scalar(select(accounts.c.user_id).where(key))
            if owner is not None and owner != user_id:
                raise InvalidUserInputError(
                    f"{account.provider_id} account {account.account_id!r} is linked to "
                    "another user"
                )
            if owner is None:
                await conn.execute(
                    insert(accounts),
                    {
                        **values,
                        "id": str(uuid7()),
                        "user_id": user_id,
                        "provider_id": account.provider_id,
                        "account_id": account.account_id,
                        "created_at": now,
                    },
                )
            else:
                await conn.execute(update(accounts).where(key).values(**values))

    # ----------------------------------------------------------- helpers

    async def _notify_change(self, conn: AsyncConnection, user_ids: Sequence[str]) -> None:
        """Tell other processes, inside the changing transaction (PostgreSQL
        delivers a NOTIFY exactly when, and only if, the transaction commits)."""
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_notify(:channel, :payload)"),
                {"channel": USERS_CHANNEL, "payload": ",".join(user_ids)},
            )

    async def _row_by_email(self, email: str) -> Row[Any] | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(users).where(users.c.email == email))).first()

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.hashing.hash("dummy-password-0")
        return self._dummy_hash

    def close(self) -> None:
        self.hashing.close()

    def _account(self, row: Row[Any]) -> ProviderAccount:
        m = row._mapping
        return ProviderAccount(
            provider_id=m["provider_id"],
            account_id=m["account_id"],
            access_token=self.tokens.decrypt(m["access_token"]),
            refresh_token=self.tokens.decrypt(m["refresh_token"]),
            id_token=self.tokens.decrypt(m["id_token"]),
            token_type=m["token_type"],
            scope=m["scope"],
            expires_at=m["expires_at"],
        )


def _like(pattern: str) -> str:
    """A LIKE pattern for a shell-style one (a bare word: contains it)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if "*" not in pattern and "?" not in pattern:
        return f"%{escaped}%"
    return escaped.replace("*", "%").replace("?", "_")


def _user(row: Row[Any]) -> UserRecord:
    return _user_from_mapping(dict(row._mapping))


def _user_from_mapping(m: dict[str, Any]) -> UserRecord:
    created: datetime = utc(m["created_at"])
    updated: datetime = utc(m["updated_at"])
    return UserRecord(
        id=m["id"],
        email=m["email"],
        name=m["name"],
        email_verified=bool(m["email_verified"]),
        image=m["image"],
        roles=tuple(m["roles"] or ()),
        created_at=created,
        updated_at=updated,
    )
