"""Provider tokens at rest: Fernet (AES-128-CBC + HMAC-SHA256, from the
``cryptography`` package) with the key from ``settings.encryption_key``.
MultiFernet lets a comma-separated key list rotate keys: encrypt with the
first, decrypt with any."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from session_ledger.api.users.errors import EncryptionKeyError


class TokenBox:
    __slots__ = ("_fernet",)

    def __init__(self, keys: str | None) -> None:
        self._fernet: MultiFernet | None = None
        if keys:
            try:
                self._fernet = MultiFernet([Fernet(k.strip()) for k in keys.split(",")])
            except ValueError:
                raise EncryptionKeyError(
                    "encryption_key must be Fernet keys (32 url-safe base64-encoded bytes), "
                    "comma-separated, newest first"
                ) from None

    def __repr__(self) -> str:
        return f"TokenBox(enabled={self._fernet is not None})"

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def encrypt(self, plaintext: str | None) -> str | None:
        if plaintext is None:
            return None
        if self._fernet is None:
            raise EncryptionKeyError("storing provider tokens needs settings.encryption_key")
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str | None) -> str | None:
        if ciphertext is None:
            return None
        if self._fernet is None:
            raise EncryptionKeyError("reading provider tokens needs settings.encryption_key")
        try:
            return self._fernet.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise EncryptionKeyError(
                "a stored provider token does not decrypt with the configured keys"
            ) from None
