"""The ``eventsourcing`` library (9.x) on PostgreSQL (psycopg 3) and SQLite
(its own ``sqlite3`` recorder): an ``Application`` saving an ``Aggregate``.

The operations mirror an event-sourced session: create an aggregate with
the session payload and save it (one event, a new stream); append an event
(get the aggregate, trigger an event, save); reconstruct it (get).
Library defaults throughout (no snapshots, no aggregate cache).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.peers.harness import Contender
from bench.peers.workload import FIELDS, IP, USER_AGENT, Backends, user_id


class BenchSession(Aggregate):
    @event("Created")
    def __init__(self, user_id: str, ip: str, user_agent: str, fields: dict[str, Any]) -> None:
        self.user_id = user_id
        self.ip = ip
        self.user_agent = user_agent
        self.fields = fields

    @event("Updated")
    def update(self, fields: dict[str, Any]) -> None:
        self.fields.update(fields)


class BenchSessions(Application[UUID]):
    pass


def environment(backends: Backends, backend: str) -> dict[str, str]:
    if backend == "sqlite":
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": backends.sqlite_path}
    url = backends.pg
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(url.database),
        "POSTGRES_HOST": str(url.host),
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": str(url.username),
        "POSTGRES_PASSWORD": url.password or "",
    }


class Eventsourcing:
    def __init__(self, backends: Backends, backend: str) -> None:
        self.app = BenchSessions(env=environment(backends, backend))
        self.ids: list[UUID] = []

    def create(self, i: int) -> None:
        aggregate = BenchSession(user_id(i), IP, USER_AGENT, dict(FIELDS))
        self.app.save(aggregate)
        self.ids.append(aggregate.id)

    def append(self, i: int) -> None:
        aggregate: BenchSession = self.app.repository.get(self.ids[i % len(self.ids)])
        aggregate.update({"seen": i})
        self.app.save(aggregate)

    def reconstruct(self, i: int) -> None:
        aggregate: BenchSession = self.app.repository.get(self.ids[i % len(self.ids)])
        assert aggregate.user_id

    def close(self) -> None:
        self.app.close()

    def contender(self) -> Contender:
        return Contender(
            "eventsourcing",
            {
                "new aggregate + save": self.create,
                "get + trigger + save": self.append,
                "repository.get": self.reconstruct,
            },
            is_async=False,
        )


def version() -> str:
    from importlib.metadata import version as dist_version

    return f"eventsourcing {dist_version('eventsourcing')}, psycopg {dist_version('psycopg')}"
