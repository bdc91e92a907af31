"""What a session id is: one rule for the events, the service and the routes."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

#: Longest session id (the ledger's stream id column holds 64).
SESSION_ID_MAX_LENGTH = 64
#: What a session id is made of: our ids are UUIDv7 (hex and ``-``),
#: BetterAuth's are alphanumeric, and the raw tokens that revoke-session also
#: takes are URL-safe base64 (``_`` and ``-``). Nothing we or BetterAuth issue
#: holds anything else (``.`` or ``:`` included), so nothing else can name a
#: session, and it never reaches the database (PostgreSQL refuses NUL in text
#: with a driver error).
SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)

#: The same rule for pydantic models (events, request bodies).
SessionId = Annotated[
    str, Field(min_length=1, max_length=SESSION_ID_MAX_LENGTH, pattern=SESSION_ID_PATTERN)
]


def is_session_id(value: object) -> bool:
    """Whether ``value`` can name a session: 1-64 characters of the pattern."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= SESSION_ID_MAX_LENGTH
        and _SESSION_ID.fullmatch(value) is not None
    )
