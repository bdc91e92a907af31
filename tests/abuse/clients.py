"""A browser at a given IP address, for the abuse-resistance tests."""

from __future__ import annotations

import httpx

from tests.http.conftest import BASE_URL, Service


def client_at(svc: Service, ip: str, user_agent: str = "pytest-attacker") -> httpx.AsyncClient:
    """A browser whose socket peer (what the app sees as its IP) is ``ip``."""
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=svc.app, client=(ip, 40000)),
        base_url=BASE_URL,
        headers={"origin": BASE_URL, "user-agent": user_agent},
    )
    svc.clients.append(client)
    return client
