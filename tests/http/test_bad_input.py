"""Bad input of any kind: a clear 4xx with {code, message}, never a 500,
and nothing appended to the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.http.conftest import PASSWORD, Service

TOKEN = "better-auth.session-token"


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}
    assert body["message"]
    if code is not None:
        assert body["code"] == code


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/api/auth/sign-up/email", b"{not json"),
        ("/api/auth/sign-in/email", b'{"email": "a@b.co", "password": '),
        ("/api/auth/revoke-session", b"\xff\xfe"),
        ("/api/auth/update-session", b"{"),
        ("/api/auth/revoke-sessions", b"[1,"),
        # Lone surrogates (no UTF-8 form; 500s in update-session before) and NaN.
        ("/api/auth/update-session", b'{"theme": "\\ud800"}'),
        ("/api/auth/update-session", b'{"theme": "a\\udfffb"}'),
        ("/api/auth/update-session", b'{"a": NaN}'),
        (
            "/api/auth/sign-in/email",
            b'{"email": "ada@example.com", "password": "pw\\ud800pw-pw-pw"}',
        ),
        (
            "/api/auth/sign-in/email",
            b'{"email": "ada@example.com", "password": "correct horse battery", '
            b'"callbackURL": "/x\\udc00"}',
        ),
        ("/api/auth/sign-up/email", b'{"email": "b@example.com", "password": "\\ud800aaaaaaaa"}'),
    ],
)
async def test_malformed_json(service: Service, path: str, content: bytes) -> None:
    await service.sign_up()
    before = await service.head()
    response = await service.client.post(
        path, content=content, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "VALIDATION_ERROR")
    assert await service.head() == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/auth/sign-up/email", {"email": 1, "password": PASSWORD}),
        ("/api/auth/sign-up/email", {"email": "a@b.co", "password": ["x"]}),
        ("/api/auth/sign-up/email", {"email": "a@b.co", "password": PASSWORD, "rememberMe": "x"}),
        ("/api/auth/sign-in/email", {"email": None, "password": PASSWORD}),
        ("/api/auth/sign-in/email", "just a string"),
        ("/api/auth/revoke-session", {"token": 42}),
        ("/api/auth/revoke-session", {"token": "x" * 65}),
        ("/api/auth/revoke-sessions", {"ids": "not-a-list"}),
        ("/api/auth/revoke-sessions", {"ids": [1, 2]}),
        ("/api/auth/update-session", "string"),
    ],
)
async def test_wrong_types(service: Service, path: str, body: object) -> None:
    await service.sign_up()
    before = await service.head()
    assert_error(await service.client.post(path, json=body), 400, "VALIDATION_ERROR")
    assert await service.head() == before


async def test_wrong_query_types(service: Service) -> None:
    await service.sign_up()
    response = await service.client.get("/api/auth/get-session?disableCookieCache=maybe")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert_error(await service.client.get("/api/auth/session-history?limit=0"), 400)


@pytest.mark.parametrize(
    ("raw", "source"),
    [
        ("1", "store"),
        ("TRUE", "store"),
        ("yes", "store"),
        ("off", "cookie-cache"),
        ("0", "cookie-cache"),
    ],
)
async def test_query_flags_read_as_booleans(service: Service, raw: str, source: str) -> None:
    await service.sign_up()
    response = await service.client.get(f"/api/auth/get-session?disableCookieCache={raw}")
    assert response.headers["x-session-source"] == source
    parameters = service.app.openapi()["paths"]["/api/auth/get-session"]["get"]["parameters"]
    assert {(p["name"], p["schema"]["type"]) for p in parameters} == {
        ("disableCookieCache", "boolean"),
        ("disableRefresh", "boolean"),
    }


async def test_oversized_body(service: Service) -> None:
    await service.sign_up()
    before = await service.head()
    big = {"notes": "x" * (70 * 1024)}
    assert_error(
        await service.client.post("/api/auth/update-session", json=big), 413, "PAYLOAD_TOO_LARGE"
    )

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"x" * 1024

    streamed = await service.client.post(
        "/api/auth/update-session", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(streamed, 413, "PAYLOAD_TOO_LARGE")
    # Within the body limit but over the fields limit: the ledger's own 400.
    fields = {"notes": "x" * (9 * 1024)}
    assert_error(await service.client.post("/api/auth/update-session", json=fields), 400)
    # NUL, which PostgreSQL cannot store: the ledger refuses it before writing.
    for nul in ({"notes": "a\u0000b"}, {"a\u0000": 1}, {"x": [{"y": "\u0000"}]}):
        response = await service.client.post("/api/auth/update-session", json=nul)
        assert_error(response, 400)
    assert await service.head() == before


async def test_oversized_cookies(service: Service) -> None:
    client = service.new_client(cookie="junk=" + "x" * (8 * 1024 + 1))
    assert_error(await client.get("/api/auth/get-session"), 431, "REQUEST_HEADER_FIELDS_TOO_LARGE")


async def test_forged_and_garbage_tokens(service: Service) -> None:
    signed_up = await service.sign_up()
    token = signed_up.json()["token"]
    before = await service.head()
    for value in [
        token,  # unsigned
        f"{token}.{'A' * 43}=",  # wrong signature
        f"{token}.short=",
        "%ZZ%",
        "x" * 5000,
        "%C3%A9t%C3%A9",  # URL-encoded non-ASCII
    ]:
        client = service.new_client()
        client.cookies.set(TOKEN, value)
        response = await client.get("/api/auth/get-session")
        assert response.status_code == 200
        assert response.json() is None
        assert_error(await client.get("/api/auth/list-sessions"), 401, "UNAUTHORIZED")
        assert_error(await client.post("/api/auth/sign-out"), 400, "FAILED_TO_GET_SESSION")
    bearer = service.new_client(authorization="Bearer nonsense")
    assert (await bearer.get("/api/auth/get-session")).json() is None
    assert await service.head() == before


async def test_unknown_routes_and_methods(service: Service) -> None:
    assert_error(await service.client.get("/api/auth/nope"), 404, "NOT_FOUND")
    assert_error(await service.client.get("/api/auth/sign-out"), 405, "METHOD_NOT_ALLOWED")


async def test_positions_beyond_bigint_are_400(service: Service) -> None:
    """Found by the hostile fuzzing: a page bound past 2**63 - 1 overflowed
    the driver's BIGINT encoding (a 500)."""
    await service.sign_up()
    for path, params in [
        ("/api/auth/session-history", {"before": str(2**63)}),
        ("/api/auth/audit/activity", {"after": str(2**63)}),
    ]:
        response = await service.client.get(path, params=params)
        assert_error(response, 400)
