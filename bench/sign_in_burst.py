"""32 concurrent bad sign-ins against one service process: its memory and
the latency of other users' get-session meanwhile, this code beside an
older commit (issue 15: unbounded argon2 grew the server by 64 MiB per
sign-in in flight and pushed get-session from ~6 ms to 150-300 ms).

    python -m bench.sign_in_burst [--baseline 81d09b1] [--rounds 3] [--burst 32]
                                  [--backend sqlite|postgres]

Per round and contender (alternating, each on a fresh database and
process): sign a user up, then fire ``--burst`` wrong-password sign-ins at
once while one client keeps asking get-session (store path,
``disableCookieCache=true``) in a loop. Printed: the burst's wall time, the
answers (401, or 503 SERVER_BUSY once hashing is saturated), the process's
peak resident memory above its level before the burst (sampled every
10 ms from /proc), and get-session p50 / p99 during the burst beside its p50
before it. Rate limiting is off (environment ``test``), so every sign-in
reaches the password check: this measures the hashing bound alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.server import SECRET, checkout, cookie_header, database, rss_mib, server, sign_up

GET = "/api/auth/get-session?disableCookieCache=true"


@dataclass
class Result:
    label: str
    seconds: float
    answers: Counter[int]
    rss_before: float
    rss_peak: float
    idle_p50_ms: float
    p50_ms: float
    p99_ms: float


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_mib(pid)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, rss_mib(self.pid))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(base: str, pid: int, cookies: dict[str, str], burst: int) -> Result:
    headers = {"cookie": cookie_header(cookies)}
    limits = httpx.Limits(max_connections=burst + 8)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        idle = []
        for _ in range(50):
            started = time.perf_counter()
            (await client.get(GET, headers=headers)).raise_for_status()
            idle.append((time.perf_counter() - started) * 1000)
        bad = {"email": "bench@example.com", "password": "not the password, surely"}
        origin = {"origin": base}
        await client.post("/api/auth/sign-in/email", json=bad, headers=origin)  # warm
        await asyncio.sleep(0.5)
        rss = PeakRss(pid)
        before = rss.peak
        rss.start()
        latencies: list[float] = []
        stop = asyncio.Event()

        async def reader() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                (await client.get(GET, headers=headers)).raise_for_status()
                latencies.append((time.perf_counter() - started) * 1000)

        task = asyncio.create_task(reader())
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(
                client.post("/api/auth/sign-in/email", json=bad, headers=origin)
                for _ in range(burst)
            )
        )
        seconds = time.perf_counter() - started
        stop.set()
        await task
        rss.done.set()
        rss.join()
    return Result(
        "",
        seconds,
        Counter(a.status_code for a in answers),
        before,
        rss.peak,
        statistics.median(idle),
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
    )


def run(label: str, backend: str, code: Path | None, burst: int) -> Result:
    with database(backend) as url, server(url, code) as (base, process):
        cookies = sign_up(base)
        result = asyncio.run(measure(base, process.pid, cookies, burst))
    result.label = label
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="81d09b1", help="the older commit to compare")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=32)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    assert SECRET
    print(
        f"{'contender':12} {'burst s':>8} {'answers':>18} {'RSS before':>10} {'peak +MiB':>9} "
        f"{'idle p50':>8} {'p50 ms':>8} {'p99 ms':>8}"
    )
    with checkout(args.baseline) as old:
        for _ in range(args.rounds):
            for label, code in ((f"{args.baseline}", old), ("this code", None)):
                r = run(label, args.backend, code, args.burst)
                answers = " ".join(f"{k}x{v}" for k, v in sorted(r.answers.items()))
                print(
                    f"{r.label:12} {r.seconds:8.2f} {answers:>18} {r.rss_before:10.0f} "
                    f"{r.rss_peak - r.rss_before:9.0f} {r.idle_p50_ms:8.1f} "
                    f"{r.p50_ms:8.1f} {r.p99_ms:8.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
