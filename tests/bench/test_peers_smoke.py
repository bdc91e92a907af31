"""The peers bench (bench/peers) in its quickest mode, so that it cannot rot:
one short round of one pair per peer module (Django, fastapi-users,
eventsourcing in process; BetterAuth over HTTP), charts included.

It runs as a subprocess, as ``make bench-peers`` does: the peers' packages
never enter the test process. scripts/setup.sh installs them (the bench
extra, and ``npm ci`` for BetterAuth).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = [pytest.mark.pg, pytest.mark.redis, pytest.mark.timeout(240)]


def test_smoke_run_measures_every_peer_and_draws_the_charts(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.peers", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "peers.json").read_text())
    assert report["mode"] == "smoke"
    assert not report["skipped"]
    assert not report["failed"]
    comparisons = report["comparisons"]
    peers = {c["peer"].split()[0] for c in comparisons}
    assert peers == {"Django", "fastapi-users", "eventsourcing", "BetterAuth"}
    assert {c["kind"] for c in comparisons} == {"in-process", "http"}
    for c in comparisons:
        for side in ("ours", "theirs"):
            assert all(rate > 0 for rate in c[side]["rates"]), c
            assert c[side]["p99_ms"] > 0, c
        assert c["ratio"] == pytest.approx(c["ours"]["rates"][0] / c["theirs"]["rates"][0])
        assert not c["notes"], c  # no non-2xx responses hid in a rate
    for key in ("ours", "django", "fastapi-users", "eventsourcing", "BetterAuth"):
        assert report["versions"][key], key
    for chart in ("peers-inprocess.png", "peers-http.png"):
        assert (tmp_path / chart).read_bytes().startswith(PNG_MAGIC), chart
    markdown = (tmp_path / "peers.md").read_text()
    assert "| SQLite | BetterAuth | GET get-session |" in markdown
    assert "scaling chart" in done.stdout  # the concurrency hook says why it drew none

    # The hook the concurrency benchmark is to fill: its JSON becomes a chart.
    (tmp_path / "concurrency.json").write_text(
        json.dumps(
            {
                "started": "2026-12-02T00:00:00+00:00",
                "operation": "create_session",
                "writers": [1, 2, 4, 8, 16, 32],
                "series": {"session-ledger (PostgreSQL)": [400, 700, 1100, 1300, 1350, 1360]},
            }
        )
    )
    redraw = subprocess.run(
        [sys.executable, "-m", "bench.peers.charts", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "scaling.png" in redraw.stdout
    assert (tmp_path / "scaling.png").read_bytes().startswith(PNG_MAGIC)


def test_a_missing_package_is_one_line_naming_the_install() -> None:
    # The bench says what to install instead of failing with a traceback.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from bench.peers import requirements as r;"
            "r.PYTHON_PACKAGES['django'] = ('no_such_module_for_the_bench',);"
            "print(r.missing_for('django'))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    assert lines == [
        "django: Python package no_such_module_for_the_bench missing (pip install -e '.[bench]')"
    ]
