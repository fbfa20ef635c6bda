"""The load test's report under build/loadtest/<stack>/: report.json (the run and every figure),
steps.csv (one row per step and protocol), requests.csv (every counted request) and
latency.png (latency percentiles against throughput, and per step), plus the table printed.

It must not run the load, nor compute figures beyond laying them out (stats.py does).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from tools.loadtest.stats import PERCENTILES, PROTOCOLS, StepResult, knee, percentile_key

STEP_FIELDS = [
    "protocol", "step", "concurrency", "requests", "errors", "error_rate", "seconds",
    "throughput_rps", "ended_by", *[f"{percentile_key(p)}_ms" for p in PERCENTILES],
]
REQUEST_FIELDS = ["protocol", "step", "latency_ms", "error", "at_seconds"]


class RequestLog:
    """requests.csv, written as the requests finish (a long run never holds them in memory)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(REQUEST_FIELDS)

    def __call__(self, sample: tuple[str, int, float, str | None, float]) -> None:
        protocol, step, latency_ms, error, at = sample
        self._csv.writerow([protocol, step, f"{latency_ms:.3f}", error or "", f"{at:.4f}"])

    def close(self) -> None:
        self._file.close()


def knees(results: list[StepResult], p99_target_ms: float) -> dict[str, dict[str, Any] | None]:
    protocols = [p for p in PROTOCOLS if any(r.protocol == p for r in results)]
    found = {p: knee(results, p, p99_target_ms) for p in protocols}
    return {p: (None if k is None else {"step": k.step, "concurrency": k.concurrency,
                                        "throughput_rps": round(k.throughput, 3),
                                        "p99_ms": k.latency_ms[percentile_key(99.0)]})
            for p, k in found.items()}


def write_report(out: Path, run: dict[str, Any], results: list[StepResult], p99_target_ms: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    report = {
        **run,
        "p99_target_ms": p99_target_ms,
        "knee": knees(results, p99_target_ms),
        "steps": [{**r.row(), "errors_by_kind": r.errors_by_kind} for r in results],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with (out / "steps.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, STEP_FIELDS)
        writer.writeheader()
        for r in results:
            writer.writerow(r.row())
    plot(out / "latency.png", results, p99_target_ms, title=f"stack {run['stack']}")
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: Iterable[StepResult]) -> str:
    lines = [f"{'protocol':8} {'step':>4} {'users':>5} {'req':>7} {'rps':>9} {'err%':>6} "
             + " ".join(f"{percentile_key(p) + ' ms':>10}" for p in PERCENTILES) + "  ended by"]
    for r in results:
        lines.append(
            f"{r.protocol:8} {r.step:>4} {r.concurrency:>5} {r.requests:>7} {r.throughput:>9.1f} "
            f"{100 * r.error_rate:>6.2f} "
            + " ".join(f"{_ms(r.latency_ms[percentile_key(p)]):>10}" for p in PERCENTILES)
            + f"  {r.ended_by}"
        )
    return "\n".join(lines)


def plot(path: Path, results: list[StepResult], p99_target_ms: float, title: str) -> None:
    """Two panels: each percentile against the throughput it was measured at (where the curve
    turns up is the knee), and the same percentiles per step of concurrency."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, the same output on every machine
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, (by_rps, by_step) = plt.subplots(1, 2, figsize=(10, 4), dpi=80, constrained_layout=True)
    styles = {"rest": "-", "grpc": "--"}
    markers = {"rest": "o", "grpc": "s"}
    for protocol in PROTOCOLS:
        rows = sorted((r for r in results if r.protocol == protocol), key=lambda r: r.step)
        if not rows:
            continue
        for i, p in enumerate(PERCENTILES):
            key = percentile_key(p)
            points = [(r.throughput, r.concurrency, r.latency_ms[key]) for r in rows if r.latency_ms[key] is not None]
            if not points:
                continue
            color = f"C{i}"
            label = f"{protocol} {key}"
            by_rps.plot([x for x, _, _ in points], [y for _, _, y in points], styles[protocol],
                        marker=markers[protocol], color=color, label=label, markersize=4)
            by_step.plot([c for _, c, _ in points], [y for _, _, y in points], styles[protocol],
                         marker=markers[protocol], color=color, label=label, markersize=4)
        found = knee(rows, protocol, p99_target_ms)
        if found is not None and found.latency_ms[percentile_key(99.0)] is not None:
            by_rps.annotate(f"{protocol} knee", (found.throughput, found.latency_ms[percentile_key(99.0)] or 0),
                            textcoords="offset points", xytext=(-10, 12), fontsize=8, arrowprops={"arrowstyle": "->"})
    for ax in (by_rps, by_step):
        ax.axhline(p99_target_ms, color="grey", linestyle=":", label=f"p99 target {p99_target_ms:g} ms")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
        ax.set_ylabel("latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
    by_rps.set_xlabel("throughput (requests/s)")
    by_rps.set_title(f"{title}: latency vs throughput", fontsize=10)
    by_step.set_xlabel("concurrent users (step)")
    by_step.set_xscale("log", base=2)
    users = sorted({r.concurrency for r in results})
    by_step.set_xticks(users, [str(u) for u in users])
    by_step.minorticks_off()
    by_step.set_title("latency per step", fontsize=10)
    by_step.legend(fontsize=7, loc="upper left")
    fig.savefig(path)
    plt.close(fig)
