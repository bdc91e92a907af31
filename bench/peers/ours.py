"""session-ledger in process, as README's "Using it from Python" wires it:
``api.bootstrap.build`` on a migrated database, with the Redis read path
when the configuration has Redis, and the built-in user store."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.peers.harness import Contender
from bench.peers.workload import FIELDS, IP, USER_AGENT, Backends, redis_url
from session_ledger.api.bootstrap import Container, build
from session_ledger.ledger import horizon
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.domain.events import Fields
from session_ledger.ledger.domain.state import fold
from session_ledger.ledger.service import RequestContext

CTX = RequestContext(ip=IP, user_agent=USER_AGENT)
OUR_FIELDS: Fields = dict(FIELDS)
#: Cheap argon2id for the one bench user (hashing is not what is measured).
BENCH_PASSWORD = "bench password 1234"  # noqa: S105


@dataclass
class Ours:
    container: Container
    #: Whose sessions the ops create: a real user of the built-in store, so
    #: that payloads (session + user) resolve.
    user: str
    tokens: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    @classmethod
    async def start(cls, backends: Backends, *, with_redis: bool) -> Ours:
        values: dict[str, object] = {"environment": "test", "database_url": backends.database_url}
        if with_redis:
            values["redis"] = {"url": redis_url(), "prefix": backends.redis_prefix}
        container = await build(load_settings(**values), migrate=True, builtin_users=True)
        if container.freshness is not None and container.runner is not None:
            # One process on its own database: its own appends (heard after
            # commit) are all there is to hear, so that is its change feed,
            # and the runner's first pass gives the checkpoint that vouches
            # for the rest (projections.freshness): the Redis path is used.
            await container.runner.run_once()
            container.freshness.connected(await horizon.head(container.engine))
        users = container.ledger.users
        assert users is not None
        created = await users.create_user("bench@example.com", BENCH_PASSWORD)  # type: ignore[attr-defined]
        return cls(container, created.id)

    async def close(self) -> None:
        await self.container.close()

    # ------------------------------------------------------------------ ops

    async def create(self, i: int) -> None:
        view, token = await self.container.ledger.create_session(
            self.user, CTX, remember_me=True, fields=OUR_FIELDS
        )
        self.tokens.append(token)
        self.ids.append(view.id)

    async def get(self, i: int) -> None:
        validated = await self.container.ledger.get_session(self.tokens[i % len(self.tokens)], CTX)
        assert validated is not None

    async def get_with_user(self, i: int) -> None:
        """get-session's answer: the session and its user."""
        found = await self.container.ledger.get_session_payload(
            self.tokens[i % len(self.tokens)], CTX
        )
        assert found is not None

    async def append(self, i: int) -> None:
        """One more event on an existing session: look it up, decide, append."""
        await self.container.ledger.update_session(
            self.tokens[i % len(self.tokens)], {"seen": i}, CTX
        )

    async def reconstruct(self, i: int) -> None:
        """The session's state from its events: read the stream and fold it."""
        recorded = await self.container.store.read_stream(self.ids[i % len(self.ids)])
        state = fold(r.event for r in recorded)
        assert state is not None

    def contender(self) -> Contender:
        return Contender(
            "session-ledger",
            {
                "create_session": self.create,
                "get_session": self.get,
                "get_session_payload": self.get_with_user,
                "update_session": self.append,
                "read_stream + fold": self.reconstruct,
            },
            is_async=True,
        )
