"""The session state machine: pure ``decide`` / ``evolve`` / ``fold``.

No I/O and no clock of its own: every decision takes ``now`` (timezone-aware)
and the :class:`~ledger.config.SessionPolicy`. A session is one event stream;
its :class:`SessionState` is the fold of its events.

Semantics
=========

Create
    ``expires_at = now + expires_in`` (``remember_me=False``: ``now +
    short_session_expires_in``); with ``max_lifetime`` set, ``max_expires_at =
    now + max_lifetime`` and ``expires_at`` is capped at it.
    ``created_at = authenticated_at = last_active_at = now``. Creating over an
    existing stream raises :class:`SessionAlreadyExistsError`.

Validity
    A session validates while it is active and ``now < expires_at`` (which is
    never later than ``max_expires_at``). Validation, in this order:

    1. no session: rejected ``not_found``; revoked / expired: rejected with
       that status, no events;
    2. a hash that is neither the current token, the previous one, nor a
       retired one: rejected ``unknown_token``, no events (guessing never
       causes a write);
    3. expiry due (``now >= expires_at``): ``SessionExpired`` (``absolute``
       when the deadline reached was the ``max_expires_at`` cap, else
       ``idle``), rejected ``expired``;
    4. the previous token after its grace window (``now >= grace_until``), or
       any older retired token: token reuse, ``SessionRevoked(token_reuse,
       actor="system")``, rejected ``token_reuse``;
    5. the current token: accepted, may refresh / rotate / touch; the previous
       token within its grace window: accepted, may touch, never refreshes or
       rotates (it is a request that raced the rotation).

Sliding refresh (on validation)
    When ``allow_refresh`` and ``remember_me`` and ``now >= expires_at -
    expires_in + update_age``: ``SessionRefreshed(expires_at = min(now +
    expires_in, max_expires_at))``, only when that moves ``expires_at``
    forward. With ``rotate_on_refresh`` and a pre-generated
    ``rotation_token_hash``, also ``SessionRotated`` whose previous token
    stays accepted until ``now + rotation_grace``. ``expires_at`` never moves
    backwards and never past the cap; ``remember_me=False`` sessions never
    slide.

Activity
    ``SessionTouched`` when ``now - last_active_at >= activity_interval`` (not
    when a refresh in the same decision already records the activity), or
    when the IP or user agent given differs from the state's (``None`` means
    "unknown", never a change). Created, Refreshed, Touched and
    Reauthenticated set ``last_active_at``; Touched also sets the IP / user
    agent given. Every event sets ``updated_at`` (BetterAuth's ``updatedAt``).
    IPs and user agents are cut to 1024 characters (the event limit): they
    come from request headers and must never make a request fail.

Commands on a live session
    * refresh: as the sliding refresh, without the ``update_age`` condition
      (still forward only, capped, and nothing for ``remember_me=False``);
    * rotate: ``SessionRotated`` with the grace window;
    * reauthenticate: ``SessionReauthenticated(authenticated_at=now)``;
      freshness restarts;
    * update: ``SessionUpdated`` merging JSON-valued fields into the existing
      ones (a ``None`` value stores JSON null, it does not delete the key);
      an empty update raises :class:`InvalidCommandError`.

    A session whose expiry is due but not yet recorded is dead: refresh,
    rotate, reauthenticate and update raise :class:`SessionEndedError` (the
    caller may then record the expiry with ``ExpireSession``).

Ending
    * revoke: ``SessionRevoked(reason, actor)``. Revoking an ended session is
      an idempotent no-op (``[]``): "sign out twice" succeeds. Revoking a
      session whose expiry is due records the truth, ``SessionExpired``.
    * expire: ``SessionExpired`` only when due, else ``[]`` (the expiry
      worker may race a refresh: it must skip, never end a live session);
      ``[]`` on an ended session (never ends twice).
    * Any other command on an ended session raises :class:`SessionEndedError`;
      any command but create / validate on no session raises
      :class:`SessionNotFoundError`.

Freshness
    ``fresh_age == 0``: always fresh; otherwise fresh while ``now -
    authenticated_at < fresh_age``. :func:`require_fresh` guards sensitive
    operations.

``evolve`` rejects events that cannot apply (a first event that is not
SessionCreated, anything after a terminal event, a rotation that does not
start from the current token, a refresh that moves ``expires_at`` backwards
or past its cap) with :class:`InvalidTransitionError`: the ledger must never
hold such a stream.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeVar, assert_never

from pydantic import BaseModel, JsonValue, ValidationError

from session_ledger.ledger.config import SessionPolicy
from session_ledger.ledger.errors import (
    InvalidCommandError,
    InvalidTokenError,
    InvalidTransitionError,
    SessionAlreadyExistsError,
    SessionEndedError,
    SessionNotFoundError,
    SessionNotFreshError,
)
from session_ledger.ledger.events import (
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
from session_ledger.ledger.tokens import tokens_equal

#: Longest IP / user agent kept (the events' ShortText limit).
MAX_TEXT = 1024
#: Deepest nesting accepted in additional fields (keeps recursion bounded).
MAX_FIELD_DEPTH = 32
SYSTEM_ACTOR = "system"

_HEX = frozenset("0123456789abcdef")


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


# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class CreateSession:
    session_id: str
    user_id: str
    token_hash: str
    ip: str | None = None
    user_agent: str | None = None
    remember_me: bool = True
    fields: Mapping[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ValidateSession:
    token_hash: str
    ip: str | None = None
    user_agent: str | None = None
    #: Hash of a pre-generated new token, used only if the decision rotates.
    rotation_token_hash: str | None = None
    allow_refresh: bool = True


@dataclass(frozen=True, slots=True)
class RefreshSession:
    rotation_token_hash: str | None = None


@dataclass(frozen=True, slots=True)
class RotateToken:
    new_token_hash: str


@dataclass(frozen=True, slots=True)
class Reauthenticate:
    pass


@dataclass(frozen=True, slots=True)
class UpdateFields:
    fields: Mapping[str, JsonValue]


@dataclass(frozen=True, slots=True)
class RevokeSession:
    reason: RevocationReason
    actor: str


@dataclass(frozen=True, slots=True)
class ExpireSession:
    pass


Command = (
    CreateSession
    | ValidateSession
    | RefreshSession
    | RotateToken
    | Reauthenticate
    | UpdateFields
    | RevokeSession
    | ExpireSession
)


@dataclass(frozen=True, slots=True)
class ValidationDecision:
    accepted: bool
    #: Why it was rejected: not_found, revoked, expired, token_reuse, unknown_token.
    reason: str | None
    events: list[Event]
    #: Whether the events rotate the token (the caller must send the new one).
    rotated: bool = False


# ------------------------------------------------------------------- helpers


def is_active(state: SessionState | None, now: datetime) -> bool:
    """Whether the session validates at ``now`` (ignoring which token is shown)."""
    return state is not None and not state.is_ended and _expiry_due(state, now) is None


def is_fresh(state: SessionState, now: datetime, policy: SessionPolicy) -> bool:
    """Fresh while ``now - authenticated_at < fresh_age``; ``fresh_age == 0``: always."""
    if policy.fresh_age == 0:
        return True
    return now - state.authenticated_at < _seconds(policy.fresh_age)


def require_fresh(state: SessionState, now: datetime, policy: SessionPolicy) -> None:
    """Raise :class:`SessionNotFreshError` unless the session is fresh."""
    if not is_fresh(state, now, policy):
        raise SessionNotFreshError("this operation needs a recent sign-in; authenticate again")


def _seconds(value: int) -> timedelta:
    return timedelta(seconds=value)


def _expiry_due(state: SessionState, now: datetime) -> ExpiryReason | None:
    """The reason the session is dead by time at ``now``, or None while it lives."""
    # expires_at never exceeds max_expires_at (create caps it, evolve checks),
    # so expires_at is the one deadline; it is "absolute" when it is the cap.
    if now < state.expires_at:
        return None
    capped = state.max_expires_at is not None and state.expires_at >= state.max_expires_at
    return ExpiryReason.ABSOLUTE if capped else ExpiryReason.IDLE


def _contains(hashes: Iterable[str], candidate: str) -> bool:
    # Constant-time per comparison and no early exit: the time taken does not
    # depend on where (or whether) the candidate is found.
    found = False
    for known in hashes:
        found |= tokens_equal(known, candidate)
    return found


def clip_text(text: str | None) -> str | None:
    # NUL (and lone surrogates) are dropped for the same reasons as in
    # _check_text, but silently: these come from request headers and must
    # never make a request fail.
    if text is None:
        return None
    return valid_unicode(text.replace("\x00", ""))[:MAX_TEXT]


def _check_hash(token_hash: str) -> str:
    if not (isinstance(token_hash, str) and len(token_hash) == 64 and set(token_hash) <= _HEX):
        raise InvalidTokenError("a token hash must be 64 lowercase hex characters (SHA-256)")
    return token_hash


def _check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidCommandError("now must be a timezone-aware datetime")


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_FIELD_DEPTH:
        raise InvalidCommandError(f"fields nest deeper than {MAX_FIELD_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
        return
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidCommandError("fields must be JSON values (no NaN or infinity)")
        return
    if isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidCommandError("field names must be strings")
            _check_text(key)
            _check_json(item, depth + 1)
        return
    raise InvalidCommandError(f"fields must be JSON values, not {type(value).__name__}")


def _check_text(text: str) -> None:
    # PostgreSQL cannot store NUL in text or JSONB, and a lone surrogate
    # (JSON's "\ud800") has no UTF-8 form at all, so neither the hash chain
    # nor any database could take it: refuse both here, as typed errors,
    # rather than let the append fail half way.
    if "\x00" in text:
        raise InvalidCommandError("fields must not contain NUL characters")
    if has_lone_surrogate(text):
        raise InvalidCommandError("fields must be valid Unicode (no lone surrogates)")


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` has no UTF-8 form (a surrogate code point on its own)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def valid_unicode(text: str) -> str:
    """``text`` with any lone surrogate replaced by U+FFFD."""
    if not has_lone_surrogate(text):
        return text
    # In a Python str a surrogate code point is always a lone one.
    return _SURROGATE.sub("\ufffd", text)


def _check_fields(fields: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    if not isinstance(fields, Mapping):
        raise InvalidCommandError("fields must be a JSON object")
    _check_json(fields)
    return copy.deepcopy(dict(fields)) if fields else {}


_E = TypeVar("_E", bound=BaseModel)


def _event(cls: type[_E], **data: Any) -> _E:
    """Build an event; bad command input becomes a typed error, never a crash."""
    try:
        return cls(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise InvalidCommandError(f"{cls.__name__}: {where}: {first['msg']}") from None


# ------------------------------------------------------------------- decide


def decide(
    state: SessionState | None, command: Command, now: datetime, policy: SessionPolicy
) -> list[Event]:
    """The events ``command`` produces at ``now``; raises a SessionError if illegal."""
    _check_now(now)
    if isinstance(command, ValidateSession):
        return decide_validation(state, command, now, policy).events
    if isinstance(command, CreateSession):
        return _create(state, command, now, policy)
    if state is None:
        raise SessionNotFoundError("no such session")
    if isinstance(command, RevokeSession):
        return _revoke(state, command, now)
    if isinstance(command, ExpireSession):
        return _expire(state, now)
    _require_live(state, now)
    match command:
        case RefreshSession():
            return _refresh(state, now, policy, command.rotation_token_hash)
        case RotateToken():
            return [_rotation(state, command.new_token_hash, now, policy)]
        case Reauthenticate():
            return [SessionReauthenticated(authenticated_at=now)]
        case UpdateFields():
            return _update(command, now)
        case _:
            assert_never(command)


def decide_validation(
    state: SessionState | None, command: ValidateSession, now: datetime, policy: SessionPolicy
) -> ValidationDecision:
    """Whether the token validates at ``now``, and the events that records."""
    _check_now(now)
    if command.rotation_token_hash is not None:
        _check_hash(command.rotation_token_hash)
    if state is None:
        return _rejected("not_found")
    if state.is_ended:
        return _rejected(state.status.value)

    presented = command.token_hash
    is_current = tokens_equal(state.token_hash, presented)
    # previous_token_hash is also in retired_token_hashes: "retired but in
    # grace" is the one retired hash still accepted.
    is_retired = _contains(state.retired_token_hashes, presented)
    is_previous = state.previous_token_hash is not None and tokens_equal(
        state.previous_token_hash, presented
    )
    in_grace = is_previous and state.grace_until is not None and now < state.grace_until
    if not (is_current or is_retired):
        return _rejected("unknown_token")

    due = _expiry_due(state, now)
    if due is not None:
        return _rejected("expired", [SessionExpired(expired_at=now, reason=due)])
    if not (is_current or in_grace):
        revoked = SessionRevoked(
            revoked_at=now, reason=RevocationReason.TOKEN_REUSE, actor=SYSTEM_ACTOR
        )
        return _rejected("token_reuse", [revoked])

    events: list[Event] = []
    if is_current and command.allow_refresh and refresh_due(state, now, policy):
        events = _refresh(state, now, policy, command.rotation_token_hash)
    touched = _touch(state, command, now, policy, refreshed=bool(events))
    if touched is not None:
        events.append(touched)
    rotated = any(isinstance(e, SessionRotated) for e in events)
    return ValidationDecision(accepted=True, reason=None, events=events, rotated=rotated)


def _rejected(reason: str, events: list[Event] | None = None) -> ValidationDecision:
    return ValidationDecision(accepted=False, reason=reason, events=events or [])


def _create(
    state: SessionState | None, command: CreateSession, now: datetime, policy: SessionPolicy
) -> list[Event]:
    if state is not None:
        raise SessionAlreadyExistsError(f"session {state.session_id!r} already exists")
    lifetime = policy.expires_in if command.remember_me else policy.short_session_expires_in
    expires_at = now + _seconds(lifetime)
    max_expires_at = None
    if policy.max_lifetime is not None:
        max_expires_at = now + _seconds(policy.max_lifetime)
        expires_at = min(expires_at, max_expires_at)
    created = _event(
        SessionCreated,
        session_id=command.session_id,
        user_id=command.user_id,
        token_hash=_check_hash(command.token_hash),
        created_at=now,
        expires_at=expires_at,
        authenticated_at=now,
        max_expires_at=max_expires_at,
        ip=clip_text(command.ip),
        user_agent=clip_text(command.user_agent),
        remember_me=command.remember_me,
        fields=_check_fields(command.fields),
    )
    return [created]


def _require_live(state: SessionState, now: datetime) -> None:
    if state.is_ended:
        raise SessionEndedError(f"session is {state.status.value}")
    if _expiry_due(state, now) is not None:
        raise SessionEndedError("session has expired")


def refresh_due(state: SessionState, now: datetime, policy: SessionPolicy) -> bool:
    """Whether validating the current token at ``now`` refreshes the session."""
    # BetterAuth's rule: expires_at - expires_in is when the session was last
    # (re)issued; refresh once update_age of that has passed.
    return now >= state.expires_at - _seconds(policy.expires_in) + _seconds(policy.update_age)


def _refresh(
    state: SessionState,
    now: datetime,
    policy: SessionPolicy,
    rotation_token_hash: str | None,
) -> list[Event]:
    """Refresh (and maybe rotate); ``[]`` when expires_at would not move forward."""
    if not state.remember_me:
        return []  # short sessions never slide (BetterAuth's rememberMe: false)
    new_expires_at = now + _seconds(policy.expires_in)
    if state.max_expires_at is not None:
        new_expires_at = min(new_expires_at, state.max_expires_at)
    if new_expires_at <= state.expires_at:
        return []
    events: list[Event] = [SessionRefreshed(refreshed_at=now, expires_at=new_expires_at)]
    if policy.rotate_on_refresh and rotation_token_hash is not None:
        events.append(_rotation(state, rotation_token_hash, now, policy))
    return events


def _rotation(
    state: SessionState, new_token_hash: str, now: datetime, policy: SessionPolicy
) -> SessionRotated:
    _check_hash(new_token_hash)
    if new_token_hash == state.token_hash or new_token_hash in state.retired_token_hashes:
        raise InvalidTokenError("the new token hash was already used by this session")
    return SessionRotated(
        rotated_at=now,
        token_hash=new_token_hash,
        previous_token_hash=state.token_hash,
        grace_until=now + _seconds(policy.rotation_grace),
    )


def _touch(
    state: SessionState,
    command: ValidateSession,
    now: datetime,
    policy: SessionPolicy,
    *,
    refreshed: bool,
) -> SessionTouched | None:
    ip, user_agent = clip_text(command.ip), clip_text(command.user_agent)
    moved = (ip is not None and ip != state.ip) or (
        user_agent is not None and user_agent != state.user_agent
    )
    # A refresh in the same decision already records the activity time.
    idle_long_enough = now - state.last_active_at >= _seconds(policy.activity_interval)
    if moved or (idle_long_enough and not refreshed):
        return SessionTouched(touched_at=now, ip=ip, user_agent=user_agent)
    return None


def _update(command: UpdateFields, now: datetime) -> list[Event]:
    fields = _check_fields(command.fields)
    if not fields:
        raise InvalidCommandError("update needs at least one field")
    return [_event(SessionUpdated, updated_at=now, fields=fields)]


def _revoke(state: SessionState, command: RevokeSession, now: datetime) -> list[Event]:
    if state.is_ended:
        return []  # idempotent: signing out twice is not an error
    try:
        reason = RevocationReason(command.reason)
    except ValueError:
        raise InvalidCommandError(f"unknown revocation reason {command.reason!r}") from None
    if not isinstance(command.actor, str) or not command.actor.strip():
        raise InvalidCommandError("revocation needs an actor")
    due = _expiry_due(state, now)
    if due is not None:
        # Already dead by time: record what really ended it.
        return [SessionExpired(expired_at=now, reason=due)]
    return [_event(SessionRevoked, revoked_at=now, reason=reason, actor=command.actor)]


def _expire(state: SessionState, now: datetime) -> list[Event]:
    due = None if state.is_ended else _expiry_due(state, now)
    # Not due (e.g. a refresh won the race with the expiry worker) or already
    # ended: nothing to record.
    return [] if due is None else [SessionExpired(expired_at=now, reason=due)]


# ------------------------------------------------------------------- evolve


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
    return MappingProxyType({**old, **copy.deepcopy(dict(new))})


_STATE_FIELDS = tuple(f.name for f in dataclass_fields(SessionState))


def _with(state: SessionState, changes: dict[str, Any]) -> SessionState:
    """``dataclasses.replace`` without its cost: replace re-checks the field
    names and runs ``__init__`` (one ``object.__setattr__`` per field of a
    frozen dataclass), and two replaces per event dominated replay profiles.
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
