"""The event store: one append-only table, optimistic concurrency per stream,
a hash chain per stream. Appends run in parallel on PostgreSQL; followers
read in commit-safe order (ledger.horizon).

The store validates, serialises and hashes, and owns the conflict and retry
policy and the after-commit callbacks; a :class:`~ledger.recorder.Recorder`
(one per database, ``ledger.recorders``) stores and reads.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.chain import GENESIS, canonical_json, event_hash_from_json, timestamp
from session_ledger.ledger.clock import Clock, SystemClock, utc
from session_ledger.ledger.domain.errors import (
    ConcurrencyError,
    EventValidationError,
    InvalidAppendError,
)
from session_ledger.ledger.domain.events import (
    Event,
    EventMetadata,
    RecordedEvent,
    serialize,
)
from session_ledger.ledger.recorder import (
    ConnectionLostError,
    EventBatch,
    EventRow,
    Head,
    Positions,
    Recorder,
    to_recorded,
)
from session_ledger.ledger.recorders import recorder_for
from session_ledger.ledger.writes import PendingEvent, Projection

log = logging.getLogger(__name__)

MAX_STREAM_ID = 64
MAX_USER_ID = 128
_NO_HEAD = Head(0, GENESIS)


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events to add to one stream, expected to be at ``expected_version``
    (0: the stream must not exist yet)."""

    stream_id: str
    expected_version: int
    events: Sequence[Event]
    user_id: str | None = None


AfterCommit = Callable[[Sequence[RecordedEvent]], Awaitable[None]]


@dataclass
class EventStore:
    #: Where events go: a recorder, or an engine (its database's recorder).
    recorder: Recorder | AsyncEngine
    clock: Clock = field(default_factory=SystemClock)
    #: Written with the events, atomically (see ledger.writes).
    inline_projections: list[Projection] = field(default_factory=list)
    #: Called after every successful commit (cache projections, notifications).
    #: Their failures are theirs: the events are already durable.
    after_commit: list[AfterCommit] = field(default_factory=list)

    def __post_init__(self) -> None:
        recorder = self.recorder
        self._recorder: Recorder = (
            recorder_for(recorder) if isinstance(recorder, AsyncEngine) else recorder
        )
        self.recorder = self._recorder

    @property
    def engine(self) -> AsyncEngine:
        """The engine of a database recorder (replay, workers and tools that
        run their own SQL)."""
        engine = getattr(self._recorder, "engine", None)
        if not isinstance(engine, AsyncEngine):
            raise TypeError(f"{type(self._recorder).__name__} has no database engine")
        return engine

    # ------------------------------------------------------------------ writes

    async def append(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[Event],
        *,
        metadata: EventMetadata | None = None,
        user_id: str | None = None,
    ) -> list[RecordedEvent]:
        """Append ``events`` to one stream; see :meth:`append_batch`."""
        return await self.append_batch(
            [StreamAppend(stream_id, expected_version, events, user_id)], metadata=metadata
        )

    async def append_batch(
        self, appends: Sequence[StreamAppend], *, metadata: EventMetadata | None = None
    ) -> list[RecordedEvent]:
        """Append to one or more streams atomically: all events land, or none.

        Raises ConcurrencyError when any stream is not at its expected version.
        """
        _check_appends(appends)
        meta = (metadata or EventMetadata()).model_dump(mode="json")
        prepared = [_prepare(a) for a in appends]  # validated before any I/O
        # Existing streams chain onto their head, read first; the recorder's
        # insert re-checks it atomically, so a head that moves meanwhile is
        # a conflict.
        prev_hashes = await self._prev_hashes(appends)
        rows = _Rows.build(prepared, prev_hashes, meta, utc(self.clock.now()))
        recorded = await self._insert(appends, rows)
        for callback in self.after_commit:
            try:
                await callback(recorded)
            except Exception:
                # The events are durable: a failing follower (a cache, a
                # notification) must neither fail the command that appended
                # them (its caller would retry a write that happened) nor
                # keep the other followers from running.
                log.exception("after-commit callback %r failed", callback)
        return recorded

    async def _insert(self, appends: Sequence[StreamAppend], rows: _Rows) -> list[RecordedEvent]:
        """The rows and the projections' writes, tried twice when the first
        try lost its connection and may be repeated."""
        # The projections fold pending events; without any, none are built.
        batch = rows.batch(pending=bool(self.inline_projections))
        for attempt in (1, 2):
            try:
                positions = await self._recorder.insert(batch, self.inline_projections)
            except IntegrityError as exc:
                # The unique (stream_id, stream_version) rejected the insert.
                # Any other constraint (an inline projection's, say) is not a
                # stream conflict: let it through.
                error = await self._conflict(appends)
                if error.actual_version is None:
                    raise
                if attempt == 2 and (own := await self._own_write(rows)) is not None:
                    return rows.recorded(own)  # the first try did commit
                raise error from exc
            except ConnectionLostError as lost:
                # A pooled connection that died (server restart, failover)
                # fails its first statement; the stale pool is then dropped.
                # The recorder says whether a second try is safe; _own_write
                # tells "the first try committed" from a real conflict.
                if attempt == 2 or not lost.repeatable:
                    raise lost.error from None
                continue
            if positions is None:
                raise await self._conflict(appends)
            return rows.recorded(positions)
        raise AssertionError("unreachable")

    async def _prev_hashes(self, appends: Sequence[StreamAppend]) -> dict[str, str]:
        """The hash each stream's new events chain onto; ConcurrencyError when
        a stream is not at its expected version (new streams are checked by
        the insert itself)."""
        existing = [a.stream_id for a in appends if a.expected_version > 0]
        heads = await self._recorder.heads(existing) if existing else {}
        hashes: dict[str, str] = {}
        for a in appends:
            if a.expected_version == 0:
                hashes[a.stream_id] = GENESIS
                continue
            version, head_hash = heads.get(a.stream_id, _NO_HEAD)
            if version != a.expected_version:
                raise ConcurrencyError(a.stream_id, a.expected_version, version)
            hashes[a.stream_id] = head_hash
        return hashes

    async def _conflict(self, appends: Sequence[StreamAppend]) -> ConcurrencyError:
        """Name the first stream that is not where its append expected it."""
        heads = await self._recorder.heads([a.stream_id for a in appends], hot=False)
        for a in appends:
            actual = heads.get(a.stream_id, _NO_HEAD).version
            if actual != a.expected_version:
                return ConcurrencyError(a.stream_id, a.expected_version, actual)
        # Everything matches now: the competing transaction rolled back meanwhile.
        first = appends[0]
        return ConcurrencyError(first.stream_id, first.expected_version, None)

    async def _own_write(self, rows: _Rows) -> Positions | None:
        """The positions of ``rows`` if exactly these rows (same hashes) are
        stored: an append whose first try committed although its connection
        died before the answer came back."""
        keys = rows.keys()
        stored = await self._recorder.stored(keys)
        hashes = rows.hashes()
        if any(key not in stored or stored[key].hash != hashes[key] for key in keys):
            return None
        return {key: stored[key].position for key in keys}

    # ------------------------------------------------------------------- reads

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[RecordedEvent]:
        return [to_recorded(r) for r in await self._recorder.read_stream(stream_id, from_version)]

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Events with position > ``after_position`` in position order, as
        committed so far: for display and for paging through a ledger no one
        writes to. On PostgreSQL a later position may commit first, so a
        reader *following* the ledger uses ledger.horizon instead."""
        return [to_recorded(r) for r in await self._recorder.read_all(after_position, limit)]

    async def iter_all(
        self, after_position: int = 0, batch_size: int = 1000, up_to: int | None = None
    ) -> AsyncIterator[list[RecordedEvent]]:
        """Batches of events in position order, in bounded memory (see read_all)."""
        position = after_position
        while True:
            batch = await self.read_all(position, batch_size)
            if up_to is not None:
                batch = [e for e in batch if e.position <= up_to]
            if not batch:
                return
            yield batch
            position = batch[-1].position
            if len(batch) < batch_size:
                return

    async def head(self) -> int:
        """The highest position in the ledger (0 when empty)."""
        return await self._recorder.max_position()

    async def stream_version(self, stream_id: str) -> int:
        heads = await self._recorder.heads([stream_id])
        return heads.get(stream_id, _NO_HEAD).version

    async def count_by_type(self) -> dict[str, int]:
        return await self._recorder.count_by_type()


# ----------------------------------------------------------------- helpers


def _check_appends(appends: Sequence[StreamAppend]) -> None:
    if not appends:
        raise InvalidAppendError("nothing to append")
    seen: set[str] = set()
    for a in appends:
        if not a.stream_id or len(a.stream_id) > MAX_STREAM_ID:
            raise InvalidAppendError(f"stream id must be 1-{MAX_STREAM_ID} characters")
        if a.user_id is not None and not 0 < len(a.user_id) <= MAX_USER_ID:
            raise InvalidAppendError(f"user id must be 1-{MAX_USER_ID} characters")
        if a.stream_id in seen:
            raise InvalidAppendError(f"stream {a.stream_id!r} appears twice in one append")
        seen.add(a.stream_id)
        if a.expected_version < 0:
            raise InvalidAppendError(f"stream {a.stream_id!r}: expected version must be >= 0")
        if not a.events:
            raise InvalidAppendError(f"stream {a.stream_id!r}: no events to append")


_NO_HEAD = Head(0, GENESIS)


@dataclass(frozen=True, slots=True)
class _Prepared:
    append: StreamAppend
    #: (validated event, type, schema version, canonical data JSON) per event.
    events: list[tuple[Event, str, int, str]]


def _prepare(a: StreamAppend) -> _Prepared:
    """Serialise each event once, before anything is written: the canonical
    JSON is both what is stored and what is hashed."""
    events = []
    for event in a.events:
        try:
            event_type, schema_version, data = serialize(event)
            data_json = canonical_json(data)
        except (TypeError, ValueError) as exc:  # PydanticSerializationError is a ValueError
            # A nested value changed in place after validation (frozen
            # models still hold mutable dicts).
            raise EventValidationError(f"{event.type}: not JSON: {exc}") from None
        events.append((event, event_type, schema_version, data_json))
    return _Prepared(a, events)


@dataclass
class _Rows:
    """The rows of one append, hashed and ready for either database."""

    prepared: Sequence[_Prepared]
    metadata: EventMetadata
    meta_json: str
    recorded_at: datetime
    rows: list[EventRow]

    @classmethod
    def build(
        cls,
        prepared: Sequence[_Prepared],
        prev_hashes: dict[str, str],
        meta: dict[str, Any],
        recorded_at: datetime,
    ) -> _Rows:
        meta_json = canonical_json(meta)
        stamp = timestamp(recorded_at)
        rows = []
        for p in prepared:
            a = p.append
            version, prev_hash = a.expected_version, prev_hashes[a.stream_id]
            for _, event_type, schema_version, data_json in p.events:
                version += 1
                digest = event_hash_from_json(
                    prev_hash,
                    stream_id=a.stream_id,
                    stream_version=version,
                    event_type=event_type,
                    schema_version=schema_version,
                    data_json=data_json,
                    meta_json=meta_json,
                    user_id=a.user_id,
                    recorded_at=stamp,
                )
                rows.append(
                    EventRow(
                        a.stream_id,
                        version,
                        event_type,
                        schema_version,
                        data_json,
                        a.user_id,
                        prev_hash,
                        digest,
                    )
                )
                prev_hash = digest
        metadata = EventMetadata.model_validate(meta)  # exactly what is stored
        return cls(prepared, metadata, meta_json, recorded_at, rows)

    def keys(self) -> list[tuple[str, int]]:
        return [(r.stream_id, r.stream_version) for r in self.rows]

    def hashes(self) -> dict[tuple[str, int], str]:
        return {(r.stream_id, r.stream_version): r.hash for r in self.rows}

    def batch(self, *, pending: bool) -> EventBatch:
        events = self.pending() if pending else []
        return EventBatch(self.rows, self.meta_json, self.recorded_at, events)

    def pending(self) -> list[PendingEvent]:
        metadata = self.metadata
        events = [event for p in self.prepared for event, *_ in p.events]
        return [
            PendingEvent(
                r.stream_id, r.stream_version, event, metadata, r.user_id, self.recorded_at
            )
            for r, event in zip(self.rows, events, strict=True)
        ]

    def recorded(self, positions: Positions) -> list[RecordedEvent]:
        metadata = self.metadata
        events = [event for p in self.prepared for event, *_ in p.events]
        recorded = [
            RecordedEvent(
                position=positions[(r.stream_id, r.stream_version)],
                stream_id=r.stream_id,
                stream_version=r.stream_version,
                event=event,
                metadata=metadata,
                user_id=r.user_id,
                recorded_at=self.recorded_at,
                prev_hash=r.prev_hash,
                hash=r.hash,
            )
            for r, event in zip(self.rows, events, strict=True)
        ]
        recorded.sort(key=lambda r: r.position)
        return recorded
