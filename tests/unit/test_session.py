"""The pure session state machine, rule by rule, with exact numbers.

Policy used unless a test says otherwise: expires_in=100, update_age=10,
rotation_grace=5, activity_interval=7, short sessions 40 s, no cap, always
fresh. Times are seconds after T0.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

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
    ValidationDecision,
    decide,
    decide_validation,
)
from session_ledger.ledger.domain.errors import (
    InvalidCommandError,
    InvalidTokenError,
    InvalidTransitionError,
    LedgerError,
    NotSessionOwnerError,
    SessionAlreadyExistsError,
    SessionEndedError,
    SessionNotFoundError,
    SessionNotFreshError,
)
from session_ledger.ledger.domain.events import (
    Event,
    ExpiryReason,
    RevocationReason,
    SessionCreated,
    SessionExpired,
    SessionReauthenticated,
    SessionRefreshed,
    SessionRevoked,
    SessionRotated,
    SessionTouched,
    SessionUpdated,
)
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.domain.rules import is_active, is_fresh, require_fresh
from session_ledger.ledger.domain.state import SessionState, SessionStatus, evolve, fold
from session_ledger.ledger.domain.tokens import hash_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = SessionPolicy(
    expires_in=100,
    update_age=10,
    rotation_grace=5,
    activity_interval=7,
    short_session_expires_in=40,
)
CAPPED = POLICY.model_copy(update={"max_lifetime": 150})

T1, T2, T3, T4 = (hash_token(f"token-{n}") for n in range(1, 5))
UNKNOWN = hash_token("never-issued")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def apply(state: SessionState | None, events: Sequence[Event]) -> SessionState:
    for event in events:
        state = evolve(state, event)
    assert state is not None
    return state


def run(
    state: SessionState | None,
    command: Command,
    seconds: float,
    policy: SessionPolicy = POLICY,
) -> tuple[SessionState, list[Event]]:
    events = decide(state, command, at(seconds), policy)
    return apply(state, events), events


def create(policy: SessionPolicy = POLICY, **kwargs: Any) -> SessionState:
    command = CreateSession(
        session_id="s1", user_id="u1", token_hash=T1, ip="1.1.1.1", user_agent="UA", **kwargs
    )
    state, _ = run(None, command, 0, policy)
    return state


def validate(
    state: SessionState,
    token_hash: str,
    seconds: float,
    policy: SessionPolicy = POLICY,
    **kwargs: Any,
) -> tuple[SessionState, ValidationDecision]:
    decision = decide_validation(state, ValidateSession(token_hash, **kwargs), at(seconds), policy)
    return apply(state, decision.events), decision


def types(events: Sequence[Event]) -> list[str]:
    return [e.type for e in events]


# ------------------------------------------------------------------ create


def test_create_sets_every_time_from_now() -> None:
    state = create(fields={"theme": "dark"})
    assert state.status is SessionStatus.ACTIVE
    assert state.created_at == state.authenticated_at == state.last_active_at == T0
    assert state.updated_at == T0
    assert state.expires_at == at(100)
    assert state.max_expires_at is None
    assert (state.ip, state.user_agent, state.remember_me) == ("1.1.1.1", "UA", True)
    assert dict(state.fields) == {"theme": "dark"}
    assert state.token_hash == T1
    assert state.previous_token_hash is None
    assert state.retired_token_hashes == frozenset()
    assert state.version == 1
    assert (state.ended_at, state.end_reason, state.ended_by) == (None, None, None)


def test_create_without_remember_me_is_short() -> None:
    assert create(remember_me=False).expires_at == at(40)


def test_create_caps_expiry_at_max_lifetime() -> None:
    state = create(POLICY.model_copy(update={"max_lifetime": 50}))
    assert state.max_expires_at == at(50)
    assert state.expires_at == at(50)
    assert create(CAPPED).expires_at == at(100)
    assert create(CAPPED).max_expires_at == at(150)


def test_create_over_an_existing_session_fails() -> None:
    with pytest.raises(SessionAlreadyExistsError):
        decide(create(), CreateSession("s1", "u1", T2), at(1), POLICY)


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (CreateSession("s1", "u1", "not-a-hash"), InvalidTokenError),
        (CreateSession("s1", "u1", T1.upper()), InvalidTokenError),
        (CreateSession("", "u1", T1), InvalidCommandError),
        (CreateSession("s" * 65, "u1", T1), InvalidCommandError),
        (CreateSession("s1", "", T1), InvalidCommandError),
        (CreateSession("s1", "u1", T1, fields={"x": float("nan")}), InvalidCommandError),
        (CreateSession("s1", "u1", T1, fields={"x": {1, 2}}), InvalidCommandError),  # type: ignore[dict-item]
    ],
)
def test_create_rejects_bad_input(command: CreateSession, error: type[LedgerError]) -> None:
    with pytest.raises(error):
        decide(None, command, T0, POLICY)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(InvalidCommandError):
        decide(None, CreateSession("s1", "u1", T1), datetime(2026, 1, 1), POLICY)


def test_long_ip_and_user_agent_are_cut_not_fatal() -> None:
    state, _ = run(None, CreateSession("s1", "u1", T1, ip="9" * 5000, user_agent="U" * 5000), 0)
    assert state.ip == "9" * 1024
    assert state.user_agent == "U" * 1024


# -------------------------------------------------------------- validation


def test_validate_without_session_is_not_found() -> None:
    decision = decide_validation(None, ValidateSession(T1), T0, POLICY)
    assert (decision.accepted, decision.reason, decision.events) == (False, "not_found", [])


def test_validate_current_token_early_is_accepted_silently() -> None:
    _, decision = validate(create(), T1, 5, ip="1.1.1.1", user_agent="UA")
    assert (decision.accepted, decision.reason, decision.events) == (True, None, [])
    assert decision.rotated is False


def test_validate_unknown_token_is_rejected_without_events() -> None:
    _, decision = validate(create(), UNKNOWN, 5)
    assert (decision.accepted, decision.reason, decision.events) == (False, "unknown_token", [])


def test_validate_garbage_token_hash_is_just_unknown() -> None:
    _, decision = validate(create(), "é" * 10, 5)
    assert decision.reason == "unknown_token"


def test_validate_expires_exactly_at_expires_at() -> None:
    policy = POLICY.model_copy(update={"update_age": 100})
    state = create(policy)
    _, decision = validate(state, T1, 99.999, policy)
    assert decision.accepted
    state, decision = validate(state, T1, 100, policy)
    assert (decision.accepted, decision.reason) == (False, "expired")
    assert decision.events == [SessionExpired(expired_at=at(100), reason=ExpiryReason.IDLE)]
    assert state.status is SessionStatus.EXPIRED
    assert (state.ended_at, state.end_reason, state.ended_by) == (at(100), "idle", "system")


def test_validate_expiry_at_the_cap_is_absolute() -> None:
    policy = POLICY.model_copy(update={"max_lifetime": 50})
    _, decision = validate(create(policy), T1, 50, policy)
    assert decision.events == [SessionExpired(expired_at=at(50), reason=ExpiryReason.ABSOLUTE)]


def test_validate_on_ended_sessions_rejects_without_events() -> None:
    revoked, _ = run(create(), RevokeSession(RevocationReason.SIGN_OUT, "u1"), 1)
    _, decision = validate(revoked, T1, 2)
    assert (decision.accepted, decision.reason, decision.events) == (False, "revoked", [])
    expired, _ = run(create(), ExpireSession(), 100)
    _, decision = validate(expired, T1, 101)
    assert (decision.accepted, decision.reason, decision.events) == (False, "expired", [])


# ------------------------------------------------------ refresh on validation


def test_no_refresh_just_before_update_age() -> None:
    _, decision = validate(create(), T1, 9.999, rotation_token_hash=T2)
    assert not any(isinstance(e, SessionRefreshed) for e in decision.events)


def test_refresh_and_rotate_exactly_at_update_age() -> None:
    state, decision = validate(create(), T1, 10, rotation_token_hash=T2)
    assert decision.accepted
    assert decision.rotated
    assert decision.events == [
        SessionRefreshed(refreshed_at=at(10), expires_at=at(110)),
        SessionRotated(
            rotated_at=at(10), token_hash=T2, previous_token_hash=T1, grace_until=at(15)
        ),
    ]
    assert state.expires_at == at(110)
    assert state.last_active_at == at(10)
    assert (state.token_hash, state.previous_token_hash, state.grace_until) == (T2, T1, at(15))
    assert state.retired_token_hashes == {T1}


def test_refresh_without_a_new_token_does_not_rotate() -> None:
    _, decision = validate(create(), T1, 10)
    assert types(decision.events) == ["SessionRefreshed"]
    assert decision.rotated is False


def test_refresh_without_rotate_on_refresh() -> None:
    policy = POLICY.model_copy(update={"rotate_on_refresh": False})
    _, decision = validate(create(policy), T1, 10, policy, rotation_token_hash=T2)
    assert types(decision.events) == ["SessionRefreshed"]


def test_allow_refresh_false_never_refreshes() -> None:
    _, decision = validate(create(), T1, 50, rotation_token_hash=T2, allow_refresh=False)
    assert decision.accepted
    assert types(decision.events) == ["SessionTouched"]


def test_next_refresh_waits_for_update_age_again() -> None:
    state, _ = validate(create(), T1, 10)
    _, decision = validate(state, T1, 19.999)
    assert "SessionRefreshed" not in types(decision.events)
    _, decision = validate(state, T1, 20)
    assert decision.events[0] == SessionRefreshed(refreshed_at=at(20), expires_at=at(120))


def test_remember_me_false_never_slides() -> None:
    state = create(remember_me=False)
    state, decision = validate(state, T1, 39, rotation_token_hash=T2)
    assert decision.accepted
    assert "SessionRefreshed" not in types(decision.events)
    assert state.expires_at == at(40)
    _, decision = validate(state, T1, 40)
    assert decision.reason == "expired"


def test_refresh_is_capped_and_stops_at_the_cap() -> None:
    state, decision = validate(create(CAPPED), T1, 60, CAPPED, rotation_token_hash=T2)
    assert decision.events[0] == SessionRefreshed(refreshed_at=at(60), expires_at=at(150))
    assert decision.rotated
    # Refresh is due again (150 - 100 + 10 = 60 <= 70) but cannot move forward.
    state, decision = validate(state, T2, 70, CAPPED, rotation_token_hash=T3)
    assert decision.accepted
    assert types(decision.events) == ["SessionTouched"]
    _, decision = validate(state, T2, 150, CAPPED)
    assert decision.events == [SessionExpired(expired_at=at(150), reason=ExpiryReason.ABSOLUTE)]


# ------------------------------------------------------ grace and token reuse


def test_previous_token_is_accepted_within_grace_only() -> None:
    state, _ = validate(create(), T1, 10, rotation_token_hash=T2)
    _, decision = validate(state, T1, 14.999, rotation_token_hash=T3)
    assert decision.accepted
    assert decision.events == []  # no refresh, no rotation from the old token
    state, decision = validate(state, T1, 15)
    assert (decision.accepted, decision.reason) == (False, "token_reuse")
    assert decision.events == [
        SessionRevoked(revoked_at=at(15), reason=RevocationReason.TOKEN_REUSE, actor="system")
    ]
    assert state.status is SessionStatus.REVOKED
    assert (state.end_reason, state.ended_by) == ("token_reuse", "system")
    _, decision = validate(state, T2, 16)
    assert (decision.accepted, decision.reason) == (False, "revoked")


def test_zero_grace_never_accepts_the_previous_token() -> None:
    policy = POLICY.model_copy(update={"rotation_grace": 0})
    state, _ = validate(create(policy), T1, 10, policy, rotation_token_hash=T2)
    _, decision = validate(state, T1, 10, policy)
    assert decision.reason == "token_reuse"


def test_older_retired_token_is_reuse_even_within_a_later_grace() -> None:
    state, _ = validate(create(), T1, 10, rotation_token_hash=T2)
    state, _ = run(state, RotateToken(T3), 12)
    assert state.retired_token_hashes == {T1, T2}
    _, decision = validate(state, T2, 13)
    assert decision.accepted  # the latest previous token, within grace
    _, decision = validate(state, T1, 13)
    assert decision.reason == "token_reuse"


def test_expiry_is_recorded_before_reuse_on_a_dead_session() -> None:
    state, _ = run(create(), RotateToken(T2), 1)
    _, decision = validate(state, T1, 100)
    assert types(decision.events) == ["SessionExpired"]
    assert decision.reason == "expired"


def test_unknown_token_on_a_dead_session_writes_nothing() -> None:
    _, decision = validate(create(), UNKNOWN, 500)
    assert (decision.reason, decision.events) == ("unknown_token", [])


def test_bad_rotation_hash_is_a_typed_error() -> None:
    with pytest.raises(InvalidTokenError):
        validate(create(), T1, 10, rotation_token_hash="nope")
    with pytest.raises(InvalidTokenError):
        validate(create(), T1, 10, rotation_token_hash=T1)


# ---------------------------------------------------------------- activity


def test_touch_once_the_activity_interval_passed() -> None:
    policy = POLICY.model_copy(update={"update_age": 100})
    state = create(policy)
    _, decision = validate(state, T1, 6.999, policy)
    assert decision.events == []
    state, decision = validate(state, T1, 7, policy)
    assert decision.events == [SessionTouched(touched_at=at(7))]
    assert state.last_active_at == at(7)
    _, decision = validate(state, T1, 13.999, policy)
    assert decision.events == []
    _, decision = validate(state, T1, 14, policy)
    assert decision.events == [SessionTouched(touched_at=at(14))]


def test_touch_on_a_new_ip_or_user_agent() -> None:
    state, decision = validate(create(), T1, 1, ip="2.2.2.2")
    assert decision.events == [SessionTouched(touched_at=at(1), ip="2.2.2.2")]
    assert (state.ip, state.user_agent) == ("2.2.2.2", "UA")
    state, decision = validate(state, T1, 2, user_agent="Firefox")
    assert decision.events == [SessionTouched(touched_at=at(2), user_agent="Firefox")]
    assert (state.ip, state.user_agent) == ("2.2.2.2", "Firefox")


def test_unknown_ip_is_not_a_change() -> None:
    _, decision = validate(create(), T1, 1, ip=None, user_agent=None)
    assert decision.events == []
    _, decision = validate(create(), T1, 1, ip="1.1.1.1", user_agent="UA")
    assert decision.events == []


def test_refresh_records_activity_so_no_extra_touch() -> None:
    _, decision = validate(create(), T1, 10)
    assert types(decision.events) == ["SessionRefreshed"]
    _, decision = validate(create(), T1, 10, ip="3.3.3.3", rotation_token_hash=T2)
    assert types(decision.events) == ["SessionRefreshed", "SessionRotated", "SessionTouched"]


def test_previous_token_in_grace_may_touch() -> None:
    state, _ = validate(create(), T1, 10, rotation_token_hash=T2)
    _, decision = validate(state, T1, 11, ip="4.4.4.4")
    assert decision.accepted
    assert decision.events == [SessionTouched(touched_at=at(11), ip="4.4.4.4")]


# ------------------------------------------------------- explicit refresh


def test_refresh_command_ignores_update_age() -> None:
    state, events = run(create(), RefreshSession(), 1)
    assert events == [SessionRefreshed(refreshed_at=at(1), expires_at=at(101))]
    assert state.expires_at == at(101)


def test_refresh_command_never_moves_backwards_or_stands_still() -> None:
    assert decide(create(), RefreshSession(), at(0), POLICY) == []
    shorter = POLICY.model_copy(update={"expires_in": 50})
    assert decide(create(), RefreshSession(), at(10), shorter) == []


def test_refresh_command_rotates_when_given_a_token() -> None:
    _, events = run(create(), RefreshSession(rotation_token_hash=T2), 1)
    assert types(events) == ["SessionRefreshed", "SessionRotated"]


def test_refresh_command_respects_cap_and_remember_me() -> None:
    _, events = run(create(CAPPED), RefreshSession(), 90, CAPPED)
    assert events == [SessionRefreshed(refreshed_at=at(90), expires_at=at(150))]
    assert decide(create(remember_me=False), RefreshSession(T2), at(1), POLICY) == []


# ------------------------------------------- rotate, reauthenticate, update


def test_rotate_command() -> None:
    state, events = run(create(), RotateToken(T2), 3)
    assert events == [
        SessionRotated(rotated_at=at(3), token_hash=T2, previous_token_hash=T1, grace_until=at(8))
    ]
    assert state.expires_at == at(100)  # rotation alone does not refresh


@pytest.mark.parametrize("new_hash", [T1, "short", T2.upper()])
def test_rotate_rejects_bad_or_reused_hashes(new_hash: str) -> None:
    with pytest.raises(InvalidTokenError):
        decide(create(), RotateToken(new_hash), at(1), POLICY)


def test_rotate_back_to_a_retired_hash_is_rejected() -> None:
    state, _ = run(create(), RotateToken(T2), 1)
    with pytest.raises(InvalidTokenError):
        decide(state, RotateToken(T1), at(2), POLICY)


def test_reauthenticate_restarts_freshness() -> None:
    policy = POLICY.model_copy(update={"fresh_age": 20})
    state = create(policy)
    assert is_fresh(state.authenticated_at, at(19.999), policy)
    assert not is_fresh(state.authenticated_at, at(20), policy)
    with pytest.raises(SessionNotFreshError) as caught:
        require_fresh(state.authenticated_at, at(20), policy)
    assert caught.value.code == "SESSION_NOT_FRESH"
    state, events = run(state, Reauthenticate(), 25, policy)
    assert events == [SessionReauthenticated(authenticated_at=at(25))]
    assert (state.authenticated_at, state.last_active_at) == (at(25), at(25))
    require_fresh(state.authenticated_at, at(44.999), policy)
    assert not is_fresh(state.authenticated_at, at(45), policy)


def test_fresh_age_zero_is_always_fresh() -> None:
    assert is_fresh(create().authenticated_at, at(10**6), POLICY)
    require_fresh(create().authenticated_at, at(10**6), POLICY)


def test_update_merges_fields() -> None:
    state = create(fields={"a": 1, "b": [1, 2]})
    state, events = run(state, UpdateFields({"b": None, "c": {"d": "e"}}), 1)
    assert events == [SessionUpdated(updated_at=at(1), fields={"b": None, "c": {"d": "e"}})]
    assert dict(state.fields) == {"a": 1, "b": None, "c": {"d": "e"}}
    assert state.last_active_at == T0  # an update is not activity
    assert state.updated_at == at(1)


def test_state_fields_are_read_only_and_not_aliased() -> None:
    source: dict[str, Any] = {"list": [1, {"deep": [2]}]}
    state, _ = run(create(), UpdateFields(source), 1)
    source["list"].append(3)
    source["list"][1]["deep"].append(4)
    assert state.fields["list"] == [1, {"deep": [2]}]
    with pytest.raises(TypeError):
        state.fields["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"x": float("inf")},
        {"x": object()},
        {"x": (1, 2)},
        {1: "x"},
        {"x": {2: "y"}},
        ["not", "a", "mapping"],
        {"x": "a\x00b"},
        {"a\x00": 1},
        {"x": [{"y": "\x00"}]},
    ],
)
def test_update_rejects_empty_or_non_json(fields: Any) -> None:
    with pytest.raises(InvalidCommandError):
        decide(create(), UpdateFields(fields), at(1), POLICY)


def test_update_rejects_absurd_nesting() -> None:
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    with pytest.raises(InvalidCommandError):
        decide(create(), UpdateFields({"x": deep}), at(1), POLICY)


# ------------------------------------------------------------ revoke, expire


def test_revoke_records_reason_and_actor() -> None:
    command = RevokeSession(RevocationReason.REVOKED_OTHERS, "user:u1")
    state, events = run(create(), command, 5)
    assert events == [
        SessionRevoked(revoked_at=at(5), reason=RevocationReason.REVOKED_OTHERS, actor="user:u1")
    ]
    assert state.status is SessionStatus.REVOKED
    assert state.updated_at == at(5)
    assert (state.ended_at, state.end_reason, state.ended_by) == (
        at(5),
        "revoked_others",
        "user:u1",
    )
    assert not is_active(state, at(5))


def test_revoking_an_ended_session_is_a_no_op() -> None:
    command = RevokeSession(RevocationReason.SIGN_OUT, "u1")
    revoked, _ = run(create(), command, 5)
    assert decide(revoked, command, at(6), POLICY) == []
    expired, _ = run(create(), ExpireSession(), 100)
    assert decide(expired, command, at(101), POLICY) == []


def test_revoking_a_session_whose_expiry_is_due_records_the_expiry() -> None:
    events = decide(create(), RevokeSession(RevocationReason.SIGN_OUT, "u1"), at(100), POLICY)
    assert events == [SessionExpired(expired_at=at(100), reason=ExpiryReason.IDLE)]


@pytest.mark.parametrize(
    "command",
    [RevokeSession(RevocationReason.SIGN_OUT, ""), RevokeSession("bogus", "u1")],  # type: ignore[arg-type]
)
def test_revoke_rejects_bad_input(command: RevokeSession) -> None:
    with pytest.raises(InvalidCommandError):
        decide(create(), command, at(1), POLICY)


def test_expire_only_when_due() -> None:
    assert decide(create(), ExpireSession(), at(99.999), POLICY) == []
    state, events = run(create(), ExpireSession(), 100)
    assert events == [SessionExpired(expired_at=at(100), reason=ExpiryReason.IDLE)]
    assert decide(state, ExpireSession(), at(200), POLICY) == []  # never twice


def test_expire_skips_a_session_a_refresh_just_extended() -> None:
    state, _ = validate(create(), T1, 95)  # refreshed to 195
    assert decide(state, ExpireSession(), at(100), POLICY) == []


def test_expire_at_the_cap_is_absolute() -> None:
    state, _ = run(create(CAPPED), RefreshSession(), 90, CAPPED)
    _, events = run(state, ExpireSession(), 150, CAPPED)
    assert events == [SessionExpired(expired_at=at(150), reason=ExpiryReason.ABSOLUTE)]


def test_revoked_session_cannot_be_expired() -> None:
    state, _ = run(create(), RevokeSession(RevocationReason.ADMIN, "admin:1"), 1)
    assert decide(state, ExpireSession(), at(500), POLICY) == []


# ------------------------------------------------------ illegal commands


LIVE_ONLY: list[Command] = [
    RefreshSession(),
    RotateToken(T4),
    Reauthenticate(),
    UpdateFields({"a": 1}),
]


@pytest.mark.parametrize("command", LIVE_ONLY)
def test_live_only_commands_on_an_ended_session(command: Command) -> None:
    revoked, _ = run(create(), RevokeSession(RevocationReason.SIGN_OUT, "u1"), 1)
    with pytest.raises(SessionEndedError) as caught:
        decide(revoked, command, at(2), POLICY)
    assert caught.value.code == "SESSION_ENDED"


@pytest.mark.parametrize("command", LIVE_ONLY)
def test_live_only_commands_on_a_session_past_expiry(command: Command) -> None:
    with pytest.raises(SessionEndedError):
        decide(create(), command, at(100), POLICY)


@pytest.mark.parametrize(
    "command", [*LIVE_ONLY, RevokeSession(RevocationReason.SIGN_OUT, "u1"), ExpireSession()]
)
def test_commands_on_no_session(command: Command) -> None:
    with pytest.raises(SessionNotFoundError) as caught:
        decide(None, command, T0, POLICY)
    assert caught.value.code == "SESSION_NOT_FOUND"


def test_decide_validate_returns_the_decision_events() -> None:
    state = create()
    command = ValidateSession(T1, rotation_token_hash=T2)
    assert decide(state, command, at(10), POLICY) == (
        decide_validation(state, command, at(10), POLICY).events
    )


def test_error_codes() -> None:
    assert SessionAlreadyExistsError("x").code == "SESSION_ALREADY_EXISTS"
    assert InvalidCommandError("x").code == "INVALID_COMMAND"
    assert NotSessionOwnerError("x").code == "NOT_SESSION_OWNER"
    assert InvalidTokenError("x").code == "INVALID_TOKEN"
    assert InvalidTransitionError("x").code == "INVALID_TRANSITION"


# ------------------------------------------------------- evolve and fold


def _created() -> SessionCreated:
    event = decide(None, CreateSession("s1", "u1", T1), T0, POLICY)[0]
    assert isinstance(event, SessionCreated)
    return event


def test_fold_of_nothing_is_none() -> None:
    assert fold([]) is None


def test_fold_equals_step_by_step_evolution_and_counts_versions() -> None:
    events: list[Event] = [_created()]
    state = apply(None, events)
    commands: list[tuple[Command, float]] = [
        (ValidateSession(T1, ip="5.5.5.5", rotation_token_hash=T2), 10),
        (UpdateFields({"k": "v"}), 11),
        (Reauthenticate(), 12),
        (RevokeSession(RevocationReason.SIGN_OUT, "u1"), 13),
    ]
    for command, seconds in commands:
        new = decide(state, command, at(seconds), POLICY)
        events += new
        state = apply(state, new)
        assert fold(events) == state
        assert state.version == len(events)
    assert state.version == 7


def test_stream_must_start_with_created() -> None:
    with pytest.raises(InvalidTransitionError):
        evolve(None, SessionTouched(touched_at=T0))


def test_created_twice_is_rejected() -> None:
    with pytest.raises(InvalidTransitionError):
        fold([_created(), _created()])


def test_nothing_follows_a_terminal_event() -> None:
    ended: list[Event] = [_created(), SessionExpired(expired_at=at(100), reason=ExpiryReason.IDLE)]
    for event in (
        SessionTouched(touched_at=at(101)),
        SessionRevoked(revoked_at=at(101), reason=RevocationReason.SIGN_OUT, actor="u1"),
        SessionExpired(expired_at=at(101), reason=ExpiryReason.IDLE),
    ):
        with pytest.raises(InvalidTransitionError):
            fold([*ended, event])


def test_inconsistent_rotation_is_rejected() -> None:
    wrong = SessionRotated(
        rotated_at=at(1), token_hash=T3, previous_token_hash=T2, grace_until=at(6)
    )
    with pytest.raises(InvalidTransitionError):
        fold([_created(), wrong])


def test_refresh_backwards_or_past_cap_is_rejected() -> None:
    with pytest.raises(InvalidTransitionError):
        fold([_created(), SessionRefreshed(refreshed_at=at(1), expires_at=at(50))])
    capped = decide(None, CreateSession("s1", "u1", T1), T0, CAPPED)
    capped.append(SessionRefreshed(refreshed_at=at(60), expires_at=at(160)))
    with pytest.raises(InvalidTransitionError):
        fold(capped)


def test_is_active() -> None:
    assert not is_active(None, T0)
    state = create()
    assert is_active(state, at(99.999))
    assert not is_active(state, at(100))
