"""The in-process comparisons: each peer in a configuration, and
session-ledger in the matching one (same servers, databases of their own)."""

from __future__ import annotations

from dataclasses import dataclass

#: Targets of issue 19: ours / peer, in calls per second.
IN_PROCESS_TARGET = 1.5
HTTP_TARGET = 3.0

PG = "PostgreSQL"
PG_REDIS = "PostgreSQL + Redis"
SQLITE = "SQLite"


@dataclass(frozen=True)
class Step:
    """One operation compared: its name in the report, our op, theirs."""

    name: str
    ours: str
    theirs: str


@dataclass(frozen=True)
class Pair:
    key: str  # command-line name, e.g. "django-db-postgres"
    module: str  # which peer module runs it (and which packages it needs)
    peer: str  # the peer's configuration, e.g. "Django cached_db"
    config: str  # where both keep their data
    backend: str  # "postgres" or "sqlite": the SQL database of both
    redis: bool  # ours with the Redis read path
    variant: str  # the peer module's own switch (engine, strategy)
    steps: tuple[Step, ...]


DJANGO_STEPS = (
    Step("create", "create_session", "SessionStore.save (new)"),
    Step("get", "get_session", "SessionStore.load"),
)
FASTAPI_USERS_STEPS = (
    Step("create", "create_session", "write_token"),
    Step("get (+ user)", "get_session_payload", "read_token"),
)
EVENTSOURCING_STEPS = (
    Step("create", "create_session", "new aggregate + save"),
    Step("append", "update_session", "get + trigger + save"),
    Step("reconstruct", "read_stream + fold", "repository.get"),
)

PAIRS = (
    Pair("django-db-postgres", "django", "Django db", PG, "postgres", False, "db", DJANGO_STEPS),
    Pair(
        "django-cached_db", "django", "Django cached_db", PG_REDIS, "postgres", True,
        "cached_db", DJANGO_STEPS,
    ),
    Pair(
        "django-cache", "django", "Django cache (Redis only)", PG_REDIS, "postgres", True,
        "cache", DJANGO_STEPS,
    ),
    Pair("django-db-sqlite", "django", "Django db", SQLITE, "sqlite", False, "db", DJANGO_STEPS),
    Pair(
        "fastapi-users-database", "fastapi-users", "fastapi-users DatabaseStrategy", PG,
        "postgres", False, "database", FASTAPI_USERS_STEPS,
    ),
    Pair(
        "fastapi-users-redis", "fastapi-users", "fastapi-users RedisStrategy", PG_REDIS,
        "postgres", True, "redis", FASTAPI_USERS_STEPS,
    ),
    Pair(
        "eventsourcing-postgres", "eventsourcing", "eventsourcing", PG, "postgres", False,
        "postgres", EVENTSOURCING_STEPS,
    ),
    Pair(
        "eventsourcing-sqlite", "eventsourcing", "eventsourcing", SQLITE, "sqlite", False,
        "sqlite", EVENTSOURCING_STEPS,
    ),
)  # fmt: skip

BY_KEY = {pair.key: pair for pair in PAIRS}
