"""Small factories for valid events (the store does not enforce session rules)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from session_ledger.ledger.domain.events import SessionCreated, SessionTouched

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def token_hash(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def created(
    session_id: str,
    *,
    user_id: str = "user-1",
    at: datetime = T0,
    ip: str | None = "10.0.0.1",
    **fields: object,
) -> SessionCreated:
    return SessionCreated.model_validate(
        {
            "session_id": session_id,
            "user_id": user_id,
            "token_hash": token_hash(session_id),
            "created_at": at,
            "expires_at": at + timedelta(days=30),
            "authenticated_at": at,
            "ip": ip,
            "user_agent": "pytest",
            "fields": fields,
        }
    )


def touched(at: datetime = T0, *, ip: str | None = None) -> SessionTouched:
    return SessionTouched(touched_at=at, ip=ip)
