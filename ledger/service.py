"""SessionLedger: the framework-free session API (BetterAuth's ``auth.api``
for sessions). Commands read the current state through the read-model port,
let the pure state machine decide, and append the resulting events with
optimistic concurrency; on a conflict they re-read and decide again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from uuid6 import uuid7

from session_ledger.ledger.clock import Clock, SystemClock, iso_ms
from session_ledger.ledger.devices import describe_device
from session_ledger.ledger.domain.decide import (
    CreateSession,
    Reauthenticate,
    RevokeSession,
    UpdateFields,
    ValidateSession,
    decide,
    decide_validation,
)
from session_ledger.ledger.domain.errors import (
    ConcurrencyError,
    InvalidCommandError,
    InvalidFieldsError,
    SessionNotFoundError,
)
from session_ledger.ledger.domain.events import Event, EventMetadata, Fields, RevocationReason
from session_ledger.ledger.domain.ids import is_session_id
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.rules import is_fresh, refresh_due, require_fresh
from session_ledger.ledger.domain.state import SessionState, evolve
from session_ledger.ledger.domain.tokens import hash_token, is_well_formed, new_token
from session_ledger.ledger.domain.values import has_lone_surrogate
from session_ledger.ledger.ports import SessionReadModel, UserRecord, UserStore
from session_ledger.ledger.retry import retry_on_conflict
from session_ledger.ledger.store import EventStore, StreamAppend

MAX_FIELDS_BYTES = 8 * 1024

Payload = dict[str, Any]
SessionCallback = Callable[[Payload], Awaitable[Payload]]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where a command comes from: recorded in event metadata and sessions."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    correlation_id: str | None = None
    #: Who acts; defaults to ``user:<id>`` of the session's owner.
    actor: str | None = None


NO_CONTEXT = RequestContext()


@dataclass(frozen=True, slots=True)
class SessionView:
    """A session as callers see it (never its token hash)."""

    id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime
    authenticated_at: datetime
    last_active_at: datetime
    ip: str | None
    user_agent: str | None
    device: str
    remember_me: bool
    fields: Mapping[str, Any]
    fresh: bool
    current: bool = False

    @classmethod
    def of(
        cls, state: SessionState, now: datetime, policy: SessionPolicy, current: bool = False
    ) -> SessionView:
        return cls(
            id=state.session_id,
            user_id=state.user_id,
            created_at=state.created_at,
            updated_at=state.updated_at,
            expires_at=state.expires_at,
            authenticated_at=state.authenticated_at,
            last_active_at=state.last_active_at,
            ip=state.ip,
            user_agent=state.user_agent,
            device=describe_device(state.user_agent),
            remember_me=state.remember_me,
            fields=dict(state.fields),
            fresh=is_fresh(state.authenticated_at, now, policy),
            current=current,
        )


@dataclass(frozen=True, slots=True)
class ValidatedSession:
    session: SessionView
    #: The token the client must hold from now on (a new one when rotated).
    token: str
    rotated: bool = False
    refreshed: bool = False


@dataclass
class SessionLedger:
    store: EventStore
    read_model: SessionReadModel
    policy: SessionPolicy = field(default_factory=SessionPolicy)
    clock: Clock = field(default_factory=SystemClock)
    users: UserStore | None = None
    #: The spec's ``callbacks.session``: extends the ``{session, user}`` payload.
    session_callback: SessionCallback | None = None
    store_tokens: bool = False

    # ------------------------------------------------------------- sign-in

    async def create_session(
        self,
        user_id: str,
        ctx: RequestContext = NO_CONTEXT,
        *,
        remember_me: bool = True,
        fields: Fields | None = None,
    ) -> tuple[SessionView, str]:
        """Start a session; returns it with its token (the only time it exists)."""
        if not user_id or len(user_id) > 128 or "\x00" in user_id or has_lone_surrogate(user_id):
            raise InvalidCommandError(
                "user id must be 1-128 characters, without NUL or lone surrogates"
            )
        _check_fields(fields or {}, allow_empty=True)
        fields = {**self.policy.field_defaults, **(fields or {})}
        self._check_declared(fields)
        token = new_token()
        session_id = str(uuid7())
        now = self.clock.now()
        command = CreateSession(
            session_id=session_id,
            user_id=user_id,
            token_hash=hash_token(token),
            ip=ctx.ip,
            user_agent=ctx.user_agent,
            remember_me=remember_me,
            fields=dict(fields or {}),
        )
        events = decide(None, command, now, self.policy)
        await self.store.append(
            session_id, 0, events, metadata=_meta(ctx, user_id), user_id=user_id
        )
        state = _fold_onto(None, events)
        return SessionView.of(state, now, self.policy, current=True), token

    # ---------------------------------------------------------- validation

    async def get_session(
        self, token: str, ctx: RequestContext = NO_CONTEXT, *, disable_refresh: bool = False
    ) -> ValidatedSession | None:
        """Validate ``token``; may refresh, rotate or touch the session.

        Returns None for any token that does not name a live session (never
        raises for bad input). Token reuse revokes the session first.
        """
        if not is_well_formed(token):
            return None
        token_hash = hash_token(token)

        def attempt(fresh: bool) -> Awaitable[ValidatedSession | None]:
            return self._validate(token, token_hash, ctx, fresh=fresh, refresh=not disable_refresh)

        return await retry_on_conflict(attempt, token_hash)

    async def _validate(
        self, token: str, token_hash: str, ctx: RequestContext, *, fresh: bool, refresh: bool
    ) -> ValidatedSession | None:
        """One attempt of :meth:`get_session` (a ConcurrencyError: someone
        else moved the session on, try again)."""
        state = await self.read_model.by_token_hash(token_hash, fresh=fresh)
        if state is None:
            return None
        now = self.clock.now()
        # A new token only when this validation may rotate (rare): the OS
        # random source and a hash cost every request otherwise.
        candidate = new_token() if refresh_due(state.expires_at, now, self.policy) else None
        command = ValidateSession(
            token_hash=token_hash,
            ip=ctx.ip,
            user_agent=ctx.user_agent,
            rotation_token_hash=hash_token(candidate) if candidate else None,
            allow_refresh=refresh,
        )
        decision = decide_validation(state, command, now, self.policy)
        if decision.events:
            await self._append(state, decision.events, ctx)
            state = _fold_onto(state, decision.events)
        if not decision.accepted:
            return None
        return ValidatedSession(
            session=SessionView.of(state, now, self.policy, current=True),
            token=candidate if decision.rotated and candidate else token,
            rotated=decision.rotated,
            refreshed=any(e.type == "SessionRefreshed" for e in decision.events),
        )

    async def ended_reason(self, token: str) -> str | None:
        """Why the session ``token`` names has ended (a RevocationReason or
        ExpiryReason value), or None: no such session, or it is live.

        For a client told "no session" to say why ("ended from another
        device"); reads only, writes nothing, never raises for bad input.
        """
        if not is_well_formed(token):
            return None
        state = await self.read_model.by_token_hash(hash_token(token))
        if state is None or not state.is_ended:
            return None
        return state.end_reason

    async def get_session_payload(
        self, token: str, ctx: RequestContext = NO_CONTEXT, *, disable_refresh: bool = False
    ) -> tuple[Payload, ValidatedSession] | None:
        """``{session, user}`` (plus ``accounts`` with store_tokens), after the
        session callback; None when there is no live session or no such user."""
        validated = await self.get_session(token, ctx, disable_refresh=disable_refresh)
        if validated is None:
            return None
        payload = await self.payload(validated)
        return None if payload is None else (payload, validated)

    async def payload(self, validated: ValidatedSession) -> Payload | None:
        user = await self._user(validated.session.user_id)
        if user is None:
            return None
        payload: Payload = {
            "session": session_json(validated.session, validated.token),
            "user": user_json(user),
        }
        if self.store_tokens and self.users is not None:
            accounts = await self.users.get_accounts(user.id)
            payload["accounts"] = {
                a.provider_id: {
                    "access_token": a.access_token,
                    "refresh_token": a.refresh_token,
                    "id_token": a.id_token,
                    "token_type": a.token_type,
                    "scope": a.scope,
                    "expires_at": a.expires_at,
                }
                for a in accounts
            }
        if self.session_callback is not None:
            payload = await self.session_callback(payload)
        return payload

    def require_fresh(self, session: SessionView) -> None:
        """Raise SessionNotFreshError unless ``session`` is fresh now."""
        require_fresh(session.authenticated_at, self.clock.now(), self.policy)

    # ------------------------------------------------------------- queries

    async def list_sessions(
        self, user_id: str, current_session_id: str | None = None
    ) -> list[SessionView]:
        """Active sessions of the user, most recently active first."""
        now = self.clock.now()
        states = await self.read_model.active_for_user(user_id, now)
        return [
            SessionView.of(s, now, self.policy, current=s.session_id == current_session_id)
            for s in states
        ]

    # ------------------------------------------------------------- changes

    async def update_session(
        self, token: str, fields: Fields, ctx: RequestContext = NO_CONTEXT
    ) -> SessionView:
        _check_fields(fields, allow_empty=False)
        self._check_declared(fields)
        return await self._command_by_token(token, UpdateFields(fields=dict(fields)), ctx)

    def _check_declared(self, fields: Mapping[str, Any]) -> None:
        """Declared fields must have their declared type. Server code may set
        fields that are not declared (clients may not: see the HTTP layer)."""
        declared = self.policy.additional_fields
        for name, value in fields.items():
            spec = declared.get(name)
            if spec is not None and not spec.accepts(value):
                raise InvalidFieldsError(f"field {name!r} must be a {spec.type} or null")

    async def reauthenticate(self, token: str, ctx: RequestContext = NO_CONTEXT) -> SessionView:
        return await self._command_by_token(token, Reauthenticate(), ctx)

    # ---------------------------------------------------------- revocation

    async def sign_out(self, token: str, ctx: RequestContext = NO_CONTEXT) -> bool:
        """Revoke the session this token belongs to. False when there is none."""

        async def attempt(fresh: bool) -> bool:
            state = await self._live_state(token, ctx, fresh=fresh)
            if state is None:
                return False
            return await self._revoke([state], RevocationReason.SIGN_OUT, ctx) > 0

        return await retry_on_conflict(attempt, token)

    async def revoke_session(
        self,
        user_id: str,
        session_id: str,
        ctx: RequestContext = NO_CONTEXT,
        *,
        reason: RevocationReason = RevocationReason.REVOKED,
    ) -> bool:
        """Revoke one of the user's sessions. False when it had already ended."""
        return await self.revoke_sessions(user_id, [session_id], ctx, reason=reason) > 0

    async def revoke_session_by_id_or_token(
        self, user_id: str, id_or_token: str, ctx: RequestContext = NO_CONTEXT
    ) -> str | None:
        """BetterAuth's revoke-session: ``id_or_token`` is one of the user's
        session ids (what list_sessions hands out) or a raw token of one of
        the user's sessions (what a client holds). Returns the id of the
        session revoked (or already ended), or None when nothing of the
        user's matches: then nothing is written, and an unknown value and
        another user's answer alike."""
        state: SessionState | None = None
        if is_session_id(id_or_token):
            owned = [s for s in await self.read_model.by_ids([id_or_token]) if s.user_id == user_id]
            state = owned[0] if owned else None
        if state is None and is_well_formed(id_or_token):
            found = await self.read_model.by_token_hash(hash_token(id_or_token))
            state = found if found is not None and found.user_id == user_id else None
        if state is None:
            return None
        try:
            await self.revoke_session(user_id, state.session_id, ctx)
        except SessionNotFoundError:
            return None
        return state.session_id

    async def revoke_sessions(
        self,
        user_id: str,
        session_ids: Sequence[str],
        ctx: RequestContext = NO_CONTEXT,
        *,
        reason: RevocationReason = RevocationReason.REVOKED,
    ) -> int:
        """Revoke exactly these sessions of the user, in one transaction.

        Any id that is unknown or belongs to someone else rejects the whole
        request (SessionNotFoundError; the same error for both, so that ids
        cannot be probed) and nothing is appended.
        """
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            raise InvalidCommandError("no session ids given")
        for sid in ids:
            if not is_session_id(sid):
                raise SessionNotFoundError("no such session")

        async def attempt(_fresh: bool) -> int:
            # by_ids reads the store (never a cache): every attempt is fresh.
            states = await self.read_model.by_ids(ids)
            owned = {s.session_id: s for s in states if s.user_id == user_id}
            missing = [sid for sid in ids if sid not in owned]
            if missing:
                raise SessionNotFoundError(f"no session {missing[0]!r} for this user")
            return await self._revoke(list(owned.values()), reason, ctx)

        return await retry_on_conflict(attempt, user_id)

    async def revoke_other_sessions(
        self, user_id: str, current_session_id: str, ctx: RequestContext = NO_CONTEXT
    ) -> int:
        return await self._revoke_where(
            user_id, RevocationReason.REVOKED_OTHERS, ctx, keep=current_session_id
        )

    async def revoke_all_sessions(
        self,
        user_id: str,
        ctx: RequestContext = NO_CONTEXT,
        *,
        reason: RevocationReason = RevocationReason.REVOKED_ALL,
    ) -> int:
        return await self._revoke_where(user_id, reason, ctx)

    # ------------------------------------------------------------- helpers

    async def _revoke_where(
        self, user_id: str, reason: RevocationReason, ctx: RequestContext, keep: str | None = None
    ) -> int:
        async def attempt(_fresh: bool) -> int:
            # active_for_user reads the store (never a cache).
            states = await self.read_model.active_for_user(user_id, self.clock.now())
            targets = [s for s in states if s.session_id != keep]
            if not targets:
                return 0
            return await self._revoke(targets, reason, ctx)

        return await retry_on_conflict(attempt, user_id)

    async def _revoke(
        self, states: Sequence[SessionState], reason: RevocationReason, ctx: RequestContext
    ) -> int:
        """One transaction revoking every given session that is still live."""
        now = self.clock.now()
        appends = []
        for state in states:
            actor = ctx.actor or f"user:{state.user_id}"
            events = decide(state, RevokeSession(reason=reason, actor=actor), now, self.policy)
            if events:
                appends.append(StreamAppend(state.session_id, state.version, events, state.user_id))
        if appends:
            await self.store.append_batch(appends, metadata=_meta(ctx, states[0].user_id))
        return len(appends)

    async def _live_state(
        self, token: str, ctx: RequestContext, *, fresh: bool = False
    ) -> SessionState | None:
        """The live session of ``token`` without refreshing it; a dead or reused
        token records what validation found (expiry, reuse) and gives None."""
        if not is_well_formed(token):
            return None
        token_hash = hash_token(token)
        state = await self.read_model.by_token_hash(token_hash, fresh=fresh)
        if state is None:
            return None
        decision = decide_validation(
            state,
            ValidateSession(token_hash=token_hash, allow_refresh=False),
            self.clock.now(),
            self.policy,
        )
        if decision.accepted:
            return state
        if decision.events:
            # A ConcurrencyError means another request recorded the end first.
            with contextlib.suppress(ConcurrencyError):
                await self._append(state, decision.events, ctx)
        return None

    async def _command_by_token(
        self, token: str, command: UpdateFields | Reauthenticate, ctx: RequestContext
    ) -> SessionView:
        async def attempt(fresh: bool) -> SessionView:
            state = await self._live_state(token, ctx, fresh=fresh)
            if state is None:
                raise SessionNotFoundError("no live session for this token")
            now = self.clock.now()
            events = decide(state, command, now, self.policy)
            await self._append(state, events, ctx)
            return SessionView.of(_fold_onto(state, events), now, self.policy, current=True)

        return await retry_on_conflict(attempt, token)

    async def _append(
        self, state: SessionState, events: Sequence[Event], ctx: RequestContext
    ) -> None:
        await self.store.append(
            state.session_id,
            state.version,
            events,
            metadata=_meta(ctx, state.user_id),
            user_id=state.user_id,
        )

    async def _user(self, user_id: str) -> UserRecord | None:
        if self.users is None:
            return UserRecord(id=user_id, email="")
        return await self.users.get_user(user_id)


# ------------------------------------------------------------------ helpers


def _fold_onto(state: SessionState | None, events: Sequence[Event]) -> SessionState:
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


def _meta(ctx: RequestContext, user_id: str) -> EventMetadata:
    return EventMetadata(
        actor=ctx.actor or f"user:{user_id}",
        request_id=ctx.request_id,
        correlation_id=ctx.correlation_id,
    )


def _check_fields(fields: Mapping[str, Any], *, allow_empty: bool) -> None:
    if not isinstance(fields, Mapping):
        raise InvalidCommandError("fields must be an object")
    if not fields:
        if allow_empty:
            return
        raise InvalidCommandError("no fields to update")
    try:
        size = len(json.dumps(fields))
    except (TypeError, ValueError):
        raise InvalidCommandError("fields must be JSON values") from None
    if size > MAX_FIELDS_BYTES:
        raise InvalidCommandError(f"fields are larger than {MAX_FIELDS_BYTES} bytes")


def session_json(view: SessionView, token: str | None = None) -> Payload:
    """BetterAuth's session object (plus our device / lastActive / fresh).

    ``token`` is the real token only for the caller's own current session;
    elsewhere it carries the session id (we keep hashes only)."""
    return {
        **dict(view.fields),
        "id": view.id,
        "token": token if token is not None else view.id,
        "userId": view.user_id,
        "expiresAt": iso_ms(view.expires_at),
        "createdAt": iso_ms(view.created_at),
        "updatedAt": iso_ms(view.updated_at),
        "ipAddress": view.ip,
        "userAgent": view.user_agent,
        "device": view.device,
        "lastActive": iso_ms(view.last_active_at),
        "authenticatedAt": iso_ms(view.authenticated_at),
        "fresh": view.fresh,
        "current": view.current,
    }


def user_json(user: UserRecord) -> Payload:
    return {
        **dict(user.extra),
        "id": user.id,
        "name": user.name,
        "email": user.email,
        "emailVerified": user.email_verified,
        "image": user.image,
        "roles": list(user.roles),
        "createdAt": iso_ms(user.created_at) if user.created_at else None,
        "updatedAt": iso_ms(user.updated_at) if user.updated_at else None,
    }
