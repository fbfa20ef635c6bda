"""Monitoring: the stack, scraping, rules and dashboard, checked with a real PromQL parser."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from components.config import StackConfigError
from components.monitoring import EXPORTED_METRICS, GPU_PRESENT_METRIC_LABEL, POOL_METRIC_LABEL
from tests.support import parse, raw_stack, render_raw, secret_keys_for, settings_for
from tools.lib.mock_engine import Rendering, render

README = Path(__file__).resolve().parent.parent / "README.md"


def crd(r: Rendering, kind: str) -> dict[str, Any]:
    found = [m for m in r.k8s_objects() if m["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def stack_release(r: Rendering) -> Any:
    return next(x for x in r.of_type("kubernetes:helm.sh/v3:Release") if x.inputs["chart"] == "kube-prometheus-stack")


def rules(r: Rendering) -> list[dict[str, Any]]:
    return [rule for group in crd(r, "PrometheusRule")["spec"]["groups"] for rule in group["rules"]]


def dashboard(r: Rendering) -> dict[str, Any]:
    cm = next(m for m in r.k8s_objects() if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard"))
    return json.loads(cm["data"]["tf-serving.json"])


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads, from the parsed syntax tree."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int, float)):
                visit(child)
        for arg in getattr(node, "args", None) or []:
            visit(arg)

    visit(promql_parser.parse(expr))
    return names


def all_exprs(r: Rendering) -> list[str]:
    exprs = [rule["expr"] for rule in rules(r)]
    exprs += [t["expr"] for panel in dashboard(r)["panels"] for t in panel["targets"]]
    return exprs


def test_metric_name_extraction_walks_the_tree() -> None:
    assert metric_names("sum(rate(a[5m])) / on (x) histogram_quantile(0.9, sum by (le) (rate(b_bucket[1m])))") == {"a", "b_bucket"}


def test_every_expression_parses_and_reads_only_exported_or_recorded_metrics(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    r = rendered_stack(stack_name)
    recorded = {rule["record"] for rule in rules(r) if "record" in rule}
    exprs = all_exprs(r)
    assert len(exprs) > 25
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        unknown = names - EXPORTED_METRICS - recorded
        assert not unknown, f"{unknown} in {expr}"


def test_parser_rejects_broken_promql() -> None:
    with pytest.raises(Exception):
        promql_parser.parse("sum(rate(:tensorflow:serving:request_count[5m])")


REQUIRED_ALERTS = {
    "TFServingDown",
    "TFServingModelNotAvailable",
    "TFServingHighErrorRatio",
    "TFServingLatencySLO",
    "GPUSaturated",
    "GPUMemoryNearlyFull",
    "TFServingPodsRestarting",
    "TFServingAutoscalerAtMax",
    "GPUNodeNotReady",
}


def test_alerts_cover_the_failure_modes_with_runbooks(prod: Rendering) -> None:
    alerts = {rule["alert"]: rule for rule in rules(prod) if "alert" in rule}
    assert REQUIRED_ALERTS <= set(alerts)
    readme = README.read_text()
    for name, alert in alerts.items():
        assert alert["labels"]["severity"] in {"critical", "warning"}
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"]
        assert annotations["runbook_url"] == f"README.md#runbook-{name.lower()}"
        assert f"### Runbook: {name}\n" in readme, f"README has no runbook for {name}"


def test_thresholds_come_from_config(prod: Rendering, dev: Rendering) -> None:
    prod_alerts = {rule["alert"]: rule for rule in rules(prod) if "alert" in rule}
    dev_alerts = {rule["alert"]: rule for rule in rules(dev) if "alert" in rule}
    assert prod_alerts["TFServingHighErrorRatio"]["expr"].endswith("> 0.02")
    assert prod_alerts["TFServingLatencySLO"]["expr"].endswith("> 0.3")
    assert dev_alerts["TFServingLatencySLO"]["expr"].endswith("> 1.0")
    assert "> 90" in prod_alerts["GPUSaturated"]["expr"]
    assert prod_alerts["GPUMemoryNearlyFull"]["expr"].endswith("> 0.95")


def test_recording_rules_give_the_slo_figures(prod: Rendering) -> None:
    recorded = {rule["record"] for rule in rules(prod) if "record" in rule}
    for name in (
        "tfserving:requests:rate1m",
        "tfserving:errors:ratio_rate5m",
        "tfserving:request_latency_seconds:p99",
        "tfserving:pod_requests:rate1m",
        "tfserving:batch_queueing_seconds:p99",
        "tfserving:gpu_memory_used:ratio",
    ):
        assert name in recorded


def test_service_monitor_matches_the_service_and_its_port(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    r = rendered_stack(stack_name)
    monitor = crd(r, "ServiceMonitor")
    service = next(m for m in r.k8s_objects() if m["kind"] == "Service")
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert spec["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/monitoring/prometheus/metrics"
    args = next(m for m in r.k8s_objects() if m["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--monitoring_config_file=/etc/tf-serving/monitoring.config" in args


def test_exporters_scrape_configs(prod: Rendering) -> None:
    charts = {x.inputs["chart"]: x.inputs["values"] for x in prod.of_type("kubernetes:helm.sh/v3:Release")}
    assert charts["dcgm-exporter"]["serviceMonitor"]["enabled"] is True
    assert charts["aws-load-balancer-controller"]["serviceMonitor"]["enabled"] is True


def test_stack_values_per_environment(dev: Rendering, prod: Rendering) -> None:
    for r, retention, size, replicas in ((dev, "3d", "20Gi", 1), (prod, "15d", "100Gi", 2)):
        release = stack_release(r)
        assert (release.inputs["version"], release.inputs["namespace"]) == ("88.5.3", "monitoring")
        spec = release.inputs["values"]["prometheus"]["prometheusSpec"]
        assert spec["retention"] == retention and spec["replicas"] == replicas
        claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
        assert claim["storageClassName"] == "gp3" and claim["resources"]["requests"]["storage"] == size
        assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
        assert spec["ruleSelectorNilUsesHelmValues"] is False
        assert "values" in release.secret_inputs, "receiver keys travel as secrets"
    allowlist = stack_release(prod).inputs["values"]["kube-state-metrics"]["metricLabelsAllowlist"]
    assert allowlist == ["nodes=[nvidia.com/gpu.present,tf-serving-eks/pool]"]
    assert GPU_PRESENT_METRIC_LABEL == "label_nvidia_com_gpu_present"
    assert POOL_METRIC_LABEL == "label_tf_serving_eks_pool"


def test_prod_routes_alerts_to_its_receivers(prod: Rendering) -> None:
    config = stack_release(prod).inputs["values"]["alertmanager"]["config"]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert "pagerduty_configs" in receivers["oncall"]
    assert receivers["ml-platform"]["slack_configs"][0]["channel"] == "#ml-platform-alerts"
    routes = {route["receiver"]: route for route in config["route"]["routes"]}
    assert routes["oncall"]["matchers"] == ['severity=~"critical"']
    assert routes["ml-platform"]["matchers"] == ['severity=~"critical|warning"']


def test_grafana_admin_password_is_a_secret_or_generated(dev: Rendering) -> None:
    secret = next(m for m in dev.k8s_objects() if m["kind"] == "Secret")
    assert secret["metadata"]["name"] == "grafana-admin"
    generated = dev.one("random:index/randomPassword:RandomPassword")
    assert secret["stringData"]["admin-password"] == generated.outputs["result"]
    assert stack_release(dev).inputs["values"]["grafana"]["admin"]["existingSecret"] == "grafana-admin"
    raw = raw_stack("dev")
    raw["grafana_admin_password"] = "a-very-long-grafana-password"
    r = render_raw(raw)
    assert not r.of_type("random:index/randomPassword:RandomPassword")
    given = next(x for x in r.resources if x.is_k8s_object and x.inputs.get("kind") == "Secret")
    assert given.inputs["stringData"]["admin-password"] == "a-very-long-grafana-password"
    assert "stringData" in given.secret_inputs


def test_dashboard_has_the_panels_operators_need(prod: Rendering) -> None:
    cm = next(m for m in prod.k8s_objects() if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    titles = " | ".join(p["title"] for p in dashboard(prod)["panels"])
    for needle in ("Requests per second", "error ratio", "p50 / p95 / p99", "Batch size", "queueing", "GPU utilisation", "GPU memory", "ready vs desired", "Nodes per pool"):
        assert needle in titles, needle


def test_existing_operator_mode_creates_only_our_objects() -> None:
    raw = raw_stack("dev")
    raw["monitoring"] = {"mode": "existing-operator", "namespace": "observability", "rule_labels": {"release": "prom"}}
    raw["autoscaling"]["prometheus_url"] = "http://prometheus.observability.svc:9090"
    r = render_raw(raw)
    assert not [x for x in r.of_type("kubernetes:helm.sh/v3:Release") if x.inputs["chart"] == "kube-prometheus-stack"]
    assert not [m for m in r.k8s_objects() if m["kind"] == "Namespace" and m["metadata"]["name"] == "observability"]
    assert crd(r, "ServiceMonitor")["metadata"]["labels"]["release"] == "prom"
    assert crd(r, "PrometheusRule")["metadata"]["labels"]["release"] == "prom"
    policy = next(m for m in r.k8s_objects() if m["kind"] == "NetworkPolicy")["spec"]
    assert policy["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "observability"}


def test_monitoring_off_removes_everything() -> None:
    raw = raw_stack("dev")
    raw["monitoring"] = {"enabled": False}
    raw["autoscaling"] = {"enabled": False}
    r = render_raw(raw)
    assert not [m for m in r.k8s_objects() if m["kind"] in ("ServiceMonitor", "PrometheusRule")]


def test_receiver_needs_its_secret() -> None:
    raw = raw_stack("prod")
    del raw["alerting_secrets"]["oncall"]
    with pytest.raises(StackConfigError, match=re.escape("tf-serving-eks:monitoring.receivers.oncall: needs its URL or key")):
        parse(raw)


def test_prod_needs_a_receiver() -> None:
    raw = raw_stack("prod")
    raw["monitoring"]["receivers"] = {}
    raw["alerting_secrets"] = {}
    with pytest.raises(StackConfigError, match="prod needs at least one alert receiver"):
        parse(raw)


def test_slack_needs_a_channel() -> None:
    raw = raw_stack("prod")
    del raw["monitoring"]["receivers"]["ml-platform"]["slack_channel"]
    with pytest.raises(StackConfigError, match="receivers.ml-platform.slack_channel: slack needs a channel"):
        parse(raw)


def test_alerting_secrets_in_clear_are_refused() -> None:
    raw = raw_stack("prod")
    with pytest.raises(StackConfigError, match="alerting_secrets: is in the stack file in clear"):
        render("test", settings_for(raw), secret_keys_for(raw, clear=("alerting_secrets",)))


def test_charts_shipping_service_monitors_wait_for_the_operator_crds(prod: Rendering) -> None:
    stack = stack_release(prod)
    by_chart = {x.inputs["chart"]: x for x in prod.of_type("kubernetes:helm.sh/v3:Release")}
    for chart in ("dcgm-exporter", "aws-load-balancer-controller"):
        assert by_chart[chart].inputs["values"]["serviceMonitor"]["enabled"] is True
        assert stack.urn in by_chart[chart].depends_on, chart
    for kind in ("ServiceMonitor", "PrometheusRule"):
        resource = next(x for x in prod.resources if x.is_k8s_object and x.inputs.get("kind") == kind)
        assert stack.urn in resource.depends_on
    crds = prod.one("kubernetes:yaml/v2:ConfigFile")
    assert crds.urn in by_chart["external-dns"].depends_on


@pytest.mark.parametrize("fraction, shared, percent", [(0.9, 1, 92), (0.45, 2, 90), (0.97, 1, 95)])
def test_gpu_memory_alert_starts_above_what_tf_serving_allocates(fraction: float, shared: int, percent: int) -> None:
    """TF Serving takes per_process_gpu_memory_fraction of each GPU up front (TensorFlow's
    GPU BFC allocator, tensorflow/core/common_runtime/gpu/gpu_device.cc), so framebuffer use on
    a healthy node is fraction x pods per GPU plus the CUDA context: a GPUMemoryNearlyFull
    threshold below that fires by construction."""
    raw = raw_stack("dev")
    raw["gpu_pools"]["l4"]["time_slicing_replicas"] = shared
    raw["serving"]["gpu_memory_fraction"] = fraction
    raw["monitoring"]["thresholds"] = {"gpu_memory_percent": percent}
    if fraction * shared * 100 + 3 > 99:
        # No threshold the alert can cross (at most 99 %) starts above the allocation.
        with pytest.raises(StackConfigError, match=r"serving\.gpu_memory_fraction.*the fraction must be at most 0\.96"):
            parse(raw)
        return
    with pytest.raises(StackConfigError, match=r"monitoring\.thresholds\.gpu_memory_percent.*allocates \d+% of each GPU up front"):
        parse(raw)
    raw["monitoring"]["thresholds"] = {"gpu_memory_percent": round(fraction * shared * 100) + 3}
    parse(raw)
