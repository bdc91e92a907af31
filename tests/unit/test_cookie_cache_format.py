"""The cookie cache value is BetterAuth's compact format, byte for byte: the
value and its signature are built from json.dumps of the reference's
objects here, independently of how api.cookie_cache assembles them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from session_ledger.api.cookie_cache import CookieCache
from session_ledger.api.cookies import CookieJar
from session_ledger.ledger.config import load_settings
from session_ledger.ledger.domain.tokens import Signer

SECRET = "cookie-cache-format-secret-0123456789abcdef"
NOW = datetime(2026, 11, 27, 21, 0, 0, 123456, tzinfo=UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def reference_value(session: dict[str, Any], user: dict[str, Any], max_age: int) -> str:
    updated_at = int(NOW.timestamp() * 1000)
    expires_at = updated_at + max_age * 1000
    signed = {
        "session": session,
        "user": user,
        "updatedAt": updated_at,
        "version": "1",
        "expiresAt": expires_at,
    }
    signature = _b64(hmac.new(SECRET.encode(), _dumps(signed), hashlib.sha256).digest())
    body = {
        "session": {"session": session, "user": user, "updatedAt": updated_at, "version": "1"},
        "expiresAt": expires_at,
        "signature": signature,
    }
    return _b64(_dumps(body))


SESSION = {
    "id": "0197a3b2-1234-7abc-8def-0123456789ab",
    "token": "tok",
    "userId": "u1",
    "expiresAt": "2026-12-04T21:00:00.123Z",
    "fresh": True,
    "ipAddress": None,
}


@pytest.mark.parametrize(
    "user",
    [
        {"id": "u1", "name": "Ada", "email": "ada@example.com", "roles": []},
        {"id": "u1", "name": 'Zoë ✓ "quoted" \\ back\n', "extra": {"n": [1, 2.5, None]}},
    ],
)
def test_value_is_the_reference_format(user: dict[str, Any]) -> None:
    settings = load_settings(environment="test", secrets=[SECRET])
    signer = Signer(settings.secret_values)
    cache = CookieCache(CookieJar(settings, signer), signer, 300)
    value = cache.encode(SESSION, user, NOW)
    assert value == reference_value(SESSION, user, 300)
    cookies = {cache.jar.names.data: value}
    cached = cache.read(cookies, NOW)
    assert cached is not None
    assert (cached.session, cached.user) == (SESSION, user)
