"""Typed errors of the user store (codes as BetterAuth sends them)."""

from __future__ import annotations

from session_ledger.ledger.domain.errors import LedgerError


class UserError(LedgerError):
    code = "USER_ERROR"


class UserAlreadyExistsError(UserError):
    code = "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL"


class InvalidEmailOrPasswordError(UserError):
    code = "INVALID_EMAIL_OR_PASSWORD"

    def __init__(self, message: str, user_id: str | None = None) -> None:
        super().__init__(message)
        #: Whose password was wrong; None for an unknown email (never sent out).
        self.user_id = user_id


class PasswordTooShortError(UserError):
    code = "PASSWORD_TOO_SHORT"


class PasswordTooLongError(UserError):
    code = "PASSWORD_TOO_LONG"


class PasswordTooWeakError(UserError):
    code = "PASSWORD_TOO_WEAK"


class InvalidEmailError(UserError):
    code = "INVALID_EMAIL"


class InvalidUserInputError(UserError):
    code = "VALIDATION_ERROR"


class UserNotFoundError(UserError):
    code = "USER_NOT_FOUND"


class EncryptionKeyError(UserError):
    """Provider tokens need ``encryption_key`` (a Fernet key) in the settings."""

    code = "ENCRYPTION_KEY_MISSING"
