"""NUL characters, found by fuzzing the HTTP layer: PostgreSQL refuses them in
text and JSONB, so the ledger must refuse them first with typed errors
(these failed with a raw driver error before the fix)."""

from __future__ import annotations

import pytest

from session_ledger.ledger.domain.errors import InvalidCommandError, SessionNotFoundError
from session_ledger.ledger.service import RequestContext, SessionLedger


async def test_revoke_sessions_refuses_a_nul_id(ledger: SessionLedger) -> None:
    await ledger.create_session("user-1")
    head = await ledger.store.head()
    with pytest.raises(SessionNotFoundError):
        await ledger.revoke_sessions("user-1", ["\x00"])
    assert await ledger.store.head() == head


async def test_fields_with_nul_are_refused(ledger: SessionLedger) -> None:
    _, token = await ledger.create_session("user-1")
    head = await ledger.store.head()
    with pytest.raises(InvalidCommandError):
        await ledger.update_session(token, {"note": "a\x00b"})
    with pytest.raises(InvalidCommandError):
        await ledger.update_session(token, {"a\x00": 1})
    with pytest.raises(InvalidCommandError):
        await ledger.create_session("user-1", fields={"x": ["\x00"]})
    with pytest.raises(InvalidCommandError):
        await ledger.create_session("user\x00")
    assert await ledger.store.head() == head


async def test_nul_in_request_headers_is_dropped_not_fatal(ledger: SessionLedger) -> None:
    view, token = await ledger.create_session(
        "user-1", RequestContext(ip="1.2.3.4\x00", user_agent="agent\x00x")
    )
    assert view.ip == "1.2.3.4"
    assert view.user_agent == "agentx"
    assert await ledger.get_session(token, RequestContext(user_agent="\x00new")) is not None


async def test_lone_surrogates_are_refused_in_fields_and_ids(ledger: SessionLedger) -> None:
    """JSON's "\\ud800" has no UTF-8 form: the hash chain could not encode it
    (an UnicodeEncodeError mid-append, a 500 over HTTP, before the fix)."""
    _, token = await ledger.create_session("user-1")
    head = await ledger.store.head()
    with pytest.raises(InvalidCommandError, match="surrogate"):
        await ledger.update_session(token, {"a": "\ud800"})
    with pytest.raises(InvalidCommandError, match="surrogate"):
        await ledger.update_session(token, {"\udc00": 1})
    with pytest.raises(InvalidCommandError, match="surrogate"):
        await ledger.create_session("user-1", fields={"x": [{"y": "a\udfffb"}]})
    with pytest.raises(InvalidCommandError, match="surrogate"):
        await ledger.create_session("user\ud800")
    assert await ledger.store.head() == head
    # A valid pair (an emoji escaped as two surrogates in JSON) is fine.
    view = await ledger.update_session(token, {"a": "\U0001f600"})
    assert view.fields["a"] == "\U0001f600"


async def test_lone_surrogates_in_request_headers_are_replaced_not_fatal(
    ledger: SessionLedger,
) -> None:
    view, _ = await ledger.create_session("user-1", RequestContext(user_agent="agent\ud800x"))
    assert view.user_agent == "agent\ufffdx"
