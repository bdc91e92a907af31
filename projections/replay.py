"""Replay: rebuild a projection from position zero, beside the live one.

Both rebuilds stream the ledger in batches (bounded memory) in commit-safe
order (ledger.horizon: below the oldest running transaction, in (xid,
position) order), build a shadow copy while the live projection keeps
serving, and switch atomically at the end; both are resumable (a checkpoint,
the mark of the last event applied, is stored with every batch), so a
replay killed half-way finishes correctly when run again.

The final catch-up runs under a table lock that waits for every append in
flight and keeps new ones out: nothing writes to the ledger then, so it
reads everything committed after its mark *without* the horizon (which an
unrelated long transaction may hold back, and the switch must not leave
committed events behind).

SQL table
    Shadow tables ``sessions__shadow`` / ``session_retired_tokens__shadow``
    (created from the live tables' metadata) are filled batch by batch, each
    batch committed together with its checkpoint in ``projection_checkpoints``.
    The swap runs in one transaction holding the table lock: it applies the
    events appended meanwhile, drops the live tables and renames the shadows.
    Appends wait for that transaction and then write the new table; SQL
    readers see the old table until the commit, the new one after.

Redis
    A new generation (key namespace ``<prefix>g<N>:``) is filled while the
    live one serves; the switch, under the table lock, applies the tail and
    flips the ``gen`` pointer; the new generation's checkpoint is then the
    horizon seen under the lock (ledger.horizon.final_mark). Writers keep
    writing the previous generation for DUAL_WRITE_SECONDS (readers cache the
    pointer for less), then it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import (
    Column,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    cast,
    delete,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.clock import Clock, SystemClock
from session_ledger.ledger.db import is_sqlite, writer
from session_ledger.ledger.domain.events import EventMetadata, RecordedEvent, deserialize_json
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.recorders import recorder_for
from session_ledger.ledger.schema import events as events_table
from session_ledger.ledger.store import EventStore
from session_ledger.ledger.writes import Insert
from session_ledger.projections.redis_cache import Keys, RedisCacheProjection
from session_ledger.projections.schema import projection_checkpoints, retired_tokens, sessions
from session_ledger.projections.session_table import SessionTableProjection

if TYPE_CHECKING:
    from rich.progress import TaskID

SHADOW = "__shadow"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TABLE_CHECKPOINT = "replay:sessions"
DEFAULT_BATCH = 10_000
#: Redis replay writes a batch as one pipeline (several commands per state,
#: buffered with their replies): smaller batches keep its peak memory flat
#: as the ledger grows (figures in bench/README.md, bench.replay).
DEFAULT_REDIS_BATCH = 5_000
#: Below this many events left, the rebuild takes the table lock and switches.
FINAL_TAIL = 2000


class Progress(Protocol):
    def start(self, total: int, done: int) -> None: ...

    def advance(self, events: int) -> None: ...


class _NoProgress:
    def start(self, total: int, done: int) -> None:
        pass

    def advance(self, events: int) -> None:
        pass


#: Called after each committed batch with its number (tests raise from it to
#: simulate a replay killed half-way).
BatchHook = Callable[[int], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    projection: str
    events: int
    resumed_from: int
    head: int


# ------------------------------------------------------------- SQL table


def _shadow_name(name: str, postgres: bool) -> str:
    return name + SHADOW if postgres else name


def shadow_table(live: Table, metadata: MetaData, *, postgres: bool) -> Table:
    """A copy of ``live`` named ``<name>__shadow``: same columns and keys.

    PostgreSQL index and constraint names are schema-wide, so the shadow's
    get the suffix too (renamed back at the swap). SQLite constraint names
    are per table (kept as they are) and its indexes cannot be renamed: they
    are created with their live names at the swap (:func:`_swap`).
    """
    columns = [Column(c.name, c.type, nullable=c.nullable) for c in live.columns]
    constraints: list[PrimaryKeyConstraint | UniqueConstraint] = []
    for constraint in live.constraints:
        if not isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint):
            continue
        names = [c.name for c in constraint.columns]
        cname = _shadow_name(str(constraint.name), postgres)
        if isinstance(constraint, PrimaryKeyConstraint):
            constraints.append(PrimaryKeyConstraint(*names, name=cname))
        elif isinstance(constraint, UniqueConstraint):
            constraints.append(UniqueConstraint(*names, name=cname))
    table = Table(live.name + SHADOW, metadata, *columns, *constraints)
    if postgres:
        for index in live.indexes:
            Index(
                _shadow_name(str(index.name), postgres),
                *[table.c[c.name] for c in index.columns],
                unique=bool(index.unique),
                **index.dialect_kwargs,
            )
    return table


async def _table_exists(conn: AsyncConnection, name: str) -> bool:
    def check(sync_conn: Connection) -> bool:
        return inspect(sync_conn).has_table(name)

    return await conn.run_sync(check)


async def _get_checkpoint(conn: AsyncConnection, name: str) -> Mark | None:
    c = projection_checkpoints.c
    row = (await conn.execute(select(c.xid, c.position).where(c.name == name))).first()
    return None if row is None else (int(row[0]), int(row[1]))


async def _set_checkpoint(conn: AsyncConnection, name: str, mark: Mark, clock: Clock) -> None:
    xid, position = mark
    row = {"name": name, "xid": xid, "position": position, "updated_at": clock.now()}
    recorder = recorder_for(conn.engine)
    await recorder.write_in(conn, [Insert(projection_checkpoints, [row], on_conflict="update")])


async def _count(engine: AsyncEngine, up_to: Mark | None = None) -> int:
    query = select(func.count()).select_from(events_table)
    if up_to is not None:
        query = query.where(horizon.up_to(up_to, pg=horizon.postgres(engine)))
    async with engine.connect() as conn:
        return int(await conn.scalar(query) or 0)


_NO_META = EventMetadata()


async def read_batch(
    engine: AsyncEngine, after: Mark, limit: int, *, safe: bool = True
) -> tuple[list[RecordedEvent], Mark]:
    """Like ledger.horizon.read (``safe=False``: without the horizon, see
    the module docstring), reading only what projections use: the metadata
    and hash columns are left out (the JSON decoding and model validation
    of the metadata cost as much as the event itself). Returns the events
    and the mark of the last one (``after`` when there is none)."""
    t = events_table.c
    pg = horizon.postgres(engine)
    query = horizon.follow(
        # The payload as stored text: deserialize_json parses and validates it
        # in one pass (replay's largest cost was decoding events).
        select(
            t.position,
            t.stream_id,
            t.stream_version,
            t.type,
            t.schema_version,
            cast(t.data, Text),
            horizon.mark_column(pg=pg),
        ),
        after,
        pg=pg,
        safe=safe,
    ).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    last = (int(rows[-1][6]), int(rows[-1][0])) if rows else after
    return [
        RecordedEvent(
            position=row[0],
            stream_id=row[1],
            stream_version=row[2],
            event=deserialize_json(row[3], row[4], row[5]),
            metadata=_NO_META,
            user_id=None,
            recorded_at=_EPOCH,
            prev_hash="",
            hash="",
        )
        for row in rows
    ], last


async def _lock_appends(conn: AsyncConnection) -> None:
    # SQLite: the writer connection's BEGIN IMMEDIATE already holds the only
    # write lock. PostgreSQL: EXCLUSIVE on the events table waits for every
    # append in flight to end and keeps new ones out until we commit;
    # readers go on. Every append locks ledger_events first (its first
    # statement, or the first table of its one statement, ledger.writes),
    # so it never holds a projection table the swap needs while it waits.
    if conn.dialect.name == "postgresql":
        await conn.execute(text(f"LOCK TABLE {events_table.name} IN EXCLUSIVE MODE"))


async def _call(hook: BatchHook | None, number: int) -> None:
    if hook is not None:
        result = hook(number)
        if result is not None:
            await result


async def replay_table(
    engine: AsyncEngine,
    store: EventStore,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    on_batch: BatchHook | None = None,
    clock: Clock | None = None,
) -> ReplayResult:
    """Rebuild ``sessions`` and ``session_retired_tokens`` from the ledger."""
    progress = progress or _NoProgress()
    clock = clock or SystemClock()
    postgres = not is_sqlite(engine)
    shadow_md = MetaData()
    shadow_sessions = shadow_table(sessions, shadow_md, postgres=postgres)
    shadow_retired = shadow_table(retired_tokens, shadow_md, postgres=postgres)
    projection = SessionTableProjection(shadow_sessions, shadow_retired)
    recorder = recorder_for(engine)
    write = writer(engine)

    async with write.begin() as conn:
        mark = await _get_checkpoint(conn, TABLE_CHECKPOINT)
        if mark is None or not await _table_exists(conn, shadow_sessions.name):
            # Fresh start (or leftovers without a checkpoint): new empty shadows.
            await conn.run_sync(shadow_md.drop_all)
            await conn.run_sync(shadow_md.create_all)
            mark = horizon.ORIGIN
            await _set_checkpoint(conn, TABLE_CHECKPOINT, mark, clock)
    resumed_from = mark[1]
    progress.start(await _count(engine), await _count(engine, up_to=mark))

    applied, number = 0, 0
    # Read the next batch while the current one is applied: the database
    # works on one while Python folds the other.
    reading = asyncio.create_task(read_batch(engine, mark, batch_size))
    try:
        while True:
            batch, last = await reading
            if len(batch) < min(batch_size, FINAL_TAIL):
                break  # small tail: finish under the table lock
            reading = asyncio.create_task(read_batch(engine, last, batch_size))
            async with write.begin() as conn:
                await recorder.project_in(conn, [projection], batch)
                mark = last
                await _set_checkpoint(conn, TABLE_CHECKPOINT, mark, clock)
            applied += len(batch)
            number += 1
            progress.advance(len(batch))
            await _call(on_batch, number)
    finally:
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async with write.begin() as conn:
        await _lock_appends(conn)
        # Nothing writes now: everything committed after the mark, horizon or not.
        while True:
            batch, last = await read_batch(engine, mark, batch_size, safe=False)
            if not batch:
                break
            await recorder.project_in(conn, [projection], batch)
            mark = last
            applied += len(batch)
            progress.advance(len(batch))
        await _swap(conn, [(sessions, shadow_sessions), (retired_tokens, shadow_retired)])
        await conn.execute(
            delete(projection_checkpoints).where(projection_checkpoints.c.name == TABLE_CHECKPOINT)
        )
    return ReplayResult("table", applied, resumed_from, mark[1])


async def _swap(conn: AsyncConnection, pairs: list[tuple[Table, Table]]) -> None:
    """Replace each live table by its shadow, inside the caller's transaction."""
    postgres = conn.dialect.name == "postgresql"
    for live, shadow in pairs:
        await conn.execute(text(f'DROP TABLE "{live.name}"'))
        await conn.execute(text(f'ALTER TABLE "{shadow.name}" RENAME TO "{live.name}"'))
        if postgres:
            for constraint in live.constraints:
                if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint):
                    await conn.execute(
                        text(
                            f'ALTER TABLE "{live.name}" RENAME CONSTRAINT '
                            f'"{constraint.name}{SHADOW}" TO "{constraint.name}"'
                        )
                    )
            for index in live.indexes:
                await conn.execute(
                    text(f'ALTER INDEX "{index.name}{SHADOW}" RENAME TO "{index.name}"')
                )
        else:
            for index in live.indexes:
                await conn.run_sync(index.create)


# ------------------------------------------------------------------ Redis


async def replay_redis(
    store: EventStore,
    projection: RedisCacheProjection,
    *,
    engine: AsyncEngine | None = None,
    batch_size: int = DEFAULT_REDIS_BATCH,
    progress: Progress | None = None,
    on_batch: BatchHook | None = None,
    drop_old: bool = True,
) -> ReplayResult:
    """Rebuild the Redis cache into a new generation and switch to it."""
    progress = progress or _NoProgress()
    engine = engine or store.engine
    cache = projection.cache
    client = cache.client
    live, _ = await cache.generations()
    building = await client.get(cache.meta("building"))
    keys: Keys
    mark: Mark | None
    if building is not None and int(building) > live:
        keys = cache.keys(int(building))
        mark = await cache.checkpoint(keys)
    else:
        keys, mark = cache.keys(live + 1), None
    if mark is None:
        # New generation, or one whose checkpoint was lost: start it clean.
        await cache.drop_namespace(keys)
        await cache.init_checkpoint(keys)
        await client.set(cache.meta("building"), keys.generation)
        mark = horizon.ORIGIN
    resumed_from = mark[1]
    progress.start(await _count(engine), await _count(engine, up_to=mark))

    applied, number = 0, 0
    while True:
        batch, last = await read_batch(engine, mark, batch_size)
        if len(batch) < min(batch_size, FINAL_TAIL):
            break
        await projection.apply(batch, [keys])
        if await cache.advance_checkpoint(keys, last) < 0:
            raise RuntimeError("Redis lost the replay's checkpoint (FLUSHDB?): run replay again")
        mark = last
        applied += len(batch)
        number += 1
        progress.advance(len(batch))
        await _call(on_batch, number)

    async with writer(engine).begin() as conn:
        await _lock_appends(conn)
        # No append can commit now: what is committed after the mark is the
        # whole rest of the ledger, read without the horizon (see the module
        # docstring); the runner goes on from the horizon seen now.
        h = await horizon.horizon(conn)
        while True:
            batch, last = await read_batch(engine, mark, batch_size, safe=False)
            if not batch:
                break
            await projection.apply(batch, [keys])
            mark = last
            applied += len(batch)
            progress.advance(len(batch))
        await cache.advance_checkpoint(keys, horizon.final_mark(h, mark))
        await cache.switch_generation(keys.generation)
        await client.delete(cache.meta("building"))
    if drop_old and live != keys.generation:
        # Readers may still use the old generation for a moment; it keeps
        # receiving writes for dual_write_seconds, then it goes.
        await asyncio.sleep(cache.dual_write_seconds)
        await cache.drop_namespace(cache.keys(live))
    return ReplayResult("redis", applied, resumed_from, mark[1])


# ------------------------------------------------------------- progress


class RichProgress:
    """A rich progress bar: events done / total, rate, ETA."""

    def __init__(self, description: str) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self._description = description
        self._task: TaskID | None = None

    def start(self, total: int, done: int) -> None:
        # Shown from the first figure on: a replay that fails before it
        # (no database) leaves no empty bar behind its one-line error.
        self._progress.start()
        self._task = self._progress.add_task(
            self._description, total=max(total, done), completed=done, rate=""
        )

    def advance(self, events: int) -> None:
        if self._task is None:
            return
        self._progress.advance(self._task, events)
        task = self._progress.tasks[self._task]
        speed = task.speed
        self._progress.update(
            self._task,
            total=max(task.total or 0, task.completed),
            rate=f"{speed:,.0f} ev/s" if speed else "",
        )

    @asynccontextmanager
    async def shown(self) -> AsyncIterator[RichProgress]:
        try:
            yield self
        finally:
            if self._task is not None:
                self._progress.stop()
