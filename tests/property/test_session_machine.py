"""A hypothesis state machine over the pure session state machine.

Random interleavings of create / validate (with the current, previous, a
retired or an unknown token) / refresh / rotate / reauthenticate / update /
revoke / expire, with time jumping forward by random amounts and exactly onto
the interesting boundaries (refresh due, grace end, expiry, cap, freshness,
activity). Each step is checked against a small reference model kept in plain
attributes, and the invariants below are checked after every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import event as note_event
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from session_ledger.ledger.domain.decide import (
    Command,
    CreateSession,
    ExpireSession,
    Reauthenticate,
    RefreshSession,
    RevokeSession,
    RotateToken,
    UpdateFields,
    ValidateSession,
    decide,
    decide_validation,
)
from session_ledger.ledger.domain.errors import (
    InvalidCommandError,
    InvalidTransitionError,
    SessionAlreadyExistsError,
    SessionEndedError,
    SessionError,
    SessionNotFoundError,
)
from session_ledger.ledger.domain.events import Event, RevocationReason, SignInFailed, SignInFailure
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.rules import is_active, is_fresh
from session_ledger.ledger.domain.state import SessionState, SessionStatus, evolve, fold
from session_ledger.ledger.domain.tokens import hash_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)
IPS = st.sampled_from([None, "10.0.0.1", "10.0.0.2"])
AGENTS = st.sampled_from([None, "Firefox", "Safari"])
# Mostly short steps (so sessions live long enough to refresh and rotate),
# sometimes long ones, sometimes sub-second ones.
STEPS = st.one_of(
    st.integers(0, 4),
    st.integers(0, 12),
    st.integers(0, 40),
    st.integers(0, 150),
    st.sampled_from([0.001, 0.5]),
).map(float)
WHICH_TOKEN = st.sampled_from(["current", "current", "previous", "retired", "unknown"])
BOUNDARIES = st.sampled_from(["refresh", "grace", "expiry", "cap", "fresh", "activity"])
FIELDS = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    # No NUL: fields holding one are refused (PostgreSQL cannot store it),
    # which tests/unit/test_session.py checks.
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.text(st.characters(blacklist_characters="\x00"), max_size=3),
    max_size=2,
)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


@dataclass
class Model:
    """What the session should be, written independently of ledger.domain."""

    status: str = "none"  # none | active | revoked | expired
    current: str = ""
    previous: str | None = None
    grace_until: datetime | None = None
    retired: set[str] = field(default_factory=set)
    expires_at: datetime = T0
    cap: datetime | None = None
    authenticated_at: datetime = T0
    last_active_at: datetime = T0
    updated_at: datetime = T0
    remember_me: bool = True
    ip: str | None = None
    user_agent: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    end_reason: str | None = None

    def dead(self, now: datetime) -> bool:
        """Ended, or past its expiry (recorded or not)."""
        return self.status != "active" or now >= self.expires_at

    def expiry_reason(self) -> str:
        return "absolute" if self.cap is not None and self.expires_at == self.cap else "idle"

    def end(self, status: str, reason: str) -> None:
        self.status, self.end_reason = status, reason

    def rotate(self, new: str, now: datetime, grace: int) -> None:
        self.retired.add(self.current)
        self.previous, self.current = self.current, new
        self.grace_until = now + seconds(grace)

    def try_refresh(self, now: datetime, policy: SessionPolicy) -> bool:
        if not self.remember_me:
            return False
        target = now + seconds(policy.expires_in)
        if self.cap is not None:
            target = min(target, self.cap)
        if target <= self.expires_at:
            return False
        self.expires_at, self.last_active_at = target, now
        return True


class SessionMachine(RuleBasedStateMachine):
    policy = SessionPolicy(expires_in=100, update_age=10, rotation_grace=5, activity_interval=7)

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.counter = 0
        self.state: SessionState | None = None
        self.events: list[Event] = []
        self.model = Model()
        self.highest_expires_at: datetime | None = None
        self.ever_ended = False

    # ------------------------------------------------------------ plumbing

    def new_stream(self) -> None:
        self.state, self.events, self.model = None, [], Model()
        self.highest_expires_at, self.ever_ended = None, False

    def fresh_hash(self) -> str:
        self.counter += 1
        return hash_token(f"token-{self.counter}")

    def run(self, command: Command) -> list[str]:
        events = decide(self.state, command, self.now, self.policy)
        self.record(events)
        return [e.type for e in events]

    def record(self, events: list[Event]) -> None:
        if events:
            self.model.updated_at = self.now
        for event in events:
            self.state = evolve(self.state, event)
        self.events.extend(events)

    def expect_error(self, command: Command, error: type[SessionError]) -> None:
        with pytest.raises(error):
            decide(self.state, command, self.now, self.policy)

    def live_guard(self, command: Command) -> bool:
        """Check the errors of a live-only command; True when it may proceed."""
        if self.model.status == "none":
            self.expect_error(command, SessionNotFoundError)
            return False
        if self.model.dead(self.now):
            self.expect_error(command, SessionEndedError)
            return False
        return True

    # --------------------------------------------------------------- time

    @rule(step=STEPS)
    def advance(self, step: float) -> None:
        self.now += seconds(step)

    @rule(boundary=BOUNDARIES)
    def advance_to_boundary(self, boundary: str) -> None:
        m, p = self.model, self.policy
        targets: dict[str, datetime | None] = {
            "refresh": m.expires_at - seconds(p.expires_in) + seconds(p.update_age),
            "grace": m.grace_until,
            "expiry": m.expires_at,
            "cap": m.cap,
            "fresh": m.authenticated_at + seconds(p.fresh_age),
            "activity": m.last_active_at + seconds(p.activity_interval),
        }
        target = targets[boundary]
        if target is not None and target > self.now:
            self.now = target

    # ----------------------------------------------------------- commands

    @initialize(
        start=st.integers(0, 9),
        remember_me=st.integers(0, 3).map(bool),
        ip=IPS,
        user_agent=AGENTS,
        fields=FIELDS,
    )
    def begin(
        self,
        start: int,
        remember_me: bool,
        ip: str | None,
        user_agent: str | None,
        fields: dict[str, Any],
    ) -> None:
        # Usually start with a session; sometimes leave it to the create rule
        # so that commands on no session are exercised too.
        if start:
            self.create(remember_me, ip, user_agent, fields)

    @rule(remember_me=st.booleans(), ip=IPS, user_agent=AGENTS, fields=FIELDS)
    def create(
        self, remember_me: bool, ip: str | None, user_agent: str | None, fields: dict[str, Any]
    ) -> None:
        token = self.fresh_hash()
        command = CreateSession("s1", "u1", token, ip, user_agent, remember_me, fields)
        if self.model.status != "none":
            self.expect_error(command, SessionAlreadyExistsError)
            if self.model.status == "active":
                return
            # The ended stream has shown it stays dead; sign in again on a new
            # stream so that the rest of the run still exercises a live session.
            self.new_stream()
        assert self.run(command) == ["SessionCreated"]
        lifetime = self.policy.expires_in if remember_me else self.policy.short_session_expires_in
        cap = None
        if self.policy.max_lifetime is not None:
            cap = self.now + seconds(self.policy.max_lifetime)
        expires_at = self.now + seconds(lifetime)
        self.model = Model(
            status="active",
            current=token,
            expires_at=min(expires_at, cap) if cap else expires_at,
            cap=cap,
            authenticated_at=self.now,
            last_active_at=self.now,
            updated_at=self.now,
            remember_me=remember_me,
            ip=ip,
            user_agent=user_agent,
            fields=dict(fields),
        )

    @rule(
        which=WHICH_TOKEN,
        ip=IPS,
        user_agent=AGENTS,
        rotate=st.booleans(),
        allow_refresh=st.booleans(),
        data=st.data(),
    )
    def validate(
        self,
        which: str,
        ip: str | None,
        user_agent: str | None,
        rotate: bool,
        allow_refresh: bool,
        data: st.DataObject,
    ) -> None:
        presented = self.pick_token(which, data)
        new = self.fresh_hash() if rotate else None
        command = ValidateSession(presented, ip, user_agent, new, allow_refresh)
        was_ended = self.ever_ended
        decision = decide_validation(self.state, command, self.now, self.policy)
        self.record(decision.events)
        expected = self.expect_validation(command)
        assert (decision.reason, [e.type for e in decision.events]) == expected
        assert decision.accepted == (expected[0] is None)
        assert decision.rotated == ("SessionRotated" in expected[1])
        # Shown by --hypothesis-show-statistics: proof the paths are reached.
        note_event(f"validate {which}: {decision.reason or 'accepted'} {expected[1]}")
        if decision.accepted:
            assert not was_ended, "an ended session validated again"
            if presented != self.model.current:
                # Only the previous token, and only inside its grace window.
                assert presented == self.model.previous
                assert self.model.grace_until is not None
                assert self.now < self.model.grace_until
        if decision.reason == "token_reuse":
            assert self.state is not None
            assert self.state.status is SessionStatus.REVOKED
            assert self.state.end_reason == "token_reuse"

    @rule(ip=IPS, data=st.data())
    def validate_current(self, ip: str | None, data: st.DataObject) -> None:
        """The common request: the current token, a new token ready for rotation."""
        self.validate("current", ip, None, rotate=True, allow_refresh=True, data=data)

    @rule(offset=st.sampled_from([0.0, 0.001, 1.0]), data=st.data())
    def request_at_refresh_boundary(self, offset: float, data: st.DataObject) -> None:
        """Jump to exactly when a refresh falls due (or just after) and validate."""
        p = self.policy
        due = self.model.expires_at - seconds(p.expires_in) + seconds(p.update_age)
        self.now = max(self.now, due + seconds(offset))
        self.validate("current", None, None, rotate=True, allow_refresh=True, data=data)

    @rule(offset=st.sampled_from([-0.001, 0.0]), data=st.data())
    def previous_token_at_grace_boundary(self, offset: float, data: st.DataObject) -> None:
        """Show the rotated-out token just before, or exactly at, the end of its grace."""
        if self.model.grace_until is not None:
            self.now = max(self.now, self.model.grace_until + seconds(offset))
        self.validate("previous", None, None, rotate=True, allow_refresh=True, data=data)

    def pick_token(self, which: str, data: st.DataObject) -> str:
        m = self.model
        if which == "current" and m.current:
            return m.current
        if which == "previous" and m.previous is not None:
            return m.previous
        if which == "retired" and m.retired:
            return data.draw(st.sampled_from(sorted(m.retired)))
        return hash_token("never-issued")

    def expect_validation(self, command: ValidateSession) -> tuple[str | None, list[str]]:
        """Update the model for a validation; return (reason, event types)."""
        m, p, now, token = self.model, self.policy, self.now, command.token_hash
        if m.status == "none":
            return "not_found", []
        if m.status != "active":
            return m.status, []
        if token != m.current and token not in m.retired:
            return "unknown_token", []
        if now >= m.expires_at:
            m.end("expired", m.expiry_reason())
            return "expired", ["SessionExpired"]
        in_grace = token == m.previous and m.grace_until is not None and now < m.grace_until
        if token != m.current and not in_grace:
            m.end("revoked", "token_reuse")
            return "token_reuse", ["SessionRevoked"]
        types: list[str] = []
        last_active_at = m.last_active_at
        refresh_due = now >= m.expires_at - seconds(p.expires_in) + seconds(p.update_age)
        if token == m.current and command.allow_refresh and refresh_due and m.try_refresh(now, p):
            types.append("SessionRefreshed")
            if p.rotate_on_refresh and command.rotation_token_hash is not None:
                m.rotate(command.rotation_token_hash, now, p.rotation_grace)
                types.append("SessionRotated")
        moved = (command.ip is not None and command.ip != m.ip) or (
            command.user_agent is not None and command.user_agent != m.user_agent
        )
        idle = now - last_active_at >= seconds(p.activity_interval)
        if moved or (idle and not types):
            m.last_active_at = now
            m.ip = command.ip or m.ip
            m.user_agent = command.user_agent or m.user_agent
            types.append("SessionTouched")
        return None, types

    @rule(rotate=st.booleans())
    def refresh(self, rotate: bool) -> None:
        new = self.fresh_hash() if rotate else None
        command = RefreshSession(new)
        if not self.live_guard(command):
            return
        expected: list[str] = []
        if self.model.try_refresh(self.now, self.policy):
            expected.append("SessionRefreshed")
            if self.policy.rotate_on_refresh and new is not None:
                self.model.rotate(new, self.now, self.policy.rotation_grace)
                expected.append("SessionRotated")
        assert self.run(command) == expected

    @rule()
    def rotate(self) -> None:
        new = self.fresh_hash()
        command = RotateToken(new)
        if not self.live_guard(command):
            return
        assert self.run(command) == ["SessionRotated"]
        self.model.rotate(new, self.now, self.policy.rotation_grace)

    @rule()
    def reauthenticate(self) -> None:
        if not self.live_guard(Reauthenticate()):
            return
        assert self.run(Reauthenticate()) == ["SessionReauthenticated"]
        self.model.authenticated_at = self.model.last_active_at = self.now

    @rule(fields=FIELDS)
    def update(self, fields: dict[str, Any]) -> None:
        command = UpdateFields(fields)
        if not self.live_guard(command):
            return
        if not fields:
            self.expect_error(command, InvalidCommandError)
            return
        assert self.run(command) == ["SessionUpdated"]
        self.model.fields.update(fields)

    @rule(
        reason=st.sampled_from(RevocationReason),
        actor=st.sampled_from(["u1", "admin:7"]),
        dice=st.integers(0, 2),
    )
    def revoke(self, reason: RevocationReason, actor: str, dice: int) -> None:
        if dice:
            return  # revoke one time in three: live sessions have more to show
        command = RevokeSession(reason, actor)
        m = self.model
        if m.status == "none":
            self.expect_error(command, SessionNotFoundError)
            return
        types = self.run(command)
        if m.status != "active":
            assert types == []  # idempotent
        elif self.now >= m.expires_at:
            assert types == ["SessionExpired"]
            m.end("expired", m.expiry_reason())
        else:
            assert types == ["SessionRevoked"]
            m.end("revoked", reason.value)
            assert self.state is not None
            assert self.state.ended_by == actor

    @rule(reason=st.sampled_from(list(SignInFailure)), ip=IPS)
    def failed_sign_in_never_applies_to_a_session(
        self, reason: SignInFailure, ip: str | None
    ) -> None:
        """A SignInFailed (the other event of the ledger) is refused by every
        session state, before or after any session event: its stream can
        never be folded into a session."""
        failed = SignInFailed(
            attempted_at=self.now, reason=reason, email_key="0" * 64, ip=ip, user_agent=None
        )
        with pytest.raises(InvalidTransitionError, match="SignInFailed"):
            evolve(self.state, failed)

    @rule()
    def expire(self) -> None:
        m = self.model
        if m.status == "none":
            self.expect_error(ExpireSession(), SessionNotFoundError)
            return
        types = self.run(ExpireSession())
        if m.status == "active" and self.now >= m.expires_at:
            assert types == ["SessionExpired"]
            m.end("expired", m.expiry_reason())
        else:
            assert types == []  # not due, or already ended: never ends twice

    # ---------------------------------------------------------- invariants

    @invariant()
    def fold_of_all_events_is_the_state(self) -> None:
        assert fold(self.events) == self.state
        if self.state is not None:
            assert self.state.version == len(self.events)

    @invariant()
    def state_matches_the_model(self) -> None:
        s, m = self.state, self.model
        if s is None:
            assert m.status == "none"
            return
        assert s.status.value == m.status
        assert s.end_reason == m.end_reason
        assert (s.token_hash, s.previous_token_hash, s.grace_until) == (
            m.current,
            m.previous,
            m.grace_until,
        )
        assert s.retired_token_hashes == m.retired
        assert (s.expires_at, s.max_expires_at) == (m.expires_at, m.cap)
        assert (s.authenticated_at, s.last_active_at) == (m.authenticated_at, m.last_active_at)
        assert s.updated_at == m.updated_at
        assert (s.ip, s.user_agent, s.remember_me) == (m.ip, m.user_agent, m.remember_me)
        assert dict(s.fields) == m.fields

    @invariant()
    def expires_at_only_moves_forward_and_stays_under_the_cap(self) -> None:
        if self.state is None:
            return
        if self.highest_expires_at is not None:
            assert self.state.expires_at >= self.highest_expires_at
        self.highest_expires_at = self.state.expires_at
        if self.state.max_expires_at is not None:
            assert self.state.expires_at <= self.state.max_expires_at
        if not self.state.remember_me:
            short = seconds(self.policy.short_session_expires_in)
            assert self.state.expires_at <= self.state.created_at + short

    @invariant()
    def terminal_states_stay_terminal(self) -> None:
        if self.state is None:
            return
        if self.ever_ended:
            assert self.state.status is not SessionStatus.ACTIVE
            assert not is_active(self.state, self.now)
        self.ever_ended = self.state.status is not SessionStatus.ACTIVE

    @invariant()
    def activity_and_freshness_are_as_defined(self) -> None:
        if self.state is None:
            return
        alive = self.model.status == "active" and self.now < self.model.expires_at
        assert is_active(self.state, self.now) == alive
        fresh_age = self.policy.fresh_age
        expected = fresh_age == 0 or self.now - self.model.authenticated_at < seconds(fresh_age)
        assert is_fresh(self.state.authenticated_at, self.now, self.policy) == expected

    @invariant()
    def the_previous_token_is_retired(self) -> None:
        if self.state is not None and self.state.previous_token_hash is not None:
            assert self.state.previous_token_hash in self.state.retired_token_hashes
            assert self.state.token_hash not in self.state.retired_token_hashes


# ------------------------------------------------- one TestCase per policy

SETTINGS = settings(max_examples=100, stateful_step_count=40, deadline=None)


@SETTINGS
class DefaultPolicyMachine(SessionMachine):
    """Rotation on refresh, a grace window, no cap, always fresh."""


@SETTINGS
class FreshCappedMachine(SessionMachine):
    """Freshness limited and an absolute cap shorter than two lifetimes."""

    policy = SessionPolicy(
        expires_in=100,
        update_age=10,
        fresh_age=20,
        rotation_grace=5,
        max_lifetime=150,
        short_session_expires_in=40,
        activity_interval=7,
    )


@SETTINGS
class EdgePolicyMachine(SessionMachine):
    """Zero update_age, zero grace, zero activity interval, no rotation on refresh."""

    policy = SessionPolicy(
        expires_in=50,
        update_age=0,
        fresh_age=1,
        rotate_on_refresh=False,
        rotation_grace=0,
        short_session_expires_in=60,  # longer than expires_in on purpose
        activity_interval=0,
    )


@SETTINGS
class CapEqualsLifetimeMachine(SessionMachine):
    """The cap equals the lifetime: refresh can never extend anything."""

    policy = SessionPolicy(
        expires_in=100,
        update_age=60,
        fresh_age=30,
        rotation_grace=30,
        max_lifetime=100,
        short_session_expires_in=40,
        activity_interval=15,
    )


TestDefaultPolicy = DefaultPolicyMachine.TestCase
TestFreshCapped = FreshCappedMachine.TestCase
TestEdgePolicy = EdgePolicyMachine.TestCase
TestCapEqualsLifetime = CapEqualsLifetimeMachine.TestCase
