"""Tamper evidence: verify every stream's hash chain, and the ledger digests.

Two mechanisms, because each misses what the other catches:

* The per-stream hash chain (``ledger.chain``) exposes a changed event, a
  removed or reordered event inside a stream, and a forged first event. It
  cannot see a stream deleted whole, nor the newest events of a stream cut
  off: what remains is still a valid chain.
* A ledger digest folds the hash of every event, in commit-safe order
  (``ledger.horizon``: by writing transaction, then position), into one
  running hash: ``d(M) = sha256(d(prev) "\\n" position ":" hash)`` starting
  from the genesis hash. A row of ``ledger_digests`` records d(M) for a mark
  ``M = (xid, position)`` below the horizon when it was taken (exactly what
  a follower had seen then: nothing can appear before it later), the number
  of events up to M and the previous row's digest. Events older than the
  xid column all have xid 0, so digests taken before it keep their value. Deleting any
  event at or before a recorded P (a whole stream, the newest events) changes
  d(P) or the count. Events after the newest digest are covered only by the
  chain until the next digest is recorded; and a digest row deleted together
  with the events it covers is invisible from inside the database, which is
  why operators keep the latest digest elsewhere too (see ``expect``).

Verification streams the ledger in the same order, a batch at a time. Memory
holds the head (version, hash) of each stream that has not ended: a terminal
event (SessionRevoked / SessionExpired) closes its stream, as does a
SignInFailed (a stream of one event), and an event that
appears for a stream with no open head is reported (its predecessor was
deleted, or it follows the end of its session: both are impossible in an
untouched ledger).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Text, cast, func, literal, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from session_ledger.ledger import horizon
from session_ledger.ledger.chain import GENESIS, event_hash
from session_ledger.ledger.clock import Clock, utc
from session_ledger.ledger.db import writer
from session_ledger.ledger.digest_schema import ledger_digests
from session_ledger.ledger.domain.errors import LedgerError
from session_ledger.ledger.domain.events import SINGLE_EVENT_TYPES, TERMINAL_EVENT_TYPES
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.schema import events

BATCH_SIZE = 5000
#: Problems kept in a report; the count goes on past it.
MAX_REPORTED = 10_000


class DigestFormatError(LedgerError):
    code = "INVALID_DIGEST"


@dataclass(frozen=True, slots=True)
class Digest:
    position: int
    event_count: int
    digest: str
    prev_digest: str
    recorded_at: datetime | None = None
    #: The transaction of the event at ``position``: with it, the mark covered.
    xid: int = 0

    @property
    def mark(self) -> Mark:
        return (self.xid, self.position)

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "xid": self.xid,
            "eventCount": self.event_count,
            "digest": self.digest,
            "prevDigest": self.prev_digest,
            "recordedAt": None if self.recorded_at is None else self.recorded_at.isoformat(),
        }

    @property
    def token(self) -> str:
        """``[xid:]position:digest``: what an operator stores outside the
        database (the xid only when not 0: tokens of older digests keep
        their form)."""
        prefix = f"{self.xid}:" if self.xid else ""
        return f"{prefix}{self.position}:{self.digest}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the ledger."""

    #: ``chain`` (a stream's hash chain) or ``digest`` (a ledger digest).
    kind: str
    message: str
    stream_id: str | None = None
    stream_version: int | None = None
    position: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "streamId": self.stream_id,
            "streamVersion": self.stream_version,
            "position": self.position,
            "message": self.message,
        }


@dataclass
class VerifyReport:
    events_checked: int = 0
    streams_seen: int = 0
    digests_checked: int = 0
    head: int = 0
    problem_count: int = 0
    #: The first MAX_REPORTED problems, in ledger order.
    problems: list[Problem] = field(default_factory=list)
    latest_digest: Digest | None = None

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(problem)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "eventsChecked": self.events_checked,
            "streamsSeen": self.streams_seen,
            "digestsChecked": self.digests_checked,
            "head": self.head,
            "problemCount": self.problem_count,
            "problems": [p.to_json() for p in self.problems],
            "latestDigest": None if self.latest_digest is None else self.latest_digest.to_json(),
        }


def digest_step(previous: str, position: int, hash_: str) -> str:
    """The running ledger digest after the event at ``position`` with ``hash_``."""
    return hashlib.sha256(f"{previous}\n{position}:{hash_}".encode()).hexdigest()


def parse_expected(text: str) -> tuple[Mark, str]:
    """``[xid:]position:digest`` (as printed by ``Digest.token``) -> (mark, digest)."""
    parts = text.strip().split(":")
    digest = parts[-1].lower()
    numbers = parts[:-1]
    if (
        len(numbers) not in (1, 2)
        or not all(n.isdigit() for n in numbers)
        or len(digest) != 64
        or not _is_hex(digest)
    ):
        raise DigestFormatError(
            f"expected [XID:]POSITION:DIGEST (numbers and 64 hex digits), got {text!r}"
        )
    xid = int(numbers[0]) if len(numbers) == 2 else 0
    return (xid, int(numbers[-1])), digest


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


# ------------------------------------------------------------------ verify


async def verify_ledger(
    engine: AsyncEngine,
    *,
    expect: Sequence[tuple[Mark, str]] = (),
    batch_size: int = BATCH_SIZE,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check every stream's hash chain and every ledger digest.

    ``expect``: (mark, digest) pairs kept outside the database (the
    operator's copy of digests); each must match the ledger as it is now.
    ``progress`` is called with the number of events checked after each batch.
    """
    report = VerifyReport()
    open_heads: dict[str, tuple[int, str]] = {}
    running, count = GENESIS, 0
    checks = _Checkpoints(engine, expect)
    await checks.start()
    last: Mark = (0, 0)
    async for batch in _event_batches(engine, batch_size):
        for row in batch:
            position = row[0]
            mark = (row[11], position)
            # Every checkpoint strictly before this event covers exactly the
            # events folded so far.
            if checks.next_mark < mark:
                await checks.until(mark, running, count, report)
            running = digest_step(running, position, row[10])
            count += 1
            _check_link(row, open_heads, report)
            report.head = max(report.head, position)
        report.events_checked = count
        last = (batch[-1][11], batch[-1][0])
        if progress is not None:
            progress(count)
    await checks.rest(running, count, report, last)
    report.latest_digest = checks.latest
    return report


def _check_link(
    row: _EventRow, open_heads: dict[str, tuple[int, str]], report: VerifyReport
) -> None:
    position, stream_id, version, event_type, _, _, _, _, _, prev_hash, stored_hash, _ = row
    messages: list[str] = []
    head = open_heads.get(stream_id)
    if version == 1:
        report.streams_seen += 1
        if prev_hash != GENESIS:
            messages.append("the first event's prev_hash is not the genesis hash")
    elif head is None:
        messages.append(
            f"no version {version - 1} before it: the stream's earlier events "
            "were deleted, or it follows the end of the session"
        )
    elif version != head[0] + 1:
        missing = version - head[0] - 1
        messages.append(f"versions {head[0] + 1}..{version - 1} are missing ({missing} deleted)")
    elif prev_hash != head[1]:
        messages.append(f"prev_hash does not link to version {head[0]}'s hash")
    if not _hash_matches(row):
        messages.append("hash does not match the stored content (the event was changed)")
    for message in messages:
        report.add(Problem("chain", message, stream_id, version, position))
    if event_type in TERMINAL_EVENT_TYPES or event_type in SINGLE_EVENT_TYPES:
        open_heads.pop(stream_id, None)
    else:
        open_heads[stream_id] = (version, stored_hash)


def _hash_matches(row: _EventRow) -> bool:
    """Whether the stored hash is ledger.chain.event_hash of the stored content.

    Fast path: the same canonical body built with orjson (sorted keys,
    compact, UTF-8), several times faster than the standard json module. It
    equals ledger.chain.canonical_json for every payload the ledger writes;
    where the two could differ (floats in exponent form, integers beyond 64
    bits) the fast hash simply does not match, and the exact computation with
    ledger.chain.event_hash decides. A fast match is therefore a match of the
    exact hash (short of a SHA-256 collision).
    """
    _, stream_id, version, event_type, schema_version, data, meta, user_id, at, prev, stored, _ = (
        row
    )
    try:
        body = orjson.dumps(
            {
                "stream_id": stream_id,
                "stream_version": version,
                "type": event_type,
                "schema_version": schema_version,
                "data": orjson.loads(data),
                "meta": orjson.loads(meta),
                "user_id": user_id,
                "recorded_at": at,
            },
            option=orjson.OPT_SORT_KEYS,
        )
        if hashlib.sha256(prev.encode() + b"\n" + body).hexdigest() == stored:
            return True
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, TypeError):
        pass
    exact = event_hash(
        prev,
        stream_id=stream_id,
        stream_version=version,
        event_type=event_type,
        schema_version=schema_version,
        data=json.loads(data),
        meta=json.loads(meta),
        user_id=user_id,
        recorded_at=datetime.fromisoformat(at),
    )
    return exact == stored


class _Checkpoints:
    """Recorded digests and expected (external) digests, consumed in mark order."""

    def __init__(self, engine: AsyncEngine, expect: Sequence[tuple[Mark, str]]) -> None:
        self._digests = _digest_rows(engine)
        self._next: Digest | None = None
        self._expect = sorted(expect)
        self._prev_digest = GENESIS
        self.latest: Digest | None = None

    async def start(self) -> None:
        self._next = await anext(self._digests, None)

    @property
    def next_mark(self) -> tuple[float, float]:
        """Mark of the next checkpoint to check (infinity: none left)."""
        candidates: list[tuple[float, float]] = [(float("inf"), 0)]
        if self._next is not None:
            candidates.append(self._next.mark)
        if self._expect:
            candidates.append(self._expect[0][0])
        return min(candidates)

    async def until(self, mark: Mark, running: str, count: int, report: VerifyReport) -> None:
        while self._next is not None and self._next.mark < mark:
            self._check(self._next, running, count, report, beyond_head=False)
            self._next = await anext(self._digests, None)
        while self._expect and self._expect[0][0] < mark:
            self._check_expected(self._expect.pop(0), running, report, beyond_head=False)

    async def rest(self, running: str, count: int, report: VerifyReport, last: Mark) -> None:
        while self._next is not None:
            self._check(self._next, running, count, report, beyond_head=self._next.mark > last)
            self._next = await anext(self._digests, None)
        for expected in self._expect:
            self._check_expected(expected, running, report, beyond_head=expected[0] > last)

    def _check(
        self, d: Digest, running: str, count: int, report: VerifyReport, *, beyond_head: bool
    ) -> None:
        report.digests_checked += 1
        self.latest = d

        def problem(message: str) -> None:
            report.add(Problem("digest", message, position=d.position))

        if d.prev_digest != self._prev_digest:
            problem("the digest does not chain to the previous one (a digest row was removed)")
        if beyond_head:
            problem(
                f"a digest covers position {d.position} but the ledger ends at {report.head}: "
                "the newest events were deleted"
            )
        elif d.event_count != count:
            problem(
                f"{count} events up to position {d.position}, the digest recorded "
                f"{d.event_count}: events were deleted or inserted"
            )
        elif d.digest != running:
            problem(f"events up to position {d.position} were changed, deleted or inserted")
        self._prev_digest = d.digest

    def _check_expected(
        self, expected: tuple[Mark, str], running: str, report: VerifyReport, *, beyond_head: bool
    ) -> None:
        (_, position), digest = expected
        if beyond_head:
            report.add(
                Problem(
                    "digest",
                    f"the expected digest covers position {position} but the ledger ends at "
                    f"{report.head}: the newest events were deleted",
                    position=position,
                )
            )
        elif digest != running:
            report.add(
                Problem(
                    "digest",
                    f"the ledger up to position {position} does not match the expected digest",
                    position=position,
                )
            )


#: (position, stream_id, stream_version, type, schema_version, data JSON text,
#: meta JSON text, user_id, recorded_at as chain.timestamp text, prev_hash,
#: hash, xid)
_EventRow = tuple[int, str, int, str, int, str, str, str | None, str, str, str, int]


def _row_columns(dialect: str) -> list[Any]:
    recorded: ColumnElement[Any]
    if dialect == "postgresql":
        # Formatted by the server, exactly as ledger.chain.timestamp does.
        recorded = func.to_char(
            func.timezone("UTC", events.c.recorded_at), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
        )
    else:
        # SQLite holds 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC, always 6 digits).
        stored = cast(events.c.recorded_at, Text)
        recorded = func.substr(stored, 1, 10) + "T" + func.substr(stored, 12) + "Z"
    return [
        events.c.position,
        events.c.stream_id,
        events.c.stream_version,
        events.c.type,
        events.c.schema_version,
        # JSON as text: parsed once by the verifier, not by the driver too.
        cast(events.c.data, Text),
        cast(events.c.meta, Text),
        events.c.user_id,
        recorded,
        events.c.prev_hash,
        events.c.hash,
        horizon.mark_column(pg=dialect == "postgresql"),
    ]


async def _event_batches(engine: AsyncEngine, batch_size: int) -> AsyncIterator[list[_EventRow]]:
    """The ledger in commit-safe order (everything committed: verify checks
    what is there, above the horizon too), by keyset pages (no long-lived
    cursor).

    The next page is fetched while the current one is checked: the database
    works while Python hashes."""
    pg = horizon.postgres(engine)
    columns = _row_columns(engine.dialect.name)

    async def fetch(after: Mark) -> list[_EventRow]:
        query = horizon.follow(select(*columns), after, pg=pg, safe=False).limit(batch_size)
        async with engine.connect() as conn:
            result = await conn.execute(query)
            return [(*r[:11], int(r[11])) for r in result.tuples()]

    batch = await fetch(horizon.ORIGIN)
    while batch:
        upcoming = (
            asyncio.ensure_future(fetch((batch[-1][11], batch[-1][0])))
            if len(batch) == batch_size
            else None
        )
        try:
            yield batch
        except BaseException:
            if upcoming is not None:
                upcoming.cancel()
            raise
        batch = await upcoming if upcoming is not None else []


async def _digest_rows(engine: AsyncEngine, batch_size: int = 1000) -> AsyncIterator[Digest]:
    """The recorded digests in mark order."""
    d = ledger_digests.c
    mark: Mark = (-1, -1)
    while True:
        query = (
            select(ledger_digests)
            .where(tuple_(d.xid, d.position) > tuple_(literal(mark[0]), literal(mark[1])))
            .order_by(d.xid, d.position)
            .limit(batch_size)
        )
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        for row in rows:
            yield _digest_from_row(row)
        if len(rows) < batch_size:
            return
        mark = (rows[-1].xid, rows[-1].position)


def _digest_from_row(row: Any) -> Digest:
    return Digest(
        position=row.position,
        event_count=row.event_count,
        digest=row.digest,
        prev_digest=row.prev_digest,
        recorded_at=utc(row.recorded_at),
        xid=int(row.xid),
    )


# ------------------------------------------------------------------ digests


async def latest_digest(engine: AsyncEngine) -> Digest | None:
    async with engine.connect() as conn:
        return await _latest(conn)


async def _latest(conn: AsyncConnection) -> Digest | None:
    row = (
        await conn.execute(
            select(ledger_digests)
            .order_by(ledger_digests.c.xid.desc(), ledger_digests.c.position.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else _digest_from_row(row)


async def record_digest(
    engine: AsyncEngine, clock: Clock, *, batch_size: int = BATCH_SIZE
) -> Digest | None:
    """Record the digest of the ledger up to the last event a follower can
    read (ledger.horizon.head), if that moved since the latest digest;
    returns it (None: nothing new, or another worker won).

    Incremental: folds only the events after the latest digest into it.
    """
    # A writer connection: on SQLite the digest is taken under the write lock
    # (BEGIN IMMEDIATE). On PostgreSQL the head is below the horizon, so
    # every event up to it in commit-safe order is final: none can appear
    # before it later, whatever commits meanwhile.
    async with writer(engine).connect() as conn:
        pg = horizon.postgres(conn)
        try:
            async with conn.begin():
                last = await _latest(conn)
                head = await horizon.head_in(conn)
                start = last.mark if last else horizon.ORIGIN
                if head <= start:
                    # Nothing new; or the ledger shrank below the latest digest,
                    # which verify reports (recording would paper over it).
                    return None
                running = last.digest if last else GENESIS
                count = last.event_count if last else 0
                mark = start
                while mark < head:
                    query = select(events.c.position, events.c.hash, horizon.mark_column(pg=pg))
                    query = horizon.follow(query, mark, pg=pg, safe=False)
                    query = query.where(horizon.up_to(head, pg=pg)).limit(batch_size)
                    rows = (await conn.execute(query)).all()
                    if not rows:
                        break
                    for row in rows:
                        running = digest_step(running, row.position, row.hash)
                    count += len(rows)
                    mark = (int(rows[-1][2]), rows[-1].position)
                digest = Digest(
                    position=head[1],
                    event_count=count,
                    digest=running,
                    prev_digest=last.digest if last else GENESIS,
                    recorded_at=clock.now(),
                    xid=head[0],
                )
                await conn.execute(
                    ledger_digests.insert().values(
                        xid=digest.xid,
                        position=digest.position,
                        event_count=digest.event_count,
                        digest=digest.digest,
                        prev_digest=digest.prev_digest,
                        recorded_at=digest.recorded_at,
                    )
                )
        except IntegrityError:
            return None  # another worker recorded this head first
    return digest
