"""One contract for every recorder: the abstract case below, run on
PostgreSQL, SQLite and in memory (a subclass each, giving the recorder).

Each test goes through the EventStore and the session read model, the way
the service uses a recorder; what only one database does (its statements,
its locks) is tested beside its recorder in tests/integration."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api.users.schema import users
from session_ledger.ledger.chain import GENESIS
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.errors import ConcurrencyError
from session_ledger.ledger.domain.events import RevocationReason, SessionRevoked, SessionRotated
from session_ledger.ledger.recorder import Lookup, Recorder
from session_ledger.ledger.recorders import recorder_for
from session_ledger.ledger.recorders.memory import MemoryRecorder
from session_ledger.ledger.store import EventStore, StreamAppend
from session_ledger.ledger.writes import FromEvents, Insert, Projected, Projection, Rows, Write
from session_ledger.projections.audit_ips import AuditIpProjection
from session_ledger.projections.schema import retired_tokens
from session_ledger.projections.session_table import SessionTableProjection, SessionTableReadModel
from tests.support.events import T0, created, token_hash, touched


class DuplicateRow(FromEvents):
    """Writes the same retired-token row on every append: the second fails."""

    def writes(self, events: Sequence[Projected], prior: Rows, *, locked: bool) -> list[Write]:
        row = {"token_hash": "dup", "session_id": events[0].stream_id}
        return [Insert(retired_tokens, [row])]


class RecorderContract:
    """What every recorder must do. Subclasses provide ``recorder``."""

    @pytest.fixture
    def recorder(self) -> Recorder:
        raise NotImplementedError

    @pytest.fixture
    def store(self, recorder: Recorder, clock: ManualClock) -> EventStore:
        projections: list[Projection] = [SessionTableProjection(), AuditIpProjection()]
        return EventStore(recorder, clock=clock, inline_projections=projections)

    @pytest.fixture
    def sessions(self, recorder: Recorder) -> SessionTableReadModel:
        return SessionTableReadModel(recorder)

    async def test_appends_and_reads_back_in_order(self, store: EventStore) -> None:
        first = await store.append("a", 0, [created("a"), touched()])
        second = await store.append("b", 0, [created("b")])
        third = await store.append("a", 2, [touched(T0 + timedelta(minutes=1))])
        positions = [r.position for r in first + second + third]
        assert positions == sorted(positions)
        assert len(set(positions)) == 4
        assert [r.event for r in await store.read_stream("a")] == [r.event for r in first + third]
        assert [r.stream_version for r in await store.read_stream("a", 2)] == [2, 3]
        assert await store.read_all() == first + second + third
        assert await store.read_all(first[-1].position, limit=1) == second
        assert await store.head() == third[-1].position
        assert await store.stream_version("a") == 3
        assert await store.stream_version("nobody") == 0
        assert await store.count_by_type() == {"SessionCreated": 2, "SessionTouched": 2}

    async def test_each_stream_is_a_hash_chain(self, store: EventStore) -> None:
        await store.append("a", 0, [created("a"), touched()])
        await store.append("a", 2, [touched()])
        events = await store.read_stream("a")
        assert events[0].prev_hash == GENESIS
        assert [e.prev_hash for e in events[1:]] == [e.hash for e in events[:-1]]

    async def test_a_stale_version_is_a_conflict_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        await store.append("a", 0, [created("a")])
        with pytest.raises(ConcurrencyError) as raised:
            await store.append("a", 0, [created("a")])
        assert (raised.value.expected_version, raised.value.actual_version) == (0, 1)
        with pytest.raises(ConcurrencyError):
            await store.append("a", 5, [touched()])
        assert await store.head() == 1

    async def test_a_batch_lands_whole_or_not_at_all(self, store: EventStore) -> None:
        await store.append("a", 0, [created("a")])
        with pytest.raises(ConcurrencyError):
            await store.append_batch(
                [StreamAppend("b", 0, [created("b")]), StreamAppend("a", 0, [created("a")])]
            )
        assert await store.read_stream("b") == []
        landed = await store.append_batch(
            [StreamAppend("b", 0, [created("b")]), StreamAppend("a", 1, [touched()])]
        )
        assert [(r.stream_id, r.stream_version) for r in landed] == [("b", 1), ("a", 2)]

    async def test_projection_rows_land_with_the_events_and_read_back(
        self, store: EventStore, sessions: SessionTableReadModel, clock: ManualClock
    ) -> None:
        await store.append("a", 0, [created("a")], user_id="user-1")
        await store.append("b", 0, [created("b")], user_id="user-1")
        state = await sessions.by_token_hash(token_hash("a"))
        assert state is not None
        assert (state.session_id, state.version) == ("a", 1)
        rotated = SessionRotated(
            rotated_at=T0,
            token_hash=token_hash("a2"),
            previous_token_hash=token_hash("a"),
            grace_until=T0 + timedelta(seconds=30),
        )
        await store.append("a", 1, [rotated], user_id="user-1")
        now = await sessions.by_token_hash(token_hash("a2"))
        old = await sessions.by_token_hash(token_hash("a"))
        assert now is not None
        assert old is not None
        assert now == old
        assert now.version == 2
        assert await sessions.by_token_hash(token_hash("nobody")) is None
        assert {s.session_id for s in await sessions.by_ids(["a", "b", "c"])} == {"a", "b"}
        assert {s.session_id for s in await sessions.active_for_user("user-1", T0)} == {"a", "b"}
        revoked = SessionRevoked(revoked_at=T0, reason=RevocationReason.REVOKED, actor="t")
        await store.append("b", 1, [revoked], user_id="user-1")
        assert [s.session_id for s in await sessions.active_for_user("user-1", T0)] == ["a"]
        assert await sessions.active_for_user("user-1", T0 + timedelta(days=31)) == []

    async def test_a_projection_that_fails_leaves_nothing(
        self, recorder: Recorder, clock: ManualClock
    ) -> None:
        store = EventStore(recorder, clock=clock, inline_projections=[DuplicateRow()])
        await store.append("a", 0, [created("a")])
        with pytest.raises(IntegrityError):
            await store.append("b", 0, [created("b")])
        assert await store.read_stream("b") == []
        assert await store.head() == 1

    async def test_a_missing_row_reads_as_none(self, recorder: Recorder) -> None:
        assert await recorder.first(Lookup(users, "id"), "nobody") is None


class TestMemoryRecorder(RecorderContract):
    @pytest.fixture
    def recorder(self) -> Recorder:
        return MemoryRecorder()


class TestSqliteRecorder(RecorderContract):
    @pytest.fixture
    def recorder(self, sqlite_engine: AsyncEngine) -> Recorder:
        return recorder_for(sqlite_engine)


class TestPostgresRecorder(RecorderContract):
    @pytest.fixture
    def recorder(self, pg_engine: AsyncEngine) -> Recorder:
        return recorder_for(pg_engine)
