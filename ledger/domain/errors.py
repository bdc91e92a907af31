"""Typed errors of the ledger. Each has a stable machine-readable ``code``."""

from __future__ import annotations


class LedgerError(Exception):
    """Base class: every error the ledger raises on purpose."""

    code = "LEDGER_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConcurrencyError(LedgerError):
    """An append expected a stream version that is no longer the stream's head."""

    code = "CONCURRENCY_CONFLICT"

    def __init__(self, stream_id: str, expected_version: int, actual_version: int | None) -> None:
        actual = "unknown" if actual_version is None else str(actual_version)
        super().__init__(
            f"stream {stream_id!r}: expected version {expected_version}, actual version {actual}"
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version


class UnknownEventTypeError(LedgerError):
    code = "UNKNOWN_EVENT_TYPE"


class EventValidationError(LedgerError):
    code = "INVALID_EVENT"


class InvalidAppendError(LedgerError):
    """An append request that is malformed in itself (empty batch, duplicate stream, ...)."""

    code = "INVALID_APPEND"


class ConfigError(LedgerError):
    code = "INVALID_CONFIG"


# ----------------------------------------------------------------- sessions


class SessionError(LedgerError):
    """Base class of the session state machine's errors."""

    code = "SESSION_ERROR"


class SessionNotFoundError(SessionError):
    code = "SESSION_NOT_FOUND"


class SessionAlreadyExistsError(SessionError):
    code = "SESSION_ALREADY_EXISTS"


class SessionEndedError(SessionError):
    """The session is revoked or expired (recorded, or due by time)."""

    code = "SESSION_ENDED"


class InvalidCommandError(SessionError):
    code = "INVALID_COMMAND"


class InvalidFieldsError(SessionError):
    """A session field that is not declared (over HTTP: not declared as
    input) or whose value has the wrong type (``session.additional_fields``)."""

    code = "INVALID_FIELDS"


class SessionNotFreshError(SessionError):
    """A sensitive operation needs a recent sign-in (``fresh_age``)."""

    code = "SESSION_NOT_FRESH"


class NotSessionOwnerError(SessionError):
    code = "NOT_SESSION_OWNER"


class InvalidTokenError(SessionError):
    code = "INVALID_TOKEN"


class InvalidTransitionError(SessionError):
    """An event that cannot follow the stream so far (the ledger must never hold one)."""

    code = "INVALID_TRANSITION"


# -------------------------------------------------------- abuse resistance


class RetryLaterError(LedgerError):
    """Refused for now, not for good: try again after ``retry_after`` seconds
    (sent as ``Retry-After`` and BetterAuth's ``X-Retry-After``)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class TooManyRequestsError(RetryLaterError):
    code = "TOO_MANY_REQUESTS"


class ServerBusyError(RetryLaterError):
    code = "SERVER_BUSY"
