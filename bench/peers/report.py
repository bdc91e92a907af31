"""The peers bench's report: a table on the terminal, and the same as
Markdown (``peers.md``) and JSON (``peers.json``, what the charts read)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers.harness import Comparison


@dataclass
class Report:
    started: str  # UTC, ISO 8601
    mode: str  # "full", "quick" or "smoke"
    settings: dict[str, Any]
    versions: dict[str, str]
    comparisons: list[Comparison] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "mode": self.mode,
            "settings": self.settings,
            "versions": self.versions,
            "comparisons": [c.to_json() for c in self.comparisons],
            "skipped": self.skipped,
            "failed": self.failed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        return cls(
            started=data["started"],
            mode=data["mode"],
            settings=data["settings"],
            versions=data["versions"],
            comparisons=[Comparison.from_json(c) for c in data["comparisons"]],
            skipped=list(data["skipped"]),
            failed=list(data["failed"]),
        )

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        as_json = directory / "peers.json"
        as_json.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        as_md = directory / "peers.md"
        as_md.write_text(markdown(self))
        return [as_json, as_md]


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _row(c: Comparison) -> list[str]:
    unit = "req/s" if c.kind == "http" else "/s"
    spread = f"{min(c.ratios):.2f}-{max(c.ratios):.2f}" if len(c.ratios) > 1 else "1 round"
    verdict = "met" if c.met else "**missed**"
    return [
        c.config,
        c.peer,
        c.op,
        f"{c.ours.label}: {_rate(c.ours.median_rate)} {unit}, p99 {c.ours.p99_ms:.2f} ms",
        f"{c.theirs.label}: {_rate(c.theirs.median_rate)} {unit}, p99 {c.theirs.p99_ms:.2f} ms",
        f"**{c.ratio:.2f}x** ({spread})",
        f"{c.target:g}x {verdict}",
    ]


HEADER = ["configuration", "peer", "operation", "session-ledger", "peer", "ratio", "target"]


def table(comparisons: Sequence[Comparison]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_row(c)) + " |" for c in comparisons]
    return "\n".join(lines)


def markdown(report: Report) -> str:
    in_process = [c for c in report.comparisons if c.kind == "in-process"]
    http = [c for c in report.comparisons if c.kind == "http"]
    settings = ", ".join(f"{k} {v}" for k, v in report.settings.items())
    parts = [
        f"# Peers: {report.started} ({report.mode} run)",
        "",
        f"Settings: {settings}. Ratio = session-ledger / peer, median of the "
        "alternating rounds' ratios (their range in brackets); rates are the "
        "median round's, p99 over all calls (in process) or the median round's "
        "(wrk). In-process peers run one process per pair (the peer and "
        "session-ledger in it, taking turns); over HTTP each server is one "
        "process (one uvicorn worker; one node process).",
        "",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in report.versions.items()) + ".",
        "",
    ]
    if in_process:
        parts += ["## In process", "", table(in_process), ""]
    if http:
        parts += ["## Over HTTP (GET /api/auth/get-session, wrk -t1 -c8)", "", table(http), ""]
    for c in report.comparisons:
        parts += [f"* {c.peer}, {c.config}, {c.op}: {note}" for note in c.notes]
    if report.skipped:
        parts += ["", "Skipped: " + "; ".join(report.skipped) + "."]
    if report.failed:
        parts += ["", "Failed: " + "; ".join(report.failed) + "."]
    return "\n".join(parts).rstrip() + "\n"


def terminal(comparisons: Sequence[Comparison]) -> str:
    """A compact table for the terminal."""
    lines = [
        f"{'configuration':26} {'peer':32} {'operation':16} {'ours/s':>9} {'peer/s':>9} "
        f"{'ratio':>6} {'range':>11} {'target':>7}"
    ]
    for c in comparisons:
        spread = f"{min(c.ratios):.2f}-{max(c.ratios):.2f}"
        lines.append(
            f"{c.config:26} {c.peer:32} {c.op:16} {c.ours.median_rate:9,.0f} "
            f"{c.theirs.median_rate:9,.0f} {c.ratio:6.2f} {spread:>11} "
            f"{c.target:5g}x {'ok' if c.met else 'MISSED'}"
        )
    return "\n".join(lines)
