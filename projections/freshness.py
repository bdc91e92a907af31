"""When a process may believe the Redis cache: never, unless it can prove
that Redis is not missing a change to the session it read.

The cache is written after commit (by whichever process appended) and
caught up by the runner; a write can fail (Redis down, timing out, refusing
writes at ``maxmemory`` with ``noeviction``) while Redis still answers reads.
A process that merely remembers its *own* failed writes would then serve
another process's revoked session from Redis for as long as Redis refuses
writes. So every process follows every change instead:

* **It hears every append.** The change feed (``api.revocations``) passes
  on each append's last position and ``(session, version)`` pairs: on
  PostgreSQL ``NOTIFY ledger_events``, sent inside the append's transaction
  (so delivered exactly when it commits), on SQLite the ledger's tail
  (gap-free: SQLite serialises writers), and this process's own appends
  right after commit (:meth:`CacheFreshness.after_commit`, before anything
  is acknowledged). A cached state older than a version heard of is stale:
  the store answers instead.
* **Redis must cover what it did not hear.** Appends before the feed
  connected (position ``start``, the ledger's head when the feed caught up)
  were never heard; the runner's checkpoint ``C`` (every event up to ``C``
  applied, current states written) vouches for them. A hit is believed only
  while ``C >= start``. A missing checkpoint (FLUSHALL, a restart, no
  runner yet) vouches for nothing.
* **What was heard is kept until Redis provably has it**: an entry goes
  once the checkpoint passed its position *and* it is older than
  ``RETAIN_SECONDS``. The second condition covers a FLUSHALL between the
  two: a fill that read the database before a change may still land (for up
  to ``FILL_DEADLINE_SECONDS``) where the change's own write was flushed,
  and the entry must still be there to refuse it; after that, the runner's
  rebuild (which writes current states) has overwritten it by the time the
  checkpoint passes again. With writes refused for minutes, entries simply
  stay (up to ``MAX_ENTRIES``; beyond that, Redis is not believed at all
  until the checkpoint passes the newest position heard).
* **Without a connected feed nothing is believed**: losing the feed means
  appends go unheard; regaining it restarts ``start`` at the new head.

The checkpoint is read at most every ``CHECKPOINT_REFRESH`` seconds, not
with every hit: a stale (lower) checkpoint only keeps entries longer and
Redis distrusted longer; the one way it could be too high (Redis lost data
since) is covered by the retention above, which is longer than a fill can
take plus the refresh interval.

The bound that remains is the feed's delivery time: a revoke acknowledged
by another process whose own Redis write failed is heard here a few
milliseconds later (``bench.revocation_latency``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from session_ledger.ledger.domain.events import RecordedEvent
from session_ledger.ledger.domain.state import SessionState
from session_ledger.projections.redis_cache import FILL_DEADLINE_SECONDS

#: Entries outlive every fill that may still land after a change, plus the
#: checkpoint's refresh interval (see the module docstring).
RETAIN_SECONDS = 2 * FILL_DEADLINE_SECONDS + 5
#: Beyond this many entries, stop believing Redis instead of tracking more
#: (until the checkpoint catches up). Also what bounds the memory of a
#: process that hears appends but never reads, and so never prunes (a
#: worker, an idle service): about 10 MB.
MAX_ENTRIES = 50_000
CHECKPOINT_REFRESH = 0.25

Change = tuple[str, int]


class CacheFreshness:
    """The changes this process heard of and what the cache covers."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        #: session id -> (version, position, heard at); oldest heard first.
        self._entries: dict[str, tuple[int, int, float]] = {}
        #: Whether the change feed is connected and caught up.
        self.live = False
        #: The ledger's head when the feed caught up (appends up to it were not heard).
        self.start: int | None = None
        #: The runner's checkpoint as last read (None: missing), and when.
        self.checkpoint: int | None = None
        self.checkpoint_read_at = -CHECKPOINT_REFRESH
        #: Set when entries overflowed: Redis is not believed until the
        #: checkpoint reaches this position.
        self.blind_until: int | None = None
        self.newest = 0

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------ the feed

    def connected(self, head: int) -> None:
        """The feed is connected and caught up; appends after ``head`` are heard."""
        self.live = True
        self.start = head

    def lost(self) -> None:
        """The feed is gone: appends may go unheard, so nothing is believed."""
        self.live = False
        self.start = None

    def heard(self, position: int, changes: Iterable[Change]) -> None:
        """Appends up to ``position`` moved these sessions to these versions."""
        now = self._now()
        entries = self._entries
        for sid, version in changes:
            held = entries.pop(sid, None)
            if held is None:
                entries[sid] = (version, position, now)
            else:
                # The same append may be heard twice (after commit and by
                # NOTIFY), in either order: keep the newest of both.
                entries[sid] = (max(version, held[0]), max(position, held[1]), now)
        self.newest = max(self.newest, position)
        if len(entries) > MAX_ENTRIES:
            entries.clear()
            self.blind_until = self.newest

    async def after_commit(self, recorded: Sequence[RecordedEvent]) -> None:
        """EventStore.after_commit hook (registered before the cache write):
        this process's own appends, before they are acknowledged."""
        if recorded:
            self.heard(recorded[-1].position, ((r.stream_id, r.stream_version) for r in recorded))

    # ------------------------------------------------------- the checkpoint

    def checkpoint_due(self) -> bool:
        return self._now() - self.checkpoint_read_at >= CHECKPOINT_REFRESH

    def checkpoint_read(self, checkpoint: int | None) -> None:
        """The runner's checkpoint as just read; forget what Redis now has."""
        now = self._now()
        self.checkpoint, self.checkpoint_read_at = checkpoint, now
        if checkpoint is None:
            return
        if self.blind_until is not None and checkpoint >= self.blind_until:
            self.blind_until = None
        entries = self._entries
        cutoff = now - RETAIN_SECONDS
        while entries:
            sid, (_, position, heard) = next(iter(entries.items()))
            if heard > cutoff or position > checkpoint:
                break
            del entries[sid]

    # ------------------------------------------------------------ questions

    def covered(self) -> bool:
        """Whether Redis may be read at all: the feed is live and the
        checkpoint covers every append this process did not hear."""
        return (
            self.live
            and self.start is not None
            and self.checkpoint is not None
            and self.checkpoint >= self.start
            and self.blind_until is None
        )

    def vouches(self, state: SessionState) -> bool:
        """Whether a cached ``state`` may be served: Redis is covered and no
        newer version of this session was heard of."""
        if not self.covered():
            return False
        entry = self._entries.get(state.session_id)
        return entry is None or entry[0] <= state.version


def parse_changes(payload: str) -> tuple[int, list[Change]] | None:
    """``"<position> <sid>:<version>,..."`` (see projections.runner.NotifyOnAppend)."""
    head, _, rest = payload.partition(" ")
    if not head.isdigit():
        return None
    changes: list[Change] = []
    for item in rest.split(","):
        sid, colon, version = item.rpartition(":")
        if colon and sid and version.isdigit():
            changes.append((sid, int(version)))
    return int(head), changes
