"""``session-ledger serve`` with no configuration, as the README's first
command runs it: the page's own requests must pass the CSRF origin check
under every loopback name (they failed as INVALID_ORIGIN on 127.0.0.1, the
address serve printed, while the default base URL said localhost:8000)."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("name", ["127.0.0.1", "localhost"])
def test_the_demo_page_origin_is_trusted_out_of_the_box(default_server: int, name: str) -> None:
    page = f"http://{name}:{default_server}"
    with httpx.Client(base_url=f"http://127.0.0.1:{default_server}") as client:
        assert client.get("/").status_code == 200
        signed_up = client.post(
            "/api/auth/sign-up/email",
            json={
                "email": f"ada-{name}@example.com",
                "password": "correct horse battery",
                "name": "Ada",
            },
            headers={"origin": page},
        )
        assert signed_up.status_code == 200, signed_up.text
        # With the cookie set, a foreign origin is still refused, and the
        # page's own cookie-carrying POST passes.
        foreign = client.post("/api/auth/sign-out", headers={"origin": "http://evil.example"})
        assert foreign.status_code == 403
        out = client.post("/api/auth/sign-out", headers={"origin": page})
        assert out.json() == {"success": True}
