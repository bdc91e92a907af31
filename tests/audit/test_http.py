"""The audit endpoints: admin only (401 / 403 otherwise), the same answers
as ledger.audit, clear 400s for bad input; and the user's own activity."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.clock import ManualClock
from tests.http.conftest import Service, running

ADMIN = "/api/auth/admin/audit"


@pytest.fixture
async def service(engine_url: str, clock: ManualClock) -> AsyncIterator[Service]:
    async with running(engine_url, clock) as svc:
        yield svc


async def _admin(service: Service) -> str:
    """Sign up a second browser as an admin; returns its user id."""
    client = service.new_client()
    response = await service.sign_up("root@example.com", client=client, name="Root")
    user_id = str(response.json()["user"]["id"])
    users = service.container.ledger.users
    assert isinstance(users, SqlUserStore)
    await users.set_roles(user_id, ["admin"])
    return user_id


async def test_admin_endpoints_need_an_admin(service: Service) -> None:
    anonymous = service.new_client()
    response = await anonymous.get(f"{ADMIN}/revocations")
    assert response.status_code == 401
    assert response.json()["code"] == "UNAUTHORIZED"
    await service.sign_up()  # ada: no roles
    response = await service.client.get(f"{ADMIN}/revocations")
    assert response.status_code == 403
    assert response.json() == {
        "code": "FORBIDDEN",
        "message": "administrators only",
    }


async def test_admin_queries(service: Service, clock: ManualClock) -> None:
    ada = str((await service.sign_up()).json()["user"]["id"])
    clock.advance(3600)
    await service.client.post("/api/auth/sign-out", json={})
    await _admin(service)
    root = service.clients[-1]

    history = (await root.get(f"{ADMIN}/users/{ada}/history")).json()
    assert [e["type"] for e in history["items"]] == ["SessionCreated", "SessionRevoked"]
    assert history["nextAfter"] is None
    session_id = history["items"][0]["sessionId"]
    assert history["items"][1]["reason"] == "sign_out"

    page = (await root.get(f"{ADMIN}/users/{ada}/history", params={"limit": 1})).json()
    assert len(page["items"]) == 1
    rest = await root.get(f"{ADMIN}/users/{ada}/history", params={"after": page["nextAfter"]})
    assert [e["type"] for e in rest.json()["items"]] == ["SessionRevoked"]

    one = (await root.get(f"{ADMIN}/sessions/{session_id}/history")).json()
    assert [e["streamVersion"] for e in one["items"]] == [1, 2]

    ip = history["items"][0]["ip"]
    seen = (await root.get(f"{ADMIN}/ip", params={"network": f"{ip}/24"})).json()
    assert session_id in {s["sessionId"] for s in seen["items"]}

    at = "2026-01-01T00:30:00Z"
    active = (await root.get(f"{ADMIN}/active-at", params={"at": at, "userId": ada})).json()
    assert [s["sessionId"] for s in active["items"]] == [session_id]
    later = (await root.get(f"{ADMIN}/active-at", params={"at": "now", "userId": ada})).json()
    assert later["items"] == []

    revoked = (await root.get(f"{ADMIN}/revocations", params={"reason": "sign_out"})).json()
    assert [r["sessionId"] for r in revoked["items"]] == [session_id]

    counts = (
        await root.get(f"{ADMIN}/counts", params=[("type", "SessionCreated"), ("since", "30d")])
    ).json()
    assert counts["items"] == [{"day": "2026-01-01", "type": "SessionCreated", "count": 2}]

    assert (await root.get(f"{ADMIN}/digest")).json()["code"] == "NO_DIGEST"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/revocations", {"since": "yesterday"}),
        ("/revocations", {"reason": "bored"}),
        ("/ip", {"network": "10.0.0.0/99"}),
        ("/active-at", {"at": "2026-02-30"}),
        ("/counts", {"type": "Nope"}),
        # Ages and offsets that overflow a datetime (500s before).
        ("/revocations", {"since": "99999999d"}),
        ("/revocations", {"until": "9" * 40 + "w"}),
        ("/active-at", {"at": "99999999d"}),
        ("/active-at", {"at": "0001-01-01T00:00:00+05:00"}),
        ("/counts", {"until": "9999-12-31T23:59:59-05:00"}),
    ],
)
async def test_bad_queries_are_400(service: Service, path: str, params: dict[str, str]) -> None:
    await _admin(service)
    response = await service.clients[-1].get(ADMIN + path, params=params)
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_AUDIT_QUERY"


async def test_own_activity(service: Service, clock: ManualClock) -> None:
    await _admin(service)
    anonymous = service.new_client()
    assert (await anonymous.get("/api/auth/audit/activity")).status_code == 401
    ada = str((await service.sign_up()).json()["user"]["id"])
    clock.advance(600)
    activity = (await service.client.get("/api/auth/audit/activity")).json()
    assert {e["userId"] for e in activity["items"]} == {ada}
    assert activity["items"][0]["type"] == "SessionCreated"
    # Events that saw a user agent name the device, as the sessions list does.
    assert activity["items"][0]["device"] == "Unknown device"  # "pytest-browser": nothing known
    chrome = service.new_client(**{"user-agent": CHROME})
    await service.sign_in(client=chrome)
    mine = (await chrome.get("/api/auth/audit/activity")).json()["items"]
    assert mine[-1]["device"] == "Chrome 120 on Mac OS X"


CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)


async def test_own_activity_with_an_overflowing_age_is_400(service: Service) -> None:
    await service.sign_up()
    response = await service.client.get("/api/auth/audit/activity", params={"since": "99999999d"})
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_AUDIT_QUERY"
