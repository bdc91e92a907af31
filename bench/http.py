"""GET /api/auth/get-session throughput and latency beside /healthz, with wrk.

    python -m bench.http [--duration 5] [--rounds 3]
                         [--backends sqlite,postgres,postgres+redis]

One uvicorn worker (uvloop + httptools, ``session-ledger serve``) per
backend, all started first; then ``--rounds`` rounds, each running every
backend in turn (contenders alternate, so the machine's drift hits them
alike): wrk -t1 -c8 for ``--duration`` seconds against

* /healthz (no I/O: the baseline every ratio is against);
* get-session on the store path (``disableCookieCache=true``): SQLite, or
  PostgreSQL, or PostgreSQL with the Redis read path in front;
* get-session on the cookie-cache path (a valid ``session_data`` cookie).

With Redis a ``session-ledger worker --only projector`` runs too: without
the runner's checkpoint no service believes Redis (projections.freshness),
and the bench checks that the store path really is served by Redis (its
EVALSHA count grows with the requests) before measuring.

Prints each run, then per backend the median of the rounds and, for
PostgreSQL + Redis, its store path against PostgreSQL's in the same round.
Targets: Redis path >= 40 % of /healthz, cookie cache >= 70 % (issue 5);
PostgreSQL + Redis store path >= 1.3x PostgreSQL's (issue 14).
PostgreSQL comes from SESSION_LEDGER_TEST_PG (a temporary database is
created and dropped); Redis from SESSION_LEDGER_TEST_REDIS (a unique key
prefix). wrk is installed with scripts/browser.sh when absent.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import statistics
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import redis

from bench.server import ROOT, cookie_header, database, service, sign_up, worker

REDIS_URL = os.environ.get("SESSION_LEDGER_TEST_REDIS", "redis://127.0.0.1:6379/0")


@dataclass
class Result:
    label: str
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        subprocess.run([str(ROOT / "scripts" / "browser.sh"), "wrk"], check=True)
        path = shutil.which("wrk")
    assert path is not None, "wrk is not installed"
    return path


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def wrk(url: str, label: str, duration: int, headers: dict[str, str] | None = None) -> Result:
    command = [ensure_wrk(), "-t1", "-c8", f"-d{duration}s", "--latency"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    return Result(label, rate, p50, p99, errors)


def check(base: str, cookies: dict[str, str], path: str, source: str) -> None:
    """The path really is the one we mean to measure."""
    response = httpx.get(f"{base}{path}", headers={"cookie": cookie_header(cookies)})
    response.raise_for_status()
    assert response.json() is not None, "no session"
    assert response.headers["x-session-source"] == source, response.headers


STORE_PATH = "/api/auth/get-session?disableCookieCache=true"


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def served_by_redis(base: str, cookies: dict[str, str], client: redis.Redis) -> bool:
    before = evalsha_calls(client)
    for _ in range(20):
        check(base, cookies, STORE_PATH, "store")
    return evalsha_calls(client) - before >= 20


def wait_served_by_redis(base: str, cookies: dict[str, str], redis_url: str) -> None:
    """Until the store path is answered from Redis (the projector, started
    beside the service, has written the checkpoint that vouches for it)."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 60
    while not served_by_redis(base, cookies, client):
        assert time.monotonic() < deadline, "the store path is not served by Redis"
        time.sleep(0.5)


@dataclass
class Backend:
    name: str
    base: str
    cookies: dict[str, str]

    def run(self, duration: int) -> list[Result]:
        headers = {"cookie": cookie_header(self.cookies)}
        results = [
            wrk(f"{self.base}/healthz", f"{self.name}: /healthz", duration),
            wrk(f"{self.base}{STORE_PATH}", f"{self.name}: get-session (store)", duration, headers),
            wrk(
                f"{self.base}/api/auth/get-session",
                f"{self.name}: get-session (cookie cache)",
                duration,
                headers,
            ),
        ]
        check(self.base, self.cookies, STORE_PATH, "store")  # still signed in: no errors hid
        return results


def start(stack: ExitStack, backend: str) -> Backend:
    env: dict[str, str] = {}
    if backend == "postgres+redis":
        env["SESSION_LEDGER_REDIS__URL"] = REDIS_URL
        env["SESSION_LEDGER_REDIS__PREFIX"] = f"slbench:{secrets.token_hex(4)}:"
    url = stack.enter_context(database(backend.split("+")[0]))
    base = stack.enter_context(service(url, **env))
    if "redis" in backend:
        stack.enter_context(worker(url, "--only", "projector", **env))
    cookies = sign_up(base)
    check(base, cookies, STORE_PATH, "store")
    check(base, cookies, "/api/auth/get-session", "cookie-cache")
    if "redis" in backend:
        wait_served_by_redis(base, cookies, REDIS_URL)
    return Backend(backend, base, cookies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgres,postgres+redis")
    args = parser.parse_args()
    names = args.backends.split(",")
    runs: dict[str, list[list[Result]]] = {name: [] for name in names}
    with ExitStack() as stack:
        backends = [start(stack, name) for name in names]
        print(f"{'run':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'of healthz':>10}")
        for round_ in range(args.rounds):
            for backend in backends if round_ % 2 == 0 else reversed(backends):
                results = backend.run(args.duration)
                runs[backend.name].append(results)
                for r in results:
                    note = f" ({r.errors} non-2xx!)" if r.errors else ""
                    print(
                        f"{r.label:44} {r.rate:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
                        f"{r.rate / results[0].rate:10.0%}{note}",
                        flush=True,
                    )
    print(f"\nmedian of {args.rounds} rounds (share of /healthz in the same run):")
    for name, rounds in runs.items():
        for i, what in enumerate(("/healthz", "get-session (store)", "get-session (cookie)")):
            rates = [r[i].rate for r in rounds]
            shares = [r[i].rate / r[0].rate for r in rounds]
            print(
                f"  {name + ': ' + what:42} {statistics.median(rates):9.0f} req/s "
                f"{statistics.median(shares):6.0%} (rounds {min(shares):.0%}-{max(shares):.0%})"
            )
    if "postgres" in runs and "postgres+redis" in runs:
        ratios = [
            redis_round[1].rate / pg_round[1].rate
            for pg_round, redis_round in zip(runs["postgres"], runs["postgres+redis"], strict=True)
        ]
        print(
            f"\npostgres+redis store path / postgres store path, per round: "
            f"median {statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f}x;"
            " target >= 1.3x)"
        )


if __name__ == "__main__":
    main()
