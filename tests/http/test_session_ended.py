"""get-session tells a device whose session ended why (``x-session-ended``),
so the page can say "This session was ended from another device"; the body
stays BetterAuth's ``null``."""

from __future__ import annotations

from tests.http.conftest import Service


async def test_a_session_ended_elsewhere_says_why_once(service: Service) -> None:
    await service.sign_up()
    phone = service.new_client()
    await service.sign_in(client=phone)
    live = await phone.get("/api/auth/get-session")
    assert live.json() is not None
    assert "x-session-ended" not in live.headers

    held = dict(phone.cookies)  # the session token and the cookie cache
    revoked = await service.client.post("/api/auth/revoke-other-sessions")
    assert revoked.status_code == 200
    for flags in ("?disableCookieCache=true", ""):
        copy = service.new_client()
        copy.cookies = held
        answer = await copy.get("/api/auth/get-session" + flags)
        assert answer.json() is None
        assert answer.headers["x-session-ended"] == "revoked_others"
    # The answer clears the phone's cookies: then no token, nothing to explain.
    told = await phone.get("/api/auth/get-session")
    assert told.headers["x-session-ended"] == "revoked_others"
    after = await phone.get("/api/auth/get-session")
    assert (after.json(), after.headers.get("x-session-ended")) == (None, None)


async def test_each_reason_and_nothing_for_strangers(service: Service) -> None:
    signed_up = await service.sign_up()
    token = signed_up.cookies[service.auth.jar.names.token]
    laptop = service.new_client()
    await service.sign_in(client=laptop)
    listed = (await laptop.get("/api/auth/list-sessions")).json()
    current = (await service.client.get("/api/auth/get-session")).json()["session"]["id"]
    other = next(s["id"] for s in listed if s["id"] != current)
    await service.client.post("/api/auth/revoke-session", json={"token": other})
    gone = await laptop.get("/api/auth/get-session")
    assert gone.headers["x-session-ended"] == "revoked"

    await service.client.post("/api/auth/sign-out")
    mine = await service.new_client().get(
        "/api/auth/get-session", headers={"authorization": f"Bearer {token}"}
    )
    assert (mine.json(), mine.headers["x-session-ended"]) == (None, "sign_out")

    for stranger in ({"authorization": "Bearer nonsense"}, {}):
        answer = await service.new_client().get("/api/auth/get-session", headers=stranger)
        assert "x-session-ended" not in answer.headers
