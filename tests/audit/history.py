"""Generated session histories for the audit tests: hypothesis steps that
drive the real SessionLedger, and a small reference model of what the
ledger must then answer.

The policy keeps the model simple: no sliding refresh (update_age equals
expires_in, so a refresh could only fall due once the session has expired),
activity recorded on every validation (activity_interval 0), so every
accepted validation is one SessionTouched carrying the request's IP.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.audit import Page, iterate
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.events import RevocationReason
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.service import RequestContext, SessionLedger
from session_ledger.ledger.store import EventStore
from session_ledger.projections.audit_ips import AuditIpProjection
from session_ledger.projections.session_table import SessionTableProjection, SqlSessionReadModel

T = TypeVar("T")
HOUR = 3600
POLICY = SessionPolicy(
    expires_in=4 * HOUR,
    update_age=4 * HOUR,
    short_session_expires_in=HOUR,
    activity_interval=0,
    rotate_on_refresh=False,
    fresh_age=0,
)
IPS = ["10.0.0.1", "10.0.0.2", "10.0.1.7", "192.168.5.5", "2001:db8::1", "::ffff:10.0.0.9"]
NETWORKS = ["10.0.0.0/24", "10.0.0.0/16", "10.0.0.1", "2001:db8::/32", "0.0.0.0/0", "172.16.0.0/12"]
REASONS = [RevocationReason.REVOKED, RevocationReason.ADMIN, RevocationReason.TOKEN_REUSE]
ADMIN_ACTOR = "admin:root"
#: Each example lives in its own stretch of time, far from the others, so
#: many examples can share one database (queries are bounded to the window).
WINDOW = timedelta(days=1000)
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


def make_ledger(
    engine: AsyncEngine, clock: ManualClock, policy: SessionPolicy = POLICY
) -> SessionLedger:
    store = EventStore(
        engine, clock=clock, inline_projections=[SessionTableProjection(), AuditIpProjection()]
    )
    return SessionLedger(
        store=store, read_model=SqlSessionReadModel(engine), policy=policy, clock=clock
    )


users = st.integers(0, 2)
sessions = st.integers(0, 30)
ips = st.integers(0, len(IPS) - 1)
step = st.one_of(
    st.tuples(st.just("create"), users, ips, st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from([1, 60, 1800, HOUR, 5 * HOUR, 20 * HOUR])),
    st.tuples(st.just("validate"), sessions, ips),
    st.tuples(st.just("revoke"), sessions, st.sampled_from(REASONS), st.booleans()),
    st.tuples(st.just("sign_out"), sessions),
    st.tuples(st.just("revoke_all"), users),
)
histories = st.lists(step, min_size=1, max_size=30)


@dataclass
class ModelSession:
    session_id: str
    user_id: str
    token: str
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None

    def active_at(self, at: datetime) -> bool:
        ended = self.ended_at is not None and at >= self.ended_at
        return self.created_at <= at < self.expires_at and not ended


@dataclass(frozen=True)
class ModelEvent:
    at: datetime
    session_id: str
    user_id: str
    type: str
    ip: str | None = None
    reason: str | None = None
    actor: str | None = None


@dataclass
class Model:
    """What the ledger holds after the steps, kept independently of it."""

    sessions: list[ModelSession] = field(default_factory=list)
    events: list[ModelEvent] = field(default_factory=list)

    def active(self, at: datetime, user_id: str | None = None) -> set[str]:
        return {
            s.session_id
            for s in self.sessions
            if s.active_at(at) and (user_id is None or s.user_id == user_id)
        }

    def sightings(self, network: str) -> list[tuple[str, str]]:
        net = ipaddress.ip_network(network, strict=False)
        return [
            (e.session_id, e.ip)
            for e in self.events
            if e.ip is not None and _normalised(e.ip) in net
        ]

    def counts(self) -> Counter[tuple[date, str]]:
        return Counter((e.at.date(), e.type) for e in self.events)


def _normalised(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


async def play(
    ledger: SessionLedger, clock: ManualClock, steps: list[tuple[object, ...]], prefix: str
) -> Model:
    """Run ``steps`` against the real ledger, recording what must happen in a Model."""
    model = Model()

    def end(s: ModelSession, type_: str, **extra: str | None) -> None:
        s.ended_at = clock.now()
        model.events.append(ModelEvent(clock.now(), s.session_id, s.user_id, type_, **extra))

    def due(s: ModelSession) -> bool:
        return clock.now() >= s.expires_at

    for kind, *args in steps:
        now = clock.now()
        if kind == "create":
            user, ip, remember = args
            assert isinstance(user, int)
            assert isinstance(ip, int)
            assert isinstance(remember, bool)
            user_id = f"{prefix}u{user}"
            view, token = await ledger.create_session(
                user_id, RequestContext(ip=IPS[ip], user_agent="pytest"), remember_me=remember
            )
            life = POLICY.expires_in if remember else POLICY.short_session_expires_in
            model.sessions.append(
                ModelSession(view.id, user_id, token, now, now + timedelta(seconds=life))
            )
            model.events.append(ModelEvent(now, view.id, user_id, "SessionCreated", ip=IPS[ip]))
        elif kind == "advance":
            (seconds,) = args
            assert isinstance(seconds, int)
            clock.advance(seconds)
        elif not model.sessions and kind in ("validate", "revoke", "sign_out"):
            continue
        elif kind == "validate":
            index, ip = args
            assert isinstance(index, int)
            assert isinstance(ip, int)
            s = model.sessions[index % len(model.sessions)]
            result = await ledger.get_session(s.token, RequestContext(ip=IPS[ip]))
            assert (result is not None) == s.active_at(now)
            if s.ended_at is None and due(s):
                end(s, "SessionExpired", reason="idle")
            elif s.active_at(now):
                model.events.append(
                    ModelEvent(now, s.session_id, s.user_id, "SessionTouched", ip=IPS[ip])
                )
        elif kind == "revoke":
            index, reason, admin = args
            assert isinstance(index, int)
            assert isinstance(reason, RevocationReason)
            s = model.sessions[index % len(model.sessions)]
            actor = ADMIN_ACTOR if admin else f"user:{s.user_id}"
            ctx = RequestContext(actor=ADMIN_ACTOR if admin else None)
            await ledger.revoke_session(s.user_id, s.session_id, ctx, reason=reason)
            if s.ended_at is None:
                if due(s):
                    end(s, "SessionExpired", reason="idle")
                else:
                    end(s, "SessionRevoked", reason=reason.value, actor=actor)
        elif kind == "sign_out":
            (index,) = args
            assert isinstance(index, int)
            s = model.sessions[index % len(model.sessions)]
            await ledger.sign_out(s.token)
            if s.ended_at is None:
                if due(s):
                    end(s, "SessionExpired", reason="idle")
                else:
                    end(s, "SessionRevoked", reason="sign_out", actor=f"user:{s.user_id}")
        elif kind == "revoke_all":
            (user,) = args
            user_id = f"{prefix}u{user}"
            await ledger.revoke_all_sessions(user_id)
            for s in model.sessions:
                if s.user_id == user_id and s.active_at(now):
                    end(s, "SessionRevoked", reason="revoked_all", actor=f"user:{user_id}")
    return model


async def collect(fetch: Callable[..., Awaitable[Page[T]]], *args: Any, **kwargs: Any) -> list[T]:
    """Every item of a paginated audit query, page by page."""
    return [item async for item in iterate(lambda after: fetch(*args, after=after, **kwargs))]
