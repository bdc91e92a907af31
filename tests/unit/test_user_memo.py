"""UserMemo: never answers with a record older than the last change it was
told about, whatever the interleaving of reads, changes and feed losses."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from session_ledger.api.users.memo import CACHED_RECORD_MARGIN, UserMemo
from session_ledger.ledger.ports import UserRecord
from session_ledger.projections.state_codec import encode_user

ADA = UserRecord(id="ada", email="ada@example.com")


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_until_a_feed_vouches_for_it() -> None:
    memo = UserMemo()
    memo.put(ADA, memo.epoch)
    assert memo.get("ada") is None
    memo.set_live(True)
    memo.put(ADA, memo.epoch)
    assert memo.get("ada") is ADA
    memo.set_live(False)  # feed lost: empty and off
    assert memo.get("ada") is None
    assert len(memo) == 0


def test_a_read_that_raced_a_change_is_not_kept() -> None:
    memo = UserMemo()
    memo.set_live(True)
    epoch = memo.epoch  # a read starts (sees the old record)...
    memo.invalidate(["ada"])  # ...the change commits and is heard...
    memo.put(ADA, epoch)  # ...and the old record arrives last
    assert memo.get("ada") is None


def test_entries_expire_and_the_size_is_bounded() -> None:
    ticks = Ticks()
    memo = UserMemo(max_age=60, size=2, now=ticks)
    memo.set_live(True)
    memo.put(ADA, memo.epoch)
    ticks.now = 61
    assert memo.get("ada") is None
    for name in ("a", "b", "c"):
        memo.put(UserRecord(id=name, email=f"{name}@example.com"), memo.epoch)
    assert len(memo) == 2
    assert memo.get("a") is None  # the oldest went first
    assert memo.get("c") is not None


USERS = st.sampled_from(["u1", "u2"])


class MemoAgainstTheDatabase(RuleBasedStateMachine):
    """Reads take the epoch, read the "database", and put later; changes
    bump the database's version and invalidate (as the feed delivers them);
    the feed drops and returns. The memo must never hold an old version."""

    def __init__(self) -> None:
        super().__init__()
        self.memo = UserMemo()
        self.memo.set_live(True)
        self.db = {"u1": 0, "u2": 0}
        self.reads: list[tuple[int, UserRecord]] = []  # in flight: (epoch, what was read)

    def record(self, user_id: str) -> UserRecord:
        return replace(ADA, id=user_id, name=str(self.db[user_id]))

    @rule(user_id=USERS)
    def start_read(self, user_id: str) -> None:
        self.reads.append((self.memo.epoch, self.record(user_id)))

    @precondition(lambda self: self.reads)
    @rule(data=st.data())
    def finish_read(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.reads) - 1))
        epoch, record = self.reads.pop(index)
        self.memo.put(record, epoch)

    @rule(user_id=USERS)
    def change(self, user_id: str) -> None:
        self.db[user_id] += 1
        self.memo.invalidate([user_id])

    @rule(user_id=USERS)
    def change_while_the_feed_is_down(self, user_id: str) -> None:
        self.memo.set_live(False)
        self.db[user_id] += 1  # never heard
        self.memo.set_live(True)  # reconnected and caught up

    @invariant()
    def never_older_than_the_database(self) -> None:
        for user_id, version in self.db.items():
            held = self.memo.get(user_id)
            assert held is None or held.name == str(version)


TestMemoAgainstTheDatabase = MemoAgainstTheDatabase.TestCase
TestMemoAgainstTheDatabase.settings = settings(max_examples=200, stateful_step_count=40)


# --------------------------------------------- records cached beside sessions


def _offered(memo: UserMemo, record: UserRecord, age: float, mark: int | None = None) -> None:
    memo.offer(memo.mark() if mark is None else mark, encode_user(record).encode(), int(age * 1000))


def test_a_cached_record_is_believed_only_when_written_after_the_feed_connected() -> None:
    ticks = Ticks()
    memo = UserMemo(now=ticks)
    _offered(memo, ADA, age=0)
    assert memo.get("ada") is None  # no feed: nothing is kept
    memo.set_live(True)
    ticks.now = 20.0
    # Written 5 s after the feed connected: a fill may have read the store
    # before the feed connected, and a change then was never heard.
    _offered(memo, ADA, age=15)
    assert memo.get("ada") is None
    _offered(memo, ADA, age=20 - CACHED_RECORD_MARGIN - 1)
    assert memo.get("ada") == ADA


def test_a_cached_record_older_than_a_change_heard_of_is_not_believed() -> None:
    ticks = Ticks()
    memo = UserMemo(now=ticks)
    memo.set_live(True)
    ticks.now = 500.0
    memo.invalidate(["ada"])  # roles changed at 500
    ticks.now = 530.0
    stale = replace(ADA, roles=("admin",))
    _offered(memo, stale, age=25)  # written at 505: maybe read before the change
    assert memo.get("ada") is None
    _offered(memo, ADA, age=30 - CACHED_RECORD_MARGIN - 1)  # written well after it
    assert memo.get("ada") == ADA


def test_a_cached_record_read_while_a_change_arrived_is_not_kept() -> None:
    memo = UserMemo(now=Ticks())
    memo.set_live(True)
    mark = memo.mark()
    memo.invalidate(["someone"])
    _offered(memo, ADA, age=0, mark=mark)
    assert memo.get("ada") is None


def test_a_cached_record_counts_its_age() -> None:
    ticks = Ticks()
    memo = UserMemo(now=ticks, max_age=60)
    memo.set_live(True)
    ticks.now = 100.0
    _offered(memo, ADA, age=50)
    assert memo.get("ada") == ADA
    ticks.now = 111.0  # 61 s since the record was written
    assert memo.get("ada") is None
