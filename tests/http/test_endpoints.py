"""Every /api/auth endpoint on PostgreSQL: the success shapes of the
reference and their error paths."""

from __future__ import annotations

import httpx
import pytest

from session_ledger.ledger.domain.events import SessionRevoked
from tests.http.conftest import PASSWORD, Service

SESSION_KEYS = {"id", "token", "userId", "expiresAt", "createdAt", "updatedAt", "ipAddress"}
USER_KEYS = {"id", "name", "email", "emailVerified", "image", "createdAt", "updatedAt"}


async def test_sign_up_answers_token_and_user_and_sets_the_session(service: Service) -> None:
    response = await service.sign_up("Ada@Example.COM")
    body = response.json()
    assert set(body) == {"token", "user"}
    assert set(body["user"]) >= USER_KEYS
    assert body["user"]["email"] == "ada@example.com"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["set-auth-token"].startswith(body["token"] + ".")

    session = (await service.client.get("/api/auth/get-session")).json()
    assert set(session["session"]) >= SESSION_KEYS
    assert session["session"]["token"] == body["token"]
    assert session["user"]["id"] == body["user"]["id"]
    assert session["session"]["userAgent"] == "pytest-browser"
    assert session["session"]["expiresAt"].endswith("Z")


async def test_sign_up_errors(service: Service) -> None:
    await service.sign_up()
    c = service.client
    again = await c.post(
        "/api/auth/sign-up/email", json={"email": "ADA@example.com", "password": PASSWORD}
    )
    assert again.status_code == 422
    assert again.json()["code"] == "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL"
    short = await c.post(
        "/api/auth/sign-up/email", json={"email": "b@example.com", "password": "x"}
    )
    assert (short.status_code, short.json()["code"]) == (400, "PASSWORD_TOO_SHORT")
    bad = await c.post("/api/auth/sign-up/email", json={"email": "nope", "password": PASSWORD})
    assert (bad.status_code, bad.json()["code"]) == (400, "INVALID_EMAIL")
    missing = await c.post("/api/auth/sign-up/email", json={"email": "c@example.com"})
    assert (missing.status_code, missing.json()["code"]) == (400, "VALIDATION_ERROR")
    assert "password" in missing.json()["message"]


async def test_sign_in(service: Service) -> None:
    await service.sign_up()
    other = service.new_client()
    response = await service.sign_in("ADA@example.com", client=other)
    body = response.json()
    assert body["redirect"] is False
    assert body["user"]["email"] == "ada@example.com"
    with_callback = await other.post(
        "/api/auth/sign-in/email",
        json={"email": "ada@example.com", "password": PASSWORD, "callbackURL": "/home"},
    )
    assert with_callback.json()["redirect"] is True
    assert with_callback.json()["url"] == "/home"


async def test_sign_in_errors_look_the_same_for_unknown_email_and_wrong_password(
    service: Service,
) -> None:
    await service.sign_up()
    before = await service.head()
    wrong = await service.client.post(
        "/api/auth/sign-in/email", json={"email": "ada@example.com", "password": "wrong-password"}
    )
    unknown = await service.client.post(
        "/api/auth/sign-in/email", json={"email": "eve@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "INVALID_EMAIL_OR_PASSWORD"
    # Two failed attempts recorded (tests/http/test_attempts.py), no session.
    written = await service.container.store.read_all(before)
    assert [r.type for r in written] == ["SignInFailed", "SignInFailed"]
    evil = await service.client.post(
        "/api/auth/sign-in/email",
        json={"email": "ada@example.com", "password": PASSWORD, "callbackURL": "https://evil.test"},
    )
    assert (evil.status_code, evil.json()["code"]) == (403, "INVALID_CALLBACK_URL")


async def test_get_session_without_or_with_a_garbage_cookie_is_null(service: Service) -> None:
    assert (await service.client.get("/api/auth/get-session")).json() is None
    garbage = service.new_client(cookie="better-auth.session-token=abc.def")
    response = await garbage.get("/api/auth/get-session")
    assert response.status_code == 200
    assert response.json() is None
    assert response.headers["cache-control"] == "no-store"


async def test_list_sessions_marks_the_current_one_and_hides_other_tokens(
    service: Service,
) -> None:
    await service.sign_up()
    phone = service.new_client(**{"user-agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)"})
    await service.sign_in(client=phone)
    listed = (await service.client.get("/api/auth/list-sessions")).json()
    assert len(listed) == 2
    current = [s for s in listed if s["current"]]
    assert len(current) == 1
    own = (await service.client.get("/api/auth/get-session")).json()["session"]
    assert current[0]["id"] == own["id"]
    for s in listed:
        assert s["token"] == s["id"]  # never another session's real token
    assert {s["device"] for s in listed} >= {"iPhone"} or len({s["device"] for s in listed}) == 2


async def test_list_sessions_needs_a_session(service: Service) -> None:
    response = await service.client.get("/api/auth/list-sessions")
    assert (response.status_code, response.json()["code"]) == (401, "UNAUTHORIZED")


async def test_revoke_session_by_the_id_from_list_sessions(service: Service) -> None:
    await service.sign_up()
    phone = service.new_client()
    await service.sign_in(client=phone)
    phone_id = (await phone.get("/api/auth/get-session")).json()["session"]["id"]
    response = await service.client.post("/api/auth/revoke-session", json={"token": phone_id})
    assert response.json() == {"status": True}
    gone = await phone.get("/api/auth/get-session", params={"disableCookieCache": "true"})
    assert gone.json() is None
    events = await service.container.store.read_stream(phone_id)
    assert isinstance(events[-1].event, SessionRevoked)
    assert events[-1].event.reason == "revoked"
    still = (await service.client.get("/api/auth/list-sessions")).json()
    assert [s["id"] for s in still] != [phone_id]


async def test_revoke_session_by_the_raw_token_from_get_session(service: Service) -> None:
    """What BetterAuth's client sends: session.token from getSession."""
    await service.sign_up()
    phone = service.new_client()
    await service.sign_in(client=phone)
    phone_session = (await phone.get("/api/auth/get-session")).json()["session"]
    response = await service.client.post(
        "/api/auth/revoke-session", json={"token": phone_session["token"]}
    )
    assert response.json() == {"status": True}
    gone = await phone.get("/api/auth/get-session", params={"disableCookieCache": "true"})
    assert gone.json() is None
    # Revoking the caller's own session by its token clears the caller's cookies.
    own = (await service.client.get("/api/auth/get-session")).json()["session"]["token"]
    response = await service.client.post("/api/auth/revoke-session", json={"token": own})
    assert response.json() == {"status": True}
    assert any("Max-Age=0" in c for c in response.headers.get_list("set-cookie"))


async def test_revoke_session_errors_append_nothing(service: Service) -> None:
    await service.sign_up()
    mallory = service.new_client()
    await service.sign_up("mallory@example.com", client=mallory)
    mallory_id = (await mallory.get("/api/auth/get-session")).json()["session"]["id"]
    before = await service.head()
    missing = await service.client.post("/api/auth/revoke-session", json={})
    assert (missing.status_code, missing.json()["code"]) == (400, "VALIDATION_ERROR")
    mallory_token = (await mallory.get("/api/auth/get-session")).json()["session"]["token"]
    answers = [
        await service.client.post("/api/auth/revoke-session", json={"token": value})
        for value in ["nope", mallory_id, mallory_token, "0" * 43]
    ]
    # As BetterAuth: unknown and foreign alike are 200 {status: true}, nothing written.
    assert {(r.status_code, r.text) for r in answers} == {(200, '{"status":true}')}
    assert await service.head() == before
    assert (await mallory.get("/api/auth/list-sessions")).status_code == 200


async def test_revoke_sessions_by_ids_and_all(service: Service) -> None:
    await service.sign_up()
    a, b = service.new_client(), service.new_client()
    await service.sign_in(client=a)
    await service.sign_in(client=b)
    a_id = (await a.get("/api/auth/get-session")).json()["session"]["id"]
    response = await service.client.post("/api/auth/revoke-sessions", json={"ids": [a_id]})
    assert response.json() == {"status": True}
    assert len((await service.client.get("/api/auth/list-sessions")).json()) == 2
    all_gone = await service.client.post("/api/auth/revoke-sessions")
    assert all_gone.json() == {"status": True}
    assert all_gone.headers.get_list("set-cookie")  # the caller's own cookies cleared
    for client in (service.client, b):
        assert (await client.get("/api/auth/list-sessions")).status_code == 401


async def test_revoke_sessions_rejects_unknown_ids_atomically(service: Service) -> None:
    await service.sign_up()
    own_id = (await service.client.get("/api/auth/get-session")).json()["session"]["id"]
    before = await service.head()
    response = await service.client.post(
        "/api/auth/revoke-sessions", json={"ids": [own_id, "unknown-id"]}
    )
    assert (response.status_code, response.json()["code"]) == (404, "SESSION_NOT_FOUND")
    assert await service.head() == before
    empty = await service.client.post("/api/auth/revoke-sessions", json={"ids": []})
    assert (empty.status_code, empty.json()["code"]) == (400, "VALIDATION_ERROR")


async def test_revoke_other_sessions_keeps_the_current_one(service: Service) -> None:
    await service.sign_up()
    other = service.new_client()
    await service.sign_in(client=other)
    response = await service.client.post("/api/auth/revoke-other-sessions")
    assert response.json() == {"status": True}
    listed = (await service.client.get("/api/auth/list-sessions")).json()
    assert len(listed) == 1
    assert listed[0]["current"]
    assert (await other.get("/api/auth/list-sessions")).status_code == 401


async def test_sign_out_clears_cookies_and_records_the_reason(service: Service) -> None:
    await service.sign_up()
    sid = (await service.client.get("/api/auth/get-session")).json()["session"]["id"]
    response = await service.client.post("/api/auth/sign-out")
    assert response.json() == {"success": True}
    cleared = response.headers.get_list("set-cookie")
    assert len(cleared) == 3
    assert all("Max-Age=0" in c for c in cleared)
    assert (await service.client.get("/api/auth/get-session")).json() is None
    last = (await service.container.store.read_stream(sid))[-1].event
    assert isinstance(last, SessionRevoked)
    assert last.reason == "sign_out"
    again = await service.client.post("/api/auth/sign-out")
    assert (again.status_code, again.json()["code"]) == (400, "FAILED_TO_GET_SESSION")


async def test_update_session(service: Service) -> None:
    await service.sign_up()
    response = await service.client.post("/api/auth/update-session", json={"theme": "dark"})
    assert response.status_code == 200
    assert response.json()["session"]["theme"] == "dark"
    # The cookie cache was rewritten: a cached read sees the new field too.
    cached = await service.client.get("/api/auth/get-session")
    assert cached.headers["x-session-source"] == "cookie-cache"
    assert cached.json()["session"]["theme"] == "dark"
    before = await service.head()
    empty = await service.client.post("/api/auth/update-session", json={})
    assert (empty.status_code, empty.json()["code"]) == (400, "VALIDATION_ERROR")
    reserved = await service.client.post("/api/auth/update-session", json={"userId": "x"})
    assert (reserved.status_code, reserved.json()["code"]) == (400, "INVALID_FIELDS")
    not_object = await service.client.post("/api/auth/update-session", json=[1, 2])
    assert not_object.status_code == 400
    assert await service.head() == before
    anonymous = await service.new_client().post("/api/auth/update-session", json={"a": 1})
    assert anonymous.status_code == 401


async def test_session_history_newest_first(service: Service) -> None:
    await service.sign_up()
    other = service.new_client()
    await service.sign_in(client=other)
    await service.client.post("/api/auth/revoke-other-sessions")
    history = (await service.client.get("/api/auth/session-history")).json()
    types = [e["type"] for e in history["events"]]
    assert types[0] == "SessionRevoked"
    assert types.count("SessionCreated") == 2
    positions = [e["position"] for e in history["events"]]
    assert positions == sorted(positions, reverse=True)
    revoked = history["events"][0]
    assert revoked["reason"] == "revoked_others"
    assert revoked["actor"].startswith("user:")
    page = (await service.client.get("/api/auth/session-history", params={"limit": 1})).json()
    assert len(page["events"]) == 1
    assert page["nextBefore"] == positions[0]
    older = await service.client.get(
        "/api/auth/session-history", params={"before": page["nextBefore"]}
    )
    assert [e["position"] for e in older.json()["events"]] == positions[1:]
    assert (await service.new_client().get("/api/auth/session-history")).status_code == 401


async def test_healthz_and_demo_page(service: Service) -> None:
    assert (await service.client.get("/healthz")).json() == {"status": "ok"}
    page = await service.client.get("/")
    assert page.status_code == 200
    assert "Your Active Sessions" in page.text
    assert (await service.client.get("/static/app.js")).status_code == 200
    missing = await service.client.get("/no/such/page")
    assert missing.status_code == 404
    assert set(missing.json()) == {"code", "message"}


async def test_unknown_user_agent_and_ip_are_recorded(service: Service) -> None:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=service.app, client=("203.0.113.7", 5000)),
        base_url="http://testserver",
        headers={"origin": "http://testserver", "user-agent": "curl/8"},
    )
    async with client:
        await service.sign_up(client=client)
        session = (await client.get("/api/auth/get-session")).json()["session"]
    assert session["ipAddress"] == "203.0.113.7"
    assert session["userAgent"] == "curl/8"


@pytest.mark.parametrize(
    "image",
    ["javascript:alert(1)", " javascript:alert(1)", "data:image/png;base64,AAAA", "/me.png", "x"],
)
async def test_sign_up_image_must_be_an_http_url(sqlite_service: Service, image: str) -> None:
    response = await sqlite_service.client.post(
        "/api/auth/sign-up/email",
        json={"email": "ada@example.com", "password": PASSWORD, "image": image},
    )
    assert (response.status_code, response.json()["code"]) == (400, "VALIDATION_ERROR")
    assert await sqlite_service.head() == 0


async def test_sign_up_image_http_or_null(sqlite_service: Service) -> None:
    for email, image in [
        ("a@example.com", "https://cdn.example.com/a.png"),
        ("b@example.com", None),
    ]:
        response = await sqlite_service.client.post(
            "/api/auth/sign-up/email",
            json={"email": email, "password": PASSWORD, "image": image},
        )
        assert response.status_code == 200, response.text
        assert response.json()["user"]["image"] == image


@pytest.mark.parametrize(
    "email", ["not-an-email", "a@b", "ada@@example.com", "", "x" * 400 + "@example.com"]
)
async def test_sign_up_with_a_malformed_email_is_invalid_email(
    sqlite_service: Service, email: str
) -> None:
    """BetterAuth answers 400 INVALID_EMAIL for any malformed email string
    (a too-long one was VALIDATION_ERROR here)."""
    response = await sqlite_service.client.post(
        "/api/auth/sign-up/email", json={"email": email, "password": PASSWORD}
    )
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_EMAIL")


@pytest.mark.parametrize(
    "fields",
    [
        {"roles": ["admin"]},  # not declared: stored and echoed before
        {"impersonatedBy": "u-1"},
        {"user": {"id": "x"}},
        {"theme": "dark", "roles": ["admin"]},
        {"plan": "enterprise"},  # declared, but not an input
        {"a": "not a number"},  # the wrong type
        {"a": True},
    ],
)
async def test_update_session_takes_only_declared_input_fields(
    sqlite_service: Service, fields: dict[str, object]
) -> None:
    await sqlite_service.sign_up()
    before = await sqlite_service.head()
    response = await sqlite_service.client.post("/api/auth/update-session", json=fields)
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_FIELDS")
    assert "'" in response.json()["message"]  # names the key
    assert await sqlite_service.head() == before
    session = (await sqlite_service.client.get("/api/auth/get-session")).json()["session"]
    assert "roles" not in session
    assert "impersonatedBy" not in session


async def test_declared_defaults_and_server_side_fields(sqlite_service: Service) -> None:
    await sqlite_service.sign_up()
    session = (await sqlite_service.client.get("/api/auth/get-session")).json()["session"]
    assert session["plan"] == "free"  # the declared default
    # Server code may set a field clients may not.
    token = session["token"]
    view = await sqlite_service.container.ledger.update_session(token, {"plan": "pro"})
    assert view.fields["plan"] == "pro"
