"""When a process may believe the Redis cache: never, unless it can prove
that Redis is not missing a change to the session it read.

The cache is written after commit (by whichever process appended) and
caught up by the runner; a write can fail (Redis down, timing out, refusing
writes at ``maxmemory`` with ``noeviction``) while Redis still answers reads.
A process that merely remembers its *own* failed writes would then serve
another process's revoked session from Redis for as long as Redis refuses
writes. So every process follows every change instead:

* **It hears every append.** The change feed (``api.revocations``) passes
  on every appended ``(session, version)`` with its mark (ledger.horizon:
  xid and position). On PostgreSQL it reads them from the ledger itself
  (:class:`projections.change_feed.LedgerChanges`), woken by each writer's
  after-commit ``NOTIFY ledger_events`` (polling when a wake-up is lost),
  and hears what committed above the horizon too, so a long transaction
  elsewhere delays no change; on SQLite it reads the ledger's tail
  (gap-free: SQLite serialises writers). This process's own appends are
  heard right after commit (:meth:`CacheFreshness.after_commit`, before
  anything is acknowledged), their marks once the feed reads them. A cached
  state older than a version heard of is stale: the store answers instead.
* **Redis must cover what it did not hear.** Appends up to the mark
  ``start`` (the last one a follower could read when the feed connected)
  were never heard; the runner's checkpoint ``C`` (every event up to ``C``
  in commit-safe order applied, current states written) vouches for them. A
  hit is believed only while ``C >= start``. A missing checkpoint
  (FLUSHALL, a restart, no runner yet) vouches for nothing.
* **What was heard is kept until Redis provably has it**: an entry goes
  once the checkpoint passed its mark *and* it is older than
  ``RETAIN_SECONDS``. The second condition covers a FLUSHALL between the
  two: a fill that read the database before a change may still land (for up
  to ``FILL_DEADLINE_SECONDS``) where the change's own write was flushed,
  and the entry must still be there to refuse it; after that, the runner's
  rebuild (which writes current states) has overwritten it by the time the
  checkpoint passes again. With writes refused for minutes, entries simply
  stay (up to ``MAX_ENTRIES``; beyond that, Redis is not believed at all
  until the checkpoint passes the newest mark heard).
* **Without a connected feed nothing is believed**: losing the feed means
  appends go unheard; regaining it restarts ``start`` at the new head. Nor
  while the feed is ``behind`` (it could not read everything committed in
  one pass, see projections.change_feed).

The checkpoint is read at most every ``CHECKPOINT_REFRESH`` seconds, not
with every hit: a stale (lower) checkpoint only keeps entries longer and
Redis distrusted longer; the one way it could be too high (Redis lost data
since) is covered by the retention above, which is longer than a fill can
take plus the refresh interval.

The bound that remains is the feed's delivery time: a revoke acknowledged
by another process whose own Redis write (and the delete that follows a
failed one) failed is heard here a few milliseconds later: the writer's
wake-up and one read of the ledger (``bench.revocation_latency``), or the
feed's poll interval when the writer died between its commit and its
wake-up (before acknowledging anything).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence

from session_ledger.ledger.domain.events import RecordedEvent
from session_ledger.ledger.domain.state import SessionState
from session_ledger.ledger.horizon import Mark
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
#: The mark of an own append until the feed reads it: never covered.
UNKNOWN: Mark = (1 << 63, 0)


class CacheFreshness:
    """The changes this process heard of and what the cache covers."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        #: session id -> (version, mark, heard at); oldest heard first.
        self._entries: dict[str, tuple[int, Mark, float]] = {}
        #: Whether the change feed is connected and caught up.
        self.live = False
        #: Set by the feed while it has not read everything committed.
        self.behind = False
        #: The last mark a follower could read when the feed caught up
        #: (appends up to it were not heard).
        self.start: Mark | None = None
        #: The runner's checkpoint as last read (None: missing), and when.
        self.checkpoint: Mark | None = None
        self.checkpoint_read_at = -CHECKPOINT_REFRESH
        #: Set when entries overflowed: Redis is not believed until the
        #: checkpoint reaches this mark.
        self.blind_until: Mark | None = None
        #: Entries overflowed, and the feed has not yet said how far it read.
        self.overflowed = False
        self.newest: Mark = (0, 0)

    def __len__(self) -> int:
        return len(self._entries)

    # ------------------------------------------------------------ the feed

    def connected(self, start: Mark) -> None:
        """The feed is connected and caught up; appends after ``start`` are heard."""
        self.live = True
        self.start = start

    def lost(self) -> None:
        """The feed is gone: appends may go unheard, so nothing is believed."""
        self.live = False
        self.start = None

    def heard(self, mark: Mark, changes: Iterable[Change]) -> None:
        """Appends at ``mark`` (UNKNOWN: not read from the ledger yet) moved
        these sessions to these versions."""
        now = self._now()
        entries = self._entries
        for sid, version in changes:
            held = entries.pop(sid, None)
            if held is None:
                entries[sid] = (version, mark, now)
            elif version != held[0]:
                # Keep the newest version, with its own mark.
                entries[sid] = (version, mark, now) if version > held[0] else (*held[:2], now)
            else:
                # The same append heard twice (after commit, then from the
                # ledger; or re-read above the horizon): its real mark wins.
                entries[sid] = (version, min(mark, held[1]), now)
        if mark != UNKNOWN:
            self.newest = max(self.newest, mark)
        if len(entries) > MAX_ENTRIES:
            entries.clear()
            # Own appends the feed has not read yet have no mark: the feed's
            # next full pass says how far Redis must get (read_through).
            self.overflowed = True
            self.blind_until = UNKNOWN

    def read_through(self) -> None:
        """The feed finished a pass that started after everything heard so
        far: every append committed before it has a mark at most ``newest``."""
        if self.overflowed:
            self.overflowed = False
            self.blind_until = self.newest

    async def after_commit(self, recorded: Sequence[RecordedEvent]) -> None:
        """EventStore.after_commit hook (registered before the cache write):
        this process's own appends, before they are acknowledged."""
        if recorded:
            self.heard(UNKNOWN, ((r.stream_id, r.stream_version) for r in recorded))

    # ------------------------------------------------------- the checkpoint

    def checkpoint_due(self) -> bool:
        return self._now() - self.checkpoint_read_at >= CHECKPOINT_REFRESH

    def checkpoint_read(self, checkpoint: Mark | None) -> None:
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
            sid, (_, mark, heard) = next(iter(entries.items()))
            if heard > cutoff or mark > checkpoint:
                break
            del entries[sid]

    # ------------------------------------------------------------ questions

    def covered(self) -> bool:
        """Whether Redis may be read at all: the feed is live and the
        checkpoint covers every append this process did not hear."""
        return (
            self.live
            and not self.behind
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
