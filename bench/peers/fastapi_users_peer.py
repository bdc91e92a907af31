"""fastapi-users' session strategies: ``DatabaseStrategy`` on SQLAlchemy
(asyncpg, PostgreSQL; fastapi-users-db-sqlalchemy's access-token table) and
``RedisStrategy``, each with its SQLAlchemy user database.

Used as its authentication backend uses them in a request: a new
``AsyncSession`` per call (the ``get_async_session`` dependency),
``write_token(user)`` at sign-in and ``read_token(token, user_manager)``
on a request, which returns the user (a second lookup, by id).
"""

from __future__ import annotations

import uuid
from typing import Any

import redis.asyncio as aioredis
from fastapi_users import BaseUserManager, UUIDIDMixin
from fastapi_users.authentication.strategy import DatabaseStrategy, RedisStrategy
from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID, SQLAlchemyUserDatabase
from fastapi_users_db_sqlalchemy.access_token import (
    SQLAlchemyAccessTokenDatabase,
    SQLAlchemyBaseAccessTokenTableUUID,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from bench.peers.harness import Contender
from bench.peers.workload import Backends, redis_url

LIFETIME = 30 * 86400
SECRET = "bench-fastapi-users-" + "0123456789abcdef" * 2


class Base(DeclarativeBase):
    pass


class User(SQLAlchemyBaseUserTableUUID, Base):
    pass


class AccessToken(SQLAlchemyBaseAccessTokenTableUUID, Base):
    pass


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    reset_password_token_secret = SECRET
    verification_token_secret = SECRET


class FastapiUsers:
    def __init__(self, engine: AsyncEngine, strategy: str, redis: Any) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.strategy = strategy
        self.redis = redis
        self.prefix = ""
        self.user: User | None = None
        self.tokens: list[str] = []

    @classmethod
    async def start(cls, backends: Backends, strategy: str) -> FastapiUsers:
        engine = create_async_engine(backends.database_url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        client = None
        if strategy == "redis":
            client = aioredis.from_url(redis_url(), decode_responses=True)
        peer = cls(engine, strategy, client)
        peer.prefix = f"{backends.redis_prefix}fastapi_users_token:"
        async with peer.sessions() as session:
            peer.user = await SQLAlchemyUserDatabase(session, User).create(
                {"email": "bench@example.com", "hashed_password": "x" * 60}
            )
        return peer

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()

    def _strategy(
        self, session: Any
    ) -> DatabaseStrategy[User, uuid.UUID, AccessToken] | RedisStrategy[User, uuid.UUID]:
        if self.strategy == "redis":
            return RedisStrategy(self.redis, LIFETIME, key_prefix=self.prefix)
        return DatabaseStrategy(SQLAlchemyAccessTokenDatabase(session, AccessToken), LIFETIME)

    async def write(self, i: int) -> None:
        assert self.user is not None
        async with self.sessions() as session:
            self.tokens.append(await self._strategy(session).write_token(self.user))

    async def read(self, i: int) -> None:
        async with self.sessions() as session:
            manager = UserManager(SQLAlchemyUserDatabase(session, User))
            user = await self._strategy(session).read_token(
                self.tokens[i % len(self.tokens)], manager
            )
            assert user is not None

    def contender(self) -> Contender:
        name = "RedisStrategy" if self.strategy == "redis" else "DatabaseStrategy"
        return Contender(
            f"fastapi-users {name}",
            {"write_token": self.write, "read_token": self.read},
            is_async=True,
        )


def version() -> str:
    from importlib.metadata import version as dist_version

    return (
        f"fastapi-users {dist_version('fastapi-users')}, "
        f"fastapi-users-db-sqlalchemy {dist_version('fastapi-users-db-sqlalchemy')}"
    )
