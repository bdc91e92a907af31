"""The text forms of what the Redis cache holds: a SessionState as
``"<version>|<json>"`` and a user's record (a ``UserRecord``) as JSON.

The version travels as a prefix so that the Lua scripts can compare versions
without decoding JSON. The field lists are derived from the dataclasses, so
a field added to SessionState or UserRecord is cached without touching this
module.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from types import MappingProxyType
from typing import Any

from session_ledger.ledger.domain.state import SessionState, SessionStatus
from session_ledger.ledger.ports import UserRecord


def _kind(annotation: object) -> str:
    text = str(annotation)
    if "datetime" in text:
        return "time"
    if text.startswith("frozenset"):
        return "set"
    if text.startswith("tuple"):
        return "tuple"
    if text == "SessionStatus":
        return "status"
    if text.startswith("Mapping"):
        return "map"
    return "plain"


#: (field name, kind) of every SessionState field but the version, which
#: travels as the value's prefix. Derived from the dataclass, so a field added
#: to SessionState is cached without touching this module.
_FIELDS = [(f.name, _kind(f.type)) for f in dataclasses.fields(SessionState) if f.name != "version"]


def _encode(kind: str, value: Any) -> Any:
    if value is None or kind == "plain":
        return value
    if kind == "time":
        return value.isoformat()
    if kind == "set":
        return sorted(value)
    if kind == "tuple":
        return list(value)
    if kind == "status":
        return value.value
    return dict(value)


def _decode(kind: str, value: Any) -> Any:
    if value is None or kind == "plain":
        return value
    if kind == "map":
        return MappingProxyType(value)
    if kind == "time":
        return datetime.fromisoformat(value)
    if kind == "set":
        return frozenset(value)
    if kind == "tuple":
        return tuple(value)
    return SessionStatus(value)


def encode_state(state: SessionState) -> str:
    """``"<version>|<json>"``: the version prefix lets Lua compare without decoding."""
    body = {name: _encode(kind, getattr(state, name)) for name, kind in _FIELDS}
    return f"{state.version}|{json.dumps(body, separators=(',', ':'))}"


def decode_state(raw: bytes | str) -> SessionState:
    text = raw.decode() if isinstance(raw, bytes) else raw
    version, _, body = text.partition("|")
    data = json.loads(body)
    values = {name: _decode(kind, data[name]) for name, kind in _FIELDS}
    return SessionState(**values, version=int(version))


_USER_FIELDS = [(f.name, _kind(f.type)) for f in dataclasses.fields(UserRecord)]


def encode_user(user: UserRecord) -> str:
    body = {name: _encode(kind, getattr(user, name)) for name, kind in _USER_FIELDS}
    return json.dumps(body, separators=(",", ":"))


def decode_user(raw: bytes | str) -> UserRecord:
    data = json.loads(raw)
    return UserRecord(**{name: _decode(kind, data[name]) for name, kind in _USER_FIELDS})
