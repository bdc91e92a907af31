"""Session tokens and HMAC signing.

* A token is 256 bits from :mod:`secrets` (URL-safe base64, 43 characters).
  Only its SHA-256 hex digest is ever stored, indexed, logged or put in an
  event; comparisons are constant-time.
* :class:`Signer` signs cookie values in BetterAuth's format,
  ``token + "." + base64(HMAC-SHA256(key=secret, msg=token))`` (standard
  base64 with padding, 44 characters), and supports secret rotation: it signs
  with the first (newest) secret and accepts a signature by any listed secret.
* Everything that parses client input returns ``None`` on garbage and never
  raises, so the HTTP layer can treat "bad cookie" and "no cookie" alike.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets as _secrets
from collections.abc import Sequence
from urllib.parse import unquote

from session_ledger.ledger.domain.errors import ConfigError

#: 32 random bytes = 256 bits of entropy.
TOKEN_BYTES = 32
#: Longest token we even look at. Ours are 43 characters; BetterAuth's are 32.
MAX_TOKEN_LENGTH = 512
#: Longest signed cookie value we parse (browsers cap a cookie at about 4 KiB).
MAX_SIGNED_LENGTH = 4096
#: len(standard base64 of a 32-byte digest, padded).
SIGNATURE_LENGTH = 44

_TOKEN_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_TOKEN_LENGTH}}}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def new_token() -> str:
    """A fresh session token: 256 bits from the OS CSPRNG, URL-safe base64 (43 chars)."""
    return _secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The SHA-256 hex digest of ``token`` (UTF-8): the only form we keep."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time equality. Encodes first: ``compare_digest`` rejects non-ASCII str."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def is_well_formed(token: str) -> bool:
    """Cheap syntactic check before any I/O: 1..512 URL-safe base64 characters."""
    # Check the length first so a megabyte of junk is not run through the regex.
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
        return False
    return _TOKEN_RE.fullmatch(token) is not None


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (the cookie cache's encoding)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes | None:
    """Inverse of :func:`b64url_encode`; ``None`` for anything else.

    Strict: only the URL-safe alphabet, no padding, and the canonical
    encoding (``urlsafe_b64decode`` alone would silently skip stray
    characters, accept ``+``/``/``, and ignore non-zero trailing bits).
    """
    if not isinstance(text, str) or len(text) % 4 == 1 or _B64URL_RE.fullmatch(text) is None:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if b64url_encode(data) == text else None


#: How many verified cookie values a Signer remembers.
VERIFIED_MEMO_SIZE = 4096


class Signer:
    """HMAC-SHA256 with rotating secrets: sign with the first, verify with any."""

    __slots__ = ("_keys", "_verified")

    def __init__(self, secrets: Sequence[str]) -> None:
        # A bare str is a Sequence[str] too: Signer("key") would silently use
        # one-character secrets.
        if isinstance(secrets, str) or not secrets:
            raise ConfigError("Signer needs a non-empty list of secrets, newest first")
        if not all(isinstance(s, str) and s for s in secrets):
            raise ConfigError("Signer secrets must be non-empty strings")
        self._keys = tuple(s.encode("utf-8") for s in secrets)
        # Cookie values already verified, to their token: every request of a
        # session presents the same value, and the HMACs (one per secret)
        # were the largest cost of a cookie-cache hit. Only values that
        # passed verification enter, and the secrets of a Signer never change.
        self._verified: dict[str, str] = {}

    def __repr__(self) -> str:  # never show the secrets
        return f"Signer(<{len(self._keys)} secret(s)>)"

    # ---------------------------------------------------------- cookie values

    def sign(self, token: str) -> str:
        """BetterAuth's cookie value (before URL-encoding, which the HTTP layer does)."""
        return f"{token}.{self._signature(self._keys[0], token)}"

    def unsign(self, value: str) -> str | None:
        """The token of a signed cookie value, or ``None`` if it is not one of ours."""
        if not isinstance(value, str) or len(value) > MAX_SIGNED_LENGTH:
            return None
        known = self._verified.get(value)
        if known is not None:
            return known
        token = self._unsign(unquote(value))
        if token is not None:
            if len(self._verified) >= VERIFIED_MEMO_SIZE:
                self._verified.pop(next(iter(self._verified)))  # the oldest
            self._verified[value] = token
        return token

    def _unsign(self, value: str) -> str | None:
        if not value.isascii():
            return None
        token, dot, signature = value.rpartition(".")
        if not dot or not token or len(signature) != SIGNATURE_LENGTH:
            return None
        if not signature.endswith("="):
            return None
        # Compare the base64 text, not decoded bytes: this also rejects
        # non-canonical encodings of a valid MAC. Check every secret, without
        # stopping early, so timing does not tell which secret matched.
        matches = [
            hmac.compare_digest(signature, self._signature(key, token)) for key in self._keys
        ]
        return token if any(matches) else None

    @staticmethod
    def _signature(key: bytes, token: str) -> str:
        digest = hmac.new(key, token.encode("utf-8"), hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    # ---------------------------------------------------- generic (cookie cache)

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` with the newest secret (32 bytes)."""
        return hmac.new(self._keys[0], data, hashlib.sha256).digest()

    def verify_mac(self, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is the HMAC of ``data`` under any listed secret."""
        if not isinstance(data, bytes | bytearray) or not isinstance(signature, bytes | bytearray):
            return False
        matches = [
            hmac.compare_digest(signature, hmac.new(key, data, hashlib.sha256).digest())
            for key in self._keys
        ]
        return any(matches)
