"""The event catalogue: every fact the ledger records about a session, and
about sign-ins that did not get one (``SignInFailed``).

Events are frozen pydantic models with a ``type`` discriminator. Each class
has a ``schema_version``; when a model changes shape, bump it and register an
upcaster that turns the stored older payload into the newer one, so events
already in the ledger keep loading.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self, TypeGuard

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, ValidationError

from session_ledger.ledger.domain.errors import EventValidationError, UnknownEventTypeError
from session_ledger.ledger.domain.ids import SessionId

#: Free-form additional session fields (BetterAuth's ``additionalFields``).
Fields = dict[str, JsonValue]


class RevocationReason(StrEnum):
    SIGN_OUT = "sign_out"
    REVOKED = "revoked"
    REVOKED_OTHERS = "revoked_others"
    REVOKED_ALL = "revoked_all"
    TOKEN_REUSE = "token_reuse"  # noqa: S105  (a reason, not a secret)
    ADMIN = "admin"


class ExpiryReason(StrEnum):
    IDLE = "idle"
    ABSOLUTE = "absolute"


class SignInFailure(StrEnum):
    UNKNOWN_EMAIL = "unknown_email"
    WRONG_PASSWORD = "wrong_password"  # noqa: S105  (a reason, not a secret)
    THROTTLED = "throttled"


TokenHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ShortText = Annotated[str, Field(max_length=1024)]


class _Event(BaseModel):
    """Every event instance is valid: besides validation on construction,
    the two ways pydantic offers around it validate too. The store relies on
    this (it serialises events without validating them again)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: ClassVar[int] = 1

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        if not update:
            return copied
        # pydantic applies ``update`` unvalidated; validate the result.
        values = {name: getattr(copied, name) for name in type(self).model_fields}
        return type(self)._validated(values)

    @classmethod
    # The pydantic mypy plugin types model_construct per model; ours takes any fields.
    def model_construct(  # type: ignore[override]
        cls, _fields_set: set[str] | None = None, **values: Any
    ) -> Self:
        return cls._validated(values)

    @classmethod
    def _validated(cls, values: Mapping[str, Any]) -> Self:
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            event_type = cls.model_fields["type"].default
            raise _validation_error(str(event_type), exc) from None


class SessionCreated(_Event):
    """Sign-in: a new session stream starts."""

    type: Literal["SessionCreated"] = "SessionCreated"
    session_id: SessionId
    user_id: Annotated[str, Field(min_length=1, max_length=128)]
    token_hash: TokenHash
    created_at: AwareDatetime
    expires_at: AwareDatetime
    authenticated_at: AwareDatetime
    #: Absolute lifetime cap: no refresh moves expires_at past it (None: no cap).
    max_expires_at: AwareDatetime | None = None
    ip: ShortText | None = None
    user_agent: ShortText | None = None
    remember_me: bool = True
    fields: Fields = Field(default_factory=dict)


class SessionRefreshed(_Event):
    """Sliding expiry: update_age elapsed, expires_at moved forward."""

    type: Literal["SessionRefreshed"] = "SessionRefreshed"
    refreshed_at: AwareDatetime
    expires_at: AwareDatetime


class SessionRotated(_Event):
    """A new token replaces the old one; the old hash is kept for reuse detection."""

    type: Literal["SessionRotated"] = "SessionRotated"
    rotated_at: AwareDatetime
    token_hash: TokenHash
    previous_token_hash: TokenHash
    #: The previous token stays accepted until this instant (racing requests).
    grace_until: AwareDatetime


class SessionTouched(_Event):
    """Activity seen (throttled), or seen from a new IP / user agent."""

    type: Literal["SessionTouched"] = "SessionTouched"
    touched_at: AwareDatetime
    ip: ShortText | None = None
    user_agent: ShortText | None = None


class SessionUpdated(_Event):
    """Additional fields changed (update-session). Keys map to new values."""

    type: Literal["SessionUpdated"] = "SessionUpdated"
    updated_at: AwareDatetime
    fields: Fields


class SessionReauthenticated(_Event):
    """The user proved their identity again: freshness restarts."""

    type: Literal["SessionReauthenticated"] = "SessionReauthenticated"
    authenticated_at: AwareDatetime


class SessionRevoked(_Event):
    """Terminal: the session was ended on purpose."""

    type: Literal["SessionRevoked"] = "SessionRevoked"
    revoked_at: AwareDatetime
    reason: RevocationReason
    actor: ShortText


class SessionExpired(_Event):
    """Terminal: recorded by the expiry worker (idle or absolute limit)."""

    type: Literal["SessionExpired"] = "SessionExpired"
    expired_at: AwareDatetime
    reason: ExpiryReason


class SignInFailed(_Event):
    """A sign-in that started no session. Not a session event: each attempt
    is a stream of its own (one event, so attackers cause no write
    contention), which the session projections ignore. Never the password;
    the email typed only as a keyed hash (``ledger.attempts.email_key``), so
    that attempts on one unknown email can be grouped without storing it."""

    type: Literal["SignInFailed"] = "SignInFailed"
    attempted_at: AwareDatetime
    reason: SignInFailure
    #: The account whose password was wrong (unknown email: None).
    user_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    email_key: TokenHash
    ip: ShortText | None = None
    user_agent: ShortText | None = None


SessionEvent = (
    SessionCreated
    | SessionRefreshed
    | SessionRotated
    | SessionTouched
    | SessionUpdated
    | SessionReauthenticated
    | SessionRevoked
    | SessionExpired
)
Event = SessionEvent | SignInFailed

EVENT_TYPES: dict[str, type[_Event]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        SessionCreated,
        SessionRefreshed,
        SessionRotated,
        SessionTouched,
        SessionUpdated,
        SessionReauthenticated,
        SessionRevoked,
        SessionExpired,
        SignInFailed,
    )
}

#: (class, current schema version) by type: a plain dict lookup on hot paths
#: (a class attribute of a pydantic model goes through its metaclass).
_CURRENT = {name: (cls, cls.schema_version) for name, cls in EVENT_TYPES.items()}

TERMINAL_EVENT_TYPES = frozenset({"SessionRevoked", "SessionExpired"})
#: Events that are not about a session: session projections skip them.
NON_SESSION_EVENT_TYPES = frozenset({"SignInFailed"})
SESSION_EVENT_TYPES = frozenset(EVENT_TYPES) - NON_SESSION_EVENT_TYPES
#: Types whose stream holds that one event and is closed at once.
SINGLE_EVENT_TYPES = NON_SESSION_EVENT_TYPES


def is_session_event(event: Event) -> TypeGuard[SessionEvent]:
    return event.type not in NON_SESSION_EVENT_TYPES


def session_events(recorded: Sequence[RecordedEvent]) -> Sequence[RecordedEvent]:
    """``recorded`` without the events that are not about a session (the
    input itself when there are none, the common case)."""
    if all(r.event.type not in NON_SESSION_EVENT_TYPES for r in recorded):
        return recorded
    return [r for r in recorded if r.event.type not in NON_SESSION_EVENT_TYPES]


class EventMetadata(BaseModel):
    """Who and what caused an event. Stored beside the payload, hashed with it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: ShortText = "system"
    request_id: ShortText | None = None
    correlation_id: ShortText | None = None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the ledger holds it: payload plus its place in the ledger."""

    position: int
    stream_id: str
    stream_version: int
    event: Event
    metadata: EventMetadata
    user_id: str | None
    recorded_at: datetime
    prev_hash: str
    hash: str

    @property
    def type(self) -> str:
        return self.event.type


# ---------------------------------------------------------------- serialisation

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def register_upcaster(event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` to turn a stored ``event_type`` payload of ``from_version``
    into the payload of ``from_version + 1``."""

    def decorator(fn: Upcaster) -> Upcaster:
        _UPCASTERS[(event_type, from_version)] = fn
        return fn

    return decorator


def event_class(event_type: str) -> type[_Event]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventTypeError(f"unknown event type {event_type!r}") from None


_TYPE_ONLY = {"type"}


def serialize(event: Event) -> tuple[str, int, dict[str, Any]]:
    """``(type, schema_version, data)``; data is JSON-ready and excludes ``type``.

    The append path runs this for every event, so it calls pydantic-core's
    serializer directly (what ``model_dump`` wraps). No validation here:
    event instances are valid by construction (see ``_Event``)."""
    cls = event_class(event.type)
    if not isinstance(event, cls):
        raise EventValidationError(f"event of type {event.type!r} is a {type(event).__name__}")
    data = type(event).__pydantic_serializer__.to_python(event, mode="json", exclude=_TYPE_ONLY)
    return event.type, cls.schema_version, data


def deserialize(event_type: str, schema_version: int, data: dict[str, Any]) -> Event:
    """Load a stored payload, upcasting it to the current schema version first."""
    cls = event_class(event_type)
    if schema_version > cls.schema_version:
        raise EventValidationError(
            f"{event_type} has schema version {schema_version}, newer than this code's "
            f"{cls.schema_version}"
        )
    version = schema_version
    while version < cls.schema_version:
        try:
            upcaster = _UPCASTERS[(event_type, version)]
        except KeyError:
            raise EventValidationError(
                f"no upcaster for {event_type} from schema version {version}"
            ) from None
        data = upcaster(dict(data))
        version += 1
    return validate_event({**data, "type": event_type})


def deserialize_json(event_type: str, schema_version: int, data: str | bytes) -> Event:
    """``deserialize`` from the stored JSON text: pydantic parses and validates
    in one pass, several times faster than json.loads plus model_validate
    (what bulk readers such as replay spend their time on)."""
    cls, current = _CURRENT.get(event_type, (None, 0))
    if cls is None or schema_version != current:
        return deserialize(event_type, schema_version, json.loads(data))
    try:
        event: Event = cls.model_validate_json(data)  # type: ignore[assignment]
    except ValidationError as exc:
        raise _validation_error(event_type, exc) from None
    return event


def validate_event(payload: dict[str, Any]) -> Event:
    """Build an event from a dict with a ``type`` key; clear errors for bad input."""
    event_type = payload.get("type")
    if not isinstance(event_type, str):
        raise EventValidationError("event payload has no string 'type'")
    cls = event_class(event_type)
    try:
        event: Event = cls.model_validate(payload)  # type: ignore[assignment]
    except ValidationError as exc:
        raise _validation_error(event_type, exc) from None
    return event


def _validation_error(event_type: str, exc: ValidationError) -> EventValidationError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return EventValidationError(f"{event_type}: {where}: {first['msg']}")
