"""UserMemo: recently read user records, kept in the process for get-session.

Every store read of get-session needs the user beside the session. Users
change rarely (roles, today), so each service process remembers the records
it read, and the same change feed that makes cookie-cache revocation strict
(:mod:`api.revocations`) makes this memo strict too:

* a change in this process drops the entry at once (after its commit);
* a change in another process reaches every process on the feed
  (``NOTIFY`` sent inside the changing transaction). Only PostgreSQL has
  one: on SQLite the memo is never live, and every read asks the store;
* the memo is used only while the feed is connected and caught up
  (:meth:`set_live`); losing or regaining the feed empties it, because
  changes made meanwhile were never heard;
* an entry lives ``max_age`` seconds at most, a bound on staleness from a
  change made behind the store's back (raw SQL on the users table).

The race every cache-aside memo has: a read that started before a change
committed may finish after the change's invalidation arrived, and would
store the old record. Every invalidation bumps :attr:`epoch`; a read stores
its result only when the epoch is still the one it saw before reading.

With Redis, get-session's cache hit brings the user's record along (written
there by whichever process last read it from the store) and offers it here
(:meth:`offer`, the ``projections.cached_read_model.UserSink``). Such a
record may predate a change heard long ago, so the epoch is not enough: it
is believed only when written (its age comes with it) more than
``FILL_DEADLINE_SECONDS`` after both the feed connected and the last change
of that user heard here. A record written later was read from the store
after the change (a fill that takes longer is dropped), and a change made
while the feed was down is older than the feed's connection. Changes are
remembered as long as a record written before them may live in Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from session_ledger.ledger.ports import UserRecord
from session_ledger.projections.redis_cache import FILL_DEADLINE_SECONDS, USER_RECORD_SECONDS
from session_ledger.projections.state_codec import decode_user

#: PostgreSQL channel of user changes (payload: comma-separated user ids).
USERS_CHANNEL = "session_ledger_users"
MAX_AGE_SECONDS = 60.0
SIZE = 10_000
#: A cached record is believed only when written this long after the feed
#: connected and after the user's last change (a fill's deadline, plus margin).
CACHED_RECORD_MARGIN = FILL_DEADLINE_SECONDS + 1.0
#: Changes are remembered while a record written before them may live in Redis.
CHANGE_MEMORY = USER_RECORD_SECONDS + CACHED_RECORD_MARGIN + 5.0


class UserMemo:
    __slots__ = (
        "_changed",
        "_entries",
        "_now",
        "epoch",
        "live",
        "live_since",
        "max_age",
        "size",
    )

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
        self.live_since = 0.0
        #: user id -> when a change of it was heard (monotonic); oldest first.
        self._changed: dict[str, float] = {}

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

    def put(self, record: UserRecord, epoch: int, *, age: float = 0.0) -> None:
        """Remember ``record``, read after :attr:`epoch` was ``epoch`` (from
        a source where it already was ``age`` seconds old)."""
        if not self.live or epoch != self.epoch:
            return  # an invalidation (or the feed) moved on while it was read
        if record.id not in self._entries and len(self._entries) >= self.size:
            self._entries.pop(next(iter(self._entries)))  # oldest first
        self._entries[record.id] = (record, self._now() - age)

    def invalidate(self, user_ids: Iterable[str]) -> None:
        self.epoch += 1
        now = self._now()
        changed = self._changed
        for user_id in user_ids:
            self._entries.pop(user_id, None)
            changed.pop(user_id, None)
            changed[user_id] = now  # re-inserted: newest last
        while changed:
            user_id, heard = next(iter(changed.items()))
            if now - heard < CHANGE_MEMORY:
                break
            del changed[user_id]

    def set_live(self, live: bool) -> None:
        """The feed connected and caught up (True) or was lost (False)."""
        self.epoch += 1
        self._entries.clear()
        self.live = live
        self.live_since = self._now()

    # ------------------------------------------ records cached beside sessions

    def mark(self) -> int:
        """Taken before reading a cached record (see :meth:`offer`)."""
        return self.epoch

    def wants(self, user_id: str) -> bool:
        return self.live and user_id not in self._entries

    def offer(self, mark: int, raw: bytes, age_ms: int) -> None:
        """A record cached in Redis, written ``age_ms`` ago: remembered when
        believed (see the module docstring)."""
        if not self.live or mark != self.epoch:
            return
        record = decode_user(raw)
        age = age_ms / 1000
        written = self._now() - age
        since = max(self.live_since, self._changed.get(record.id, self.live_since))
        if written >= since + CACHED_RECORD_MARGIN:
            self.put(record, mark, age=age)
