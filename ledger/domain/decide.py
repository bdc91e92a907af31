"""The session state machine's decisions: pure ``decide``.

No I/O and no clock of its own: every decision takes ``now`` (timezone-aware)
and the :class:`~ledger.domain.policy.SessionPolicy`. A session is one event
stream; its :class:`~ledger.domain.state.SessionState` is the fold of its
events (:mod:`ledger.domain.state`); the rules shared with other layers
(refresh due, freshness, expiry, session ids) are in :mod:`ledger.domain.rules`.

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
    authenticated_at < fresh_age``. :func:`~ledger.domain.rules.require_fresh`
    guards sensitive operations.

"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, TypeVar, assert_never

from pydantic import BaseModel, JsonValue, ValidationError

from session_ledger.ledger.domain.errors import (
    InvalidCommandError,
    InvalidTokenError,
    SessionAlreadyExistsError,
    SessionEndedError,
    SessionNotFoundError,
)
from session_ledger.ledger.domain.events import (
    Event,
    RevocationReason,
    SessionCreated,
    SessionExpired,
    SessionReauthenticated,
    SessionRefreshed,
    SessionRevoked,
    SessionRotated,
    SessionTouched,
    SessionUpdated,
)
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.rules import expiry_due, refresh_due
from session_ledger.ledger.domain.state import SYSTEM_ACTOR, SessionState
from session_ledger.ledger.domain.tokens import tokens_equal
from session_ledger.ledger.domain.values import check_fields, check_hash, clip_text

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


def _contains(hashes: Iterable[str], candidate: str) -> bool:
    # Constant-time per comparison and no early exit: the time taken does not
    # depend on where (or whether) the candidate is found.
    found = False
    for known in hashes:
        found |= tokens_equal(known, candidate)
    return found


def _seconds(value: int) -> timedelta:
    return timedelta(seconds=value)


def _check_now(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidCommandError("now must be a timezone-aware datetime")


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
        check_hash(command.rotation_token_hash)
    if state is None:
        return _rejected("not_found")
    if state.is_ended:
        return _rejected(state.status.value)
    shown = _shown_token(state, command.token_hash, now)
    if shown is _Shown.UNKNOWN:
        return _rejected("unknown_token")
    due = expiry_due(state, now)
    if due is not None:
        return _rejected("expired", [SessionExpired(expired_at=now, reason=due)])
    if shown is _Shown.REUSED:
        revoked = SessionRevoked(
            revoked_at=now, reason=RevocationReason.TOKEN_REUSE, actor=SYSTEM_ACTOR
        )
        return _rejected("token_reuse", [revoked])
    return _accepted(state, command, now, policy, current=shown is _Shown.CURRENT)


class _Shown(Enum):
    """Which of the session's tokens a hash is."""

    CURRENT = "current"
    #: The previous token within its grace window (a request that raced the rotation).
    IN_GRACE = "in_grace"
    #: A retired token past its grace window, or an older one.
    REUSED = "reused"
    UNKNOWN = "unknown"


def _shown_token(state: SessionState, presented: str, now: datetime) -> _Shown:
    # Every comparison is made, whatever the answer (constant time).
    is_current = tokens_equal(state.token_hash, presented)
    # previous_token_hash is also in retired_token_hashes: "retired but in
    # grace" is the one retired hash still accepted.
    is_retired = _contains(state.retired_token_hashes, presented)
    is_previous = state.previous_token_hash is not None and tokens_equal(
        state.previous_token_hash, presented
    )
    if is_current:
        return _Shown.CURRENT
    if not is_retired:
        return _Shown.UNKNOWN
    in_grace = is_previous and state.grace_until is not None and now < state.grace_until
    return _Shown.IN_GRACE if in_grace else _Shown.REUSED


def _accepted(
    state: SessionState,
    command: ValidateSession,
    now: datetime,
    policy: SessionPolicy,
    *,
    current: bool,
) -> ValidationDecision:
    """An accepted token: may refresh (and rotate) when it is the current
    one, may record activity either way."""
    events: list[Event] = []
    if current and command.allow_refresh and refresh_due(state.expires_at, now, policy):
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
        token_hash=check_hash(command.token_hash),
        created_at=now,
        expires_at=expires_at,
        authenticated_at=now,
        max_expires_at=max_expires_at,
        ip=clip_text(command.ip),
        user_agent=clip_text(command.user_agent),
        remember_me=command.remember_me,
        fields=check_fields(command.fields),
    )
    return [created]


def _require_live(state: SessionState, now: datetime) -> None:
    if state.is_ended:
        raise SessionEndedError(f"session is {state.status.value}")
    if expiry_due(state, now) is not None:
        raise SessionEndedError("session has expired")


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
    check_hash(new_token_hash)
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
    fields = check_fields(command.fields)
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
    due = expiry_due(state, now)
    if due is not None:
        # Already dead by time: record what really ended it.
        return [SessionExpired(expired_at=now, reason=due)]
    return [_event(SessionRevoked, revoked_at=now, reason=reason, actor=command.actor)]


def _expire(state: SessionState, now: datetime) -> list[Event]:
    due = None if state.is_ended else expiry_due(state, now)
    # Not due (e.g. a refresh won the race with the expiry worker) or already
    # ended: nothing to record.
    return [] if due is None else [SessionExpired(expired_at=now, reason=due)]
