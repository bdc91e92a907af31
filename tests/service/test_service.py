"""The SessionLedger service end to end on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.ledger.clock import ManualClock
from session_ledger.ledger.domain.errors import InvalidCommandError, SessionNotFoundError
from session_ledger.ledger.domain.events import RevocationReason, SessionRevoked
from session_ledger.ledger.domain.policy import SessionPolicy
from session_ledger.ledger.service import RequestContext, SessionLedger
from tests.service.conftest import make_ledger

DAY = 86400
CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
)


async def test_create_then_get_returns_the_session(ledger: SessionLedger) -> None:
    ctx = RequestContext(ip="203.0.113.5", user_agent=CHROME)
    view, token = await ledger.create_session("user-1", ctx, fields={"theme": "dark"})
    got = await ledger.get_session(token, ctx)
    assert got is not None
    assert got.session.id == view.id
    assert got.session.user_id == "user-1"
    assert got.session.ip == "203.0.113.5"
    assert got.session.device == "Chrome 120 on Mac OS X"
    assert got.session.fields == {"theme": "dark"}
    assert got.token == token
    assert not got.rotated


async def test_only_the_hash_of_the_token_is_stored(
    ledger: SessionLedger, engine: AsyncEngine
) -> None:
    _, token = await ledger.create_session("user-1")
    async with engine.connect() as conn:
        dump = " ".join(
            str(row) for row in (await conn.exec_driver_sql("SELECT * FROM ledger_events")).all()
        )
        dump += " ".join(
            str(row) for row in (await conn.exec_driver_sql("SELECT * FROM sessions")).all()
        )
    assert token not in dump


@pytest.mark.parametrize(
    "token",
    ["", "x" * 5000, "ünïcödé-token-ünïcödé-token", "not a token!", "a.b.c", "\x00" * 40],
    ids=["empty", "oversized", "non-ascii", "spaces", "dots", "nul"],
)
async def test_bad_tokens_are_none_and_write_nothing(ledger: SessionLedger, token: str) -> None:
    await ledger.create_session("user-1")
    head = await ledger.store.head()
    assert await ledger.get_session(token) is None
    assert await ledger.sign_out(token) is False
    with pytest.raises(SessionNotFoundError):
        await ledger.update_session(token, {"a": 1})
    assert await ledger.store.head() == head


async def test_refresh_slides_expiry_and_rotates_the_token(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    ledger = make_ledger(engine, clock, SessionPolicy(expires_in=10 * DAY, update_age=DAY))
    view, token = await ledger.create_session("user-1")
    clock.advance(DAY + 1)
    got = await ledger.get_session(token)
    assert got is not None
    assert got.rotated
    assert got.refreshed
    assert got.token != token
    assert got.session.expires_at == clock.now() + timedelta(days=10)
    # The new token works; the old one within the grace window too.
    assert await ledger.get_session(got.token) is not None
    clock.advance(5)
    assert await ledger.get_session(token) is not None
    # After the grace window, the old token is reuse: the session dies.
    clock.advance(60)
    assert await ledger.get_session(token) is None
    assert await ledger.get_session(got.token) is None
    events = await ledger.store.read_stream(view.id)
    last = events[-1].event
    assert isinstance(last, SessionRevoked)
    assert last.reason is RevocationReason.TOKEN_REUSE


async def test_disable_refresh_never_refreshes(engine: AsyncEngine, clock: ManualClock) -> None:
    ledger = make_ledger(engine, clock, SessionPolicy(expires_in=10 * DAY, update_age=DAY))
    _, token = await ledger.create_session("user-1")
    clock.advance(2 * DAY)
    got = await ledger.get_session(token, disable_refresh=True)
    assert got is not None
    assert not got.refreshed
    assert got.token == token


async def test_expired_session_is_none_and_recorded(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    ledger = make_ledger(engine, clock, SessionPolicy(expires_in=100, update_age=50))
    view, token = await ledger.create_session("user-1")
    clock.advance(101)
    assert await ledger.get_session(token) is None
    events = await ledger.store.read_stream(view.id)
    assert events[-1].type == "SessionExpired"
    assert await ledger.list_sessions("user-1") == []


async def test_remember_me_off_is_short_and_never_slides(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    policy = SessionPolicy(expires_in=30 * DAY, update_age=0, short_session_expires_in=DAY)
    ledger = make_ledger(engine, clock, policy)
    view, token = await ledger.create_session("user-1", remember_me=False)
    assert view.expires_at - view.created_at == timedelta(days=1)
    clock.advance(DAY - 10)
    got = await ledger.get_session(token)
    assert got is not None
    assert not got.refreshed
    clock.advance(20)
    assert await ledger.get_session(token) is None


async def test_list_sessions_shows_active_only_with_current_marked(
    ledger: SessionLedger,
) -> None:
    a, _ = await ledger.create_session("user-1", RequestContext(user_agent=CHROME))
    b, _ = await ledger.create_session("user-1", RequestContext(ip="198.51.100.7"))
    c, _ = await ledger.create_session("user-1")
    await ledger.create_session("user-2")
    await ledger.revoke_session("user-1", c.id)
    listed = await ledger.list_sessions("user-1", current_session_id=a.id)
    assert {s.id for s in listed} == {a.id, b.id}
    assert [s.current for s in listed if s.id == a.id] == [True]
    assert {s.device for s in listed} == {"Chrome 120 on Mac OS X", "Unknown device"}


async def test_activity_is_recorded_throttled_and_on_new_ip(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    policy = SessionPolicy(activity_interval=300, update_age=DAY)
    ledger = make_ledger(engine, clock, policy)
    view, token = await ledger.create_session("user-1", RequestContext(ip="203.0.113.1"))
    same = RequestContext(ip="203.0.113.1")
    clock.advance(10)
    await ledger.get_session(token, same)
    assert await ledger.store.stream_version(view.id) == 1  # throttled
    clock.advance(10)
    got = await ledger.get_session(token, RequestContext(ip="203.0.113.99"))
    assert got is not None
    assert got.session.ip == "203.0.113.99"
    assert await ledger.store.stream_version(view.id) == 2
    clock.advance(301)
    got = await ledger.get_session(token, RequestContext(ip="203.0.113.99"))
    assert got is not None
    assert got.session.last_active_at == clock.now()


async def test_revoke_other_sessions_keeps_the_current_one(ledger: SessionLedger) -> None:
    current, token = await ledger.create_session("user-1")
    others = [(await ledger.create_session("user-1"))[1] for _ in range(3)]
    _foreign, foreign_token = await ledger.create_session("user-2")
    head = await ledger.store.head()
    assert await ledger.revoke_other_sessions("user-1", current.id) == 3
    # One transaction: the three revocations are consecutive positions.
    revoked = await ledger.store.read_all(head)
    assert [r.position for r in revoked] == [head + 1, head + 2, head + 3]
    assert {r.event.reason for r in revoked} == {RevocationReason.REVOKED_OTHERS}  # type: ignore[union-attr]
    assert await ledger.get_session(token) is not None
    assert all([await ledger.get_session(t) is None for t in others])
    assert await ledger.get_session(foreign_token) is not None


async def test_revoke_all_sessions(ledger: SessionLedger) -> None:
    tokens = [(await ledger.create_session("user-1"))[1] for _ in range(3)]
    assert await ledger.revoke_all_sessions("user-1") == 3
    assert all([await ledger.get_session(t) is None for t in tokens])
    assert await ledger.revoke_all_sessions("user-1") == 0


async def test_revoke_sessions_by_ids(ledger: SessionLedger) -> None:
    a, ta = await ledger.create_session("user-1")
    b, tb = await ledger.create_session("user-1")
    _c, tc = await ledger.create_session("user-1")
    assert await ledger.revoke_sessions("user-1", [a.id, b.id, a.id]) == 2
    assert await ledger.get_session(ta) is None
    assert await ledger.get_session(tb) is None
    assert await ledger.get_session(tc) is not None
    # Revoking an ended session again is a no-op, not an error.
    assert await ledger.revoke_session("user-1", a.id) is False


async def test_foreign_and_unknown_session_ids_are_rejected_and_write_nothing(
    ledger: SessionLedger,
) -> None:
    mine, my_token = await ledger.create_session("user-1")
    theirs, their_token = await ledger.create_session("user-2")
    head = await ledger.store.head()
    for ids in ([theirs.id], [mine.id, theirs.id], ["no-such-session"], ["x" * 500]):
        with pytest.raises(SessionNotFoundError):
            await ledger.revoke_sessions("user-1", ids)
    with pytest.raises(InvalidCommandError):
        await ledger.revoke_sessions("user-1", [])
    assert await ledger.store.head() == head
    assert await ledger.get_session(my_token) is not None
    assert await ledger.get_session(their_token) is not None


async def test_sign_out_revokes_with_reason_and_actor(ledger: SessionLedger) -> None:
    view, token = await ledger.create_session("user-1")
    assert await ledger.sign_out(token, RequestContext(request_id="req-1")) is True
    assert await ledger.sign_out(token) is False
    events = await ledger.store.read_stream(view.id)
    revoked = events[-1]
    assert isinstance(revoked.event, SessionRevoked)
    assert revoked.event.reason is RevocationReason.SIGN_OUT
    assert revoked.event.actor == "user:user-1"
    assert revoked.metadata.request_id == "req-1"


async def test_update_session_merges_fields(ledger: SessionLedger) -> None:
    _, token = await ledger.create_session("user-1", fields={"a": 1})
    view = await ledger.update_session(token, {"b": [1, 2]})
    assert view.fields == {"a": 1, "b": [1, 2]}
    got = await ledger.get_session(token)
    assert got is not None
    assert got.session.fields == {"a": 1, "b": [1, 2]}
    head = await ledger.store.head()
    with pytest.raises(InvalidCommandError):
        await ledger.update_session(token, {})
    with pytest.raises(InvalidCommandError):
        await ledger.update_session(token, {"big": "x" * 10_000})
    assert await ledger.store.head() == head


async def test_freshness_and_reauthentication(engine: AsyncEngine, clock: ManualClock) -> None:
    ledger = make_ledger(engine, clock, SessionPolicy(fresh_age=600, update_age=DAY))
    _, token = await ledger.create_session("user-1")
    got = await ledger.get_session(token)
    assert got is not None
    assert got.session.fresh
    clock.advance(601)
    got = await ledger.get_session(token)
    assert got is not None
    assert not got.session.fresh
    view = await ledger.reauthenticate(token)
    assert view.fresh
    got = await ledger.get_session(token)
    assert got is not None
    assert got.session.fresh


async def test_session_callback_extends_the_payload(
    engine: AsyncEngine, clock: ManualClock
) -> None:
    ledger = make_ledger(engine, clock)

    async def callback(payload: dict[str, object]) -> dict[str, object]:
        user = dict(payload["user"])  # type: ignore[call-overload]
        return {**payload, "user": {**user, "roles": ["admin"], "customData": 42}}

    ledger.session_callback = callback
    _, token = await ledger.create_session("user-1")
    result = await ledger.get_session_payload(token)
    assert result is not None
    payload, _ = result
    assert payload["user"]["customData"] == 42
    assert payload["session"]["userId"] == "user-1"
    assert payload["session"]["token"] == token
