"""The seam between the event store and a database: the :class:`Recorder`
protocol and the named rows that cross it.

:class:`~ledger.store.EventStore` validates, hashes, and owns the conflict
and retry policy; a recorder only stores and reads. One module per database
(``ledger.recorders.postgres``, ``.sqlite``, ``.memory``) owns its SQL and its
tricks; nothing else branches on the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Table
from sqlalchemy.engine import Row

from session_ledger.ledger.clock import utc
from session_ledger.ledger.domain.events import EventMetadata, RecordedEvent, deserialize
from session_ledger.ledger.writes import PendingEvent, Projection


class Head(NamedTuple):
    """A stream's last event: its version and hash."""

    version: int
    hash: str


class EventRow(NamedTuple):
    """One ``ledger_events`` row of an append, hashed, before its position is
    known (the append's metadata and time are the :class:`EventBatch`'s)."""

    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    data: str
    user_id: str | None
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class EventBatch:
    """Every row of one append, with what they share."""

    rows: Sequence[EventRow]
    meta_json: str
    recorded_at: datetime
    #: The same events for the projections, in the same order.
    events: Sequence[PendingEvent]


class StoredEvent(NamedTuple):
    """A ``ledger_events`` row as read back (``data``/``meta`` decoded)."""

    position: int
    stream_id: str
    stream_version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    meta: dict[str, Any]
    user_id: str | None
    recorded_at: datetime
    prev_hash: str
    hash: str


def to_recorded(row: StoredEvent | Row[Any]) -> RecordedEvent:
    """The domain's event of a ``ledger_events`` row (a recorder's
    StoredEvent, or a row read with the table's columns)."""
    return RecordedEvent(
        position=row.position,
        stream_id=row.stream_id,
        stream_version=row.stream_version,
        event=deserialize(row.type, row.schema_version, row.data),
        metadata=EventMetadata.model_validate(row.meta),
        user_id=row.user_id,
        recorded_at=utc(row.recorded_at),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


class Stored(NamedTuple):
    """Where a row of an append landed and what it holds (own-write detection)."""

    position: int
    hash: str


#: (stream id, stream version) -> position, for the rows of one append.
Positions = dict[tuple[str, int], int]


@dataclass(frozen=True, slots=True, eq=False)  # module constants: compared by identity
class Lookup:
    """The row of ``table`` whose ``column`` equals a value, or else the row
    named (by ``table``'s primary key) in ``via`` under the same ``column``
    (a secondary index kept as a table: a rotated-out token's session)."""

    table: Table
    column: str
    via: Table | None = None


class ConnectionLostError(Exception):
    """The connection died under an append (``error`` is what the driver
    raised). ``repeatable``: trying again cannot apply anything twice (the
    first try never reached COMMIT, or it was one statement, which the unique
    (stream_id, stream_version) keeps from landing twice)."""

    def __init__(self, error: BaseException, *, repeatable: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.repeatable = repeatable


class Recorder(Protocol):
    """Stores events and projection rows for the event store, and serves
    the hot reads (a session by token hash, a user by id) from them."""

    async def heads(self, stream_ids: Sequence[str], *, hot: bool = True) -> dict[str, Head]:
        """The head of each of ``stream_ids`` that exists. ``hot``: on the
        append's path (not after a failed insert), where a recorder may use
        its fastest way to one row."""
        ...

    async def insert(
        self, batch: EventBatch, projections: Sequence[Projection]
    ) -> Positions | None:
        """Insert ``batch`` and every projection's writes, atomically. None
        (and nothing written) when a stream already holds a version it is
        about to write; some databases raise IntegrityError instead. A dead
        connection raises :class:`ConnectionLostError`."""
        ...

    async def stored(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Stored]:
        """The rows at ``keys`` (stream id, version) that exist."""
        ...

    async def read_stream(self, stream_id: str, from_version: int) -> list[StoredEvent]: ...

    async def read_all(self, after_position: int, limit: int) -> list[StoredEvent]: ...

    async def max_position(self) -> int: ...

    async def count_by_type(self) -> dict[str, int]: ...

    async def first(self, lookup: Lookup, value: Any) -> dict[str, Any] | None:
        """The hot read: one row by key (see :class:`Lookup`), decoded."""
        ...

    async def rows(self, table: Table, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Rows of ``table`` whose columns equal ``where``'s values (a list
        or tuple value: any of them), decoded."""
        ...
