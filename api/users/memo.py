"""UserMemo: recently read user records, kept in the process for get-session.

Every store read of get-session needs the user beside the session. Users
change rarely (roles, today), so each service process remembers the records
it read, and the same change feed that makes cookie-cache revocation strict
(:mod:`api.revocations`) makes this memo strict too:

* a change in this process drops the entry at once (after its commit);
* a change in another process reaches every process on the feed
  (``NOTIFY`` sent inside the changing transaction on PostgreSQL, Redis
  pub/sub on SQLite with Redis);
* the memo is used only while the feed is connected and caught up
  (:meth:`set_live`); losing or regaining the feed empties it, because
  changes made meanwhile were never heard;
* an entry lives ``max_age`` seconds at most, a bound on staleness from a
  change made behind the store's back (raw SQL on the users table).

The race every cache-aside memo has: a read that started before a change
committed may finish after the change's invalidation arrived, and would
store the old record. Every invalidation bumps :attr:`epoch`; a read stores
its result only when the epoch is still the one it saw before reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ledger.ports import UserRecord

#: PostgreSQL channel of user changes (payload: comma-separated user ids).
USERS_CHANNEL = "session_ledger_users"
MAX_AGE_SECONDS = 60.0
SIZE = 10_000


class UserMemo:
    __slots__ = ("_entries", "_now", "epoch", "live", "max_age", "size")

    def __init__(
        self,
        *,
        max_age: float = MAX_AGE_SECONDS,
        size: int = SIZE,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.size = size
        self._now = now
        self._entries: dict[str, tuple[UserRecord, float]] = {}
        #: Bumped by every invalidation; see the module docstring.
        self.epoch = 0
        #: Whether a change feed vouches for the memo (off: every read goes to the store).
        self.live = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str) -> UserRecord | None:
        if not self.live:
            return None
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        if self._now() - entry[1] > self.max_age:
            del self._entries[user_id]
            return None
        return entry[0]

    def put(self, record: UserRecord, epoch: int) -> None:
        """Remember ``record``, read after :attr:`epoch` was ``epoch``."""
        if not self.live or epoch != self.epoch:
            return  # an invalidation (or the feed) moved on while it was read
        if record.id not in self._entries and len(self._entries) >= self.size:
            self._entries.pop(next(iter(self._entries)))  # oldest first
        self._entries[record.id] = (record, self._now())

    def invalidate(self, user_ids: Iterable[str]) -> None:
        self.epoch += 1
        for user_id in user_ids:
            self._entries.pop(user_id, None)

    def set_live(self, live: bool) -> None:
        """The feed connected and caught up (True) or was lost (False)."""
        self.epoch += 1
        self._entries.clear()
        self.live = live
