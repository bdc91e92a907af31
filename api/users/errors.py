"""Typed errors of the user store (codes as BetterAuth sends them)."""

from __future__ import annotations

from ledger.errors import LedgerError


class UserError(LedgerError):
    code = "USER_ERROR"


class UserAlreadyExistsError(UserError):
    code = "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL"


class InvalidEmailOrPasswordError(UserError):
    code = "INVALID_EMAIL_OR_PASSWORD"


class PasswordTooShortError(UserError):
    code = "PASSWORD_TOO_SHORT"


class PasswordTooLongError(UserError):
    code = "PASSWORD_TOO_LONG"


class InvalidEmailError(UserError):
    code = "INVALID_EMAIL"


class InvalidUserInputError(UserError):
    code = "VALIDATION_ERROR"


class UserNotFoundError(UserError):
    code = "USER_NOT_FOUND"


class EncryptionKeyError(UserError):
    """Provider tokens need ``encryption_key`` (a Fernet key) in the settings."""

    code = "ENCRYPTION_KEY_MISSING"
