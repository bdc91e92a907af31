"""Alternating rounds between two in-process contenders, and the figures
every peer comparison reports (rate per round, p99, ratio per round).

Each contender is a set of named operations ``op(i)`` (sync or async, the
``i``-th call of the run). The two contenders of a pair run the same
operation in turn, ``per_round`` calls each, the order flipping every
round; the ratio of a round is ours / peer in calls per second, and the
reported ratio is the median of the rounds' ratios with their range: the
machine's speed drifts between seconds by more than some of the gaps are
wide, which one long phase each would pin on one side.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: One operation: called with the index of the call within the run.
SyncOp = Callable[[int], object]
AsyncOp = Callable[[int], Awaitable[object]]


@dataclass
class Contender:
    """One side of a comparison: its label and its operations by name."""

    label: str
    ops: Mapping[str, SyncOp] | Mapping[str, AsyncOp]
    is_async: bool


@dataclass
class Measured:
    """One contender, one operation, every round."""

    label: str
    rates: list[float]
    p99_ms: float

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)


@dataclass
class Comparison:
    """Ours against one peer on one operation in one configuration."""

    kind: str  # "in-process" or "http"
    config: str  # the shared backend, e.g. "PostgreSQL + Redis"
    peer: str  # e.g. "Django cached_db"
    op: str  # e.g. "create"
    ours: Measured
    theirs: Measured
    ratios: list[float]  # ours / theirs, per round
    target: float
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def met(self) -> bool:
        return self.ratio >= self.target

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(
            kind=data["kind"],
            config=data["config"],
            peer=data["peer"],
            op=data["op"],
            ours=Measured(**data["ours"]),
            theirs=Measured(**data["theirs"]),
            ratios=list(data["ratios"]),
            target=data["target"],
            notes=list(data.get("notes", [])),
        )


def p99(latencies: list[float]) -> float:
    """The 99th percentile of ``latencies`` (seconds), in milliseconds."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def _async_round(op: AsyncOp, start: int, count: int, out: list[float]) -> None:
    clock = time.perf_counter
    for i in range(start, start + count):
        began = clock()
        await op(i)
        out.append(clock() - began)


def _sync_round(op: SyncOp, start: int, count: int, out: list[float]) -> None:
    clock = time.perf_counter
    for i in range(start, start + count):
        began = clock()
        op(i)
        out.append(clock() - began)


def run_round(
    runner: asyncio.Runner, contender: Contender, op_name: str, start: int, count: int
) -> tuple[float, list[float]]:
    """``count`` calls of one operation: (calls per second, each call's seconds)."""
    latencies: list[float] = []
    began = time.perf_counter()
    if contender.is_async:
        async_op: AsyncOp = contender.ops[op_name]  # type: ignore[assignment]
        runner.run(_async_round(async_op, start, count, latencies))
    else:
        sync_op: SyncOp = contender.ops[op_name]
        _sync_round(sync_op, start, count, latencies)
    return count / (time.perf_counter() - began), latencies


def alternate(
    runner: asyncio.Runner,
    ours: Contender,
    theirs: Contender,
    ours_op: str,
    their_op: str,
    *,
    calls: int,
    rounds: int,
) -> tuple[Measured, Measured, list[float]]:
    """Both contenders in ``rounds`` alternating rounds of ``calls // rounds``
    calls each: (ours, theirs, ours/theirs per round)."""
    per = max(1, calls // rounds)
    rates: dict[str, list[float]] = {"ours": [], "theirs": []}
    latencies: dict[str, list[float]] = {"ours": [], "theirs": []}
    ratios: list[float] = []
    for r in range(rounds):
        order = [("ours", ours, ours_op), ("theirs", theirs, their_op)]
        if r % 2:
            order.reverse()
        took: dict[str, float] = {}
        for side, contender, op in order:
            rate, lat = run_round(runner, contender, op, r * per, per)
            took[side] = rate
            rates[side].append(rate)
            latencies[side].extend(lat)
        ratios.append(took["ours"] / took["theirs"])
    return (
        Measured(ours.label, rates["ours"], p99(latencies["ours"])),
        Measured(theirs.label, rates["theirs"], p99(latencies["theirs"])),
        ratios,
    )
