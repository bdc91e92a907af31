"""GET /api/auth/get-session throughput and latency beside /healthz, with wrk.

    python -m bench.http [--duration 10] [--backends sqlite,postgres,postgres+redis]

One uvicorn worker (uvloop + httptools, ``session-ledger serve``) per
backend; wrk -t1 -c8 for ``--duration`` seconds against, in the same run:

* /healthz (no I/O: the baseline every ratio is against);
* get-session on the store path (``disableCookieCache=true``): SQLite, or
  PostgreSQL, or PostgreSQL with the Redis read path in front;
* get-session on the cookie-cache path (a valid ``session_data`` cookie).

Targets (issue 5): Redis path >= 40 % of /healthz, cookie cache >= 70 %.
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
import subprocess
from dataclasses import dataclass

import httpx

from bench.server import ROOT, cookie_header, database, service, sign_up

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


def run_backend(backend: str, duration: int) -> list[Result]:
    env: dict[str, str] = {}
    if backend == "postgres+redis":
        env["SESSION_LEDGER_REDIS__URL"] = REDIS_URL
        env["SESSION_LEDGER_REDIS__PREFIX"] = f"slbench:{secrets.token_hex(4)}:"
    with database(backend.split("+")[0]) as url, service(url, **env) as base:
        cookies = sign_up(base)
        headers = {"cookie": cookie_header(cookies)}
        store_path = "/api/auth/get-session?disableCookieCache=true"
        check(base, cookies, store_path, "store")
        check(base, cookies, "/api/auth/get-session", "cookie-cache")
        results = [
            wrk(f"{base}/healthz", f"{backend}: /healthz", duration),
            wrk(f"{base}{store_path}", f"{backend}: get-session (store)", duration, headers),
            wrk(
                f"{base}/api/auth/get-session",
                f"{backend}: get-session (cookie cache)",
                duration,
                headers,
            ),
        ]
        check(base, cookies, store_path, "store")  # still signed in: no errors hid in the rate
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--backends", default="sqlite,postgres,postgres+redis")
    args = parser.parse_args()
    print(f"{'run':44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'of healthz':>10}")
    for backend in args.backends.split(","):
        results = run_backend(backend, args.duration)
        baseline = results[0].rate
        for r in results:
            note = f" ({r.errors} non-2xx!)" if r.errors else ""
            print(
                f"{r.label:44} {r.rate:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
                f"{r.rate / baseline:10.0%}{note}",
                flush=True,
            )


if __name__ == "__main__":
    main()
