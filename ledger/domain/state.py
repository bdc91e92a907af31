"""A session's state: the fold of its events (pure ``evolve`` / ``fold``).

``evolve`` rejects events that cannot apply (a first event that is not
SessionCreated, anything after a terminal event, a rotation that does not
start from the current token, a refresh that moves ``expires_at`` backwards
or past its cap) with :class:`InvalidTransitionError`: the ledger must never
hold such a stream.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, assert_never

from pydantic import JsonValue

from session_ledger.ledger.domain.errors import InvalidTransitionError
from session_ledger.ledger.domain.events import (
    Event,
    ExpiryReason,
    RevocationReason,
    SessionCreated,
    SessionEvent,
    SessionExpired,
    SessionReauthenticated,
    SessionRefreshed,
    SessionRevoked,
    SessionRotated,
    SessionTouched,
    SessionUpdated,
    is_session_event,
)

#: Who ends a session when nobody asked (expiry, token reuse).
SYSTEM_ACTOR = "system"


class SessionStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class SessionState:
    """The fold of one session's events."""

    session_id: str
    user_id: str
    status: SessionStatus
    token_hash: str
    #: The token rotated out last; accepted while now < grace_until.
    previous_token_hash: str | None
    grace_until: datetime | None
    #: Every hash ever rotated out (including previous_token_hash): reuse detection.
    retired_token_hashes: frozenset[str]
    created_at: datetime
    expires_at: datetime
    authenticated_at: datetime
    max_expires_at: datetime | None
    last_active_at: datetime
    #: When the session last changed: the time of the last event (BetterAuth's updatedAt).
    updated_at: datetime
    ip: str | None
    user_agent: str | None
    remember_me: bool
    #: Additional fields, read-only.
    fields: Mapping[str, JsonValue]
    #: Number of events folded = the stream version.
    version: int
    ended_at: datetime | None = None
    #: The RevocationReason or ExpiryReason value.
    end_reason: str | None = None
    ended_by: str | None = None

    @property
    def is_ended(self) -> bool:
        return self.status is not SessionStatus.ACTIVE


def evolve(state: SessionState | None, event: Event) -> SessionState:
    """Apply one event; raises InvalidTransitionError if it cannot follow ``state``."""
    if isinstance(event, SessionCreated):
        if state is not None:
            raise InvalidTransitionError("SessionCreated on an existing session")
        return _created(event)
    if state is None:
        raise InvalidTransitionError(f"a session stream cannot start with {event.type}")
    if not is_session_event(event):
        raise InvalidTransitionError(f"{event.type} is not a session event")
    if state.is_ended:
        raise InvalidTransitionError(f"{event.type} after the session ended ({state.status})")
    changes = _apply(state, event)
    changes["version"] = state.version + 1
    changes["updated_at"] = _occurred_at(event)
    return _with(state, changes)


def fold(events: Iterable[Event]) -> SessionState | None:
    """The state after ``events`` (None for an empty stream)."""
    state: SessionState | None = None
    for event in events:
        state = evolve(state, event)
    return state


def _created(event: SessionCreated) -> SessionState:
    if event.max_expires_at is not None and event.expires_at > event.max_expires_at:
        raise InvalidTransitionError("SessionCreated with expires_at past its cap")
    return SessionState(
        session_id=event.session_id,
        user_id=event.user_id,
        status=SessionStatus.ACTIVE,
        token_hash=event.token_hash,
        previous_token_hash=None,
        grace_until=None,
        retired_token_hashes=frozenset(),
        created_at=event.created_at,
        expires_at=event.expires_at,
        authenticated_at=event.authenticated_at,
        max_expires_at=event.max_expires_at,
        last_active_at=event.created_at,
        updated_at=event.created_at,
        ip=event.ip,
        user_agent=event.user_agent,
        remember_me=event.remember_me,
        fields=_frozen_fields({}, event.fields),
        version=1,
    )


def _frozen_fields(
    old: Mapping[str, JsonValue], new: Mapping[str, JsonValue]
) -> Mapping[str, JsonValue]:
    # Deep copy: the state must not alias the (mutable) dicts inside events.
    if not new:  # the common case (a sign-in without fields): nothing to copy
        return MappingProxyType(dict(old))
    return MappingProxyType({**old, **{key: _json_copy(value) for key, value in new.items()}})


_SCALARS = (str, int, float, bool, type(None))


def _json_copy(value: Any) -> Any:
    """``copy.deepcopy`` for JSON values, without its memo (fold runs it for
    every event that carries fields); anything else is deep-copied as usual."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    if kind is list:
        return [_json_copy(item) for item in value]
    return copy.deepcopy(value)


_STATE_FIELDS = tuple(f.name for f in dataclass_fields(SessionState))


def _with(state: SessionState, changes: dict[str, Any]) -> SessionState:
    """``dataclasses.replace`` without its cost: replace re-checks the field
    names and runs ``__init__`` (one ``object.__setattr__`` per field of a
    frozen dataclass), and ``evolve`` runs for every event of every replay.
    The changes come from this module only, so copying the slots is safe."""
    new = object.__new__(SessionState)
    for name in _STATE_FIELDS:
        object.__setattr__(new, name, changes[name] if name in changes else getattr(state, name))
    return new


def _apply(state: SessionState, event: SessionEvent) -> dict[str, Any]:
    """The fields ``event`` changes."""
    match event:
        case SessionRefreshed():
            return _refreshed(state, event)
        case SessionRotated():
            return _rotated(state, event)
        case SessionTouched():
            return {
                "last_active_at": event.touched_at,
                "ip": event.ip if event.ip is not None else state.ip,
                "user_agent": event.user_agent
                if event.user_agent is not None
                else state.user_agent,
            }
        case SessionUpdated():
            return {"fields": _frozen_fields(state.fields, event.fields)}
        case SessionReauthenticated():
            at = event.authenticated_at
            return {"authenticated_at": at, "last_active_at": at}
        case SessionRevoked():
            return _ended(state, SessionStatus.REVOKED, event.revoked_at, event.reason, event.actor)
        case SessionExpired():
            return _ended(state, SessionStatus.EXPIRED, event.expired_at, event.reason)
        case SessionCreated():  # handled by evolve; here for exhaustiveness
            raise InvalidTransitionError("SessionCreated on an existing session")
        case _:
            assert_never(event)


def _occurred_at(event: SessionEvent) -> datetime:
    match event:
        case SessionCreated():
            return event.created_at
        case SessionRefreshed():
            return event.refreshed_at
        case SessionRotated():
            return event.rotated_at
        case SessionTouched():
            return event.touched_at
        case SessionUpdated():
            return event.updated_at
        case SessionReauthenticated():
            return event.authenticated_at
        case SessionRevoked():
            return event.revoked_at
        case SessionExpired():
            return event.expired_at
        case _:
            assert_never(event)


def _refreshed(state: SessionState, event: SessionRefreshed) -> dict[str, Any]:
    if event.expires_at < state.expires_at:
        raise InvalidTransitionError("SessionRefreshed would move expires_at backwards")
    if state.max_expires_at is not None and event.expires_at > state.max_expires_at:
        raise InvalidTransitionError("SessionRefreshed would move expires_at past its cap")
    return {"expires_at": event.expires_at, "last_active_at": event.refreshed_at}


def _rotated(state: SessionState, event: SessionRotated) -> dict[str, Any]:
    if event.previous_token_hash != state.token_hash:
        raise InvalidTransitionError("SessionRotated does not start from the current token")
    if event.token_hash == state.token_hash or event.token_hash in state.retired_token_hashes:
        raise InvalidTransitionError("SessionRotated reuses a token hash of this session")
    return {
        "token_hash": event.token_hash,
        "previous_token_hash": event.previous_token_hash,
        "grace_until": event.grace_until,
        "retired_token_hashes": state.retired_token_hashes | {event.previous_token_hash},
    }


def _ended(
    state: SessionState,
    status: SessionStatus,
    at: datetime,
    reason: RevocationReason | ExpiryReason,
    actor: str = SYSTEM_ACTOR,
) -> dict[str, Any]:
    return {"status": status, "ended_at": at, "end_reason": reason.value, "ended_by": actor}
