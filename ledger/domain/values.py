"""What the domain accepts as text, field values and token hashes.

IPs and user agents come from request headers and are cut to fit, never
refused; additional fields and hashes come from callers and are refused
with a typed error when they could not be stored.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import JsonValue

from session_ledger.ledger.domain.errors import InvalidCommandError, InvalidTokenError

#: Longest IP / user agent kept (the events' ShortText limit).
MAX_TEXT = 1024
#: Deepest nesting accepted in additional fields (keeps recursion bounded).
MAX_FIELD_DEPTH = 32

_HEX = frozenset("0123456789abcdef")


def clip_text(text: str | None) -> str | None:
    # NUL (and lone surrogates) are dropped for the same reasons as in
    # check_text, but silently: these come from request headers and must
    # never make a request fail.
    if text is None:
        return None
    return valid_unicode(text.replace("\x00", ""))[:MAX_TEXT]


def check_hash(token_hash: str) -> str:
    if not (isinstance(token_hash, str) and len(token_hash) == 64 and set(token_hash) <= _HEX):
        raise InvalidTokenError("a token hash must be 64 lowercase hex characters (SHA-256)")
    return token_hash


def check_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_FIELD_DEPTH:
        raise InvalidCommandError(f"fields nest deeper than {MAX_FIELD_DEPTH} levels")
    if isinstance(value, str):
        check_text(value)
        return
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidCommandError("fields must be JSON values (no NaN or infinity)")
        return
    if isinstance(value, list):
        for item in value:
            check_json(item, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidCommandError("field names must be strings")
            check_text(key)
            check_json(item, depth + 1)
        return
    raise InvalidCommandError(f"fields must be JSON values, not {type(value).__name__}")


def check_text(text: str) -> None:
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


def check_fields(fields: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    if not isinstance(fields, Mapping):
        raise InvalidCommandError("fields must be a JSON object")
    check_json(fields)
    return copy.deepcopy(dict(fields)) if fields else {}
