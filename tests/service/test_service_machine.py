"""A hypothesis state machine driving the real SessionLedger on a real
database, against a small reference model of what each session should be."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from session_ledger.ledger.attempts import SignInAttempts
from session_ledger.ledger.audit import AuditLog
from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.db import make_engine
from session_ledger.ledger.domain.events import RevocationReason, SignInFailure
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.state import SessionStatus, fold
from session_ledger.ledger.service import RequestContext, SessionLedger
from tests.service.conftest import make_ledger
from tests.support import profile

T = TypeVar("T")
POLICY = SessionPolicy(
    expires_in=1000, update_age=100, rotation_grace=30, activity_interval=50, fresh_age=0
)
STEPS = [0, 1, 29, 30, 100, 101, 999, 1000]
USERS = [0, 1]


@dataclass
class Expected:
    """The reference model of one session."""

    session_id: str
    user_id: str
    token: str
    expires_at: datetime
    remember_me: bool
    status: str = "active"
    previous: str | None = None
    grace_until: datetime | None = None
    retired: set[str] = field(default_factory=set)


class LedgerMachine(RuleBasedStateMachine):
    url: str = ""

    sessions = Bundle("sessions")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = ManualClock()
        self.engine = make_engine(self.url)
        self.ledger: SessionLedger = make_ledger(self.engine, self.clock, POLICY)
        # Examples share one database: user ids unique to this example keep
        # other examples' sessions out of the per-user queries.
        suffix = uuid.uuid4().hex[:8]
        self.users = [f"alice-{suffix}", f"bob-{suffix}"]
        self.expected: dict[str, Expected] = {}
        self.last_expires: dict[str, datetime] = {}
        # Failed sign-ins go into the same ledger, interleaved with sessions.
        self.attempts = SignInAttempts(self.ledger.store, "machine-secret-" + suffix, self.clock)
        self.failed: dict[str | None, int] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.engine.dispose())
        self.loop.close()

    # ------------------------------------------------------------ model

    def _predict(self, e: Expected, token: str) -> bool:
        now = self.clock.now()
        if e.status != "active":
            return False
        if token not in {e.token, e.previous, *e.retired}:
            return False
        if now >= e.expires_at:
            e.status = "expired"
            return False
        if token == e.token:
            return True
        if token == e.previous and e.grace_until is not None and now < e.grace_until:
            return True
        e.status = "revoked"  # reuse of a rotated-out token
        return False

    # ------------------------------------------------------------ rules

    @initialize(target=sessions)
    def first_session(self) -> str:
        session_id: str = self.create(0, True)  # type: ignore[assignment]
        return session_id

    @rule(target=sessions, user_index=st.sampled_from(USERS), remember_me=st.booleans())
    def create(self, user_index: int, remember_me: bool) -> str:
        user = self.users[user_index]
        view, token = self.run(self.ledger.create_session(user, remember_me=remember_me))
        self.expected[view.id] = Expected(
            session_id=view.id,
            user_id=user,
            token=token,
            expires_at=view.expires_at,
            remember_me=remember_me,
        )
        return view.id

    @rule(seconds=st.sampled_from(STEPS))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    def _jump(self, target: datetime | None) -> None:
        if target is not None and target > self.clock.now():
            self.clock.set(target)

    @rule(sid=sessions, offset=st.sampled_from([-1, 0, 1]))
    def validate_at_refresh_boundary(self, sid: str, offset: int) -> None:
        e = self.expected[sid]
        boundary = e.expires_at - timedelta(seconds=POLICY.expires_in - POLICY.update_age)
        self._jump(boundary + timedelta(seconds=offset))
        self.validate(sid, "current")

    @rule(sid=sessions, offset=st.sampled_from([-1, 0, 1]))
    def validate_previous_at_grace_end(self, sid: str, offset: int) -> None:
        e = self.expected[sid]
        if e.grace_until is not None:
            self._jump(e.grace_until + timedelta(seconds=offset))
            self.validate(sid, "previous")

    @rule(sid=sessions, which=st.sampled_from(["current", "previous", "retired", "unknown"]))
    def validate_token(self, sid: str, which: str) -> None:
        self.validate(sid, which)

    def validate(self, sid: str, which: str) -> None:
        e = self.expected[sid]
        token = {
            "current": e.token,
            "previous": e.previous,
            "retired": next(iter(sorted(e.retired - {e.previous})), None),
            "unknown": "u" * 43,
        }[which]
        if token is None:
            return
        now = self.clock.now()
        accept = self._predict(e, token)
        got = self.run(self.ledger.get_session(token))
        assert (got is not None) == accept, (which, e, now)
        if got is None:
            return
        refresh_due = (
            token == e.token
            and e.remember_me
            and now >= e.expires_at - timedelta(seconds=POLICY.expires_in - POLICY.update_age)
            and now + timedelta(seconds=POLICY.expires_in) > e.expires_at
        )
        assert got.refreshed == refresh_due
        assert got.rotated == refresh_due
        if refresh_due:
            e.expires_at = now + timedelta(seconds=POLICY.expires_in)
            e.retired.add(e.token)
            e.previous, e.token = e.token, got.token
            e.grace_until = now + timedelta(seconds=POLICY.rotation_grace)
        else:
            assert got.token == token
        assert got.session.expires_at == e.expires_at

    @rule(sid=sessions, how=st.sampled_from(["revoke", "sign_out", "revoke_all"]))
    def end(self, sid: str, how: str) -> None:
        """One rule for the three ways to end sessions, so that ending is no
        likelier than any other step and runs get deep into rotations."""
        e = self.expected[sid]
        now = self.clock.now()
        if how == "sign_out":
            accept = self._predict(e, e.token)
            assert self.run(self.ledger.sign_out(e.token)) == accept
            if accept:
                e.status = "revoked"
            return
        if how == "revoke":
            self.run(self.ledger.revoke_session(e.user_id, sid))
            ended = [e]
        else:
            self.run(
                self.ledger.revoke_all_sessions(e.user_id, reason=RevocationReason.REVOKED_ALL)
            )
            ended = [x for x in self.expected.values() if x.user_id == e.user_id]
        for x in ended:
            if x.status == "active":
                # Revoking a session whose expiry is due records the expiry.
                x.status = "revoked" if now < x.expires_at else "expired"

    @rule(
        user_index=st.sampled_from([*USERS, None]),
        reason=st.sampled_from(list(SignInFailure)),
        ip=st.sampled_from([None, "203.0.113.9", "2001:db8::7"]),
    )
    def failed_sign_in(self, user_index: int | None, reason: SignInFailure, ip: str | None) -> None:
        """A failed sign-in: a stream of its own, which no session rule may see."""
        user = None if user_index is None else self.users[user_index]
        email = f"{user or 'nobody'}@example.com"
        self.run(self.attempts.record_failure(reason, email, RequestContext(ip=ip), user_id=user))
        self.failed[user] = self.failed.get(user, 0) + 1

    # ------------------------------------------------------- invariants

    @invariant()
    def failed_sign_ins_are_recorded_per_account(self) -> None:
        audit = AuditLog(self.engine)
        for user in self.users:
            page = self.run(audit.sign_in_attempts(user_id=user, limit=1000))
            assert len(page.items) == self.failed.get(user, 0)
            assert all(e.type == "SignInFailed" and e.user_id == user for e in page.items)

    @invariant()
    def stored_state_is_the_fold_of_the_events_and_matches_the_model(self) -> None:
        for sid, e in self.expected.items():
            recorded = self.run(self.ledger.store.read_stream(sid))
            folded = fold(r.event for r in recorded)
            stored = self.run(self.ledger.read_model.by_id(sid))
            assert folded == stored
            assert stored is not None
            assert stored.version == len(recorded)
            # expires_at never moves backwards.
            assert stored.expires_at >= self.last_expires.get(sid, stored.expires_at)
            self.last_expires[sid] = stored.expires_at
            if e.status == "revoked":
                assert stored.status is SessionStatus.REVOKED
            elif e.status == "expired":
                # The model knows expiry before the ledger records it (on the
                # next request or the worker's sweep); either is fine here.
                assert stored.status is not SessionStatus.REVOKED
            else:
                assert stored.status is SessionStatus.ACTIVE

    @invariant()
    def listed_sessions_are_exactly_the_live_ones(self) -> None:
        now = self.clock.now()
        for user in self.users:
            listed = {v.id for v in self.run(self.ledger.list_sessions(user))}
            live = {
                sid
                for sid, e in self.expected.items()
                if e.user_id == user and e.status == "active" and now < e.expires_at
            }
            assert listed == live


MACHINE_SETTINGS = settings(
    max_examples=profile.pick(5, 15),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.mark.pg
def test_ledger_machine_on_postgres(pg_url: str) -> None:
    LedgerMachine.url = pg_url
    LedgerMachine.TestCase.settings = MACHINE_SETTINGS
    LedgerMachine.TestCase().runTest()


def test_ledger_machine_on_sqlite(sqlite_url: str) -> None:
    LedgerMachine.url = sqlite_url
    LedgerMachine.TestCase.settings = MACHINE_SETTINGS
    LedgerMachine.TestCase().runTest()
