"""What the rate limiter costs get-session: wrk against the older commit, this
code with the limiter off, and this code with it on (counting every request,
refusing none), in alternating rounds.

    python -m bench.rate_limit [--baseline 81d09b1] [--rounds 3] [--duration 5]
                               [--backends sqlite,postgres+redis]
    python -m bench.rate_limit --asgi [--rounds 20] [--requests 2000] [--clients 1000]

One process per contender and round, as bench.http runs it (uvicorn, uvloop,
one worker, wrk -t1 -c8 from one IP). "limiter on" sets
``rate_limit.enabled=true`` with ``max`` so high nothing is refused, so each
request pays the full count: the memory storage on SQLite, the shared Redis
storage (counted in batches) on postgres+redis. Printed per round: req/s and
p99 of get-session on the cookie-cache path and on the store path, the
server process's CPU time per request (user + system, all its threads, from
/proc: less sensitive than req/s to other load on a shared machine), and
each contender's rate and CPU per request against the older commit's in the
same round.

``--asgi``: the limiter's own cost, without HTTP and wrk: get-session
requests sent straight to ASGI apps in this process, one app per contender
(the limiter off; on with memory storage; Redis configured with the limiter
off; on with the Redis storage, the default rule sent in the background; on
with the default rule per process), all built first, then ``--rounds``
slices of ``--requests`` requests each, alternating between them, the order
rotated every slice. Printed: the process CPU time per request (the
background flush included: the slice ends with the contender's own flush),
median over the slices, against the contender without the limiter. Cookie
cache and store paths from one client, and the cookie cache from
``--clients`` addresses in turn: each client then sends about one request
per flush, the case where counting per key before sending saves nothing. On
a shared machine this is the steadier figure: no server process, no client,
no sockets, and the contenders interleaved finely.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.types import Message

from bench.http import REDIS_URL, Result, check, wrk
from bench.server import PASSWORD, SECRET, checkout, cookie_header, database, server, sign_up

CACHE = "/api/auth/get-session"
CONCURRENCY = 8
#: One in-process scenario takes a minute or two; past this something hangs.
RUN_TIMEOUT = 1800
STORE = "/api/auth/get-session?disableCookieCache=true"


@dataclass
class Measured:
    result: Result
    #: Server CPU time per request, microseconds.
    cpu_us: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (every thread), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, url: str, label: str, duration: int, headers: dict[str, str]) -> Measured:
    before = cpu_seconds(pid)
    result = wrk(url, label, duration, headers)
    spent = cpu_seconds(pid) - before
    return Measured(result, spent / max(1.0, result.rate * duration) * 1e6)


def run(backend: str, code: Path | None, env: dict[str, str], duration: int) -> list[Measured]:
    env = dict(env)
    if backend == "postgres+redis":
        env["SESSION_LEDGER_REDIS__URL"] = REDIS_URL
        env["SESSION_LEDGER_REDIS__PREFIX"] = f"slbench:{secrets.token_hex(4)}:"
    with database(backend.split("+")[0]) as url, server(url, code, env) as (base, process):
        cookies = sign_up(base)
        headers = {"cookie": cookie_header(cookies)}
        check(base, cookies, STORE, "store")
        check(base, cookies, CACHE, "cookie-cache")
        results = [
            measured(process.pid, f"{base}{CACHE}", "cookie cache", duration, headers),
            measured(process.pid, f"{base}{STORE}", "store", duration, headers),
        ]
        check(base, cookies, STORE, "store")
        return results


@dataclass
class Contender:
    label: str
    #: rate_limit settings
    limiter: dict[str, object]
    redis_url: str | None
    #: The contender it is compared with.
    against: str


CONTENDERS = [
    Contender("off", {"enabled": False}, None, "off"),
    Contender("on, memory", {"enabled": True, "storage": "memory"}, None, "off"),
    Contender("off, redis", {"enabled": False}, REDIS_URL, "off, redis"),
    Contender("on, redis", {"enabled": True, "storage": "redis"}, REDIS_URL, "off, redis"),
    Contender(
        "on, redis, default rule per process",
        {"enabled": True, "storage": "redis", "shared_default_rule": False},
        REDIS_URL,
        "off, redis",
    ),
]


@asynccontextmanager
async def bench_app(contender: Contender, store: bool) -> AsyncIterator[Callable[..., Any]]:
    """A fresh app of its own (SQLite file, Redis prefix); yields a function
    sending ``n`` get-session requests to it from ``peers`` in turn, eight in
    flight, as wrk -c8 (so a wait overlaps other requests' work, as under
    load)."""
    from session_ledger.api.app import create_app
    from session_ledger.api.bootstrap import build
    from session_ledger.api.deps import STATE_KEY
    from session_ledger.ledger.config import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            environment="test",
            database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
            base_url="http://bench",
            secrets=[SECRET],
            rate_limit={"max": 10**9, **contender.limiter},
            redis={"url": contender.redis_url, "prefix": f"slbench:{secrets.token_hex(4)}:"},
        )
        container = await build(settings, migrate=True, builtin_users=True)
        app = create_app(container=container)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                body = {"email": "bench@example.com", "password": PASSWORD}
                signed = await client.post("/api/auth/sign-up/email", json=body)
                cookie = cookie_header(dict(signed.cookies))
            raw, _, query = (STORE if store else CACHE).partition("?")
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": raw,
                "raw_path": raw.encode(),
                "query_string": query.encode(),
                "root_path": "",
                "headers": [(b"host", b"bench"), (b"cookie", cookie.encode())],
                "client": ("10.0.0.1", 1),
                "server": ("bench", 80),
            }
            statuses: list[int] = []
            shared = getattr(app.state, STATE_KEY).limiter.shared_window

            async def receive() -> Message:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            async def requests(n: int, peers: list[tuple[str, int]], offset: int) -> None:
                async def browser(first: int) -> None:
                    for i in range(first, first + n // CONCURRENCY):
                        peer = peers[(offset + i) % len(peers)]
                        await app(dict(scope, state={}, client=peer), receive, send)

                per = n // CONCURRENCY
                await asyncio.gather(*(browser(k * per) for k in range(CONCURRENCY)))
                if shared is not None:
                    await shared.flush()  # what is left is this contender's work too
                assert set(statuses) == {200}, set(statuses)

            yield requests
        await container.close()


async def asgi_scenario(store: bool, clients: int, slices: int, n: int) -> dict[str, list[float]]:
    """CPU microseconds per request of each contender, per slice of ``n``
    requests: every app built first, then slices alternating between them."""
    peers = [(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1) for i in range(clients)]
    cpu: dict[str, list[float]] = {c.label: [] for c in CONTENDERS}
    async with AsyncExitStack() as stack:
        runs = [await stack.enter_async_context(bench_app(c, store)) for c in CONTENDERS]
        for run in runs:
            await run(300, peers, 0)  # warm up
        for k in range(slices):
            shift = k % len(CONTENDERS)  # rotate the order: no contender always first
            for contender, run in (
                list(zip(CONTENDERS, runs, strict=True))[shift:]
                + list(zip(CONTENDERS, runs, strict=True))[:shift]
            ):
                started = time.process_time()
                await run(n, peers, k * n)
                spent = time.process_time() - started
                cpu[contender.label].append(spent / n * 1e6)
    return cpu


def asgi_main(slices: int, requests: int, clients: int) -> None:
    # The store path from one client only: a session seen from a new IP
    # records activity (a write).
    scenarios = [
        ("cookie cache, 1 client", False, 1),
        ("store, 1 client", True, 1),
        (f"cookie cache, {clients} clients", False, clients),
    ]
    for scenario, store, n in scenarios:
        run = asgi_scenario(store, n, slices, requests)
        cpu = asyncio.run(asyncio.wait_for(run, RUN_TIMEOUT))
        print(f"get-session ({scenario}), CPU us per request, {slices} slices of {requests}:")
        for c in CONTENDERS:
            values = cpu[c.label]
            median = statistics.median(values)
            reference = statistics.median(cpu[c.against])
            ratios = [v / r for v, r in zip(values, cpu[c.against], strict=True)]
            print(
                f"  limiter {c.label:35} median {median:6.1f}  min {min(values):6.1f}  "
                f"max {max(values):6.1f}  {median / reference - 1:+6.1%} against {c.against:10} "
                f"(slice by slice: median {statistics.median(ratios) - 1:+.1%})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="81d09b1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgres+redis")
    parser.add_argument("--asgi", action="store_true", help="the in-process measurement")
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--clients", type=int, default=1000, help="--asgi: the many-client case")
    args = parser.parse_args()
    if args.asgi:
        asgi_main(args.rounds, args.requests, args.clients)
        return
    on = {
        "SESSION_LEDGER_RATE_LIMIT__ENABLED": "true",
        "SESSION_LEDGER_RATE_LIMIT__MAX": "1000000000",
    }
    off = {"SESSION_LEDGER_RATE_LIMIT__ENABLED": "false"}
    print(
        f"{'backend / contender':36} {'path':13} {'req/s':>8} {'p99 ms':>7} {'of old':>7} "
        f"{'CPU us/req':>10} {'of old':>7}"
    )
    ratios: dict[tuple[str, str, str], list[float]] = {}
    with checkout(args.baseline) as old:
        contenders: list[tuple[str, Path | None, dict[str, str]]] = [
            (args.baseline, old, {}),
            ("limiter off", None, off),
            ("limiter on", None, on),
        ]
        for backend in args.backends.split(","):
            for round_ in range(args.rounds):
                # Rotate the order each round so no contender always runs first.
                order = contenders[round_ % 3 :] + contenders[: round_ % 3]
                rates: dict[str, list[Measured]] = {}
                for label, code, env in order:
                    rates[label] = run(backend, code, env, args.duration)
                baseline = rates[args.baseline]
                for label, _, _ in contenders:
                    for m, reference in zip(rates[label], baseline, strict=True):
                        r = m.result
                        cpu_ratio = m.cpu_us / reference.cpu_us
                        ratios.setdefault((backend, label, r.label), []).append(cpu_ratio)
                        note = f" ({r.errors} non-2xx!)" if r.errors else ""
                        print(
                            f"{backend + ' / ' + label:36} {r.label:13} {r.rate:8.0f} "
                            f"{r.p99_ms:7.2f} {r.rate / reference.result.rate:7.0%} "
                            f"{m.cpu_us:10.0f} {cpu_ratio:7.0%}{note}",
                            flush=True,
                        )
    print("\nmedian CPU per request against the older commit, and its spread:")
    for (backend, label, path), values in ratios.items():
        print(
            f"{backend + ' / ' + label:36} {path:13} {statistics.median(values):7.1%} "
            f"({min(values):.0%}-{max(values):.0%})"
        )


if __name__ == "__main__":
    main()
