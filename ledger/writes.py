"""Inline projections as data: a projection says what it writes for an
append (:class:`Insert` rows, :class:`Notify`), never how; each recorder
(``ledger.recorders``) sends the writes with the events, atomically, in its
own way: PostgreSQL as data-modifying CTEs beside the event INSERT (one
statement), SQLite in one transaction in one hop to its thread, memory into
its dicts.

A value may be the position of one of the events being appended
(:class:`PositionOf`), known only once the events are inserted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import Table

from session_ledger.ledger.domain.events import Event, EventMetadata, RecordedEvent


@dataclass(frozen=True, slots=True)
class PositionOf:
    """The ledger position the event (``stream_id``, ``stream_version``) of
    this append will get: known only once it is inserted."""

    stream_id: str
    stream_version: int


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event about to be appended: a RecordedEvent but for its position,
    which stands in as a :class:`PositionOf`."""

    stream_id: str
    stream_version: int
    event: Event
    metadata: EventMetadata
    user_id: str | None
    recorded_at: datetime

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def position(self) -> PositionOf:
        return PositionOf(self.stream_id, self.stream_version)


@dataclass(frozen=True, slots=True)
class Insert:
    """Rows for ``table`` (each a mapping of every column written)."""

    table: Table
    rows: Sequence[Mapping[str, Any]]
    #: "update": a row whose primary key exists replaces the other columns;
    #: "nothing": it is skipped; None: it is an error (IntegrityError).
    on_conflict: Literal["update", "nothing"] | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """``pg_notify(channel, payload || suffix)``, delivered on commit
    (PostgreSQL only; nothing elsewhere)."""

    channel: str
    payload: str | PositionOf
    suffix: str = ""


Write = Insert | Notify
#: What a projection folds: events about to be appended, or recorded ones.
Projected = PendingEvent | RecordedEvent


@dataclass(frozen=True, slots=True)
class Prior:
    """The rows of ``table`` (keyed by its primary key, one per stream) a
    projection folds an append onto."""

    table: Table
    keys: Sequence[str]


Rows = Mapping[str, Mapping[str, Any]]


class Projection(Protocol):
    """An inline projection: what it writes for an append, as data. The
    recorder sends the writes with the events, atomically, however suits its
    database (one statement, one transaction, one hop).

    ``events`` are :class:`PendingEvent` (positions as :class:`PositionOf`)
    or, on replay, recorded events. ``prior`` holds the rows named by
    :meth:`prior` that exist. ``locked``: they were read inside the append,
    after its events were inserted, so they cannot be stale; otherwise they
    were read before it, and the projection returns None when it cannot
    vouch for them (the recorder then reads them again, locked). What an
    unlocked projection vouches for is the state at each stream's expected
    version: the append lands only if every stream is still there, and the
    writes land with it."""

    def prior(self, events: Sequence[Projected]) -> Prior | None:
        """The rows the writes depend on (None: they follow from the events alone)."""
        ...

    def writes(
        self, events: Sequence[Projected], prior: Rows, *, locked: bool
    ) -> Sequence[Write] | None: ...


class FromEvents:
    """Base of projections whose writes follow from the events alone (audit
    sightings, NOTIFYs)."""

    def prior(self, events: Sequence[Projected]) -> Prior | None:
        return None
