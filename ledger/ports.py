"""Ports: the interfaces the SessionLedger service needs from the outside.

Projections (the SQL session table, the Redis cache) implement
SessionReadModel; host applications (or the built-in SQL store) implement
UserStore. The service never knows which implementation it talks to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from session_ledger.ledger.domain.state import SessionState


class SessionReadModel(Protocol):
    async def by_token_hash(self, token_hash: str, *, fresh: bool = False) -> SessionState | None:
        """The session whose current, previous or any retired token has this hash.

        ``fresh``: from the authoritative store, never from a cache (a retry
        after a conflict: what the cache said was already out of date)."""
        ...

    async def by_id(self, session_id: str) -> SessionState | None: ...

    async def by_ids(self, session_ids: Sequence[str]) -> list[SessionState]: ...

    async def active_for_user(self, user_id: str, now: datetime) -> list[SessionState]:
        """Sessions of ``user_id`` that are active and not past expiry at ``now``."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderAccount:
    """A linked identity-provider account (tokens only when store_tokens is on)."""

    provider_id: str
    account_id: str
    access_token: str | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    token_type: str | None = None
    scope: str | None = None
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    email: str
    name: str = ""
    email_verified: bool = False
    image: str | None = None
    roles: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


class UserStore(Protocol):
    async def get_user(self, user_id: str) -> UserRecord | None: ...

    async def get_accounts(self, user_id: str) -> list[ProviderAccount]:
        """Linked provider accounts of the user, with their tokens decrypted."""
        ...
