"""The in-memory recorder: plain Python objects, for tests and for trying the
ledger without a database. One process, nothing durable.

Everything an append does happens between two awaits, so it is atomic in
the event loop, and appends are serialised as SQLite's are: positions are
handed out in commit order. Projection writes land in dicts keyed by each
table's primary key, with the databases' ON CONFLICT rules; a duplicate key
raises IntegrityError, as a database would, and nothing of the append lands.
"""

from __future__ import annotations

import copy
import json
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError

from session_ledger.ledger.recorder import (
    EventBatch,
    Head,
    Lookup,
    Positions,
    Stored,
    StoredEvent,
)
from session_ledger.ledger.writes import Insert, Notify, PositionOf, Projection, Rows, Write

Key = tuple[Any, ...]


class MemoryRecorder:
    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self._streams: dict[str, list[StoredEvent]] = {}
        #: Table name -> primary key -> row.
        self.tables: dict[str, dict[Key, dict[str, Any]]] = {}
        #: (channel, payload) of the latest Notifys, in order (nobody listens here).
        self.notifications: deque[tuple[str, str]] = deque(maxlen=1000)

    # ------------------------------------------------------------------ writes

    async def heads(self, stream_ids: Sequence[str], *, hot: bool = True) -> dict[str, Head]:
        heads = {}
        for stream_id in stream_ids:
            stream = self._streams.get(stream_id)
            if stream:
                heads[stream_id] = Head(stream[-1].stream_version, stream[-1].hash)
        return heads

    async def insert(
        self, batch: EventBatch, projections: Sequence[Projection]
    ) -> Positions | None:
        for row in batch.rows:
            if len(self._streams.get(row.stream_id, ())) >= row.stream_version:
                return None  # the stream already holds this version
        positions = {
            (row.stream_id, row.stream_version): len(self.events) + i + 1
            for i, row in enumerate(batch.rows)
        }
        writes = self._writes(batch, projections)
        staged = self._stage(writes, positions)  # raises before anything lands
        self._store(batch, positions)
        for name, rows in staged.items():
            self.tables.setdefault(name, {}).update(rows)
        for write in writes:
            if isinstance(write, Notify):
                payload = write.payload
                if isinstance(payload, PositionOf):
                    payload = str(positions[(payload.stream_id, payload.stream_version)])
                self.notifications.append((write.channel, f"{payload}{write.suffix}"))
        return positions

    def _writes(self, batch: EventBatch, projections: Sequence[Projection]) -> list[Write]:
        """Every projection's writes, folded on the rows as they are now
        (nothing can move them before the append lands: no await between)."""
        writes: list[Write] = []
        for projection in projections:
            need = projection.prior(batch.events)
            prior: Rows = {}
            if need is not None:
                table = self.tables.get(need.table.name, {})
                prior = {k: copy.deepcopy(table[(k,)]) for k in need.keys if (k,) in table}
            some = projection.writes(batch.events, prior, locked=True)
            assert some is not None, "a projection must write what it reads under the lock"
            writes += some
        return writes

    def _store(self, batch: EventBatch, positions: Positions) -> None:
        meta = json.loads(batch.meta_json)
        for row in batch.rows:
            stored = StoredEvent(
                position=positions[(row.stream_id, row.stream_version)],
                stream_id=row.stream_id,
                stream_version=row.stream_version,
                type=row.type,
                schema_version=row.schema_version,
                data=json.loads(row.data),
                meta=meta,
                user_id=row.user_id,
                recorded_at=batch.recorded_at,
                prev_hash=row.prev_hash,
                hash=row.hash,
            )
            self.events.append(stored)
            self._streams.setdefault(row.stream_id, []).append(stored)

    def _stage(
        self, writes: Sequence[Write], positions: Positions
    ) -> dict[str, dict[Key, dict[str, Any]]]:
        staged: dict[str, dict[Key, dict[str, Any]]] = {}
        for write in writes:
            if not isinstance(write, Insert):
                continue
            table = write.table
            primary = [c.name for c in table.primary_key.columns]
            current = self.tables.get(table.name, {})
            mine = staged.setdefault(table.name, {})
            for row in write.rows:
                values = {
                    name: (
                        positions[(v.stream_id, v.stream_version)]
                        if isinstance(v, PositionOf)
                        else copy.deepcopy(v)
                    )
                    for name, v in row.items()
                }
                key = tuple(values[name] for name in primary)
                existing = mine.get(key, current.get(key))
                if existing is None:
                    mine[key] = _complete(table, values)
                elif write.on_conflict == "update":
                    mine[key] = {**existing, **values}
                elif write.on_conflict is None:
                    raise IntegrityError(
                        f"INSERT INTO {table.name}", key, ValueError("duplicate key")
                    )
        return staged

    async def stored(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], Stored]:
        found = {}
        for stream_id, version in keys:
            stream = self._streams.get(stream_id, [])
            if 0 < version <= len(stream):
                event = stream[version - 1]
                found[(stream_id, version)] = Stored(event.position, event.hash)
        return found

    # ------------------------------------------------------------------- reads

    async def read_stream(self, stream_id: str, from_version: int) -> list[StoredEvent]:
        return self._streams.get(stream_id, [])[max(from_version, 1) - 1 :]

    async def read_all(self, after_position: int, limit: int) -> list[StoredEvent]:
        start = max(after_position, 0)
        return self.events[start : start + limit]

    async def max_position(self) -> int:
        return len(self.events)

    async def count_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for event in self.events:
            counts[event.type] = counts.get(event.type, 0) + 1
        return counts

    async def first(self, lookup: Lookup, value: Any) -> dict[str, Any] | None:
        table = self.tables.get(lookup.table.name, {})
        for row in table.values():
            if row.get(lookup.column) == value:
                return copy.deepcopy(row)
        if lookup.via is None:
            return None
        (pk,) = (c.name for c in lookup.table.primary_key.columns)
        for link in self.tables.get(lookup.via.name, {}).values():
            if link.get(lookup.column) == value and (link[pk],) in table:
                return copy.deepcopy(table[(link[pk],)])
        return None

    async def rows(self, table: Table, where: Mapping[str, Any]) -> list[dict[str, Any]]:
        found = []
        for row in self.tables.get(table.name, {}).values():
            if all(
                row.get(name) in value
                if isinstance(value, list | tuple)
                else row.get(name) == value
                for name, value in where.items()
            ):
                found.append(copy.deepcopy(row))
        return found


def _complete(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """A new row: columns not written are None (no column here has a default
    the projections rely on)."""
    return {c.name: values.get(c.name) for c in table.columns} | values
