"""Failed sign-ins as facts of the ledger (``SignInFailed``).

Each failed attempt is a stream of its own (``signin-<uuid7>``, one event):
attackers hammering one account cause no write contention on a shared
stream, and the session projections never see these streams (they skip
events that are not about a session). The ``user_id`` column holds the
account when the email is known, so an account's history shows who tried to
get into it; the IP goes to ``audit_ips`` like a session's, so a network
query finds the attempts too.

Never stored: the password, and the email typed in clear. The email is kept
as a keyed hash (HMAC-SHA256 under a key derived from the first secret), so
repeated attempts on one unknown address can be grouped, and the hash cannot
be reversed by hashing a list of addresses without the secret. Rotating the
first secret starts new groups.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from uuid6 import uuid7

from session_ledger.ledger.clock import Clock, SystemClock
from session_ledger.ledger.domain.events import (
    EventMetadata,
    RecordedEvent,
    SignInFailed,
    SignInFailure,
)
from session_ledger.ledger.domain.values import clip_text
from session_ledger.ledger.service import RequestContext
from session_ledger.ledger.store import EventStore

ATTEMPT_STREAM_PREFIX = "signin-"
#: Actor of an attempt on an unknown email.
ANONYMOUS = "anonymous"
_KEY_CONTEXT = b"session-ledger sign-in attempt email key v1"


def email_key_secret(secret: str) -> bytes:
    """The HMAC key for email hashes, derived from an app secret (never the
    signing key itself)."""
    return hmac.new(secret.encode(), _KEY_CONTEXT, hashlib.sha256).digest()


def email_key(key: bytes, email: str) -> str:
    """The keyed hash of an email as typed (trimmed, lower-cased, as the user
    store compares them)."""
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()


@dataclass
class SignInAttempts:
    """Records failed sign-ins in the ledger."""

    store: EventStore
    secret: str
    clock: Clock = field(default_factory=SystemClock)

    def __post_init__(self) -> None:
        self._key = email_key_secret(self.secret)

    def email_key(self, email: str) -> str:
        return email_key(self._key, email)

    async def record_failure(
        self,
        reason: SignInFailure,
        email: str,
        ctx: RequestContext,
        *,
        user_id: str | None = None,
    ) -> RecordedEvent:
        event = SignInFailed(
            attempted_at=self.clock.now(),
            reason=reason,
            user_id=user_id,
            email_key=self.email_key(email),
            ip=clip_text(ctx.ip),
            user_agent=clip_text(ctx.user_agent),
        )
        metadata = EventMetadata(
            actor=ctx.actor or (f"user:{user_id}" if user_id else ANONYMOUS),
            request_id=ctx.request_id,
            correlation_id=ctx.correlation_id,
        )
        stream = f"{ATTEMPT_STREAM_PREFIX}{uuid7()}"
        (recorded,) = await self.store.append(
            stream, 0, [event], metadata=metadata, user_id=user_id
        )
        return recorded
