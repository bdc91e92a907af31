"""The fault scenarios of tests/faults, held longer, with their figures:
errors while the fault lasted (by kind), recovery time, cache catch-up time.

    python -m bench.faults [--hold 3] [--before 2] [--after 2] [--only NAME,...]

Everything is private (tests/support/scenarios.py): a PostgreSQL cluster
made with initdb (fsync off) on a free port, a Redis, two ``session-ledger
serve`` and two ``session-ledger worker`` processes, a load of a few users'
devices (get-session with and without the cookie cache, update-session,
sign-out, revoke-other-sessions, sign-in). Per scenario:

* errors while the fault lasted, by status and code (a 401 is a device
  whose session another device of its user revoked: the load, not the
  fault), and connection errors by service;
* recovery: from healing the fault until both services serve a store read;
* cache catch-up: from healing the fault until the runner's checkpoint
  reached what the ledger held at that moment (after a FLUSHALL or a
  restart of Redis: the rebuild);
* lost acknowledged actions, stale accepts (both must be 0), and how often,
  and for how long at most, the *other* service's cookie cache accepted a
  session right after its end was acknowledged (its change feed had not
  delivered yet: the bound README gives).

The machine is shared: the figures vary between runs by the load on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.support.faults import Outcome, describe
from tests.support.scenarios import (
    Rig,
    SmallDisk,
    Timing,
    postgres_killed,
    postgres_restart,
    redis_flushall,
    redis_killed,
    redis_refusing_writes,
    rig,
    service_killed,
    sqlite_full_disk,
    worker_leader_killed,
)

SCENARIOS: dict[str, Callable[[Rig], Awaitable[Outcome]]] = {
    "postgres-restart": postgres_restart,
    "postgres-kill": postgres_killed,
    "redis-refusing-writes": redis_refusing_writes,
    "redis-kill": redis_killed,
    "redis-flushall": redis_flushall,
    "worker-leader-kill": worker_leader_killed,
    "service-kill": service_killed,
}


async def main(timing: Timing, only: list[str]) -> None:
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="sl-bench-faults-") as tmp:
        work = Path(tmp)
        names = [n for n in SCENARIOS if not only or n in only]
        if names:
            async with rig(work / "rig", timing, users=6, devices_per_user=2) as started:
                for name in names:
                    outcome = await SCENARIOS[name](started)
                    outcomes.append(outcome)
                    print(json.dumps(describe(outcome)), flush=True)
        if not only or "sqlite-full-disk" in only:
            disk = SmallDisk(work / "disk")
            disk.mount()
            disk.path.mkdir(parents=True, exist_ok=True)
            try:
                outcome = await sqlite_full_disk(disk, work / "sqlite", timing)
            finally:
                disk.free()
                disk.unmount()
            outcomes.append(outcome)
            print(json.dumps(describe(outcome)), flush=True)
    print()
    print(
        "| scenario | requests | errors during the fault | recovery s | cache catch-up s "
        "| lost | stale accepts | other cookie cache before its feed (n, max ms) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        errors = ", ".join(f"{kind}: {n}" for kind, n in sorted(o.errors_by_kind().items()))
        catch_up = "-" if o.catch_up is None else f"{o.catch_up:.2f}"
        late = f"{len(o.late)}, {max(o.late, default=0) * 1000:.0f}"
        extra = "".join(f"; {k} {v:.2f}" for k, v in o.notes.items() if k.endswith(" s"))
        print(
            f"| {o.name}{extra} | {o.requests} | {errors or 'none'} | {o.recovery:.2f} "
            f"| {catch_up} | {len(o.lost)} | {len(o.violations)} | {late} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=float, default=2.0)
    parser.add_argument("--hold", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=2.0)
    parser.add_argument(
        "--only", default="", help=f"comma-separated: {', '.join(SCENARIOS)}, sqlite-full-disk"
    )
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    asyncio.run(main(Timing(args.before, args.hold, args.after), only))
