"""What the rate limiter costs get-session: wrk against the older commit, this
code with the limiter off, and this code with it on (counting every request,
refusing none), in alternating rounds.

    python -m bench.rate_limit [--baseline 81d09b1] [--rounds 3] [--duration 5]
                               [--backends sqlite,postgres+redis]

One process per contender and round, as bench.http runs it (uvicorn, uvloop,
one worker, wrk -t1 -c8 from one IP). "limiter on" sets
``rate_limit.enabled=true`` with ``max`` so high nothing is refused, so each
request pays the full count: the memory storage on SQLite, the shared Redis
storage (counted in batches) on postgres+redis. Printed per round: req/s and
p99 of get-session on the cookie-cache path and on the store path, and the
ratio of each contender's rate to the older commit's in the same round.
"""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path

from bench.http import REDIS_URL, Result, check, wrk
from bench.server import checkout, cookie_header, database, server, sign_up

CACHE = "/api/auth/get-session"
STORE = "/api/auth/get-session?disableCookieCache=true"


def run(backend: str, code: Path | None, env: dict[str, str], duration: int) -> list[Result]:
    env = dict(env)
    if backend == "postgres+redis":
        env["SESSION_LEDGER_REDIS__URL"] = REDIS_URL
        env["SESSION_LEDGER_REDIS__PREFIX"] = f"slbench:{secrets.token_hex(4)}:"
    with database(backend.split("+")[0]) as url, server(url, code, env) as (base, _):
        cookies = sign_up(base)
        headers = {"cookie": cookie_header(cookies)}
        check(base, cookies, STORE, "store")
        check(base, cookies, CACHE, "cookie-cache")
        results = [
            wrk(f"{base}{CACHE}", "cookie cache", duration, headers),
            wrk(f"{base}{STORE}", "store", duration, headers),
        ]
        check(base, cookies, STORE, "store")
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="81d09b1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgres+redis")
    args = parser.parse_args()
    on = {
        "SESSION_LEDGER_RATE_LIMIT__ENABLED": "true",
        "SESSION_LEDGER_RATE_LIMIT__MAX": "1000000000",
    }
    off = {"SESSION_LEDGER_RATE_LIMIT__ENABLED": "false"}
    print(f"{'backend / contender':36} {'path':13} {'req/s':>8} {'p99 ms':>7} {'of old':>7}")
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
                rates: dict[str, list[Result]] = {}
                for label, code, env in order:
                    rates[label] = run(backend, code, env, args.duration)
                baseline = rates[args.baseline]
                for label, _, _ in contenders:
                    for result, reference in zip(rates[label], baseline, strict=True):
                        note = f" ({result.errors} non-2xx!)" if result.errors else ""
                        print(
                            f"{backend + ' / ' + label:36} {result.label:13} {result.rate:8.0f} "
                            f"{result.p99_ms:7.2f} {result.rate / reference.rate:7.0%}{note}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
