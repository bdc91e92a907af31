"""How long the CLI takes to answer ``--help``: start-up is import time.

    python -m bench.cli_start [--rounds 15]

Each round runs, in this order, as fresh processes: the bare interpreter
(``python -c pass``, the floor), ``session-ledger --help``,
``session-ledger audit user --help``, and "eager": the interpreter importing
what every command used to import up front (the CLI, the wiring, the app,
uvicorn, Alembic). Reports the median wall time of each and its ratio to
the bare interpreter. Target (issue 16): both help commands under 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = str(Path(sys.executable).parent / "session-ledger")
EAGER = (
    "import session_ledger.api.cli, session_ledger.api.bootstrap, "
    "session_ledger.api.app, uvicorn, session_ledger.migrations"
)

CONTENDERS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "session-ledger --help": [SCRIPT, "--help"],
    "session-ledger audit user --help": [SCRIPT, "audit", "user", "--help"],
    "eager imports (before)": [sys.executable, "-c", EAGER],
}
TARGET = 0.5


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    for command in CONTENDERS.values():
        wall(command)  # warm the file cache once
    for _ in range(args.rounds):
        for name, command in CONTENDERS.items():
            times[name].append(wall(command))
    floor = statistics.median(times["python -c pass"])
    print(f"{'command':36} {'median':>8} {'min':>8} {'max':>8} {'x python':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        mark = ""
        if name.startswith("session-ledger"):
            mark = "  (target < 0.5 s: " + ("met)" if median < TARGET else "MISSED)")
        print(
            f"{name:36} {median:8.3f} {min(values):8.3f} {max(values):8.3f} "
            f"{median / floor:9.1f}{mark}"
        )


if __name__ == "__main__":
    main()
