"""Autoscaling: HPA and prometheus-adapter from one definition, KEDA, behaviour, consistency."""

from __future__ import annotations

import math
from typing import Any

import promql_parser
import pytest

from components.autoscaling import CUSTOM_METRICS, adapter_rules, keda_query, quantity
from components.config import StackConfigError
from components.config.autoscaling import HPA_TOLERANCE, MEASURABLE_MAXIMUM, MetricKind, largest_useful_target
from tests.support import parse, raw_stack, render_raw
from tests.support import conformance
from tools.lib.mock_engine import Rendering


def obj(r: Rendering, kind: str) -> dict[str, Any]:
    found = [m for m in r.k8s_objects() if m["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def release(r: Rendering, chart: str) -> dict[str, Any]:
    found = [x.inputs for x in r.of_type("kubernetes:helm.sh/v3:Release") if x.inputs["chart"] == chart]
    assert len(found) == 1, chart
    return found[0]


def charts(r: Rendering) -> set[str]:
    return {x.inputs["chart"] for x in r.of_type("kubernetes:helm.sh/v3:Release")}


def expand(template: str) -> str:
    """An adapter query as the adapter would send it for one pod."""
    return (
        template.replace("<<.Series>>", "metric")
        .replace("<<.LabelMatchers>>", 'namespace="tf-serving",pod="tf-serving-0"')
        .replace("<<.GroupBy>>", "pod")
    )


def with_metrics(metrics: dict[str, float], engine: str = "hpa") -> Rendering:
    raw = raw_stack("prod")
    raw["autoscaling"]["metrics"] = metrics
    raw["autoscaling"]["engine"] = engine
    return render_raw(raw)


def test_prod_hpa_targets_the_deployment(prod: Rendering) -> None:
    hpa = obj(prod, "HorizontalPodAutoscaler")["spec"]
    deployment = obj(prod, "Deployment")
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert obj(prod, "HorizontalPodAutoscaler")["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    metrics = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["metrics"]}
    assert metrics == {
        "tfserving_requests_per_second": {"type": "AverageValue", "averageValue": "30"},
        "tfserving_request_latency_p99_seconds": {"type": "AverageValue", "averageValue": "250m"},
        "tfserving_gpu_utilisation_percent": {"type": "AverageValue", "averageValue": "80"},
    }


def test_hpa_metrics_and_adapter_rules_come_from_one_definition(prod: Rendering) -> None:
    adapter = release(prod, "prometheus-adapter")
    assert adapter["version"] == "5.3.0"
    rules = adapter["values"]["rules"]
    assert rules["default"] is False
    exposed = {rule["name"]["as"] for rule in rules["custom"]}
    wanted = {m["pods"]["metric"]["name"] for m in obj(prod, "HorizontalPodAutoscaler")["spec"]["metrics"] if m["type"] == "Pods"}
    assert wanted == exposed
    assert adapter["values"]["prometheus"] == {"url": "http://kube-prometheus-stack-prometheus.monitoring.svc", "port": 9090}


@pytest.mark.parametrize("kind", sorted(CUSTOM_METRICS))
def test_every_adapter_rule_is_valid_promql_on_exported_metrics(kind: str) -> None:
    from components.monitoring import EXPORTED_METRICS

    rule = adapter_rules([kind])[0]  # type: ignore[list-item]
    series = promql_parser.parse(rule["seriesQuery"])
    assert isinstance(series, promql_parser.VectorSelector)
    assert series.name in EXPORTED_METRICS
    promql_parser.parse(expand(rule["metricsQuery"]))
    overrides = rule["resources"]["overrides"]
    assert {v["resource"] for v in overrides.values()} == {"namespace", "pod"}
    metric = CUSTOM_METRICS[kind]  # type: ignore[index]
    promql_parser.parse(keda_query(metric, "tf-serving", "tf-serving"))


def test_gpu_utilisation_maps_dcgm_labels_back_to_the_serving_pod() -> None:
    rule = adapter_rules(["gpu_utilisation"])[0]
    assert rule["resources"]["overrides"] == {
        "exported_namespace": {"resource": "namespace"},
        "exported_pod": {"resource": "pod"},
    }
    assert rule["seriesQuery"] == 'DCGM_FI_DEV_GPU_UTIL{exported_namespace!="",exported_pod!=""}'


@pytest.mark.parametrize(
    "kind, target, expected",
    [
        ("requests_per_second", 25, {"type": "Pods", "name": "tfserving_requests_per_second", "value": "25"}),
        ("latency_p95", 120, {"type": "Pods", "name": "tfserving_request_latency_p95_seconds", "value": "120m"}),
        ("latency_p99", 400, {"type": "Pods", "name": "tfserving_request_latency_p99_seconds", "value": "400m"}),
        ("batch_queueing_p99", 20, {"type": "Pods", "name": "tfserving_batch_queueing_p99_seconds", "value": "20m"}),
        ("gpu_utilisation", 75, {"type": "Pods", "name": "tfserving_gpu_utilisation_percent", "value": "75"}),
    ],
)
def test_each_custom_metric_type(kind: str, target: float, expected: dict[str, str]) -> None:
    r = with_metrics({kind: target})
    [metric] = obj(r, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == expected["type"]
    assert metric["pods"]["metric"]["name"] == expected["name"]
    assert metric["pods"]["target"]["averageValue"] == expected["value"]
    assert [rule["name"]["as"] for rule in release(r, "prometheus-adapter")["values"]["rules"]["custom"]] == [expected["name"]]
    assert "metrics-server" not in charts(r)


def test_cpu_metric_uses_metrics_server_and_no_adapter() -> None:
    r = with_metrics({"cpu": 70})
    [metric] = obj(r, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric == {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}
    assert release(r, "metrics-server")["version"] == "3.13.1"
    assert "prometheus-adapter" not in charts(r)


def test_behaviour_differs_per_environment(dev: Rendering, prod: Rendering) -> None:
    prod_behavior = obj(prod, "HorizontalPodAutoscaler")["spec"]["behavior"]
    dev_behavior = obj(dev, "ScaledObject")["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert prod_behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert prod_behavior["scaleUp"]["selectPolicy"] == "Max"
    assert prod_behavior["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert prod_behavior["scaleDown"]["selectPolicy"] == "Min"
    assert dev_behavior["scaleDown"]["stabilizationWindowSeconds"] == 120
    assert {p["type"]: p["value"] for p in prod_behavior["scaleDown"]["policies"]} == {"Percent": 25, "Pods": 1}


def test_dev_keda_scales_to_zero_with_an_off_hours_window(dev: Rendering) -> None:
    scaled = obj(dev, "ScaledObject")["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (0, 2)
    assert scaled["scaleTargetRef"]["name"] == obj(dev, "Deployment")["metadata"]["name"]
    triggers = {t["type"]: t for t in scaled["triggers"]}
    prometheus = triggers["prometheus"]
    assert prometheus["metricType"] == "AverageValue"
    assert prometheus["metadata"]["threshold"] == "10.0"
    promql_parser.parse(prometheus["metadata"]["query"])
    assert 'namespace="tf-serving"' in prometheus["metadata"]["query"]
    crons = {t["name"]: t["metadata"] for t in scaled["triggers"] if t["type"] == "cron"}
    assert crons["working-hours"] == {
        "timezone": "Europe/London",
        "start": "0 8 * * 1-5",
        "end": "0 19 * * 1-5",
        "desiredReplicas": "1",
    }
    # The default pre-warm: the same replicas from 15 minutes before the window opens
    # (what KEDA does with both: tests/test_cold_start.py).
    assert crons["pre-warm"] == {**crons["working-hours"], "start": "45 7 * * 1-5", "end": "0 8 * * 1-5"}
    keda = release(dev, "keda")
    assert (keda["version"], keda["namespace"], keda["createNamespace"]) == ("2.20.2", "keda", True)
    assert not [m for m in dev.k8s_objects() if m["kind"] == "HorizontalPodAutoscaler"]


def test_keda_latency_trigger_reads_a_value_in_seconds() -> None:
    r = with_metrics({"latency_p99": 300}, engine="keda")
    [trigger] = obj(r, "ScaledObject")["spec"]["triggers"]
    assert trigger["metricType"] == "Value"
    assert trigger["metadata"]["threshold"] == "0.3"


def test_scaled_object_validates_against_keda_2_20(dev: Rendering) -> None:
    assert conformance.validate_object(obj(dev, "ScaledObject"), "1.36") == []


def test_quantity() -> None:
    assert [quantity(v) for v in (30, 0.25, 2.5, 12.5, 100)] == ["30", "250m", "2500m", "12500m", "100"]


BAD: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("max replicas beyond the pool", "prod", {"max_replicas": 10}, "autoscaling.max_replicas", "holds 9 at max_size 9"),
    ("min replicas beyond min size", "prod", {"min_replicas": 4}, "autoscaling.min_replicas", "scale the pool from zero"),
    ("prod scaling to one", "prod", {"min_replicas": 1}, "autoscaling.min_replicas", "prod needs at least 2 replicas"),
    ("zero with the HPA", "dev", {"engine": "hpa", "off_hours": None}, "autoscaling.min_replicas", "needs engine: keda"),
    ("off hours with the HPA", "dev", {"engine": "hpa", "min_replicas": 1}, "autoscaling.off_hours", "need engine: keda"),
    ("min above max", "dev", {"min_replicas": 3}, "autoscaling.min_replicas", "must be <= max_replicas (2)"),
    ("unknown metric", "dev", {"metrics": {"qps": 3}}, "autoscaling.metrics.qps", "'requests_per_second'"),
    ("CPU above 100 %", "prod", {"metrics": {"cpu": 150}}, "autoscaling.metrics.cpu", "percentage"),
    ("bad cron", "dev", {"off_hours": {"start": "8am"}}, "autoscaling.off_hours.start", "exactly 5 fields"),
]


@pytest.mark.parametrize("stack, change, key, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_inconsistent_scaling_is_refused(stack: str, change: dict[str, Any], key: str, fragment: str) -> None:
    raw = raw_stack(stack)
    raw["autoscaling"].update(change)
    if change.get("off_hours", "keep") is None:
        del raw["autoscaling"]["off_hours"]
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    assert f"tf-serving-eks:{key}:" in str(info.value) and fragment in str(info.value), str(info.value)


def test_custom_metrics_need_a_prometheus() -> None:
    raw = raw_stack("dev")
    raw["monitoring"] = {"enabled": False}
    with pytest.raises(StackConfigError, match="autoscaling.prometheus_url: metrics"):
        parse(raw)
    raw["autoscaling"]["prometheus_url"] = "http://prometheus.example.svc:9090"
    assert parse(raw).autoscaling.prometheus_url == "http://prometheus.example.svc:9090"


def test_gpu_metric_needs_a_gpu_pool() -> None:
    raw = raw_stack("dev")
    del raw["serving"]["gpu_pool"]
    raw["serving"].pop("model_cache", None)
    raw["autoscaling"]["metrics"] = {"gpu_utilisation": 70}
    with pytest.raises(StackConfigError, match="autoscaling.metrics.gpu_utilisation: needs serving.gpu_pool"):
        parse(raw)


def hpa_scales_up(usage: float, target: float, replicas: int = 1) -> bool:
    """The HPA's decision for one metric (kubernetes pkg/controller/podautoscaler/
    replica_calculator.go): no change while |usage/target - 1| <= tolerance, else
    ceil(ratio * replicas)."""
    ratio = usage / target
    return abs(ratio - 1) > HPA_TOLERANCE and math.ceil(ratio * replicas) > replicas


@pytest.mark.parametrize("kind", list(MEASURABLE_MAXIMUM))
def test_a_target_the_metric_can_never_exceed_enough_is_refused(kind: MetricKind) -> None:
    most = MEASURABLE_MAXIMUM[kind][0]
    largest = largest_useful_target(kind)
    assert hpa_scales_up(most, largest), "the largest accepted target can still scale up"
    assert not hpa_scales_up(most, largest + 1), "one more and it never could"
    for target, accepted in ((largest, True), (largest + 1, False)):
        raw = raw_stack("dev")
        raw["autoscaling"]["metrics"] = {kind: target}
        if accepted:
            parse(raw, stack="dev")
            continue
        with pytest.raises(StackConfigError) as error:
            parse(raw, stack="dev")
        assert f"autoscaling.metrics.{kind}: can never scale up" in str(error.value)
        assert f"use at most {largest} (got {float(target)})" in str(error.value)
