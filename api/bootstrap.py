"""Wiring: the one place where real adapters are built and injected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from api.revocations import PgRevocationNotifier
from api.users.crypto import TokenBox
from api.users.store import SqlUserStore
from ledger.clock import Clock, SystemClock
from ledger.config import Settings
from ledger.db import make_engine
from ledger.ports import SessionReadModel, UserStore
from ledger.service import SessionCallback, SessionLedger
from ledger.store import EventStore
from migrations import upgrade
from projections.audit_ips import AuditIpProjection
from projections.cached_read_model import CachedSessionReadModel
from projections.redis_cache import RedisCacheProjection, RedisSessionCache
from projections.runner import NotifyOnAppend, ProjectionRunner
from projections.session_table import SessionTableProjection, SqlSessionReadModel


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    store: EventStore
    ledger: SessionLedger
    clock: Clock = field(default_factory=SystemClock)
    #: Set when settings.redis.url is: the cache client and its catch-up runner.
    redis: Any = None
    runner: ProjectionRunner | None = None

    async def close(self) -> None:
        if isinstance(self.ledger.users, SqlUserStore):
            self.ledger.users.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


async def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    users: UserStore | None = None,
    session_callback: SessionCallback | None = None,
    migrate: bool = False,
    engine: AsyncEngine | None = None,
    builtin_users: bool = False,
) -> Container:
    clock = clock or SystemClock()
    engine = engine or make_engine(settings.database_url)
    if migrate:
        await upgrade(engine)
    if users is None and builtin_users:
        key = settings.encryption_key.get_secret_value() if settings.encryption_key else None
        users = SqlUserStore(engine, TokenBox(key), clock=clock, password=settings.password)
    store = EventStore(
        engine, clock=clock, inline_projections=[SessionTableProjection(), AuditIpProjection()]
    )
    if engine.dialect.name == "postgresql":
        # NOTIFY in the append transaction: other processes' revocation feeds.
        store.inline_projections.append(PgRevocationNotifier())
    read_model: SessionReadModel = SqlSessionReadModel(engine)
    redis_client, runner = None, None
    if settings.redis.url:
        redis_client, runner, read_model = _redis_cache(settings, engine, store, clock)
    ledger = SessionLedger(
        store=store,
        read_model=read_model,
        policy=settings.session,
        clock=clock,
        users=users,
        session_callback=session_callback,
        store_tokens=settings.store_tokens,
    )
    return Container(
        settings=settings,
        engine=engine,
        store=store,
        ledger=ledger,
        clock=clock,
        redis=redis_client,
        runner=runner,
    )


def _redis_cache(
    settings: Settings, engine: AsyncEngine, store: EventStore, clock: Clock
) -> tuple[Any, ProjectionRunner, CachedSessionReadModel]:
    """The Redis cache projection: written after each commit, caught up by
    the runner, read first by the service (SQL on a miss or an outage)."""
    assert settings.redis.url is not None
    # redis-py uses the hiredis parser whenever hiredis is installed.
    client = aioredis.from_url(
        settings.redis.url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
    )
    cache = RedisSessionCache(client, settings.redis, settings.cookie_cache, clock=clock)
    projection = RedisCacheProjection(cache, store)
    store.after_commit.append(projection.after_commit)
    listen_dsn = None
    if engine.dialect.name == "postgresql":
        store.inline_projections.append(NotifyOnAppend())
        listen_dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    runner = ProjectionRunner(
        store,
        projection,
        poll_interval=settings.worker.projector_poll_interval,
        listen_dsn=listen_dsn,
    )
    read_model = CachedSessionReadModel(cache, SqlSessionReadModel(engine), projection)
    return client, runner, read_model
