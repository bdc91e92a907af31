"""The same app on uvicorn (what ``session-ledger serve`` runs) and on
granian (a Rust ASGI server), in alternating rounds with wrk -t1 -c8:
``/healthz`` and get-session on the store path (cookie cache off).

    python -m bench.asgi_servers [--duration 5] [--rounds 4] [--backends sqlite,postgres]

Both servers run one worker with uvloop, side by side on the same
database; each signs its own user in. The ratio is granian / uvicorn per
round (median and range). granian comes with the bench extra
(``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from contextlib import ExitStack

from bench.http import wrk
from bench.server import cookie_header, database, service, sign_up

SERVERS = ("uvicorn", "granian")
PATHS = {"healthz": "/healthz", "get-session": "/api/auth/get-session"}


def run_backend(backend: str, duration: int, rounds: int) -> None:
    with ExitStack() as stack:
        url = stack.enter_context(database(backend))
        env = {"SESSION_LEDGER_COOKIE_CACHE__ENABLED": "false"}
        bases = {name: stack.enter_context(service(url, server=name, **env)) for name in SERVERS}
        headers = {
            name: {"cookie": cookie_header(sign_up(base, f"{name}@example.com"))}
            for name, base in bases.items()
        }
        for what, path in PATHS.items():
            rates: dict[str, list[float]] = {name: [] for name in SERVERS}
            p99s: dict[str, list[float]] = {name: [] for name in SERVERS}
            ratios: list[float] = []
            for r in range(rounds):
                order = SERVERS if r % 2 == 0 else SERVERS[::-1]
                took: dict[str, float] = {}
                for name in order:
                    result = wrk(f"{bases[name]}{path}", name, duration, headers[name])
                    assert result.errors == 0, f"{name} {what}: {result.errors} non-2xx responses"
                    took[name] = result.rate
                    rates[name].append(result.rate)
                    p99s[name].append(result.p99_ms)
                ratios.append(took["granian"] / took["uvicorn"])
            cells = "   ".join(
                f"{name} {statistics.median(rates[name]):7,.0f} req/s "
                f"p99 {statistics.median(p99s[name]):5.2f} ms"
                for name in SERVERS
            )
            print(
                f"{backend:8} {what:12} {cells}   granian/uvicorn "
                f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    if importlib.util.find_spec("granian") is None:
        sys.exit("bench.asgi_servers: granian is missing (pip install -e '.[bench]')")
    for backend in args.backends.split(","):
        run_backend(backend, args.duration, args.rounds)


if __name__ == "__main__":
    main()
