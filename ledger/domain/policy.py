"""The session policy: how sessions live and die (the spec's ``session`` block).

A plain validated value. It knows nothing of where it comes from: the
settings module (:mod:`session_ledger.ledger.config`) loads one from the
environment or a file at the edge, tests and host applications build one
directly. Durations are in seconds, as in the spec.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

DAY = 24 * 60 * 60
PositiveSeconds = Annotated[int, Field(gt=0)]
NonNegativeSeconds = Annotated[int, Field(ge=0)]

#: Keys of BetterAuth's session object (plus ours): never additional fields.
RESERVED_FIELDS = frozenset(
    {
        "id",
        "token",
        "userId",
        "expiresAt",
        "createdAt",
        "updatedAt",
        "ipAddress",
        "userAgent",
        "device",
        "lastActive",
        "authenticatedAt",
        "fresh",
        "current",
    }
)
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


class AdditionalField(BaseModel):
    """A declared session field (BetterAuth's ``session.additionalFields``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["string", "number", "boolean", "array", "object"]
    #: Set on every new session unless given; None = no default.
    default: JsonValue = None
    #: Whether clients may set it (update-session); server code always may.
    input: bool = True

    def accepts(self, value: Any) -> bool:
        """A value of the declared JSON type, or null (unset)."""
        if value is None:
            return True
        if isinstance(value, bool) and self.type != "boolean":
            return False  # JSON true is not a number
        return isinstance(value, _JSON_TYPES[self.type])

    @model_validator(mode="after")
    def _default_fits(self) -> AdditionalField:
        if not self.accepts(self.default):
            raise ValueError(f"default must be a {self.type}")
        return self


class SessionPolicy(BaseModel):
    """How sessions live and die (the spec's ``session`` block)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Idle lifetime: a session is valid while now < expires_at.
    expires_in: PositiveSeconds = 30 * DAY
    #: Validation refreshes once this much of the lifetime has passed.
    update_age: NonNegativeSeconds = DAY
    #: A session is fresh while now - authenticated_at < fresh_age; 0 = always fresh.
    fresh_age: NonNegativeSeconds = 0
    #: Rotate the token whenever the session is refreshed.
    rotate_on_refresh: bool = True
    #: How long a rotated-out token is still accepted (racing requests).
    rotation_grace: NonNegativeSeconds = 30
    #: Absolute lifetime cap from creation; refresh never extends past it. None = off.
    max_lifetime: PositiveSeconds | None = None
    #: Lifetime of a session signed in with remember-me off (never slid).
    short_session_expires_in: PositiveSeconds = DAY
    #: Record activity at most this often (always on a new IP / user agent).
    activity_interval: NonNegativeSeconds = 300
    #: Declared session fields: name -> type, default, input. Clients may set
    #: only these (those with ``input``) through update-session.
    additional_fields: dict[str, AdditionalField] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _field_names(self) -> SessionPolicy:
        reserved = sorted(RESERVED_FIELDS.intersection(self.additional_fields))
        if reserved:
            raise ValueError(f"additional_fields: {reserved[0]!r} is a reserved session key")
        return self

    @property
    def field_defaults(self) -> dict[str, JsonValue]:
        return {
            name: spec.default
            for name, spec in self.additional_fields.items()
            if spec.default is not None
        }
