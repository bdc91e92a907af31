"""Client IP: the socket peer, X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.requests import HTTPConnection

from session_ledger.api.client_ip import ClientIp
from tests.http.conftest import BASE_URL


def conn(peer: str, forwarded: str | None = None) -> HTTPConnection:
    headers = [] if forwarded is None else [(b"x-forwarded-for", forwarded.encode())]
    return HTTPConnection({"type": "http", "client": (peer, 1234), "headers": headers})


def test_forwarded_for_is_ignored_from_untrusted_peers() -> None:
    ip = ClientIp([])
    assert ip.of(conn("198.51.100.1", "1.2.3.4")) == "198.51.100.1"
    assert ClientIp(["10.0.0.0/8"]).of(conn("198.51.100.1", "1.2.3.4")) == "198.51.100.1"


def test_trusted_proxies_by_cidr_walk_right_to_left() -> None:
    ip = ClientIp(["10.0.0.0/8", "2001:db8::/32"])
    assert ip.of(conn("10.1.2.3", "203.0.113.9")) == "203.0.113.9"
    # The client prepended a fake hop: it is ignored, the first untrusted hop wins.
    assert ip.of(conn("10.1.2.3", "6.6.6.6, 203.0.113.9, 10.9.9.9")) == "203.0.113.9"
    assert ip.of(conn("2001:db8::1", "2001:db8::2, 2a00::1")) == "2a00::1"
    assert ip.of(conn("10.1.2.3", "garbage")) == "10.1.2.3"
    assert ip.of(conn("10.1.2.3")) == "10.1.2.3"


async def test_sign_in_records_the_forwarded_ip_behind_a_trusted_proxy(
    make_service: Any, pg_url: str
) -> None:
    async with make_service(pg_url, trusted_proxies=["127.0.0.1/32"]) as svc:
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=svc.app, client=("127.0.0.1", 4000)),
            base_url=BASE_URL,
            headers={"origin": BASE_URL, "x-forwarded-for": "192.0.2.44"},
        )
        async with client:
            await svc.sign_up(client=client)
            listed = (await client.get("/api/auth/list-sessions")).json()
        assert listed[0]["ipAddress"] == "192.0.2.44"
