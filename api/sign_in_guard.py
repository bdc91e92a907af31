"""Email and password sign-in behind the per-account throttle, with every
failure recorded in the ledger (``SignInFailed``).

In order, for one attempt:

1. the account (the email typed, as a keyed hash) must not be throttled:
   otherwise 429 ``TOO_MANY_REQUESTS`` with ``Retry-After``, no password is
   checked, and the attempt is recorded as ``throttled`` once per
   ``throttled_recorded`` window; the others are only counted
   (``session_ledger_sign_in_failures_unrecorded_total``), so a flood cannot
   fill the ledger;
2. the password is checked (bounded hashing, :mod:`api.users.passwords`);
3. a failure counts against the account and is recorded (``unknown_email``
   or ``wrong_password``); the answer stays the one 401 for both;
4. a success clears the account's failures.

The throttle keys on the email whether or not it exists, so it tells
nothing about which accounts exist.
"""

from __future__ import annotations

from dataclasses import dataclass

from session_ledger.api.metrics import ServiceMetrics
from session_ledger.api.rate_limit import RateLimiter
from session_ledger.api.users.errors import InvalidEmailOrPasswordError
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.attempts import SignInAttempts
from session_ledger.ledger.domain.errors import ServerBusyError, TooManyRequestsError
from session_ledger.ledger.domain.events import SignInFailure
from session_ledger.ledger.ports import UserRecord
from session_ledger.ledger.service import RequestContext


@dataclass
class SignInGuard:
    limiter: RateLimiter
    attempts: SignInAttempts
    metrics: ServiceMetrics

    async def authenticate(
        self, users: SqlUserStore, email: str, password: str, ctx: RequestContext
    ) -> UserRecord:
        account = self.attempts.email_key(email)
        wait = await self.limiter.account_wait(account)
        if wait is not None:
            if await self.limiter.record_throttled(account):
                # Whose account it was (one lookup, only for recorded ones).
                user_id = await users.id_for_email(email)
                await self.attempts.record_failure(
                    SignInFailure.THROTTLED, email, ctx, user_id=user_id
                )
            else:
                self.metrics.unrecorded_failures.labels(reason="throttled").inc()
            raise TooManyRequestsError(
                "too many failed sign-ins for this account: try again later", wait
            )
        try:
            user = await users.authenticate(email, password)
        except InvalidEmailOrPasswordError as exc:
            await self.limiter.account_failed(account)
            reason = SignInFailure.WRONG_PASSWORD if exc.user_id else SignInFailure.UNKNOWN_EMAIL
            await self.attempts.record_failure(reason, email, ctx, user_id=exc.user_id)
            raise
        except ServerBusyError:
            self.metrics.hashing_busy.inc()
            raise
        await self.limiter.account_succeeded(account)
        return user
