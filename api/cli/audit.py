"""Audit commands: ``session-ledger audit user|session|ip|attempts|active-at|
revocations|counts|digest`` and ``session-ledger verify-ledger``.

Results stream page by page (one page in memory), as a rich table, JSON (one
array, written as it goes) or CSV. ``--limit`` caps the rows printed; when
more remain, the cursor to continue from is printed on stderr (``--after``).
Bad input (a malformed time, network, reason) is one line on stderr and
exit code 2, before the database is touched.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from api.cli.base import DatabaseOption, app, console, err, run, settings_for
from ledger.audit import (
    MAX_LIMIT,
    ActiveSession,
    AuditEntry,
    AuditLog,
    DailyCount,
    IpSighting,
    Page,
    check_event_type,
    check_reason,
    parse_instant,
    parse_network,
)
from ledger.clock import SystemClock
from ledger.db import make_engine
from ledger.errors import LedgerError
from ledger.integrity import (
    VerifyReport,
    latest_digest,
    parse_expected,
    record_digest,
    verify_ledger,
)

audit_app = typer.Typer(
    no_args_is_help=True, help="Audit queries over the full session history (the ledger)."
)
app.add_typer(audit_app, name="audit")

T = TypeVar("T")
Column = tuple[str, Callable[[Any], object]]


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since", help="From this time (inclusive): ISO 8601, 'now', or an age: 7d, 12h."
    ),
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="Before this time (exclusive); same forms as --since.")
]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
LimitOption = Annotated[
    int | None, typer.Option("--limit", min=1, help="Print at most this many rows (default: all).")
]
AfterOption = Annotated[
    int, typer.Option("--after", min=0, help="Continue after this ledger position (a cursor).")
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
    ("email_key", lambda e: str(e.data.get("email_key", ""))[:16]),
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


# ------------------------------------------------------------------ output


class Output:
    """Writes rows as they come; never holds more than one table's worth."""

    TABLE_ROWS = 500

    def __init__(self, fmt: Format, columns: Sequence[Column], title: str) -> None:
        self.fmt = fmt
        self.columns = columns
        self.title = title
        self.count = 0
        self._rows: list[list[str]] = []
        self._csv = csv.writer(sys.stdout) if fmt is Format.CSV else None

    def start(self) -> None:
        if self._csv is not None:
            self._csv.writerow([name for name, _ in self.columns])
        elif self.fmt is Format.JSON:
            sys.stdout.write("[")

    def add(self, item: Any) -> None:
        if self.fmt is Format.JSON:
            sys.stdout.write(("," if self.count else "") + "\n" + json.dumps(item.to_json()))
        else:
            row = ["" if (v := get(item)) is None else str(v) for _, get in self.columns]
            if self._csv is not None:
                self._csv.writerow(row)
            else:
                self._rows.append(row)
                if len(self._rows) >= self.TABLE_ROWS:
                    self._flush_table()
        self.count += 1

    def finish(self) -> None:
        if self.fmt is Format.JSON:
            sys.stdout.write("\n]\n" if self.count else "]\n")
        elif self.fmt is Format.TABLE:
            if self._rows or not self.count:
                self._flush_table()
            err.print(f"{self.count} row(s)", highlight=False)
        sys.stdout.flush()

    def _flush_table(self) -> None:
        table = Table(title=self.title if not self.count or self.count <= self.TABLE_ROWS else None)
        for name, _ in self.columns:
            table.add_column(name, overflow="fold")
        for row in self._rows:
            table.add_row(*row)
        console.print(table)
        self._rows = []


async def _stream(
    fetch: Callable[[int, int], Awaitable[Page[T]]],
    out: Output,
    after: int,
    limit: int | None,
) -> None:
    """Pages of ``fetch(after, page_size)`` into ``out``, up to ``limit`` rows."""
    out.start()
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
    async def main() -> None:
        engine = make_engine(settings_for(database_url).database_url)
        try:
            await body(AuditLog(engine))
        finally:
            await engine.dispose()

    run(main)


def _times(since: str | None, until: str | None) -> dict[str, Any]:
    return {
        "since": None if since is None else parse_instant(since),
        "until": None if until is None else parse_instant(until),
    }


def _checked(parse: Callable[[], T]) -> T:
    """Parse arguments before touching the database: a bad value is one line, exit 2."""
    try:
        return parse()
    except LedgerError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


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
    out = Output(fmt, ENTRY_COLUMNS, f"history of user {user_id}")

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
    out = Output(fmt, ENTRY_COLUMNS, f"history of session {session_id}")

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
    times = _checked(lambda: _times(since, until))
    net = _checked(lambda: parse_network(network))
    out = Output(fmt, SIGHTING_COLUMNS, f"sessions seen from {net}")

    async def body(audit: AuditLog) -> None:
        async def fetch(a: int, n: int) -> Page[IpSighting]:
            return await audit.ip_sightings(net, after=a, limit=n, **times)

        await _stream(fetch, out, after, limit)

    _query(database_url, body)


@audit_app.command("attempts")
def sign_in_attempts(
    user: Annotated[str | None, typer.Option("--user", help="Only this account's.")] = None,
    ip: Annotated[
        str | None, typer.Option("--ip", help="Only from this address or CIDR network.")
    ] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Failed sign-ins: reason, account, IP, user agent, and the start of the
    keyed hash of the email typed (attempts on one unknown email share it)."""
    times = _checked(lambda: _times(since, until))
    net = _checked(lambda: parse_network(ip)) if ip is not None else None
    out = Output(fmt, ATTEMPT_COLUMNS, "failed sign-ins")

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
    user: Annotated[str | None, typer.Option("--user", help="Only this user's sessions.")] = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Sessions that were active at an instant, computed from the ledger."""
    at = _checked(lambda: parse_instant(instant))
    out = Output(fmt, ACTIVE_COLUMNS, f"sessions active at {at.isoformat()}")

    async def body(audit: AuditLog) -> None:
        async def fetch(a: int, n: int) -> Page[ActiveSession]:
            return await audit.active_at(at, user_id=user, after=a, limit=n)

        await _stream(fetch, out, after, limit)

    _query(database_url, body)


@audit_app.command("revocations")
def revocations(
    reason: Annotated[
        str | None, typer.Option("--reason", help="e.g. token_reuse, admin, sign_out.")
    ] = None,
    actor: Annotated[str | None, typer.Option("--actor", help="e.g. system, user:42.")] = None,
    since: SinceOption = None,
    until: UntilOption = None,
    fmt: FormatOption = Format.TABLE,
    limit: LimitOption = None,
    after: AfterOption = 0,
    database_url: DatabaseOption = None,
) -> None:
    """Revocations, by reason and actor, in a time range."""
    times = _checked(lambda: _times(since, until))
    if reason is not None:
        _checked(lambda: check_reason(reason))
    out = Output(fmt, ENTRY_COLUMNS, "revocations")

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
        list[str] | None, typer.Option("--type", help="Only these event types (repeatable).")
    ] = None,
    fmt: FormatOption = Format.TABLE,
    database_url: DatabaseOption = None,
) -> None:
    """Events per type per UTC day."""
    times = _checked(lambda: _times(since, until))
    types = _checked(lambda: [check_event_type(t) for t in event_type or []])
    out = Output(fmt, COUNT_COLUMNS, "events per day")

    async def body(audit: AuditLog) -> None:
        rows: list[DailyCount] = await audit.counts_per_day(types=types or None, **times)
        out.start()
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
    """Print the latest ledger digest as POSITION:DIGEST (keep it outside the database)."""

    async def main() -> None:
        engine = make_engine(settings_for(database_url).database_url)
        try:
            if record:
                await record_digest(engine, SystemClock())
            latest = await latest_digest(engine)
        finally:
            await engine.dispose()
        if latest is None:
            err.print("no digest recorded yet (the ledger is empty?)", highlight=False)
            raise typer.Exit(1)
        print(latest.token)

    run(main)


# ------------------------------------------------------------------ verify


async def check_ledger(
    database_url: str, *, expect: Sequence[str] = (), as_json: bool = False
) -> bool:
    """Verify the ledger at ``database_url`` and print the report; True when intact.

    What ``session-ledger verify --ledger`` runs. Raises DigestFormatError
    (a LedgerError) for a malformed ``expect`` before reading anything.
    """
    expected = [parse_expected(e) for e in expect]
    engine = make_engine(database_url)
    try:
        progress = None
        if err.is_terminal and not as_json:

            def progress(position: int) -> None:
                err.print(f"verified up to position {position}…", end="\r", highlight=False)

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
            help="POSITION:DIGEST kept outside the database (repeatable); must still match.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Recompute every stream's hash chain and check the ledger digests.

    Exit code 0: intact; 1: tampering found; 2: bad arguments.
    """

    async def main() -> bool:
        return await check_ledger(
            settings_for(database_url).database_url, expect=expect or [], as_json=as_json
        )

    if not run(main):
        raise typer.Exit(1)
