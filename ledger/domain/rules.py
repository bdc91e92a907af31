"""The session rules every layer asks, each in one place.

Pure functions of a few values and the policy (no state object needed), so
that the state machine, the service and the HTTP layer's cookie cache, which
holds only the session's JSON, all ask the same question the same way. What
a session id is: :mod:`.ids`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from session_ledger.ledger.domain.errors import SessionNotFreshError
from session_ledger.ledger.domain.events import ExpiryReason
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.state import SessionState

# ----------------------------------------------------------------- expiry


def expiry_due(state: SessionState, now: datetime) -> ExpiryReason | None:
    """The reason the session is dead by time at ``now``, or None while it lives."""
    # expires_at never exceeds max_expires_at (create caps it, evolve checks),
    # so expires_at is the one deadline; it is "absolute" when it is the cap.
    if now < state.expires_at:
        return None
    capped = state.max_expires_at is not None and state.expires_at >= state.max_expires_at
    return ExpiryReason.ABSOLUTE if capped else ExpiryReason.IDLE


def is_active(state: SessionState | None, now: datetime) -> bool:
    """Whether the session validates at ``now`` (ignoring which token is shown)."""
    return state is not None and not state.is_ended and expiry_due(state, now) is None


# ---------------------------------------------------------------- refresh


def refresh_due(expires_at: datetime, now: datetime, policy: SessionPolicy) -> bool:
    """Whether validating the current token at ``now`` refreshes a session
    expiring at ``expires_at`` (when it slides at all: remember-me on)."""
    # BetterAuth's rule: expires_at - expires_in is when the session was last
    # (re)issued; refresh once update_age of that has passed.
    return now >= expires_at + timedelta(seconds=policy.update_age - policy.expires_in)


def expiry_or_refresh_due(
    expires_at: datetime, remember_me: bool, now: datetime, policy: SessionPolicy
) -> bool:
    """Whether validating at ``now`` would end or slide the session: a copy
    of it (the cookie cache) must then not answer in the store's place (a
    BetterAuth complaint: refresh starved by the cache)."""
    if expires_at <= now:
        return True
    return remember_me and refresh_due(expires_at, now, policy)


# -------------------------------------------------------------- freshness


def is_fresh(authenticated_at: datetime, now: datetime, policy: SessionPolicy) -> bool:
    """Fresh while ``now - authenticated_at < fresh_age``; ``fresh_age == 0``: always."""
    return policy.fresh_age == 0 or now - authenticated_at < timedelta(seconds=policy.fresh_age)


def require_fresh(authenticated_at: datetime, now: datetime, policy: SessionPolicy) -> None:
    """Raise :class:`SessionNotFreshError` unless the session is fresh."""
    if not is_fresh(authenticated_at, now, policy):
        raise SessionNotFreshError("this action needs a fresh session: sign in again")
