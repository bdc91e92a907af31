"""callbackURL on sign-in / sign-up: only this origin's paths and trusted
origins, judged as a browser will parse the URL (WHATWG rules), so that no
value the server accepts sends the browser elsewhere."""

from __future__ import annotations

import pytest

from tests.http.conftest import BASE_URL, PASSWORD, Service

EVIL = [
    "/\t/evil.example",  # browsers drop tab and newline: //evil.example
    "/\n/evil.example",
    "/\r/evil.example",
    "//evil.example",
    "/\\evil.example",  # browsers read \ as /
    "/ok\\..\\..\\evil",
    "http://evil.example\\@testserver",  # the host is evil.example to a browser
    "https:/\\evil.example",
    "http:evil.example",
    " //evil.example",
    "https://evil.example",
    "javascript:alert(1)",
    "data:text/html,hi",
    "evil.example",
    "/path\x00",
    "/path\x85",
]


@pytest.mark.parametrize("url", EVIL)
@pytest.mark.parametrize("route", ["sign-in", "sign-up"])
async def test_urls_that_leave_the_origin_are_refused(
    sqlite_service: Service, url: str, route: str
) -> None:
    if route == "sign-in":
        await sqlite_service.sign_up()
    before = await sqlite_service.head()
    response = await sqlite_service.client.post(
        f"/api/auth/{route}/email",
        json={"email": "ada@example.com", "password": PASSWORD, "callbackURL": url},
    )
    assert (response.status_code, response.json()["code"]) == (403, "INVALID_CALLBACK_URL")
    assert await sqlite_service.head() == before


@pytest.mark.parametrize(
    ("url", "answered"),
    [
        ("/home", "/home"),
        ("/a/b?c=d#e", "/a/b?c=d#e"),
        (f"{BASE_URL}/welcome", f"{BASE_URL}/welcome"),
        ("HTTP://TESTSERVER:80/x", f"{BASE_URL}/x"),  # normalised as a browser would
        ("https://app.example.com/done", "https://app.example.com/done"),
    ],
)
async def test_same_origin_paths_and_trusted_origins_are_answered(
    make_service: object, sqlite_url: str, url: str, answered: str
) -> None:
    async with make_service(  # type: ignore[operator]
        sqlite_url, trusted_origins=["https://app.example.com"]
    ) as service:
        await service.sign_up()
        response = await service.client.post(
            "/api/auth/sign-in/email",
            json={"email": "ada@example.com", "password": PASSWORD, "callbackURL": url},
        )
        assert response.status_code == 200, response.text
        assert response.json()["redirect"] is True
        assert response.json()["url"] == answered
