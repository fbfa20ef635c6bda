"""Builders for promtool rule unit-test files (`promtool test rules`): input series in
Prometheus' expanding notation, `alert_rule_test` and `promql_expr_test` entries, a rule file
from a rendered PrometheusRule, and the exact float arithmetic of PromQL's
`histogram_quantile` for expected values.

It only writes files and runs promtool; it never decides what a rule should do (the tests do)
and never edits the rules it is given beyond dropping annotations.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.external_tools import promtool

# One sample every 15 s, the ServiceMonitor interval our serving scrape uses; each test group
# spans `MINUTES`, past the longest window (restarts, one hour) and `for` (15 minutes).
STEP_SECONDS = 15
MINUTES = 80
SAMPLES = MINUTES * 60 // STEP_SECONDS


def selector(name: str, labels: Mapping[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def series(name: str, labels: Mapping[str, str], values: str) -> dict[str, str]:
    return {"series": selector(name, labels), "values": values}


def gauge(value: float, *, start_min: int = 0, end_min: int = MINUTES) -> str:
    """A constant gauge, present from `start_min` up to `end_min` (absent outside)."""
    before = f"_x{start_min * 60 // STEP_SECONDS} " if start_min else ""
    return f"{before}{_num(value)}x{(end_min - start_min) * 60 // STEP_SECONDS}"


def counter(per_second: float, *, start_min: int = 0, first: float = 0) -> str:
    """A counter rising by `per_second` from `first`, first scraped at `start_min` (absent
    before: TF Serving creates a counter's cell on its first increment)."""
    before = f"_x{start_min * 60 // STEP_SECONDS} " if start_min else ""
    steps = (MINUTES - start_min) * 60 // STEP_SECONDS
    return f"{before}{_num(first)}+{_num(per_second * STEP_SECONDS)}x{steps}"


def steps(values: Sequence[tuple[float, float | None]], step_seconds: int = STEP_SECONDS) -> str:
    """A series sampled every `step_seconds`, holding each value from its minute until the
    next one's, the last to the end; None: no sample (the series does not exist then)."""
    samples: list[float | None] = []
    for i in range(MINUTES * 60 // step_seconds + 1):
        minute = i * step_seconds / 60
        samples.append(next(v for m, v in reversed(values) if m <= minute))
    parts, i = [], 0
    while i < len(samples):
        j = i
        while j + 1 < len(samples) and samples[j + 1] == samples[i]:
            j += 1
        value = samples[i]
        parts.append(f"_x{j - i + 1}" if value is None else f"{_num(value)}x{j - i}")
        i = j + 1
    return " ".join(parts)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def alert_test(alertname: str, minute: float, firing: Iterable[Mapping[str, str]] = ()) -> dict[str, Any]:
    """At `minute`, `alertname` fires exactly with these label sets (none: it is silent)."""
    return {
        "eval_time": f"{_minutes(minute)}",
        "alertname": alertname,
        "exp_alerts": [{"exp_labels": dict(labels)} for labels in firing],
    }


def expr_test(
    expr: str, minute: float, samples: Iterable[tuple[Mapping[str, str], float]], name: str = ""
) -> dict[str, Any]:
    """At `minute`, `expr` gives exactly these samples (labels, value), `name` their metric
    name (a recording rule's); promtool compares values exactly, so an expected value must be
    computed with PromQL's own arithmetic."""
    return {
        "expr": expr,
        "eval_time": f"{_minutes(minute)}",
        "exp_samples": [{"labels": selector(name, labels) if labels or name else "{}", "value": value} for labels, value in samples],
    }


def _minutes(minute: float) -> str:
    seconds = round(minute * 60)
    return f"{seconds // 60}m{seconds % 60}s" if seconds % 60 else f"{seconds // 60}m"


def group(
    name: str,
    input_series: list[dict[str, str]],
    alerts: Iterable[dict[str, Any]] = (),
    exprs: Iterable[dict[str, Any]] = (),
    step_seconds: int = STEP_SECONDS,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "interval": f"{step_seconds}s", "input_series": input_series}
    if alerts := list(alerts):
        out["alert_rule_test"] = alerts
    if exprs := list(exprs):
        out["promql_expr_test"] = exprs
    return out


def rule_file(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A PrometheusRule's spec as a Prometheus rule file, annotations dropped (promtool would
    compare their rendered text, which is not what these tests are about)."""
    out = copy.deepcopy(dict(spec))
    for g in out["groups"]:
        for rule in g["rules"]:
            rule.pop("annotations", None)
    return out


def run(workdir: Path, rules: Mapping[str, Any], groups: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` over `groups` against the rule file `rules`, evaluated every minute,
    the rule groups in the file's order: promtool otherwise evaluates them in Go map order
    (prometheus v2.42 cmd/promtool/unittest.go, `group_eval_order`), so an alert on a recording
    rule would see that minute's recorded value on some runs and not on others."""
    (workdir / "rules.yaml").write_text(yaml.safe_dump(dict(rules), sort_keys=False))
    order = [g["name"] for g in rules["groups"]]
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "group_eval_order": order, "tests": groups}
    (workdir / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    return promtool("test", "rules", "tests.yaml", cwd=workdir)


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """histogram_quantile over (upper bound, cumulative count) pairs, with the operations of
    prometheus v2.42 promql/quantile.go bucketQuantile in their order, so the float result is
    the one Prometheus computes (the buckets here are sorted, end in +Inf and are monotonic)."""
    observations = buckets[-1][1]
    rank = q * observations
    b = next(i for i, (_, count) in enumerate(buckets[:-1]) if count >= rank) if any(
        count >= rank for _, count in buckets[:-1]
    ) else len(buckets) - 1
    if b == len(buckets) - 1:
        return buckets[-2][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)
