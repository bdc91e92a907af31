"""What the rate limiter costs get-session: wrk against the older commit, this
code with the limiter off, and this code with it on (counting every request,
refusing none), in alternating rounds.

    python -m bench.rate_limit [--baseline 81d09b1] [--rounds 3] [--duration 5]
                               [--backends sqlite,postgres+redis]
    python -m bench.rate_limit --asgi [--rounds 6] [--requests 8000]

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
requests sent straight to the ASGI app in this process, alternating the
limiter off and on (memory storage; and the Redis storage, counted in
batches), printing the process CPU time per request. On a shared machine
this is the steadier figure: no server process, no client, no sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from starlette.types import Message

from bench.http import REDIS_URL, Result, check, wrk
from bench.server import PASSWORD, SECRET, checkout, cookie_header, database, server, sign_up

CACHE = "/api/auth/get-session"
CONCURRENCY = 8
#: One in-process run takes seconds; past this something hangs: say where.
RUN_TIMEOUT = 300
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


async def asgi_cpu(
    limiter: dict[str, object], redis_url: str | None, requests: int, store: bool
) -> float:
    """CPU microseconds per get-session sent straight to a fresh app."""
    import tempfile

    from session_ledger.api.app import create_app
    from session_ledger.api.bootstrap import build
    from session_ledger.ledger.config import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            environment="test",
            database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
            base_url="http://bench",
            secrets=[SECRET],
            rate_limit={"max": 10**9, **limiter},
            redis={"url": redis_url, "prefix": f"slbench:{secrets.token_hex(4)}:"},
        )
        container = await build(settings, migrate=True, builtin_users=True)
        app = create_app(container=container)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 1))
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                body = {"email": "bench@example.com", "password": PASSWORD}
                signed = await client.post("/api/auth/sign-up/email", json=body)
                cookie = cookie_header(dict(signed.cookies))
            path = STORE if store else CACHE
            raw, _, query = path.partition("?")
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
            answers: list[Message] = []

            async def receive() -> Message:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    answers.append(message)

            for _ in range(300):  # warm up
                await app(dict(scope, state={}), receive, send)
            started = time.process_time()

            async def browser() -> None:
                for _ in range(requests // CONCURRENCY):
                    await app(dict(scope, state={}), receive, send)

            # As wrk -c8: eight requests in flight, so a wait on Redis
            # overlaps with other requests' work (as under load).
            await asyncio.gather(*(browser() for _ in range(CONCURRENCY)))
            spent = time.process_time() - started
            assert all(a["status"] == 200 for a in answers), answers[-1]
        await container.close()
    return spent / requests * 1e6


def asgi_main(rounds: int, requests: int) -> None:
    # (label, rate_limit settings, redis.url, the contender it is compared with)
    contenders: list[tuple[str, dict[str, object], str | None, str]] = [
        ("off", {"enabled": False}, None, "off"),
        ("on, memory", {"enabled": True, "storage": "memory"}, None, "off"),
        ("off, redis", {"enabled": False}, REDIS_URL, "off, redis"),
        ("on, redis", {"enabled": True, "storage": "redis"}, REDIS_URL, "off, redis"),
        (
            "on, redis, default rule per process",
            {"enabled": True, "storage": "redis", "shared_default_rule": False},
            REDIS_URL,
            "off, redis",
        ),
    ]
    for store in (False, True):
        cpu: dict[str, list[float]] = {c[0]: [] for c in contenders}
        for _ in range(rounds):
            for label, limiter, redis_url, _ in contenders:
                run = asgi_cpu(limiter, redis_url, requests, store)
                cpu[label].append(asyncio.run(asyncio.wait_for(run, RUN_TIMEOUT)))
        print(f"get-session ({'store' if store else 'cookie cache'}), CPU us per request:")
        for label, _, _, against in contenders:
            values, median = cpu[label], statistics.median(cpu[label])
            reference = statistics.median(cpu[against])
            print(
                f"  limiter {label:35} median {median:6.1f}  min {min(values):6.1f}  "
                f"max {max(values):6.1f}  {median / reference - 1:+.1%} against {against}",
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
    args = parser.parse_args()
    if args.asgi:
        asgi_main(args.rounds, args.requests)
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
