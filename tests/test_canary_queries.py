"""Queries that mean "the stable pods" count only the stable pods, and those that mean the
canary only the canary's: the autoscaler's (KEDA triggers, prometheus-adapter via the HPA's
target) and the alerts, evaluated against series of both sets of pods.

Both sets of pods carry `app.kubernetes.io/component=serving` and scrape into the same
namespace; they differ by Deployment, hence by pod name (`<deployment>-<hash>-<5>` and
`<deployment>-canary-<hash>-<5>`), which is what the series carry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.serving import POD_NAME_ALPHABET, pod_name_regex
from tests.support.external_tools import promtool
from tests.support import raw_stack, render_raw
from tools.lib.mock_engine import Rendering

# --- a small PromQL selector matcher (Prometheus docs, "Querying basics": =, !=, =~, !~; regex
# matches are fully anchored RE2) ---

_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_CLOSE = re.compile(r"\s*\}")


def selectors(query: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Every `metric{matchers}` in `query` (those our queries use: all name a metric)."""
    out = []
    for start in _SELECTOR.finditer(query):
        matchers, at = [], start.end()
        while not (end := _CLOSE.match(query, at)):
            m = _MATCHER.match(query, at)
            assert m, f"cannot read the selector at {query[start.start():]!r}"
            matchers.append((m.group(1), m.group(2), m.group(3)))
            at = m.end()
        out.append((start.group(1), matchers))
    return out


def matches(matchers: list[tuple[str, str, str]], labels: dict[str, str]) -> bool:
    for name, op, value in matchers:
        got = labels.get(name, "")
        if op == "=" and got != value or op == "!=" and got == value:
            return False
        if op == "=~" and not re.fullmatch(value, got) or op == "!~" and re.fullmatch(value, got):
            return False
    return True


def test_matcher_can_fail() -> None:
    """The old KEDA selector (`<deployment>-.*`) takes the canary's pods for the stable ones."""
    (_, old), = selectors('sum(rate(m{namespace="ns", pod=~"tf-serving-.*"}[1m]))')
    assert matches(old, {"namespace": "ns", "pod": "tf-serving-canary-6d5f7c9b8-x2v5q"})
    (_, new), = selectors(f'sum(rate(m{{namespace="ns", pod=~"{pod_name_regex("tf-serving")}"}}[1m]))')
    assert not matches(new, {"namespace": "ns", "pod": "tf-serving-canary-6d5f7c9b8-x2v5q"})


# --- the pods Kubernetes names, for any serving name the config allows ---


def pod_names(deployment: str) -> list[str]:
    """Names Kubernetes gives a Deployment's pods: hashes of 1 to 10 characters of
    apimachinery's rand alphabet, 5 random characters (see serving.POD_NAME_ALPHABET)."""
    a = POD_NAME_ALPHABET
    return [f"{deployment}-{a[:10]}-{a[-5:]}", f"{deployment}-{a[3]}-{a[5:10]}", f"{deployment}-7d9f8b6c4-x2v5q"]


NAMES = ["tf-serving", "tf", "canary", "a" * 39, "serving-canary"]


@pytest.mark.parametrize("name", NAMES)
def test_pod_name_regex_tells_stable_from_canary(name: str) -> None:
    stable, canary = pod_name_regex(name), pod_name_regex(f"{name}-canary")
    for pod in pod_names(name):
        assert re.fullmatch(stable, pod) and not re.fullmatch(canary, pod), pod
        assert len(pod) <= 63
    for pod in pod_names(f"{name}-canary"):
        assert re.fullmatch(canary, pod) and not re.fullmatch(stable, pod), pod
        assert len(pod) <= 63


# --- generated stacks: canary on, both autoscaling engines ---


def stack(engine: str, name: str = "tf-serving", namespace: str = "tf-serving") -> dict[str, Any]:
    raw = raw_stack("prod")
    raw["serving"]["name"] = name
    raw["serving"]["namespace"] = namespace
    raw["serving"]["models"]["resnet"]["canary"] = {"version": 4, "weight": 10}
    raw["autoscaling"] = {
        "engine": engine,
        "min_replicas": 2,
        "max_replicas": 6,
        "metrics": {"requests_per_second": 20, "latency_p99": 250, "batch_queueing_p99": 50, "gpu_utilisation": 70},
    }
    return raw


CASES = [("keda", "tf-serving", "tf-serving"), ("hpa", "tf-serving", "tf-serving"), ("keda", "ml", "inference")]
_renderings: dict[tuple[str, str, str], Rendering] = {}


def rendering(case: tuple[str, str, str]) -> Rendering:
    if case not in _renderings:
        _renderings[case] = render_raw(stack(*case), "-".join(case))
    return _renderings[case]


def objects(r: Rendering, kind: str) -> list[dict[str, Any]]:
    return [m for m in r.k8s_objects() if m["kind"] == kind]


def series_labels(metric: str, namespace: str, pod: str) -> dict[str, str]:
    """How each exporter labels a pod's series: TF Serving and kube-state-metrics with
    `namespace` / `pod`; DCGM's GPU-to-pod mapping with `exported_namespace` / `exported_pod`
    (the scrape keeps the exporter pod's own `namespace` / `pod`)."""
    if metric.startswith("DCGM_"):
        return {"exported_namespace": namespace, "exported_pod": pod, "namespace": "nvidia", "pod": "dcgm-exporter-x2v5q"}
    return {"namespace": namespace, "pod": pod, "condition": "false", "status": "UNAVAILABLE"}


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_keda_queries_count_only_the_stable_pods(case: tuple[str, str, str]) -> None:
    r = rendering(case)
    scaled = objects(r, "ScaledObject")
    if case[0] != "keda":
        assert not scaled
        return
    (obj,) = scaled
    target = obj["spec"]["scaleTargetRef"]["name"]
    ns = obj["metadata"]["namespace"]
    deployments = {d["metadata"]["name"] for d in objects(r, "Deployment")}
    assert deployments == {target, f"{target}-canary"}
    queries = [t["metadata"]["query"] for t in obj["spec"]["triggers"] if t["type"] == "prometheus"]
    assert len(queries) == 4
    for query in queries:
        for metric, matchers in selectors(query):
            for pod in pod_names(target):
                assert matches(matchers, series_labels(metric, ns, pod)), (query, pod)
            for pod in pod_names(f"{target}-canary"):
                assert not matches(matchers, series_labels(metric, ns, pod)), (query, pod)


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_hpa_targets_select_only_the_stable_pods(case: tuple[str, str, str]) -> None:
    """prometheus-adapter fills `<<.LabelMatchers>>` with the names of the pods the HPA
    selects, and the HPA selects by its target's selector (prometheus-adapter
    pkg/custom-provider/provider.go GetMetricBySelector -> ListObjectNames; kubernetes
    pkg/controller/podautoscaler/horizontal.go computeStatusForPodsMetric): the stable
    Deployment's selector must not select the canary's pods."""
    r = rendering(case)
    deployments = {d["metadata"]["name"]: d for d in objects(r, "Deployment")}
    for hpa in objects(r, "HorizontalPodAutoscaler"):
        target = deployments[hpa["spec"]["scaleTargetRef"]["name"]]
        selector = target["spec"]["selector"]["matchLabels"].items()
        for name, d in deployments.items():
            selected = selector <= d["spec"]["template"]["metadata"]["labels"].items()
            assert selected == (d is target), name


def _series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_down_alerts_judge_stable_and_canary_pods_apart(case: tuple[str, str, str], tmp_path: Path) -> None:
    """A canary pod that cannot load its models is the canary's alert, never the stable
    Deployment's (and the other way round); a canary Deployment with none available is down."""
    r = rendering(case)
    spec = next(m for m in r.k8s_objects() if m["kind"] == "PrometheusRule")["spec"]
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    ns = objects(r, "Deployment")[0]["metadata"]["namespace"]
    stable = next(d["metadata"]["name"] for d in objects(r, "Deployment") if not d["metadata"]["name"].endswith("-canary"))
    canary = f"{stable}-canary"
    n = 60

    def deployment(name: str, available: int) -> list[dict[str, str]]:
        dep = {"namespace": ns, "deployment": name}
        return [
            _series("kube_deployment_spec_replicas", dep, f"2x{n}"),
            _series("kube_deployment_status_replicas_available", dep, f"{available}x{n}"),
        ]

    def pod(name: str, ready: bool) -> list[dict[str, str]]:
        labels = {"namespace": ns, "pod": pod_names(name)[2], "uid": name}
        return [
            _series("kube_pod_status_ready", {**labels, "condition": "true"}, f"{int(ready)}x{n}"),
            _series("kube_pod_status_ready", {**labels, "condition": "false"}, f"{int(not ready)}x{n}"),
        ]

    def case_(title: str, series: list[dict[str, str]], down: list[str], unavailable: list[str]) -> dict[str, Any]:
        return {
            "name": title,
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": f"{n}m", "alertname": "TFServingDown",
                 "exp_alerts": [{"exp_labels": {"namespace": ns, "deployment": d, "severity": "critical"}} for d in down]},
                {"eval_time": f"{n}m", "alertname": "TFServingModelNotAvailable",
                 "exp_alerts": [{"exp_labels": {"namespace": ns, "deployment": d, "severity": "warning"}} for d in unavailable]},
            ],
        }

    tests = [
        case_("healthy", [*deployment(stable, 2), *deployment(canary, 1), *pod(stable, True), *pod(canary, True)], [], []),
        case_("canary pod not ready", [*deployment(stable, 2), *deployment(canary, 1), *pod(stable, True), *pod(canary, False)], [], [canary]),
        case_("stable pod not ready", [*deployment(stable, 1), *deployment(canary, 1), *pod(stable, False), *pod(canary, True)], [], [stable]),
        case_("canary down", [*deployment(stable, 2), *deployment(canary, 0), *pod(stable, True), *pod(canary, False)], [canary], [canary]),
    ]
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False)
    )
    done = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_pod_alert_selectors_cover_exactly_the_serving_pods(case: tuple[str, str, str]) -> None:
    """Every alert selector that names pods matches the pods of our Deployments and nothing
    else in the namespace."""
    r = rendering(case)
    spec = next(m for m in r.k8s_objects() if m["kind"] == "PrometheusRule")["spec"]
    ns = objects(r, "Deployment")[0]["metadata"]["namespace"]
    names = [d["metadata"]["name"] for d in objects(r, "Deployment")]
    ours = [p for name in names for p in pod_names(name)]
    # Another Deployment in the namespace whose name starts with ours.
    stranger = pod_names(f"{names[0]}-batch")[0]
    for group in spec["groups"]:
        for rule in group["rules"]:
            for metric, matchers in selectors(rule["expr"]):
                if not any(name == "pod" for name, _, _ in matchers):
                    continue
                assert any(matches(matchers, series_labels(metric, ns, p)) for p in ours), rule["expr"]
                assert not matches(matchers, series_labels(metric, ns, stranger)), rule["expr"]
