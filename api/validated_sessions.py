"""The sessions this process has itself seen validated by the store.

A cookie-cache value is signed with the service's secret, so anyone holding
that secret can write one for any session id, user and roles. As defence in
depth for a leaked secret, a cookie-cache hit is trusted only for a
(session id, token hash) pair that this process has validated from the
store, or written at sign-in, since it started. A well-signed value for a
pair the process has never seen goes to the store once (which answers for a
real session and refuses a forged one); the pair is remembered from then on.

Bounded: the least recently used pairs are forgotten first, which costs such
a session one store read on its next request. Pairs are never trusted on
their own: the revocation feed and the value's expiry are checked as well
(:func:`api.deps.resolve`).
"""

from __future__ import annotations

from collections import OrderedDict

from session_ledger.ledger.domain.tokens import hash_token

#: About 200 bytes per pair: a few MiB at most.
MAX_PAIRS = 50_000


class ValidatedSessions:
    __slots__ = ("_pairs", "max_pairs")

    def __init__(self, max_pairs: int = MAX_PAIRS) -> None:
        self.max_pairs = max_pairs
        # token hash -> session id, least recently used first.
        self._pairs: OrderedDict[str, str] = OrderedDict()

    def add(self, session_id: str, token: str) -> None:
        """Record that the store vouched for ``token`` naming ``session_id``."""
        key = hash_token(token)
        self._pairs[key] = session_id
        self._pairs.move_to_end(key)
        if len(self._pairs) > self.max_pairs:
            self._pairs.popitem(last=False)

    def vouches(self, session_id: str, token: str) -> bool:
        key = hash_token(token)
        if self._pairs.get(key) != session_id:
            return False
        self._pairs.move_to_end(key)
        return True

    def __len__(self) -> int:
        return len(self._pairs)
