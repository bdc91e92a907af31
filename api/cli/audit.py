"""Audit commands: ``session-ledger audit user|session|ip|attempts|active-at|
revocations|counts|digest`` and ``session-ledger verify-ledger``.

Results stream page by page (one page in memory), as a rich table, JSON (one
array, written as it goes) or CSV. ``--limit`` caps the rows printed; when
more remain, the cursor to continue from is printed on stderr (``--after``).
Bad input (a malformed time, network, reason) is one line on stderr and
exit code 2, before the database is touched.

Tables fit the terminal: fewer columns, the parsed device instead of the
user agent, short ids (the random tail) below ``WIDE`` columns, long cells
cut with an ellipsis. JSON and CSV keep every value in full.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from session_ledger.api.cli.base import (
    DatabaseOption,
    ReadableGroup,
    app,
    console,
    err,
    error,
    run,
    settings_for,
)

if TYPE_CHECKING:
    from session_ledger.ledger.audit import (
        ActiveSession,
        AuditEntry,
        AuditLog,
        DailyCount,
        IpSighting,
        Page,
    )
    from session_ledger.ledger.integrity import VerifyReport

audit_app = typer.Typer(
    cls=ReadableGroup,
    no_args_is_help=True,
    help="Audit queries over the full session history (the ledger).",
)
app.add_typer(audit_app, name="audit")

T = TypeVar("T")
Column = tuple[str, Callable[[Any], object]]
#: From this many columns on, tables show ids in full.
WIDE = 132


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="TIME",
        help="From this time (inclusive): ISO 8601, 'now', or an age: 7d, 12h.",
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option(
        "--until", metavar="TIME", help="Before this time (exclusive); same forms as --since."
    ),
]
FormatOption = Annotated[
    Format,
    typer.Option(
        "--format", "-f", metavar="table|json|csv", help="Output format (json, csv: full values)."
    ),
]
LimitOption = Annotated[
    int | None,
    typer.Option(
        "--limit", min=1, metavar="N", help="Print at most this many rows (default: all)."
    ),
]
AfterOption = Annotated[
    int,
    typer.Option("--after", min=0, metavar="POSITION", help="Continue after this ledger position."),
]

ENTRY_COLUMNS: list[Column] = [
    ("position", lambda e: e.position),
    ("recorded_at", lambda e: e.recorded_at.isoformat()),
    ("session_id", lambda e: e.session_id),
    ("version", lambda e: e.stream_version),
    ("user_id", lambda e: e.user_id),
    ("type", lambda e: e.type),
    ("actor", lambda e: e.actor),
    ("reason", lambda e: e.reason),
    ("ip", lambda e: e.ip),
    ("user_agent", lambda e: e.user_agent),
    ("request_id", lambda e: e.request_id),
]
SIGHTING_COLUMNS: list[Column] = [
    ("position", lambda s: s.position),
    ("recorded_at", lambda s: s.recorded_at.isoformat()),
    ("session_id", lambda s: s.session_id),
    ("user_id", lambda s: s.user_id),
    ("ip", lambda s: s.ip),
]
_ENTRY = dict(ENTRY_COLUMNS)
ATTEMPT_COLUMNS: list[Column] = [
    *((name, _ENTRY[name]) for name in ("position", "recorded_at", "user_id", "reason", "ip")),
    ("user_agent", _ENTRY["user_agent"]),
    # The start of the keyed hash of the email typed: attempts on one email share it.
    ("email_key", lambda e: _email_key(e)),
    ("request_id", _ENTRY["request_id"]),
]
ACTIVE_COLUMNS: list[Column] = [
    ("position", lambda s: s.position),
    ("session_id", lambda s: s.session_id),
    ("user_id", lambda s: s.user_id),
    ("created_at", lambda s: s.created_at.isoformat()),
    ("expires_at", lambda s: s.expires_at.isoformat()),
    ("last_active_at", lambda s: s.last_active_at.isoformat()),
    ("ip", lambda s: s.ip),
    ("user_agent", lambda s: s.user_agent),
]
COUNT_COLUMNS: list[Column] = [
    ("day", lambda c: c.day.isoformat()),
    ("type", lambda c: c.type),
    ("count", lambda c: c.count),
]


# Tables: what a person reads at a terminal (``ids`` shortens ids when narrow).
Ids = Callable[[str | None], str]
TableColumn = tuple[str, Callable[[Any, Ids], object]]

ENTRY_TABLE: list[TableColumn] = [
    ("time (UTC)", lambda e, ids: _time(e.recorded_at)),
    ("session", lambda e, ids: ids(e.session_id)),
    ("event", lambda e, ids: _event(e.type, e.reason)),
    ("by", lambda e, ids: _actor(e.actor, ids)),
    ("ip", lambda e, ids: e.ip),
    ("device", lambda e, ids: _device(e.user_agent)),
]
SIGHTING_TABLE: list[TableColumn] = [
    ("time (UTC)", lambda s, ids: _time(s.recorded_at)),
    ("session", lambda s, ids: ids(s.session_id)),
    ("user", lambda s, ids: ids(s.user_id)),
    ("ip", lambda s, ids: s.ip),
]
ACTIVE_TABLE: list[TableColumn] = [
    ("session", lambda s, ids: ids(s.session_id)),
    ("user", lambda s, ids: ids(s.user_id)),
    ("last active (UTC)", lambda s, ids: _time(s.last_active_at)),
    ("expires (UTC)", lambda s, ids: _time(s.expires_at)),
    ("ip", lambda s, ids: s.ip),
    ("device", lambda s, ids: _device(s.user_agent)),
]
#: Failed sign-ins; the email key only from ``WIDE`` columns on (at 80 the
#: other columns fill the line), in full in JSON and CSV as well.
ATTEMPT_TABLE: list[TableColumn] = [
    ("time (UTC)", lambda e, ids: _time(e.recorded_at)),
    ("user", lambda e, ids: ids(e.user_id)),
    ("reason", lambda e, ids: e.reason),
    ("ip", lambda e, ids: e.ip),
    ("device", lambda e, ids: _device(e.user_agent)),
]
ATTEMPT_TABLE_WIDE: list[TableColumn] = [
    *ATTEMPT_TABLE,
    ("email key", lambda e, ids: _email_key(e)),
]
COUNT_TABLE: list[TableColumn] = [
    ("day", lambda c, ids: c.day.isoformat()),
    ("event", lambda c, ids: _event(c.type)),
    ("count", lambda c, ids: c.count),
]


def short_id(value: str | None) -> str:
    """The random tail of a UUIDv7 (its head is the time, shared by neighbours)."""
    if not value:
        return ""
    return value[-8:] if len(value) > 12 else value


def _full_id(value: str | None) -> str:
    return value or ""


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S")


def _event(event_type: str, reason: str | None = None) -> str:
    name = event_type.removeprefix("Session") or event_type
    return f"{name}: {reason}" if reason else name


def _actor(actor: str | None, ids: Ids) -> str:
    kind, _, who = (actor or "").partition(":")
    return f"{kind}:{ids(who)}" if who else kind


def _email_key(entry: Any) -> str:
    return str(entry.data.get("email_key", ""))[:16]


def _device(user_agent: str | None) -> str:
    from session_ledger.ledger.devices import describe_device

    return describe_device(user_agent) if user_agent else ""


# ------------------------------------------------------------------ output


class Output:
    """Writes rows as they come; never holds more than one table's worth."""

    TABLE_ROWS = 500

    def __init__(
        self,
        fmt: Format,
        columns: Sequence[Column],
        title: str,
        table: Sequence[TableColumn],
    ) -> None:
        self.fmt = fmt
        self.columns = columns
        self.table = table
        self.title = title
        self.count = 0
        self._rows: list[list[str]] = []
        self._csv = csv.writer(sys.stdout) if fmt is Format.CSV else None
        self._ids: Ids = _full_id if console.width >= WIDE else short_id
        self._started = False

    def start(self) -> None:
        """Begin the output, once the first page (or the end) is in: a query
        that fails leaves nothing half-written on stdout."""
        if self._started:
            return
        self._started = True
        if self._csv is not None:
            self._csv.writerow([name for name, _ in self.columns])
        elif self.fmt is Format.JSON:
            sys.stdout.write("[")

    def add(self, item: Any) -> None:
        self.start()
        if self.fmt is Format.JSON:
            sys.stdout.write(("," if self.count else "") + "\n" + json.dumps(item.to_json()))
        elif self._csv is not None:
            self._csv.writerow(
                ["" if (v := get(item)) is None else str(v) for _, get in self.columns]
            )
        else:
            self._rows.append(
                ["" if (v := show(item, self._ids)) is None else str(v) for _, show in self.table]
            )
            if len(self._rows) >= self.TABLE_ROWS:
                self._flush_table()
        self.count += 1

    def finish(self) -> None:
        self.start()
        if self.fmt is Format.JSON:
            sys.stdout.write("\n]\n" if self.count else "]\n")
        elif self.fmt is Format.TABLE:
            if self._rows or not self.count:
                self._flush_table()
            err.print(f"{self.count} row(s)", highlight=False)
        sys.stdout.flush()

    def _flush_table(self) -> None:
        from session_ledger.api.cli.tables import fitted_table

        table = fitted_table(
            [name for name, _ in self.table],
            self._rows,
            width=console.width,
            flexible=FLEXIBLE,
            title=self.title if not self.count or self.count <= self.TABLE_ROWS else None,
        )
        console.print(table)
        self._rows = []


#: Columns cut when a table is too wide, down to these widths (the others
#: stay whole).
FLEXIBLE = {"by": 6, "ip": 9, "device": 10, "user": 8, "event": 7}


async def _stream(
    fetch: Callable[[int, int], Awaitable[Page[T]]],
    out: Output,
    after: int,
    limit: int | None,
) -> None:
    """Pages of ``fetch(after, page_size)`` into ``out``, up to ``limit`` rows."""
    from session_ledger.ledger.audit import MAX_LIMIT

    cursor: int | None = after
    while cursor is not None:
        size = MAX_LIMIT if limit is None else min(MAX_LIMIT, limit - out.count)
        page = await fetch(cursor, size)
        for item in page.items:
            out.add(item)
        cursor = page.next_after
        if limit is not None and out.count >= limit:
            break
    out.finish()
    if cursor is not None:
        err.print(f"more rows: continue with --after {cursor}", highlight=False)


def _query(
    database_url: str | None,
    body: Callable[[AuditLog], Awaitable[None]],
) -> None:
    settings = settings_for(database_url)

    async def main() -> None:
        from session_ledger.ledger.audit import AuditLog
        from session_ledger.ledger.db import make_engine

        engine = make_engine(settings.database_url)
        try:
            await body(AuditLog(engine))
        finally:
            await engine.dispose()

    run(main)


def _times(since: str | None, until: str | None) -> dict[str, Any]:
    from session_ledger.ledger.audit import parse_instant

    return {
        "since": None if since is None else parse_instant(since),
        "until": None if until is None else parse_instant(until),
    }


def _checked(parse: Callable[[], T]) -> T:
    """Parse arguments before touching the database: a bad value is one line, exit 2."""
    from session_ledger.ledger.domain.errors import LedgerError

    try:
        return parse()
    except LedgerError as exc:
        error(exc.message)


# ---------------------------------------------------------------- commands


@audit_app.command("user")
def user_history(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    since: SinceOption = None,
    until: UntilOption = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Every event of every session of one user (unknown user: no rows)."""
    times = _checked(lambda: _times(since, until))
    out = Output(fmt, ENTRY_COLUMNS, f"history of user {user_id}", ENTRY_TABLE)

    async def body(audit: AuditLog) -> None:
        async def fetch(a: int, n: int) -> Page[AuditEntry]:
            return await audit.user_history(user_id, after=a, limit=n, **times)

        await _stream(fetch, out, after, limit)

    _query(database_url, body)


@audit_app.command("session")
def session_history(
    session_id: Annotated[str, typer.Argument(help="The session's id.")],
    since: SinceOption = None,
    until: UntilOption = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Every event of one session: actor, reason, ip, user agent, request id."""
    times = _checked(lambda: _times(since, until))
    out = Output(fmt, ENTRY_COLUMNS, f"history of session {session_id}", ENTRY_TABLE)

    async def body(audit: AuditLog) -> None:
        async def fetch(a: int, n: int) -> Page[AuditEntry]:
            return await audit.session_history(session_id, after=a, limit=n, **times)

        await _stream(fetch, out, after, limit)

    _query(database_url, body)


@audit_app.command("ip")
def ip_sightings(
    network: Annotated[str, typer.Argument(help="An address (203.0.113.7) or a network (/24).")],
    since: SinceOption = None,
    until: UntilOption = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Sessions seen from an IP address or CIDR network (each sighting)."""
    from session_ledger.ledger.audit import parse_network

    times = _checked(lambda: _times(since, until))
    net = _checked(lambda: parse_network(network))
    out = Output(fmt, SIGHTING_COLUMNS, f"sessions seen from {net}", SIGHTING_TABLE)

    async def body(audit: AuditLog) -> None:
        async def fetch(a: int, n: int) -> Page[IpSighting]:
            return await audit.ip_sightings(net, after=a, limit=n, **times)

        await _stream(fetch, out, after, limit)

    _query(database_url, body)


@audit_app.command("attempts")
def sign_in_attempts(
    user: Annotated[
        str | None, typer.Option("--user", metavar="USER_ID", help="Only this account's.")
    ] = None,
    ip: Annotated[
        str | None,
        typer.Option(
            "--ip", metavar="NETWORK", help="Only from this address or CIDR network (/24)."
        ),
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Failed sign-ins: reason, account, IP, device, and the start of the
    keyed hash of the email typed (attempts on one unknown email share it;
    in JSON, CSV and tables of 132 columns or more)."""
    from session_ledger.ledger.audit import parse_network

    times = _checked(lambda: _times(since, until))
    net = _checked(lambda: parse_network(ip)) if ip is not None else None
    title = "failed sign-ins" + (f" from {net}" if net is not None else "")
    table = ATTEMPT_TABLE_WIDE if console.width >= WIDE else ATTEMPT_TABLE
    out = Output(fmt, ATTEMPT_COLUMNS, title, table)

    async def body(audit: AuditLog) -> None:
        async def fetch(a: int, n: int) -> Page[AuditEntry]:
            return await audit.sign_in_attempts(
                user_id=user, network=net, after=a, limit=n, **times
            )

        await _stream(fetch, out, after, limit)

    _query(database_url, body)


@audit_app.command("active-at")
def active_at(
    instant: Annotated[str, typer.Argument(help="The instant: ISO 8601, 'now', or 7d / 12h ago.")],
    user: Annotated[
        str | None, typer.Option("--user", metavar="USER_ID", help="Only this user's sessions.")
    ] = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Sessions that were active at an instant, computed from the ledger."""
    from session_ledger.ledger.audit import parse_instant

    at = _checked(lambda: parse_instant(instant))
    out = Output(fmt, ACTIVE_COLUMNS, f"sessions active at {at.isoformat()}", ACTIVE_TABLE)

    async def body(audit: AuditLog) -> None:
        async def fetch(a: int, n: int) -> Page[ActiveSession]:
            return await audit.active_at(at, user_id=user, after=a, limit=n)

        await _stream(fetch, out, after, limit)

    _query(database_url, body)


@audit_app.command("revocations")
def revocations(
    reason: Annotated[
        str | None,
        typer.Option("--reason", metavar="REASON", help="e.g. token_reuse, admin, sign_out."),
    ] = None,
    actor: Annotated[
        str | None, typer.Option("--actor", metavar="ACTOR", help="e.g. system, user:42.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Revocations, by reason and actor, in a time range."""
    from session_ledger.ledger.audit import check_reason

    times = _checked(lambda: _times(since, until))
    if reason is not None:
        _checked(lambda: check_reason(reason))
    out = Output(fmt, ENTRY_COLUMNS, "revocations", ENTRY_TABLE)

    async def body(audit: AuditLog) -> None:
        async def fetch(a: int, n: int) -> Page[AuditEntry]:
            return await audit.revocations(reason=reason, actor=actor, after=a, limit=n, **times)

        await _stream(fetch, out, after, limit)

    _query(database_url, body)


@audit_app.command("counts")
def counts(
    since: SinceOption = None,
    until: UntilOption = None,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", metavar="TYPE", help="Only these event types (repeatable)."),
    ] = None,
    fmt: FormatOption = Format.TABLE,
    database_url: DatabaseOption = None,
) -> None:
    """Events per type per UTC day."""
    from session_ledger.ledger.audit import check_event_type

    times = _checked(lambda: _times(since, until))
    types = _checked(lambda: [check_event_type(t) for t in event_type or []])
    out = Output(fmt, COUNT_COLUMNS, "events per day", COUNT_TABLE)

    async def body(audit: AuditLog) -> None:
        rows: list[DailyCount] = await audit.counts_per_day(types=types or None, **times)
        for row in rows:
            out.add(row)
        out.finish()

    _query(database_url, body)


@audit_app.command("digest")
def digest(
    record: Annotated[
        bool, typer.Option("--record", help="Record a digest of the head first.")
    ] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Print the latest ledger digest as [XID:]POSITION:DIGEST (keep it outside the database).

    Exit code 1 when none is recorded yet.
    """
    settings = settings_for(database_url)

    async def main() -> str | None:
        from session_ledger.ledger.clock import SystemClock
        from session_ledger.ledger.db import make_engine
        from session_ledger.ledger.integrity import latest_digest, record_digest
        from session_ledger.ledger.store import EventStore

        engine = make_engine(settings.database_url)
        try:
            if record:
                await record_digest(engine, SystemClock())
            latest = await latest_digest(engine)
            if latest is not None:
                return latest.token
            head = await EventStore(engine).head()
        finally:
            await engine.dispose()
        if head == 0:
            err.print("no digest: the ledger is empty", highlight=False)
        else:
            err.print(
                f"no digest recorded yet (the ledger has {head} events): the worker records "
                "one every worker.digest_interval; record one now with "
                "`session-ledger audit digest --record` or "
                "`session-ledger worker --once --only digest`",
                highlight=False,
                soft_wrap=True,
            )
        return None

    token = run(main)
    if token is None:
        raise typer.Exit(1)
    print(token)


# ------------------------------------------------------------------ verify


async def check_ledger(
    database_url: str, *, expect: Sequence[str] = (), as_json: bool = False
) -> bool:
    """Verify the ledger at ``database_url`` and print the report; True when intact.

    What ``session-ledger verify --ledger`` runs. Raises DigestFormatError
    (a LedgerError) for a malformed ``expect`` before reading anything.
    """
    from session_ledger.ledger.db import make_engine
    from session_ledger.ledger.integrity import parse_expected, verify_ledger

    expected = [parse_expected(e) for e in expect]
    engine = make_engine(database_url)
    try:
        progress = None
        if err.is_terminal and not as_json:

            def progress(events: int) -> None:
                err.print(f"verified {events} events…", end="\r", highlight=False)

        report = await verify_ledger(engine, expect=expected, progress=progress)
    finally:
        await engine.dispose()
    _print_report(report, as_json)
    return report.ok


def _print_report(report: VerifyReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    for p in report.problems:
        where = f"position {p.position}" if p.position is not None else "ledger"
        if p.stream_id is not None:
            where = f"stream {p.stream_id} version {p.stream_version} ({where})"
        console.print(f"[red]BROKEN[/red] {p.kind}: {where}: {p.message}", highlight=False)
    if report.problem_count > len(report.problems):
        console.print(f"… and {report.problem_count - len(report.problems)} more", highlight=False)
    latest = report.latest_digest
    summary = (
        f"{report.events_checked} events in {report.streams_seen} streams, "
        f"{report.digests_checked} digests checked, head {report.head}"
        + (f", latest digest {latest.token}" if latest else "")
    )
    if report.ok:
        console.print(f"[green]ledger intact[/green]: {summary}", highlight=False)
    else:
        console.print(
            f"[red]ledger TAMPERED[/red]: {report.problem_count} problem(s); {summary}",
            highlight=False,
        )


@app.command("verify-ledger")
def verify_ledger_command(
    expect: Annotated[
        list[str] | None,
        typer.Option(
            "--expect",
            metavar="[XID:]POSITION:DIGEST",
            help="[XID:]POSITION:DIGEST kept outside the database (repeatable); must still match.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Recompute every stream's hash chain and check the ledger digests.

    Exit code 0: intact; 1: tampering found; 2: bad arguments.
    """

    settings = settings_for(database_url)

    async def main() -> bool:
        return await check_ledger(settings.database_url, expect=expect or [], as_json=as_json)

    if not run(main):
        raise typer.Exit(1)
