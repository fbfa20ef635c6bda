"""The figures of a load test: per step and protocol, requests, errors, throughput and latency
percentiles read from an HDR histogram, and the knee (the first step whose p99 is above the
target).

Pure bookkeeping: it must not send requests, import locust or gevent (they patch the process),
nor write files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

# Latencies are recorded in microseconds from 1 us to 10 minutes at 3 significant digits: a
# percentile read back is within 0.1% of a recorded value (HdrHistogram's precision rule,
# hdrh/histogram.py: sub-bucket size 2 * 10^digits). Slower requests are clamped to the top.
LOWEST_US = 1
HIGHEST_US = 600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
PROTOCOLS = ("rest", "grpc")


def percentile_key(p: float) -> str:
    """`p50`, `p99`, `p99.9`: the names in the report, CSV and plot."""
    return f"p{p:g}"


@dataclass
class StepRecorder:
    """What one step of one protocol saw: successes' latencies, errors by kind."""

    protocol: str
    step: int
    concurrency: int
    max_requests: int
    histogram: HdrHistogram = field(
        default_factory=lambda: HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    )
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def full(self) -> bool:
        return self.requests >= self.max_requests

    def record(self, latency_ms: float, error: str | None) -> bool:
        """Count one finished request; False (not counted) once the step has its requests."""
        if self.full:
            return False
        self.requests += 1
        if error is None:
            micros = min(max(round(latency_ms * 1000), LOWEST_US), HIGHEST_US)
            self.histogram.record_value(micros)
        else:
            self.errors[error] += 1
        return True

    def result(self, seconds: float, ended_by: str) -> StepResult:
        ok = self.requests - sum(self.errors.values())
        latencies = {
            percentile_key(p): (self.histogram.get_value_at_percentile(p) / 1000 if ok else None)
            for p in PERCENTILES
        }
        return StepResult(
            protocol=self.protocol,
            step=self.step,
            concurrency=self.concurrency,
            requests=self.requests,
            errors=sum(self.errors.values()),
            seconds=seconds,
            ended_by=ended_by,
            latency_ms=latencies,
            errors_by_kind=dict(self.errors),
        )


@dataclass(frozen=True)
class StepResult:
    protocol: str
    step: int
    concurrency: int
    requests: int  # finished in the step, successes and errors
    errors: int
    seconds: float  # from all users running to the step's end
    ended_by: str  # "time" or "requests": which bound ended it
    latency_ms: dict[str, float | None]  # percentile key -> ms, over successful requests
    errors_by_kind: dict[str, int]

    @property
    def throughput(self) -> float:
        """Finished requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "step": self.step,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "seconds": round(self.seconds, 3),
            "throughput_rps": round(self.throughput, 3),
            "ended_by": self.ended_by,
            **{f"{k}_ms": (None if v is None else round(v, 3)) for k, v in self.latency_ms.items()},
        }


def knee(results: list[StepResult], protocol: str, p99_target_ms: float) -> StepResult | None:
    """The first step (in the order run) whose p99 is above the target: where latency turns
    up; a step with no successful request (no p99) counts as above."""
    for result in sorted((r for r in results if r.protocol == protocol), key=lambda r: r.step):
        p99 = result.latency_ms[percentile_key(99.0)]
        if p99 is None or p99 > p99_target_ms:
            return result
    return None
