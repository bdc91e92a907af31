"""The cookie cache: a signed copy of ``{session, user}`` in the
``<prefix>.session_data`` cookie, so get-session can answer without I/O.

BetterAuth's "compact" format::

    base64url_nopad(JSON {session: {session, user, updatedAt, version: "1"},
                          expiresAt, signature})
    signature = base64url_nopad(HMAC-SHA256(secret,
                    JSON {session, user, updatedAt, version, expiresAt}))

Times are epoch milliseconds. A value over ``CHUNK_SIZE`` characters is split
into ``.0``, ``.1``, ... cookies; one over ``MAX_VALUE`` is not cached at all
(the request then reads the store), which keeps every request under the
8 KiB cookie limit the service enforces.

This module only encodes and verifies. Whether a verified value may be
trusted (revocations, refresh due) is decided in :mod:`api.deps`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from session_ledger.api.cookies import CookieJar
from session_ledger.ledger.domain.tokens import Signer, b64url_decode, b64url_encode

VERSION = "1"
CHUNK_SIZE = 3800
MAX_VALUE = 6000
#: Longest value we even try to decode (never more than the cookie header limit).
MAX_READ = 8 * 1024


@dataclass(frozen=True, slots=True)
class CachedSession:
    session: dict[str, Any]
    user: dict[str, Any]
    updated_at_ms: int
    expires_at_ms: int


def epoch_ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


#: Verified values remembered per process (the hot path of a busy session).
MEMO_SIZE = 2048


class CookieCache:
    __slots__ = ("_memo", "jar", "max_age", "signer")

    def __init__(self, jar: CookieJar, signer: Signer, max_age: int) -> None:
        self.jar = jar
        self.signer = signer
        self.max_age = max_age
        # raw cookie value -> its verified content. Verification is a pure
        # function of the value and the secrets, so remembering it is safe;
        # expiry (and revocation, in api.deps) is still checked every time.
        self._memo: dict[str, CachedSession] = {}

    # ------------------------------------------------------------ encoding

    def encode(self, session: Mapping[str, Any], user: Mapping[str, Any], now: datetime) -> str:
        updated_at = epoch_ms(now)
        expires_at = b"%d" % (updated_at + self.max_age * 1000)
        # The signed JSON and the value share their largest part (session,
        # user, updatedAt, version, in that order): serialise it once. Byte
        # for byte what json.dumps of the two dicts gives (see the tests).
        shared = b'"session":%s,"user":%s,"updatedAt":%d,"version":"%s"' % (
            _json(session),
            _json(user),
            updated_at,
            VERSION.encode(),
        )
        signed = b'{%s,"expiresAt":%s}' % (shared, expires_at)
        signature = b64url_encode(self.signer.mac(signed)).encode()
        body = b'{"session":{%s},"expiresAt":%s,"signature":"%s"}' % (
            shared,
            expires_at,
            signature,
        )
        return b64url_encode(body)

    def set_cookies(
        self,
        session: Mapping[str, Any],
        user: Mapping[str, Any],
        now: datetime,
        request_cookies: Mapping[str, str],
    ) -> list[str]:
        """Set-Cookie values writing the cache (chunked when large) and
        clearing whatever stale form of it the client holds."""
        name = self.jar.names.data
        value = self.encode(session, user, now)
        held = _held_chunks(name, request_cookies)
        if len(value) > MAX_VALUE:
            return self.clear_cookies(request_cookies)
        if len(value) <= CHUNK_SIZE:
            return [self.jar.header(name, value, self.max_age)] + [self.jar.clear(n) for n in held]
        chunks = [value[i : i + CHUNK_SIZE] for i in range(0, len(value), CHUNK_SIZE)]
        headers = [self.jar.header(f"{name}.{i}", c, self.max_age) for i, c in enumerate(chunks)]
        written = {f"{name}.{i}" for i in range(len(chunks))}
        stale = [n for n in held if n not in written]
        if name in request_cookies:
            stale.append(name)
        return headers + [self.jar.clear(n) for n in stale]

    def clear_cookies(self, request_cookies: Mapping[str, str]) -> list[str]:
        name = self.jar.names.data
        return [self.jar.clear(n) for n in [name, *_held_chunks(name, request_cookies)]]

    # ------------------------------------------------------------ decoding

    def read(self, cookies: Mapping[str, str], now: datetime) -> CachedSession | None:
        """The verified, unexpired cache value, or None (absent, forged, expired, garbage)."""
        raw = _raw_value(self.jar.names.data, cookies)
        if raw is None or len(raw) > MAX_READ:
            return None
        cached = self._memo.get(raw)
        if cached is None:
            cached = self._verify(raw)
            if cached is None:
                return None
            if len(self._memo) >= MEMO_SIZE:
                self._memo.pop(next(iter(self._memo)))  # oldest first (insertion order)
            self._memo[raw] = cached
        if cached.expires_at_ms <= epoch_ms(now):
            return None
        return cached

    def _verify(self, raw: str) -> CachedSession | None:
        decoded = b64url_decode(raw)
        if decoded is None:
            return None
        try:
            body = json.loads(decoded)
        except (ValueError, RecursionError):
            return None
        cached = _shape(body)
        if cached is None:
            return None
        signed = {
            "session": cached.session,
            "user": cached.user,
            "updatedAt": cached.updated_at_ms,
            "version": VERSION,
            "expiresAt": cached.expires_at_ms,
        }
        signature = b64url_decode(body["signature"])
        if signature is None or not self.signer.verify_mac(_json(signed), signature):
            return None
        return cached


def _held_chunks(name: str, cookies: Mapping[str, str]) -> list[str]:
    prefix = name + "."
    return sorted(n for n in cookies if n.startswith(prefix) and n[len(prefix) :].isdigit())


def _raw_value(name: str, cookies: Mapping[str, str]) -> str | None:
    if name in cookies:
        return cookies[name]
    parts: list[str] = []
    while (part := cookies.get(f"{name}.{len(parts)}")) is not None:
        parts.append(part)
    return "".join(parts) if parts else None


def _shape(body: Any) -> CachedSession | None:
    """The value's parts when it has exactly the expected shape and types."""
    if not isinstance(body, dict) or set(body) != {"session", "expiresAt", "signature"}:
        return None
    inner = body["session"]
    if not isinstance(inner, dict) or set(inner) != {"session", "user", "updatedAt", "version"}:
        return None
    session, user = inner["session"], inner["user"]
    updated, expires = inner["updatedAt"], body["expiresAt"]
    if not (isinstance(session, dict) and isinstance(user, dict)):
        return None
    if type(updated) is not int or type(expires) is not int:
        return None
    if inner["version"] != VERSION or not isinstance(body["signature"], str):
        return None
    if not isinstance(session.get("id"), str) or not isinstance(session.get("token"), str):
        return None
    return CachedSession(session, user, updated, expires)
