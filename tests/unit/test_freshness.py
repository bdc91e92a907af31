"""CacheFreshness: when a process may believe a state read from Redis."""

from __future__ import annotations

from session_ledger.ledger.domain.events import EventMetadata, RecordedEvent
from session_ledger.ledger.domain.state import SessionState, SessionStatus
from session_ledger.projections.freshness import (
    MAX_ENTRIES,
    RETAIN_SECONDS,
    UNKNOWN,
    CacheFreshness,
)
from tests.support.events import T0, touched


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state(sid: str = "s1", version: int = 3) -> SessionState:
    return SessionState(
        session_id=sid,
        user_id="u1",
        status=SessionStatus.ACTIVE,
        token_hash="a" * 64,
        previous_token_hash=None,
        grace_until=None,
        retired_token_hashes=frozenset(),
        created_at=T0,
        expires_at=T0,
        authenticated_at=T0,
        max_expires_at=None,
        last_active_at=T0,
        updated_at=T0,
        ip=None,
        user_agent=None,
        remember_me=True,
        fields={},
        version=version,
        ended_at=None,
        end_reason=None,
        ended_by=None,
    )


def live(start: int = 10, checkpoint: int | None = 10) -> tuple[CacheFreshness, Ticks]:
    ticks = Ticks()
    freshness = CacheFreshness(now=ticks)
    freshness.connected((0, start))
    freshness.checkpoint_read(None if checkpoint is None else (0, checkpoint))
    return freshness, ticks


def test_nothing_is_believed_without_a_live_feed() -> None:
    freshness = CacheFreshness()
    freshness.checkpoint_read((0, 100))
    assert not freshness.vouches(state())
    freshness.connected((0, 5))
    assert freshness.vouches(state())
    freshness.lost()
    assert not freshness.vouches(state())


def test_the_checkpoint_must_cover_what_the_feed_did_not_hear() -> None:
    freshness, _ = live(start=10, checkpoint=9)
    assert not freshness.vouches(state())  # appends 10 and before: unheard, not in Redis
    freshness.checkpoint_read(None)  # FLUSHALL, restart: nothing is covered
    assert not freshness.vouches(state())
    freshness.checkpoint_read((0, 10))
    assert freshness.vouches(state())
    freshness.connected((0, 20))  # reconnected: appends up to 20 went unheard
    assert not freshness.vouches(state())


def test_a_state_older_than_a_version_heard_of_is_not_believed() -> None:
    freshness, _ = live()
    freshness.heard((0, 11), [("s1", 4), ("s2", 2)])
    assert not freshness.vouches(state("s1", 3))
    assert freshness.vouches(state("s1", 4))
    assert freshness.vouches(state("s1", 5))
    assert freshness.vouches(state("s3", 1))  # not heard of: unchanged since covered
    # The same append heard again (after commit, then from the ledger), in either order.
    freshness.heard((0, 11), [("s1", 3)])
    assert not freshness.vouches(state("s1", 3))


def test_entries_stay_until_the_checkpoint_passed_them_and_a_fill_can_no_longer_land() -> None:
    freshness, ticks = live()
    freshness.heard((0, 11), [("s1", 4)])
    ticks.now = RETAIN_SECONDS + 1
    freshness.checkpoint_read((0, 10))  # Redis still behind (refusing writes): kept
    assert len(freshness) == 1
    assert not freshness.vouches(state("s1", 3))
    freshness.heard((0, 12), [("s2", 2)])
    ticks.now += 1
    freshness.checkpoint_read((0, 12))  # s1 old enough and covered; s2 too recent
    assert len(freshness) == 1
    assert not freshness.vouches(state("s2", 1))
    ticks.now += RETAIN_SECONDS
    freshness.checkpoint_read((0, 12))
    assert len(freshness) == 0


def test_too_many_entries_stop_belief_until_the_checkpoint_catches_up() -> None:
    freshness, _ = live()
    freshness.heard((0, 50), [(f"s{i}", 2) for i in range(MAX_ENTRIES + 1)])
    assert len(freshness) == 0
    assert not freshness.vouches(state("other"))
    freshness.checkpoint_read((0, 50))
    # Own appends cleared with the rest have no mark yet: the feed's next
    # full pass says how far Redis must get.
    assert not freshness.vouches(state("other"))
    freshness.read_through()
    freshness.checkpoint_read((0, 49))
    assert not freshness.vouches(state("other"))
    freshness.checkpoint_read((0, 50))
    assert freshness.vouches(state("other"))


async def test_own_appends_are_heard_after_commit() -> None:
    freshness, _ = live()
    event = RecordedEvent(
        position=11,
        stream_id="s9",
        stream_version=2,
        event=touched(),
        metadata=EventMetadata(),
        user_id="u1",
        recorded_at=T0,
        prev_hash="0" * 64,
        hash="1" * 64,
    )
    await freshness.after_commit([event])
    assert not freshness.vouches(state("s9", 1))
    assert freshness.vouches(state("s9", 2))


def test_own_appends_keep_their_entry_until_the_feed_reads_their_mark() -> None:
    """An own append is heard at once, without a mark; the checkpoint cannot
    pass an unknown mark, so the entry stays until the feed reads the event
    from the ledger and its mark is known."""
    freshness, ticks = live()
    freshness.heard(UNKNOWN, [("s1", 4)])
    ticks.now = RETAIN_SECONDS + 1
    freshness.checkpoint_read((9**9, 0))
    assert len(freshness) == 1
    freshness.heard((7, 20), [("s1", 4)])  # the same event, read from the ledger
    assert not freshness.vouches(state("s1", 3))
    freshness.checkpoint_read((7, 19))
    ticks.now += RETAIN_SECONDS + 1
    freshness.checkpoint_read((7, 19))
    assert len(freshness) == 1
    freshness.checkpoint_read((7, 20))
    assert len(freshness) == 0


def test_marks_order_by_transaction_first() -> None:
    """A checkpoint past a higher position of an older transaction has not
    passed a lower position of a newer one."""
    freshness, ticks = live()
    freshness.heard((8, 5), [("s1", 4)])
    ticks.now = RETAIN_SECONDS + 1
    freshness.checkpoint_read((7, 90))
    assert len(freshness) == 1
    freshness.checkpoint_read((8, 5))
    assert len(freshness) == 0


def test_a_feed_behind_vouches_for_nothing() -> None:
    freshness, _ = live()
    assert freshness.vouches(state())
    freshness.behind = True
    assert not freshness.vouches(state())
