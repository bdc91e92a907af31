"""The domain's shared rules seen over HTTP: the routes and the service give
the same answer (freshness, what a session id is)."""

from __future__ import annotations

from typing import Any

import pytest

from session_ledger.ledger.domain.errors import SessionNotFreshError
from tests.http.conftest import ADDITIONAL_FIELDS, PASSWORD, Service


async def test_fresh_session_routes_and_the_service_agree(make_service: Any, pg_url: str) -> None:
    session = {"fresh_age": 60, "additional_fields": ADDITIONAL_FIELDS}
    async with make_service(pg_url, session=session) as service:
        await service.sign_up()
        listed = await service.client.get("/api/auth/list-sessions")
        assert listed.status_code == 200
        token = (await service.client.get("/api/auth/get-session")).json()["session"]["token"]
        validated = await service.container.ledger.get_session(token)
        assert validated is not None
        service.container.ledger.require_fresh(validated.session)

        service.clock.advance(60)
        stale = await service.client.get("/api/auth/list-sessions")
        assert stale.status_code == 403
        assert stale.json() == {
            "code": "SESSION_NOT_FRESH",
            "message": "this action needs a fresh session: sign in again",
        }
        with pytest.raises(SessionNotFreshError):
            service.container.ledger.require_fresh(validated.session)

        # Signing in again makes a fresh session.
        await service.client.post(
            "/api/auth/sign-in/email", json={"email": "ada@example.com", "password": PASSWORD}
        )
        assert (await service.client.get("/api/auth/list-sessions")).status_code == 200


@pytest.mark.parametrize("value", ["a.b", "a:b", "x" * 65])
async def test_ids_outside_the_rule_are_refused_by_the_routes(service: Service, value: str) -> None:
    """One rule (ledger.domain.ids): the routes used to take ``.`` and ``:``,
    which the service then treated as unknown (200 on revoke-session, 404 on
    revoke-sessions); now both routes refuse them as malformed, like spaces."""
    await service.sign_up()
    before = await service.head()
    for path, body in [
        ("/api/auth/revoke-session", {"token": value}),
        ("/api/auth/revoke-sessions", {"ids": [value]}),
    ]:
        response = await service.client.post(path, json=body)
        assert (response.status_code, response.json()["code"]) == (400, "VALIDATION_ERROR")
    assert await service.head() == before
    assert (await service.client.get("/api/auth/get-session")).json() is not None
