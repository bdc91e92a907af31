"""BetterAuth over HTTP against ``session-ledger serve``: ``GET
/api/auth/get-session`` with wrk (-t1 -c8), one server process each, in
alternating rounds, in four configurations:

* SQLite (BetterAuth: better-sqlite3 in WAL mode; ours: the embedded store),
* SQLite + cookie cache (both servers' signed session-data cookie),
* PostgreSQL (BetterAuth: node-postgres pool; ours: asyncpg),
* PostgreSQL + Redis (BetterAuth: ``secondaryStorage`` on ioredis, which
  then keeps sessions in Redis only; ours: the Redis read path).

Cookie caches are off except in the cookie-cache configuration. Each
server signs one user up and the driver sends back whatever cookies that
set (BetterAuth's ``better-auth.session_token``, our
``better-auth.session-token``, plus the session-data cookie when cached).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.http import Result, wait_served_by_redis, wrk
from bench.peers.harness import Comparison, Measured
from bench.peers.pairs import HTTP_TARGET, PG, PG_REDIS, SQLITE
from bench.peers.workload import backends, redis_url
from bench.server import PASSWORD, SECRET, cookie_header, free_port, running, service, worker

APP_DIR = Path(__file__).resolve().parent / "betterauth"
GET_SESSION = "/api/auth/get-session"


@dataclass(frozen=True)
class HttpConfig:
    key: str
    name: str
    backend: str  # "sqlite" or "postgres"
    cookie_cache: bool
    redis: bool


CONFIGS = (
    HttpConfig("sqlite", SQLITE, "sqlite", cookie_cache=False, redis=False),
    HttpConfig("sqlite-cookie-cache", f"{SQLITE} + cookie cache", "sqlite", True, False),
    HttpConfig("postgres", PG, "postgres", cookie_cache=False, redis=False),
    HttpConfig("postgres-redis", PG_REDIS, "postgres", cookie_cache=False, redis=True),
)
BY_KEY = {config.key: config for config in CONFIGS}


def missing() -> str | None:
    """What is missing to run BetterAuth, in one line, or None."""
    if not (APP_DIR / "node_modules" / "better-auth" / "package.json").is_file():
        return f"BetterAuth's packages are not installed: run `npm ci` in {APP_DIR}"
    return None


def versions() -> str:
    def of(package: str) -> str:
        data = json.loads((APP_DIR / "node_modules" / package / "package.json").read_text())
        return str(data["version"])

    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return (
        f"better-auth {of('better-auth')} on Node.js {node.stdout.strip().lstrip('v')} "
        f"(better-sqlite3 {of('better-sqlite3')}, pg {of('pg')}, ioredis {of('ioredis')})"
    )


@contextmanager
def betterauth(config: HttpConfig, database_url: str, redis_prefix: str) -> Iterator[str]:
    """BetterAuth's server on a free port; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if config.backend == "sqlite":
        path = database_url.split(":///", 1)[1]
        where = f"sqlite:{Path(path).with_name('betterauth.db')}"
    else:
        where = "postgres:" + database_url.replace("postgresql+asyncpg://", "postgresql://")
    env = {
        **os.environ,
        "BA_PORT": str(port),
        "BA_BASE_URL": base,
        "BA_SECRET": SECRET,
        "BA_DATABASE": where,
        "BA_COOKIE_CACHE": "1" if config.cookie_cache else "0",
    }
    if config.redis:
        env["BA_REDIS_URL"] = redis_url()
        env["BA_REDIS_PREFIX"] = redis_prefix
    with running(["node", "server.mjs"], cwd=APP_DIR, env=env, ready=f"{base}/api/auth/ok"):
        yield base


def sign_up(base: str, email: str) -> dict[str, str]:
    """Sign a user up; returns every cookie the server set."""
    response = httpx.post(
        f"{base}/api/auth/sign-up/email",
        json={"email": email, "password": PASSWORD, "name": "Bench"},
        headers={"origin": base},
        timeout=30,
    )
    response.raise_for_status()
    return dict(response.cookies)


def check_signed_in(base: str, cookies: dict[str, str]) -> None:
    """get-session answers with a session for these cookies (not a null)."""
    response = httpx.get(f"{base}{GET_SESSION}", headers={"cookie": cookie_header(cookies)})
    response.raise_for_status()
    body = response.json()
    assert body, f"no session from {base}: {body}"
    assert body.get("session"), body
    assert body.get("user"), body


def compare(
    config: HttpConfig, duration: int, rounds: int, log: Callable[[str], None]
) -> Comparison:
    """Both servers up at once, wrk against each in turn, the order flipping."""
    with ExitStack() as stack:
        ours_where = stack.enter_context(backends(config.backend))
        their_where = stack.enter_context(backends(config.backend))
        env = {"SESSION_LEDGER_COOKIE_CACHE__ENABLED": "true" if config.cookie_cache else "false"}
        if config.redis:
            env["SESSION_LEDGER_REDIS__URL"] = redis_url()
            env["SESSION_LEDGER_REDIS__PREFIX"] = ours_where.redis_prefix
        ours_base = stack.enter_context(service(ours_where.database_url, **env))
        if config.redis:
            # The projector's checkpoint, without which no service believes
            # Redis (projections.freshness).
            stack.enter_context(worker(ours_where.database_url, "--only", "projector", **env))
        their_base = stack.enter_context(
            betterauth(config, their_where.database_url, their_where.redis_prefix)
        )
        email = f"bench-{secrets.token_hex(4)}@example.com"
        cookies = {"ours": sign_up(ours_base, email), "theirs": sign_up(their_base, email)}
        bases = {"ours": ours_base, "theirs": their_base}
        if config.redis:
            wait_served_by_redis(ours_base, cookies["ours"], redis_url())
        for side in ("ours", "theirs"):
            check_signed_in(bases[side], cookies[side])
            # Warm up off the clock (connections, JIT, caches).
            wrk(f"{bases[side]}{GET_SESSION}", side, 1, {"cookie": cookie_header(cookies[side])})
        results: dict[str, list[Result]] = {"ours": [], "theirs": []}
        ratios: list[float] = []
        for r in range(rounds):
            order = ["ours", "theirs"] if r % 2 == 0 else ["theirs", "ours"]
            took: dict[str, float] = {}
            for side in order:
                result = wrk(
                    f"{bases[side]}{GET_SESSION}",
                    side,
                    duration,
                    {"cookie": cookie_header(cookies[side])},
                )
                results[side].append(result)
                took[side] = result.rate
            ratios.append(took["ours"] / took["theirs"])
        for side in ("ours", "theirs"):
            check_signed_in(bases[side], cookies[side])  # still signed in: no errors hid in a rate
        notes = [
            f"{side}: {sum(r.errors for r in results[side])} non-2xx responses"
            for side in ("ours", "theirs")
            if any(r.errors for r in results[side])
        ]
        comparison = Comparison(
            kind="http",
            config=config.name,
            peer="BetterAuth",
            op="GET get-session",
            ours=_measured("session-ledger serve", results["ours"]),
            theirs=_measured("better-auth (node:http)", results["theirs"]),
            ratios=ratios,
            target=HTTP_TARGET,
            notes=notes,
        )
        log(
            f"BetterAuth ({config.name}) get-session: ours {comparison.ours.median_rate:,.0f} "
            f"req/s, theirs {comparison.theirs.median_rate:,.0f} req/s, "
            f"ratio {comparison.ratio:.2f}"
        )
        return comparison


def _measured(label: str, results: list[Result]) -> Measured:
    p99s = sorted(r.p99_ms for r in results)
    return Measured(label, [r.rate for r in results], p99s[len(p99s) // 2])
