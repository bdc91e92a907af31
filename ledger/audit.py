"""Audit queries: answers about the past, read from the ledger itself.

Every query reads ``ledger_events`` (or ``audit_ips``, the IP index built in
the append transaction), never the current-session table: the answers hold
for sessions long gone. Lists are pages in ledger order: pass a page's
``next_after`` (the last global position it covered) as ``after`` to get the
next one; ``None`` means there is nothing more. Time filters apply to
``recorded_at``: ``since`` inclusive, ``until`` exclusive.

Point in time (:meth:`AuditLog.active_at`): a session was active at ``T``
when the fold of its events recorded at or before ``T`` is active and ``T``
is before its ``expires_at`` (``ledger.domain.rules.is_active``).

"Everything up to" questions read below the horizon (``ledger.horizon``) on
PostgreSQL, where appends commit in any order: the point-in-time folds see
final events only (a session's later event is never folded without its
earlier one), and "since the last visit" compares commit-safe marks, not
positions. Pages are still keyed by position, for display: a page reads
what is committed when it is read.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from session_ledger.ledger import horizon
from session_ledger.ledger.audit_schema import IpNetwork, audit_ips, network_key_range
from session_ledger.ledger.clock import utc
from session_ledger.ledger.domain.errors import LedgerError
from session_ledger.ledger.domain.events import EVENT_TYPES, RevocationReason, deserialize
from session_ledger.ledger.domain.rules import is_active
from session_ledger.ledger.domain.state import SessionState, evolve
from session_ledger.ledger.horizon import Mark
from session_ledger.ledger.schema import events

DEFAULT_LIMIT = 100
SIGN_IN_FAILED = "SignInFailed"
#: Events that show the user was there (a visit), for "since your last visit".
VISIT_EVENT_TYPES = (
    "SessionCreated",
    "SessionRefreshed",
    "SessionRotated",
    "SessionTouched",
    "SessionUpdated",
    "SessionReauthenticated",
)
#: Failed sign-ins summarised at most (a bound on the work of one request).
MAX_SUMMARISED = 10_000
MAX_LIMIT = 1000
#: Sessions examined per round trip by point-in-time queries.
CANDIDATE_BATCH = 500

T = TypeVar("T")


class AuditQueryError(LedgerError):
    """A malformed audit query (bad time, network, limit, reason...)."""

    code = "INVALID_AUDIT_QUERY"


# ------------------------------------------------------------------ results


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    #: Pass as ``after`` for the next page; None when this page is the last.
    next_after: int | None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One event of a session's history, with who / why / from where."""

    position: int
    session_id: str
    stream_version: int
    user_id: str | None
    type: str
    recorded_at: datetime
    #: Who acted: the revoking actor for SessionRevoked, else the request's actor.
    actor: str
    #: RevocationReason / ExpiryReason value for terminal events.
    reason: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    correlation_id: str | None
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "sessionId": self.session_id,
            "streamVersion": self.stream_version,
            "userId": self.user_id,
            "type": self.type,
            "recordedAt": _iso(self.recorded_at),
            "actor": self.actor,
            "reason": self.reason,
            "ip": self.ip,
            "userAgent": self.user_agent,
            "requestId": self.request_id,
            "correlationId": self.correlation_id,
            "data": self.data,
        }


@dataclass(frozen=True, slots=True)
class IpSighting:
    """An event that saw ``session_id`` at ``ip``."""

    position: int
    session_id: str
    user_id: str | None
    ip: str
    recorded_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "sessionId": self.session_id,
            "userId": self.user_id,
            "ip": self.ip,
            "recordedAt": _iso(self.recorded_at),
        }


@dataclass(frozen=True, slots=True)
class ActiveSession:
    """A session as it stood at the instant asked about."""

    #: Position of the session's SessionCreated event (the page cursor).
    position: int
    session_id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    authenticated_at: datetime
    last_active_at: datetime
    ip: str | None
    user_agent: str | None
    version: int

    @classmethod
    def of(cls, position: int, state: SessionState) -> ActiveSession:
        return cls(
            position=position,
            session_id=state.session_id,
            user_id=state.user_id,
            created_at=state.created_at,
            expires_at=state.expires_at,
            authenticated_at=state.authenticated_at,
            last_active_at=state.last_active_at,
            ip=state.ip,
            user_agent=state.user_agent,
            version=state.version,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "sessionId": self.session_id,
            "userId": self.user_id,
            "createdAt": _iso(self.created_at),
            "expiresAt": _iso(self.expires_at),
            "authenticatedAt": _iso(self.authenticated_at),
            "lastActiveAt": _iso(self.last_active_at),
            "ip": self.ip,
            "userAgent": self.user_agent,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class DailyCount:
    day: date
    type: str
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "type": self.type, "count": self.count}


@dataclass(frozen=True, slots=True)
class NetworkAttempts:
    """Failed sign-ins from one network (IPv4 /24, IPv6 /64)."""

    network: str
    count: int
    last_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"network": self.network, "count": self.count, "lastAt": _iso(self.last_at)}


@dataclass(frozen=True, slots=True)
class FailedSignIns:
    #: The last visit (None: the account had none before this session).
    since: datetime | None
    total: int
    #: True when there were more than the ``MAX_SUMMARISED`` counted.
    capped: bool
    networks: list[NetworkAttempts]

    def to_json(self) -> dict[str, Any]:
        return {
            "since": None if self.since is None else _iso(self.since),
            "total": self.total,
            "capped": self.capped,
            "networks": [n.to_json() for n in self.networks],
        }


def attempt_network(ip: str | None) -> str:
    """The network an attempt is reported under: IPv4 /24, IPv6 /64, or the
    text itself when it is no address ("unknown" for none)."""
    if not ip:
        return "unknown"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


# ------------------------------------------------------------------ queries


class AuditLog:
    """The audit query API over one ledger database."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def session_history(
        self,
        session_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[AuditEntry]:
        """Every event of one session, in order."""
        query = select(events).where(events.c.stream_id == _check_text(session_id, "session id"))
        return await self._entries(query, since, until, after, limit)

    async def user_history(
        self,
        user_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[AuditEntry]:
        """Every event of every session of one user (an unknown user: empty)."""
        query = select(events).where(events.c.user_id == _check_text(user_id, "user id"))
        return await self._entries(query, since, until, after, limit)

    async def revocations(
        self,
        *,
        reason: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[AuditEntry]:
        """SessionRevoked events, optionally of one reason and / or one actor."""
        query = select(events).where(events.c.type == "SessionRevoked")
        if reason is not None:
            query = query.where(events.c.data["reason"].as_string() == check_reason(reason))
        if actor is not None:
            query = query.where(events.c.data["actor"].as_string() == _check_text(actor, "actor"))
        return await self._entries(query, since, until, after, limit)

    async def sign_in_attempts(
        self,
        *,
        user_id: str | None = None,
        network: str | IpNetwork | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[AuditEntry]:
        """Failed sign-ins (SignInFailed), of one account and / or from one
        network (through the ``audit_ips`` index), in ledger order."""
        query = select(events).where(events.c.type == SIGN_IN_FAILED)
        if user_id is not None:
            query = query.where(events.c.user_id == _check_text(user_id, "user id"))
        if network is not None:
            low, high = network_key_range(
                parse_network(network) if isinstance(network, str) else network
            )
            query = query.join(audit_ips, audit_ips.c.position == events.c.position).where(
                audit_ips.c.ip_key.between(low, high)
            )
        return await self._entries(query, since, until, after, limit)

    async def failed_sign_ins_since_last_visit(
        self, user_id: str, current_session_id: str
    ) -> FailedSignIns:
        """The failed sign-ins on this account since the user's last visit:
        the latest activity of any of their sessions recorded before the
        current session began (none: since the account's first event)."""
        user_id = _check_text(user_id, "user id")
        pg = horizon.postgres(self.engine)
        xid = horizon.mark_column(pg=pg)
        async with self.engine.connect() as conn:
            began = (
                await conn.execute(
                    select(xid, events.c.position).where(
                        events.c.stream_id == _check_text(current_session_id, "session id"),
                        events.c.stream_version == 1,
                    )
                )
            ).first()
            last: Mark = horizon.ORIGIN
            visit = None
            if began is not None:
                # The user's latest visit before the current session, in
                # commit-safe order (ledger.horizon).
                before = (
                    select(xid, events.c.position, events.c.recorded_at)
                    .where(events.c.user_id == user_id)
                    .where(~horizon.after((int(began[0]), began[1]), pg=pg))
                    .where(events.c.stream_id != current_session_id)
                    .where(events.c.type.in_(VISIT_EVENT_TYPES))
                )
                if pg:
                    before = before.order_by(events.c.xid.desc(), events.c.position.desc())
                else:
                    before = before.order_by(events.c.position.desc())
                visit = (await conn.execute(before.limit(1))).first()
                if visit is not None:
                    last = (int(visit[0]), visit[1])
            query = horizon.ordered(
                select(events.c.position, events.c.recorded_at, events.c.data)
                .where(events.c.user_id == user_id)
                .where(events.c.type == SIGN_IN_FAILED)
                .where(horizon.after(last, pg=pg)),
                pg=pg,
            ).limit(MAX_SUMMARISED)
            rows = (await conn.execute(query)).all()
        networks: dict[str, NetworkAttempts] = {}
        for row in rows:
            name = attempt_network(row.data.get("ip"))
            at = utc(row.recorded_at)
            known = networks.get(name)
            networks[name] = NetworkAttempts(name, (known.count if known else 0) + 1, at)
        ranked = sorted(networks.values(), key=lambda n: (-n.count, n.network))
        return FailedSignIns(
            since=utc(visit.recorded_at) if visit is not None else None,
            total=len(rows),
            capped=len(rows) == MAX_SUMMARISED,
            networks=ranked,
        )

    async def ip_sightings(
        self,
        network: str | IpNetwork,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        after: int = 0,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[IpSighting]:
        """Events that saw a session at an address in ``network`` (an address: a /32 or /128)."""
        if isinstance(network, str):
            network = parse_network(network)
        low, high = network_key_range(network)
        query = (
            select(audit_ips)
            .where(audit_ips.c.ip_key.between(low, high))
            .where(audit_ips.c.position > _check_after(after))
        )
        query = _time_filter(query, audit_ips.c.recorded_at, since, until)
        query = query.order_by(audit_ips.c.position).limit(_check_limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [
            IpSighting(
                position=r.position,
                session_id=r.session_id,
                user_id=r.user_id,
                ip=r.ip,
                recorded_at=utc(r.recorded_at),
            )
            for r in rows
        ]
        return _page(items, limit, lambda s: s.position)

    async def active_at(
        self,
        at: datetime,
        *,
        user_id: str | None = None,
        after: int = 0,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[ActiveSession]:
        """Sessions active at ``at`` (of one user, or all), by creation position."""
        at = utc(at)
        limit = _check_limit(limit)
        cursor = _check_after(after)
        found: list[ActiveSession] = []
        async with self.engine.connect() as conn:
            while True:
                query = (
                    select(events.c.position, events.c.stream_id)
                    .where(events.c.type == "SessionCreated")
                    .where(events.c.position > cursor)
                    .where(events.c.recorded_at <= at)
                )
                if horizon.postgres(conn):
                    query = query.where(horizon.below_horizon())
                if user_id is not None:
                    query = query.where(events.c.user_id == _check_text(user_id, "user id"))
                query = query.order_by(events.c.position).limit(CANDIDATE_BATCH)
                candidates = (await conn.execute(query)).all()
                states = await _states_at(conn, [c.stream_id for c in candidates], at)
                for candidate in candidates:
                    state = states.get(candidate.stream_id)
                    if state is not None and is_active(state, at):
                        found.append(ActiveSession.of(candidate.position, state))
                        if len(found) == limit:
                            return Page(found, candidate.position)
                if len(candidates) < CANDIDATE_BATCH:
                    return Page(found, None)
                cursor = candidates[-1].position

    async def counts_per_day(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        types: list[str] | None = None,
    ) -> list[DailyCount]:
        """How many events of each type were recorded on each UTC day."""
        async with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                text = func.to_char(func.timezone("UTC", events.c.recorded_at), "YYYY-MM-DD")
            else:
                # SQLite stores UTC timestamps as 'YYYY-MM-DD HH:MM:SS.ffffff'.
                text = func.substr(events.c.recorded_at, 1, 10)
            day = text.label("day")
            query = select(day, events.c.type, func.count().label("n"))
            if types:
                query = query.where(events.c.type.in_([check_event_type(t) for t in types]))
            query = _time_filter(query, events.c.recorded_at, since, until)
            query = query.group_by(day, events.c.type).order_by(day, events.c.type)
            rows = (await conn.execute(query)).all()
        return [DailyCount(date.fromisoformat(r.day), r.type, int(r.n)) for r in rows]

    async def _entries(
        self,
        query: Select[Any],
        since: datetime | None,
        until: datetime | None,
        after: int,
        limit: int,
    ) -> Page[AuditEntry]:
        query = query.where(events.c.position > _check_after(after))
        query = _time_filter(query, events.c.recorded_at, since, until)
        query = query.order_by(events.c.position).limit(_check_limit(limit))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return _page([entry_from_row(r) for r in rows], limit, lambda e: e.position)


async def iterate(fetch: Callable[[int], Awaitable[Page[T]]], after: int = 0) -> AsyncIterator[T]:
    """Every item of a paginated query, one page in memory at a time.

    ``fetch(after)`` returns the page after ``after``, e.g.
    ``lambda a: audit.user_history(uid, after=a, limit=500)``.
    """
    cursor: int | None = after
    while cursor is not None:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        cursor = page.next_after


# ------------------------------------------------------------------ parsing

#: Positions are BIGINT: a larger bound would overflow the driver's encoding.
MAX_POSITION = 2**63 - 1

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_instant(text: str, now: datetime | None = None) -> datetime:
    """An instant from ISO 8601 (``2026-01-31``, ``2026-01-31T02:14:00Z``,
    offsets allowed, naive = UTC), ``now``, or an age like ``7d`` / ``12h``
    (that long before now)."""
    value = text.strip()
    reference = utc(now) if now is not None else datetime.now(UTC)
    if value.lower() == "now":
        return reference
    relative = _RELATIVE.match(value.lower())
    try:
        if relative:
            amount, unit = relative.groups()
            return reference - timedelta(**{_UNITS[unit]: int(amount)})
        parsed = datetime.fromisoformat(value)
        return utc(parsed)
    except OverflowError:
        # An age reaching before year 1, or an offset pushing a date past
        # year 1 / 9999 once in UTC.
        raise AuditQueryError(f"time out of range: {text[:64]!r}") from None
    except ValueError:
        raise AuditQueryError(
            f"not a time: {text[:64]!r} (use ISO 8601 like 2026-01-31T02:14:00Z, 'now' or 7d / 12h)"
        ) from None


def parse_network(text: str) -> IpNetwork:
    """An IP address (a /32 or /128) or a CIDR network such as ``10.1.2.0/24``."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise AuditQueryError(
            f"not an IP address or CIDR network: {text!r} (e.g. 203.0.113.7 or 203.0.113.0/24)"
        ) from None


def check_reason(reason: str) -> str:
    try:
        return RevocationReason(reason).value
    except ValueError:
        known = ", ".join(r.value for r in RevocationReason)
        raise AuditQueryError(f"unknown revocation reason {reason!r} (one of: {known})") from None


def check_event_type(event_type: str) -> str:
    if event_type not in EVENT_TYPES:
        raise AuditQueryError(f"unknown event type {event_type!r}")
    return event_type


# ------------------------------------------------------------------ helpers


def entry_from_row(row: Row[Any]) -> AuditEntry:
    data: dict[str, Any] = row.data
    meta: dict[str, Any] = row.meta
    return AuditEntry(
        position=row.position,
        session_id=row.stream_id,
        stream_version=row.stream_version,
        user_id=row.user_id,
        type=row.type,
        recorded_at=utc(row.recorded_at),
        actor=data.get("actor") or meta.get("actor") or "system",
        reason=data.get("reason"),
        ip=data.get("ip"),
        user_agent=data.get("user_agent"),
        request_id=meta.get("request_id"),
        correlation_id=meta.get("correlation_id"),
        data=data,
    )


async def _states_at(
    conn: AsyncConnection, stream_ids: list[str], at: datetime
) -> dict[str, SessionState]:
    """Each stream folded over its events recorded at or before ``at``."""
    if not stream_ids:
        return {}
    query = (
        select(
            events.c.stream_id,
            events.c.stream_version,
            events.c.type,
            events.c.schema_version,
            events.c.data,
        )
        .where(events.c.stream_id.in_(stream_ids))
        .where(events.c.recorded_at <= at)
        .order_by(events.c.stream_id, events.c.stream_version)
    )
    if horizon.postgres(conn):
        # Final events only: never a later event without an earlier one.
        query = query.where(horizon.below_horizon())
    states: dict[str, SessionState] = {}
    stopped: set[str] = set()
    for row in await conn.execute(query):
        if row.stream_id in stopped:
            continue
        state = states.get(row.stream_id)
        # Fold the prefix only: an event whose predecessor was recorded after
        # ``at`` (a clock that stepped back) did not exist yet at ``at``.
        if row.stream_version != (state.version + 1 if state else 1):
            stopped.add(row.stream_id)
            continue
        event = deserialize(row.type, row.schema_version, row.data)
        states[row.stream_id] = evolve(state, event)
    return states


def _time_filter(
    query: Select[Any], column: Any, since: datetime | None, until: datetime | None
) -> Select[Any]:
    # Both databases compare UTC: SQLite stores naive UTC text, so the bounds
    # must be UTC too before they are rendered the same way.
    if since is not None and until is not None and utc(since) > utc(until):
        raise AuditQueryError("since must not be after until")
    if since is not None:
        query = query.where(column >= utc(since))
    if until is not None:
        query = query.where(column < utc(until))
    return query


def _check_text(value: str, what: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here as bad input, not as a
    # database error. Anything else is just a value that matches nothing.
    if not isinstance(value, str) or "\x00" in value:
        raise AuditQueryError(f"{what} must be a string without NUL characters")
    return value


def _check_limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise AuditQueryError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def _check_after(after: int) -> int:
    if not isinstance(after, int) or not 0 <= after <= MAX_POSITION:
        raise AuditQueryError(f"after must be a position from 0 to {MAX_POSITION}")
    return after


def _page(items: list[T], limit: int, position: Callable[[T], int]) -> Page[T]:
    # A full page may be followed by more; a short one is the last.
    return Page(items, position(items[-1]) if len(items) == limit else None)


def _iso(instant: datetime) -> str:
    return utc(instant).isoformat().replace("+00:00", "Z")
