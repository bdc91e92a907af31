"""Wiring: the one place where real adapters are built and injected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api.revocations import RevocationFeed
from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.clock import Clock, SystemClock
from session_ledger.ledger.config import Settings
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.ports import SessionReadModel, UserStore
from session_ledger.ledger.service import SessionCallback, SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.ledger.writes import Projection
from session_ledger.migrations import upgrade
from session_ledger.projections.audit_ips import AuditIpProjection
from session_ledger.projections.cached_read_model import CachedSessionReadModel
from session_ledger.projections.freshness import CacheFreshness
from session_ledger.projections.redis_cache import RedisCacheProjection, RedisSessionCache
from session_ledger.projections.revocation_notify import RevocationNotifier
from session_ledger.projections.runner import NotifyAfterCommit, ProjectionRunner
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    store: EventStore
    ledger: SessionLedger
    #: This process's view of which sessions ended lately (the cookie
    #: cache's strictness); told of this process's appends by the store,
    #: of the others' by its feed, which the app starts and stops.
    revocations: RevocationFeed
    clock: Clock = field(default_factory=SystemClock)
    #: Set when settings.redis.url is: the cache client, its catch-up runner,
    #: and what this process knows of the cache's freshness (a change feed
    #: must make it live, see api.revocations; until then reads go to SQL).
    redis: Any = None
    runner: ProjectionRunner | None = None
    freshness: CacheFreshness | None = None

    async def close(self) -> None:
        for hook in self.store.after_commit:
            if isinstance(hook, NotifyAfterCommit):
                await hook.flush()  # a wake-up on its way, before the pool goes
        if self.runner is not None:
            self.runner.cache.close()
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
    store = _event_store(engine, clock)
    read_model: SessionReadModel = SqlSessionReadModel(store.recorder)
    redis_client, runner, freshness = None, None, None
    if settings.redis.url:
        redis_client, runner, cached = _redis_cache(settings, engine, store, clock, users)
        read_model, freshness = cached, cached.freshness
    revocations = _revocation_feed(settings, engine, clock, store, users, freshness)
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
        revocations=revocations,
        clock=clock,
        redis=redis_client,
        runner=runner,
        freshness=freshness,
    )


def _event_store(engine: AsyncEngine, clock: Clock) -> EventStore:
    """The event store with its inline projections (written with the
    append, atomically) and, on PostgreSQL, its wake-up after commit."""
    # NOTIFY in the append, for ends only (rare): other processes'
    # revocation feeds (PostgreSQL's recorder sends it; the other recorders
    # have no NOTIFY). After commit, a wake-up for the runner and every
    # process's change feed, which read the ledger themselves
    # (projections.runner.NotifyAfterCommit). Sent by every writer, with
    # Redis configured or not: the others' feeds would otherwise hear of its
    # changes only when they poll.
    projections: list[Projection] = [SessionTableProjection(), AuditIpProjection()]
    projections.append(RevocationNotifier())
    store = EventStore(engine, clock=clock, inline_projections=projections)
    if engine.dialect.name == "postgresql":
        store.after_commit.append(NotifyAfterCommit(engine))
    return store


def _revocation_feed(
    settings: Settings,
    engine: AsyncEngine,
    clock: Clock,
    store: EventStore,
    users: UserStore | None,
    freshness: CacheFreshness | None,
) -> RevocationFeed:
    """The process's revocation feed (started by the app), keeping the user
    memo strict and telling the Redis freshness of every append."""
    feed = RevocationFeed(
        engine,
        clock,
        settings.cookie_cache.max_age,
        database_url=settings.database_url,
        users=users.memo if isinstance(users, SqlUserStore) else None,
        freshness=freshness,
    )
    # This process's own ends reach its feed before the append returns, so
    # before anyone is told of them (the other processes' by its LISTEN/poll).
    store.after_commit.append(feed.on_commit)
    return feed


def _redis_cache(
    settings: Settings,
    engine: AsyncEngine,
    store: EventStore,
    clock: Clock,
    users: UserStore | None,
) -> tuple[Any, ProjectionRunner, CachedSessionReadModel]:
    """The Redis cache projection: written after each commit, caught up by
    the runner, read first by the service when it can vouch for what it
    reads (SQL on a miss, an outage or any doubt)."""
    assert settings.redis.url is not None
    # redis-py uses the hiredis parser whenever hiredis is installed.
    client = aioredis.from_url(
        settings.redis.url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30
    )
    cache = RedisSessionCache(client, settings.redis, settings.cookie_cache, clock=clock)
    cache.use_wire()
    projection = RedisCacheProjection(cache, store)
    freshness = CacheFreshness()
    # This process's own appends are known before the cache write is tried
    # (and before anything is acknowledged): order matters here.
    store.after_commit.append(freshness.after_commit)
    store.after_commit.append(projection.after_commit)
    listen_dsn = None
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        # NotifyAfterCommit (see _event_store) wakes the runner.
        listen_dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    runner = ProjectionRunner(
        store,
        projection,
        poll_interval=settings.worker.projector_poll_interval,
        listen_dsn=listen_dsn,
    )
    # The user's record beside its sessions: only where a feed keeps the
    # user memo strict (PostgreSQL), which decides whether to believe it.
    memo = users.memo if postgres and isinstance(users, SqlUserStore) else None
    read_model = CachedSessionReadModel(cache, SqlSessionReadModel(engine), freshness, memo)
    if memo is not None and isinstance(users, SqlUserStore):
        users.on_read.append(read_model.user_loaded)
    return client, runner, read_model
