"""A load driver for the fault suite that remembers everything the service
acknowledged, so that after a fault nothing acknowledged may be missing
from the ledger and no ended session may be accepted anywhere.

Each virtual device (a browser: its own cookie jar) of a few users sends,
to service A or B at random: get-session (cookie cache allowed, or
``disableCookieCache=true``), update-session (a unique field value),
sign-out, revoke-other-sessions, and a sign-in whenever it has no session.
Every 200 is an acknowledgement; every session it ended is probed at once
on both services, with and without the cookie cache, and again at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from session_ledger.api.users.crypto import TokenBox
from session_ledger.api.users.store import SqlUserStore
from session_ledger.ledger.domain.events import TERMINAL_EVENT_TYPES
from session_ledger.ledger.domain.tokens import hash_token
from session_ledger.ledger.schema import events as events_table
from tests.support.deployment import PASSWORD, Deployment

#: Users are created with cheap argon2 parameters, which their hashes carry:
#: verifying a sign-in then costs the services next to nothing.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
TIMEOUT = httpx.Timeout(10.0, connect=2.0)
#: Idle connections are dropped before uvicorn's keep-alive timeout (5 s)
#: closes them under a request (a race of HTTP/1.1 keep-alive, not a fault).
LIMITS = httpx.Limits(keepalive_expiry=2.0)
#: How long after an acknowledged end another service's cookie cache may
#: still accept the session (its change feed delivering): generous on a
#: loaded 2-core machine; bench.revocation_latency measures the real figure.
FEED_BOUND = 1.0


@dataclass
class Acks:
    """What the services acknowledged (200s) and must therefore be in the ledger."""

    #: Hashes of the tokens sign-ins answered with.
    sign_ins: set[str] = field(default_factory=set)
    #: (session id, fields) of every acknowledged update-session.
    updates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: Sessions acknowledged as ended (sign-out, revoke-other-sessions).
    ended: set[str] = field(default_factory=set)


@dataclass
class Probe:
    """An ended session's cookies, to show that no service accepts it."""

    session_id: str
    cookie: str


@dataclass
class Device:
    user: str
    client: httpx.AsyncClient
    session_id: str | None = None
    signed_in: bool = False


@dataclass
class Load:
    dep: Deployment
    users: int = 4
    devices_per_user: int = 2
    #: Pause between one device's requests (seconds).
    pause: float = 0.03
    seed: int = 7
    acks: Acks = field(default_factory=Acks)
    #: Responses by "status code" or "error:<kind>:<service>".
    outcomes: Counter[str] = field(default_factory=Counter)
    #: Each (service, status, error code) of a response that was not 2xx.
    failures: Counter[tuple[str, int, str]] = field(default_factory=Counter)
    probes: list[Probe] = field(default_factory=list)
    #: Ended sessions some service still accepted: (session id, where, how).
    violations: list[tuple[str, str, str]] = field(default_factory=list)
    #: Transport errors by service name (connection refused, reset, timeout).
    transport_errors: Counter[str] = field(default_factory=Counter)
    #: Seconds after an end's acknowledgement at which another service's
    #: cookie cache still accepted the session (its feed had not delivered yet).
    late: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.devices: list[Device] = []
        self._counter = itertools.count(1)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._probe_client = httpx.AsyncClient(timeout=TIMEOUT, limits=LIMITS)

    # ---------------------------------------------------------- lifecycle

    async def prepare(self, engine: AsyncEngine) -> None:
        """Create the users (in-process, cheap password hashes) and their devices."""
        store = SqlUserStore(engine, TokenBox(None), hasher=CHEAP_HASHER)
        for u in range(self.users):
            user = await store.create_user(f"load-{self.seed}-{u}@example.com", PASSWORD)
            for _ in range(self.devices_per_user):
                client = httpx.AsyncClient(
                    timeout=TIMEOUT, limits=LIMITS, headers={"origin": self.dep.origin}
                )
                self.devices.append(Device(user.email, client))

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(self._drive(d)) for d in self.devices]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []

    async def close(self) -> None:
        for device in self.devices:
            await device.client.aclose()
        await self._probe_client.aclose()

    # ------------------------------------------------------------ traffic

    def _service(self) -> tuple[str, str]:
        service = self.rng.choice(self.dep.services)
        return service.name, service.base

    async def _send(
        self, device: Device, method: str, path: str, **kwargs: Any
    ) -> tuple[str, httpx.Response | None]:
        name, base = self._service()
        try:
            response = await device.client.request(method, f"{base}{path}", **kwargs)
        except httpx.TransportError as exc:
            self.transport_errors[name] += 1
            self.outcomes[f"error:{type(exc).__name__}"] += 1
            return name, None
        self.outcomes[str(response.status_code)] += 1
        if response.status_code >= 300:
            code = ""
            with contextlib.suppress(ValueError, TypeError, KeyError):
                code = str(response.json()["code"])
            self.failures[(name, response.status_code, code)] += 1
        return name, response

    async def _drive(self, device: Device) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.pause * (0.5 + self.rng.random()))
            if not device.signed_in:
                await self._sign_in(device)
                continue
            r = self.rng.random()
            if r < 0.45:
                await self._get_session(device, cache=True)
            elif r < 0.70:
                await self._get_session(device, cache=False)
            elif r < 0.94:
                await self._update(device)
            elif r < 0.98:
                await self._sign_out(device)
            else:
                await self._revoke_others(device)

    async def _sign_in(self, device: Device) -> None:
        device.client.cookies.clear()
        _, response = await self._send(
            device,
            "POST",
            "/api/auth/sign-in/email",
            json={"email": device.user, "password": PASSWORD},
        )
        if response is None or response.status_code != 200:
            return
        self.acks.sign_ins.add(hash_token(response.json()["token"]))
        device.signed_in, device.session_id = True, None
        await self._get_session(device, cache=False)

    async def _get_session(self, device: Device, *, cache: bool) -> None:
        path = "/api/auth/get-session" + ("" if cache else "?disableCookieCache=true")
        _, response = await self._send(device, "GET", path)
        if response is None or response.status_code != 200:
            return
        body = response.json()
        if body is None:
            # Expired (the worker), or revoked by another device of the user.
            device.signed_in, device.session_id = False, None
        else:
            device.session_id = body["session"]["id"]

    async def _update(self, device: Device) -> None:
        fields = {"n": next(self._counter)}
        _, response = await self._send(device, "POST", "/api/auth/update-session", json=fields)
        if response is None:
            return
        if response.status_code == 200:
            session = response.json()["session"]
            device.session_id = session["id"]
            self.acks.updates.append((session["id"], fields))
        elif response.status_code == 401:
            device.signed_in = False

    def _cookie_header(self, device: Device) -> str:
        return "; ".join(f"{k}={v}" for k, v in device.client.cookies.items())

    async def _sign_out(self, device: Device) -> None:
        if device.session_id is None:
            return
        sid, cookie = device.session_id, self._cookie_header(device)
        _, response = await self._send(device, "POST", "/api/auth/sign-out")
        if response is None or response.status_code != 200:
            return
        device.signed_in, device.session_id = False, None
        self.acks.ended.add(sid)
        probe = Probe(sid, cookie)
        self.probes.append(probe)
        await self.probe(probe)

    async def _revoke_others(self, device: Device) -> None:
        if device.session_id is None:
            return
        others = [
            d
            for d in self.devices
            if d is not device and d.user == device.user and d.session_id is not None
        ]
        known = [(d.session_id, self._cookie_header(d)) for d in others]
        _, response = await self._send(device, "POST", "/api/auth/revoke-other-sessions")
        if response is None or response.status_code != 200:
            return
        for sid, cookie in known:
            assert sid is not None
            self.acks.ended.add(sid)
            probe = Probe(sid, cookie)
            self.probes.append(probe)
            await self.probe(probe)

    # ------------------------------------------------------------- probes

    async def probe(self, probe: Probe, *, final: bool = False) -> None:
        """Every service, with and without the cookie cache: an ended session
        must be refused (null); a service that cannot answer (down, 503)
        accepts nothing either.

        Right after the end was acknowledged, the *other* service learns of
        it from its change feed (NOTIFY, or SQLite's tail) a few milliseconds
        later: until then its cookie cache may still accept the session, by
        design (README, "Immediate revocation"). Such an accept is recorded
        in ``late`` with how long it lasted, and is a violation only past
        FEED_BOUND. The store path, and every probe at the end, must refuse
        at once."""
        acked = time.monotonic()
        for service in self.dep.services:
            for query in ("", "?disableCookieCache=true"):
                while True:
                    accepted = await self._accepts(service.base, query, probe.cookie)
                    waited = time.monotonic() - acked
                    if not accepted:
                        break
                    if query or final or waited > FEED_BOUND:
                        how = "store" if query else "cookie cache"
                        self.violations.append((probe.session_id, service.name, how))
                        break
                    self.late.append(waited)
                    await asyncio.sleep(0.01)

    async def _accepts(self, base: str, query: str, cookie: str) -> bool:
        try:
            response = await self._probe_client.get(
                f"{base}/api/auth/get-session{query}", headers={"cookie": cookie}
            )
        except httpx.TransportError:
            return False
        return response.status_code == 200 and response.json() is not None

    async def probe_all(self) -> None:
        for probe in self.probes:
            await self.probe(probe, final=True)

    # ------------------------------------------------------------ figures

    def count(self, prefix: str) -> int:
        return sum(n for key, n in self.outcomes.items() if key.startswith(prefix))

    def server_errors(self) -> Counter[tuple[str, int, str]]:
        """Responses 500 and above (503s included), by (service, status, code)."""
        return Counter({k: n for k, n in self.failures.items() if k[1] >= 500})


async def lost_actions(engine: AsyncEngine, acks: Acks) -> list[str]:
    """Every acknowledged action that the ledger does not show."""
    query = select(events_table.c.stream_id, events_table.c.type, events_table.c.data).where(
        events_table.c.type.in_(["SessionCreated", "SessionUpdated", *TERMINAL_EVENT_TYPES])
    )
    created: set[str] = set()
    updated: dict[str, list[dict[str, Any]]] = {}
    ended: set[str] = set()
    async with engine.connect() as conn:
        for stream_id, type_, data in await conn.execute(query):
            if type_ == "SessionCreated":
                created.add(data["token_hash"])
            elif type_ == "SessionUpdated":
                updated.setdefault(stream_id, []).append(data["fields"])
            else:
                ended.add(stream_id)
    lost = [f"sign-in {h[:12]}" for h in acks.sign_ins - created]
    lost += [
        f"update {sid} {fields}"
        for sid, fields in acks.updates
        if fields not in updated.get(sid, [])
    ]
    lost += [f"end of {sid}" for sid in acks.ended - ended]
    return lost


def summary(load: Load) -> dict[str, Any]:
    return {
        "requests": sum(load.outcomes.values()),
        "acknowledged": {
            "sign_ins": len(load.acks.sign_ins),
            "updates": len(load.acks.updates),
            "ended": len(load.acks.ended),
        },
        "errors": {f"{s} {c} {code}".strip(): n for (s, c, code), n in load.failures.items()},
        "transport_errors": dict(load.transport_errors),
        "probes": len(load.probes),
    }


def ids(values: Sequence[str]) -> str:
    return ", ".join(values[:5]) + (" ..." if len(values) > 5 else "")
