"""Charts (matplotlib, PNG) of the peers report, and the scaling chart's hook.

* ``peers-inprocess.png``: calls/s and p99 per peer, configuration and
  operation, session-ledger beside each peer;
* ``peers-http.png``: requests/s and p99 of get-session per configuration,
  session-ledger beside BetterAuth;
* ``scaling.png``: throughput against concurrent writers (1 → 32), drawn
  from ``concurrency.json`` in the same directory when the concurrency
  benchmark has written one. Its shape (the hook ``bench/concurrency.py``
  is to fill)::

      {"started": "...", "operation": "create_session",
       "writers": [1, 2, 4, 8, 16, 32],
       "series": {"session-ledger (PostgreSQL)": [rate per writer count, ...], ...}}

    python -m bench.peers.charts [DIR]   # redraw from DIR/peers.json (default bench/results)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peers.harness import Comparison
from bench.peers.report import Report

RESULTS = Path(__file__).resolve().parents[1] / "results"
OURS_COLOUR = "#2b6cb0"
PEER_COLOUR = "#c05621"
SCALING_INPUT = "concurrency.json"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(
    comparisons: Sequence[Comparison],
    labels: list[str],
    title: str,
    unit: str,
    path: Path,
    *,
    log: bool,
) -> Path:
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    n = len(comparisons)
    height = max(2.8, 0.5 * n + 1.6)
    fig, (rates, p99s) = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    ys = list(range(n))
    bar = 0.38
    for axis, ours, theirs, xlabel in (
        (
            rates,
            [c.ours.median_rate for c in comparisons],
            [c.theirs.median_rate for c in comparisons],
            f"{unit} (median round; more is better)",
        ),
        (
            p99s,
            [c.ours.p99_ms for c in comparisons],
            [c.theirs.p99_ms for c in comparisons],
            "p99 latency, ms (less is better)",
        ),
    ):
        axis.barh([y - bar / 2 for y in ys], ours, bar, color=OURS_COLOUR, label="session-ledger")
        axis.barh([y + bar / 2 for y in ys], theirs, bar, color=PEER_COLOUR, label="peer")
        if log:
            axis.set_xscale("log")
            axis.xaxis.set_minor_formatter(NullFormatter())
        axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.10g}"))
        axis.set_xlabel(xlabel)
        axis.grid(axis="x", which="both", alpha=0.25)
    for y, c in zip(ys, comparisons, strict=True):
        rates.annotate(
            f"{c.ratio:.2f}x",
            (max(c.ours.median_rate, c.theirs.median_rate), y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color="#1a202c" if c.met else "#c53030",
        )
    rates.set_yticks(ys, labels, fontsize=8)
    rates.invert_yaxis()
    right = rates.get_xlim()[1]
    rates.set_xlim(right=right * 1.6 if log else right * 1.15)  # room for the ratio labels
    handles, names = rates.get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="upper right",
        bbox_to_anchor=(0.98, 1.0),
        fontsize=8,
        ncols=2,
        frameon=False,
    )
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / height))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class ChartSpec:
    file: str
    unit: str
    label: Callable[[Comparison], str]  # a row's label
    title: str  # with {date} and {mode}
    log: bool  # a logarithmic axis (rates over two orders of magnitude)


CHARTS = {
    "in-process": ChartSpec(
        "peers-inprocess.png",
        "calls/s",
        lambda c: f"{c.peer}\n{c.config} · {c.op}",
        "In process: session-ledger beside each peer ({date}, {mode} run; "
        "ratio = ours / peer, red below the 1.5x target)",
        log=True,
    ),
    "http": ChartSpec(
        "peers-http.png",
        "requests/s",
        lambda c: c.config,
        "GET /api/auth/get-session: session-ledger serve beside BetterAuth "
        "({date}, {mode} run; wrk -t1 -c8; red below the 3x target)",
        log=False,
    ),
}


def comparison_chart(report: Report, directory: Path, kind: str) -> Path | None:
    """Rates and p99 of one kind of comparison; None when the run had none."""
    rows = [c for c in report.comparisons if c.kind == kind]
    if not rows:
        return None
    spec = CHARTS[kind]
    labels = [spec.label(c) for c in rows]
    heading = spec.title.format(date=report.started[:10], mode=report.mode)
    load = [report.settings.get(f"load at {when}") for when in ("start", "end")]
    if None not in load:
        heading += (
            f"\nshared 2-core machine, 1-minute load {load[0]} at the start, {load[1]} at the end"
        )
    return _bars(rows, labels, heading, spec.unit, directory / spec.file, log=spec.log)


def scaling_chart(directory: Path) -> Path | None:
    """Throughput by number of concurrent writers, from the concurrency
    benchmark's ``concurrency.json``; None (and one line) while there is none."""
    source = directory / SCALING_INPUT
    if not source.is_file():
        print(
            f"charts: no {source.name} in {directory}: the scaling chart (writers 1 → 32) "
            "waits for bench/concurrency.py"
        )
        return None
    data = json.loads(source.read_text())
    plt = _pyplot()
    # Left: the rates; right: ours / raw of the same run (runs on a shared
    # machine compare by their ratios, not by their rates).
    fig, (axis, ratios) = plt.subplots(1, 2, figsize=(13, 5))
    series: dict[str, list[float]] = data["series"]
    for name, rates in series.items():
        axis.plot(data["writers"], rates, marker="o", label=name)
        raw = series.get(name.replace(" · session-ledger (", " · raw INSERT ("))
        if raw is not None and raw is not rates:
            ratio = [ours / other if other else 0.0 for ours, other in zip(rates, raw, strict=True)]
            ratios.plot(
                data["writers"], ratio, marker="o", label=name.replace(" · session-ledger", "")
            )
    for ax in (axis, ratios):
        ax.set_xscale("log", base=2)
        ax.set_xticks(data["writers"], [str(w) for w in data["writers"]])
        ax.set_xlabel("concurrent writers")
        ax.grid(alpha=0.25)
        ax.legend(fontsize=7)
    axis.set_ylabel(f"{data.get('operation', 'operations')} per second")
    axis.set_title(f"Scaling with concurrent writers ({str(data.get('started', ''))[:10]})")
    ratios.set_ylabel("session-ledger / raw INSERT")
    ratios.set_ylim(bottom=0)
    ratios.set_title("Ratio to raw INSERTs with the same writers")
    fig.tight_layout()
    path = directory / "scaling.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def draw(report: Report, directory: Path) -> list[Path]:
    drawn = [comparison_chart(report, directory, kind) for kind in CHARTS]
    drawn.append(scaling_chart(directory))
    return [path for path in drawn if path is not None]


def main() -> None:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    report = Report.from_json(json.loads((directory / "peers.json").read_text()))
    for path in draw(report, directory):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
