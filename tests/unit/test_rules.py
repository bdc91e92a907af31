"""The domain's shared rules (ledger.domain.rules, ledger.domain.ids): each
is one pure function, and the layers that ask it agree with the state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from session_ledger.api.routes.session import RevokeSessionBody, RevokeSessionsBody
from session_ledger.ledger.domain.decide import (
    CreateSession,
    ValidateSession,
    decide,
    decide_validation,
)
from session_ledger.ledger.domain.errors import SessionNotFreshError
from session_ledger.ledger.domain.events import SessionCreated, SessionExpired, SessionRefreshed
from session_ledger.ledger.domain.ids import SESSION_ID_MAX_LENGTH, is_session_id
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.rules import (
    expiry_or_refresh_due,
    is_fresh,
    refresh_due,
    require_fresh,
)
from session_ledger.ledger.domain.state import fold
from session_ledger.ledger.domain.tokens import hash_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = 86_400
HASH = hash_token("token")

seconds = st.integers(min_value=0, max_value=60 * DAY)
policies = st.builds(
    SessionPolicy,
    expires_in=st.integers(min_value=1, max_value=60 * DAY),
    update_age=seconds,
    fresh_age=seconds,
    short_session_expires_in=st.integers(min_value=1, max_value=60 * DAY),
    max_lifetime=st.none() | st.integers(min_value=1, max_value=90 * DAY),
    activity_interval=seconds,
)
offsets = st.integers(min_value=-90 * DAY * 1000, max_value=90 * DAY * 1000).map(
    lambda ms: timedelta(milliseconds=ms)
)


@given(policies, offsets, offsets)
def test_refresh_due_is_betterauths_rule(policy: SessionPolicy, a: timedelta, b: timedelta) -> None:
    expires_at, now = T0 + a, T0 + b
    issued = expires_at - timedelta(seconds=policy.expires_in)
    assert refresh_due(expires_at, now, policy) == (
        now >= issued + timedelta(seconds=policy.update_age)
    )


@given(policies, st.booleans(), st.integers(min_value=0, max_value=120 * DAY * 1000))
def test_a_copy_never_answers_when_the_store_would_write(
    policy: SessionPolicy, remember_me: bool, later_ms: int
) -> None:
    """The cookie cache's rule (asked on the session's JSON) is never looser
    than the state machine: when validating would expire or slide the
    session, the cache must defer to the store."""
    created = CreateSession("s1", "u1", HASH, remember_me=remember_me)
    state = fold(decide(None, created, T0, policy))
    assert state is not None
    now = T0 + timedelta(milliseconds=later_ms)
    decision = decide_validation(state, ValidateSession(token_hash=HASH), now, policy)
    writes = any(isinstance(e, SessionExpired | SessionRefreshed) for e in decision.events)
    if writes:
        assert expiry_or_refresh_due(state.expires_at, state.remember_me, now, policy)
    if not remember_me and now < state.expires_at:
        assert not expiry_or_refresh_due(state.expires_at, False, now, policy)


def test_expiry_or_refresh_due_edges() -> None:
    policy = SessionPolicy(expires_in=100, update_age=10)
    expires_at = T0 + timedelta(seconds=100)
    assert not expiry_or_refresh_due(expires_at, True, T0 + timedelta(seconds=9.999), policy)
    assert expiry_or_refresh_due(expires_at, True, T0 + timedelta(seconds=10), policy)
    assert not expiry_or_refresh_due(expires_at, False, T0 + timedelta(seconds=99.999), policy)
    assert expiry_or_refresh_due(expires_at, False, expires_at, policy)


@given(policies, offsets)
def test_fresh_while_younger_than_fresh_age(policy: SessionPolicy, age: timedelta) -> None:
    now = T0 + age
    expected = policy.fresh_age == 0 or age < timedelta(seconds=policy.fresh_age)
    assert is_fresh(T0, now, policy) == expected
    if expected:
        require_fresh(T0, now, policy)
    else:
        with pytest.raises(SessionNotFreshError):
            require_fresh(T0, now, policy)


def _event_accepts(value: str) -> bool:
    try:
        SessionCreated(
            session_id=value,
            user_id="u1",
            token_hash=HASH,
            created_at=T0,
            authenticated_at=T0,
            expires_at=T0 + timedelta(days=1),
        )
    except ValidationError:
        return False
    return True


def _route_accepts(value: str) -> bool:
    try:
        RevokeSessionBody(token=value)
        RevokeSessionsBody(ids=[value])
    except ValidationError:
        return False
    return True


ids = st.text(
    alphabet=st.sampled_from("aZ09_-.:/ \x00é+=") | st.characters(),
    max_size=SESSION_ID_MAX_LENGTH + 2,
) | st.uuids().map(str)


@given(ids)
def test_every_layer_has_the_same_session_id_rule(value: str) -> None:
    assert _route_accepts(value) == is_session_id(value) == _event_accepts(value)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("0190d3c4-5b6a-7c8d-9e0f-a1b2c3d4e5f6", True),  # ours: UUIDv7
        ("Kp3vQ8wZr2LmN5tY7uXo1aBcDeFgHiJk", True),  # BetterAuth's generateId
        ("x" * 64, True),
        ("x" * 65, False),
        ("", False),
        ("a.b", False),  # the route used to allow these; nothing we issue has them
        ("a:b", False),
        ("a\nb", False),
        ("abc\n", False),
    ],
)
def test_session_ids(value: str, accepted: bool) -> None:
    assert is_session_id(value) == _route_accepts(value) == _event_accepts(value) == accepted
