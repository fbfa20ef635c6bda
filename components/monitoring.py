"""The `monitoring` stack key: kube-prometheus-stack (or an existing Prometheus Operator),
scraping, recording and alert rules on the metrics the exporters really emit, and a Grafana
dashboard.

It observes and must not change what it watches: no serving, scaling or node objects are made
here, and charts' own ServiceMonitors are switched on by their components.

Metric sources:
- TF Serving (`/monitoring/prometheus/metrics` on the REST port): `:tensorflow:serving:*`
  and `:tensorflow:cc:saved_model:*`; latencies are histograms in microseconds.
- DCGM exporter: `DCGM_FI_DEV_*` gauges per GPU, with `Hostname`, `gpu`, `modelName` and,
  for GPUs given to pods, `namespace` / `pod` / `container`.
- kube-state-metrics (part of kube-prometheus-stack): `kube_*`; node labels are exported
  for the labels allowed in `metricLabelsAllowlist` (GPU presence and pool).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import catalog
from components.config import AlertThresholds, MonitoringConfig
from components.gpu_pools import GPU_PRESENT_LABEL
from components.helm import helm_release
from components.cluster import POOL_LABEL, ClusterOutputs
from components.custom_resources import serving_custom_resource
from components import podsecurity
from components.naming import k8s_labels
from components.promql import (
    BATCH_QUEUEING_BUCKETS,
    PER_POD_WINDOW,
    REQUEST_LATENCY_BUCKETS,
    histogram_quantile_seconds,
)
from components.serving import ServingOutputs, pod_name_regex


# Every metric our rules and dashboard may read, by exporter (see the module docstring).
TF_SERVING_METRICS = frozenset(
    {
        ":tensorflow:serving:request_count",
        ":tensorflow:serving:request_latency_bucket",
        ":tensorflow:serving:request_latency_sum",
        ":tensorflow:serving:request_latency_count",
        ":tensorflow:serving:runtime_latency_bucket",
        ":tensorflow:serving:batching_session:queuing_latency_bucket",
        ":tensorflow:serving:batching_session:queuing_latency_sum",
        ":tensorflow:serving:batching_session:queuing_latency_count",
        ":tensorflow:serving:batching_session:processed_batch_size_sum",
        ":tensorflow:serving:batching_session:processed_batch_size_count",
        ":tensorflow:serving:batching_session:input_batch_size_sum",
        ":tensorflow:serving:batching_session:input_batch_size_count",
        ":tensorflow:cc:saved_model:load_attempt_count",
    }
)
DCGM_METRICS = frozenset({"DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"})
KUBE_STATE_METRICS = frozenset(
    {
        "kube_deployment_status_replicas_available",
        "kube_deployment_spec_replicas",
        "kube_pod_status_ready",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "kube_node_spec_taint",
        "kube_node_status_capacity",
        "kube_pod_container_status_restarts_total",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_node_status_condition",
        "kube_node_labels",
    }
)
EXPORTED_METRICS = TF_SERVING_METRICS | DCGM_METRICS | KUBE_STATE_METRICS
# Server-side failures; INVALID_ARGUMENT and NOT_FOUND are the caller's.
SERVER_ERRORS = "UNAVAILABLE|INTERNAL|DEADLINE_EXCEEDED|RESOURCE_EXHAUSTED|UNKNOWN|DATA_LOSS"
GPU_PRESENT_METRIC_LABEL = "label_" + GPU_PRESENT_LABEL.replace(".", "_").replace("/", "_").replace("-", "_")
POOL_METRIC_LABEL = "label_" + POOL_LABEL.replace(".", "_").replace("/", "_").replace("-", "_")
DASHBOARD_LABEL = "grafana_dashboard"


@dataclass(frozen=True)
class Rule:
    """One Prometheus rule: a recording rule (`record`) or an alert (`alert`)."""

    expr: str
    record: str | None = None
    alert: str | None = None
    duration: str | None = None
    severity: str | None = None
    summary: str | None = None
    description: str | None = None

    def manifest(self, runbook_base: str = "README.md#runbook") -> dict[str, Any]:
        if self.record:
            return {"record": self.record, "expr": self.expr}
        rule: dict[str, Any] = {"alert": self.alert, "expr": self.expr}
        if self.duration:
            rule["for"] = self.duration
        rule["labels"] = {"severity": self.severity}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{runbook_base}-{str(self.alert).lower()}",
        }
        return rule


def recording_rules() -> list[Rule]:
    """The SLO figures the dashboard and the alerts read. The autoscalers compute the same
    per-pod quantiles from the raw series themselves (an existing Prometheus may not hold
    these rules), with the same builder (promql.py)."""
    request = ":tensorflow:serving:request_count"
    latency = REQUEST_LATENCY_BUCKETS
    queueing = BATCH_QUEUEING_BUCKETS
    rules = [
        Rule(record="tfserving:requests:rate1m", expr=f"sum by (namespace, model_name) (rate({request}[1m]))"),
        Rule(
            record="tfserving:pod_requests:rate1m",
            expr=f"sum by (namespace, pod) (rate({request}[1m]))",
        ),
        Rule(
            record="tfserving:errors:ratio_rate5m",
            expr=f'sum by (namespace, model_name) (rate({request}{{status=~"{SERVER_ERRORS}"}}[5m]))'
            f" / sum by (namespace, model_name) (rate({request}[5m]))",
        ),
    ]
    for q in ("50", "95", "99"):
        rules.append(
            Rule(
                record=f"tfserving:request_latency_seconds:p{q}",
                expr=histogram_quantile_seconds(q, latency, ("namespace", "model_name", "le"), "5m"),
            )
        )
        rules.append(
            Rule(
                record=f"tfserving:pod_request_latency_seconds:p{q}",
                expr=histogram_quantile_seconds(q, latency, ("namespace", "pod", "le"), PER_POD_WINDOW),
            )
        )
    rules += [
        Rule(
            record="tfserving:batch_queueing_seconds:p99",
            expr=histogram_quantile_seconds("99", queueing, ("namespace", "le"), "5m"),
        ),
        Rule(
            record="tfserving:pod_batch_queueing_seconds:p99",
            expr=histogram_quantile_seconds("99", queueing, ("namespace", "pod", "le"), PER_POD_WINDOW),
        ),
        Rule(
            record="tfserving:gpu_memory_used:ratio",
            expr="DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)",
        ),
    ]
    return rules


# A Deployment scaled to zero on purpose (KEDA's minReplicaCount 0, off-hours) has desired
# replicas 0: "down" means desired > 0 and nothing serving. kube-state-metrics v2.20.0 exports
# both figures per Deployment with labels namespace and deployment
# (internal/store/deployment.go: kube_deployment_spec_replicas is .spec.replicas, the count
# KEDA and the HPA set; kube_deployment_status_replicas_available is .status.availableReplicas).
DOWN_AFTER = "5m"
# When a stack scales from zero, the first pod waits for a GPU node, the image pull and the
# model load: 5 to 10 minutes (README, "Cold start"). A "down" alert on such a stack waits
# longer than that, so an on-purpose scale-up from zero is not an outage.
COLD_START = "15m"
# The taint cluster-autoscaler puts on a node it is removing (kubernetes/autoscaler
# cluster-autoscaler/utils/taints/taints.go: ToBeDeletedTaint); such a node going NotReady
# is the scale-down working, not a failure.
SCALE_DOWN_TAINT = "ToBeDeletedByClusterAutoscaler"
# kube-state-metrics exports node capacity per resource with the name sanitised
# (internal/store/node.go: kube_node_status_capacity{resource="nvidia_com_gpu", unit="integer"}):
# GPU nodes are found without any node-label allowlist, so this works with an existing
# Prometheus Operator's kube-state-metrics too.
GPU_CAPACITY = 'kube_node_status_capacity{resource="nvidia_com_gpu"} > 0'


# A model version's failed loads, per model path (tensorflow/cc/saved_model/loader.cc:
# load_attempt_count{model_path, status="fail"}). The counter's cell is made by the first
# failure, so the series appears already at 1, and increase() needs two samples in its window:
# a first failure, or the only one (max_num_load_retries 0), shows only as a new series.
LOAD_FAILURES = ':tensorflow:cc:saved_model:load_attempt_count{status="fail"}'


def desired_replicas(ns: str, deployment: str) -> str:
    """The Deployment's desired replicas when above zero (empty when scaled to zero)."""
    return f'max by (namespace) (kube_deployment_spec_replicas{{namespace="{ns}", deployment="{deployment}"}}) > 0'


def serving_workloads(serving: ServingOutputs) -> list[str]:
    """The serving Deployments: the stable one, and the canary one when there is one."""
    return [serving.name, *([serving.canary_service] if serving.canary_service else [])]


def _wanted(ns: str, workload: str) -> str:
    return (
        "max by (namespace, deployment) "
        f'(kube_deployment_spec_replicas{{namespace="{ns}", deployment="{workload}"}}) > 0'
    )


def _down(ns: str, workload: str) -> str:
    return (
        f"({_wanted(ns, workload)}) unless on (namespace, deployment) (max by (namespace, deployment) "
        f'(kube_deployment_status_replicas_available{{namespace="{ns}", deployment="{workload}"}}) >= 1)'
    )


def _not_ready(ns: str, workload: str) -> str:
    # The pods of this Deployment only (by name: the canary's are `<name>-canary-...`),
    # labelled with it, while it wants replicas.
    pods = f'namespace="{ns}", pod=~"{pod_name_regex(workload)}", condition="false"'
    return (
        f'(label_replace(sum by (namespace) (kube_pod_status_ready{{{pods}}}) > 0, "deployment", "{workload}", "", ""))'
        f" and on (namespace, deployment) ({_wanted(ns, workload)})"
    )


def alert_rules(serving: ServingOutputs, thresholds: AlertThresholds, scales_from_zero: bool = False) -> list[Rule]:
    """Our alerts. Those that mean "down" (nothing serves, a model is unavailable, a GPU node
    is lost) hold only while the Deployment wants replicas (`desired_replicas`): scaled to zero
    on purpose, they stay silent. The stable and the canary Deployment are judged apart, each
    on its own pods (label `deployment`): a failing canary never hides behind, or stands in
    for, the stable pods."""
    ns, deployment = serving.namespace, serving.name
    workloads = serving_workloads(serving)
    pods = f'namespace="{ns}", pod=~"{"|".join(pod_name_regex(w) for w in workloads)}"'
    wanted = desired_replicas(ns, deployment)
    down_after = COLD_START if scales_from_zero else DOWN_AFTER
    return [
        Rule(
            alert="TFServingDown",
            expr=" or ".join(f"({_down(ns, w)})" for w in workloads),
            duration=down_after,
            severity="critical",
            summary="No TF Serving replica is ready",
            description=f"Deployment {ns}/{{{{ $labels.deployment }}}} wants {{{{ $value }}}} replica(s) and has had none "
            f"available for {down_after}.",
        ),
        Rule(
            alert="TFServingModelNotAvailable",
            expr=" or ".join(f"({_not_ready(ns, w)})" for w in workloads),
            duration="15m",
            severity="warning",
            summary="A serving pod has not had every model AVAILABLE for 15 minutes",
            description="Pods are ready only when every configured model is AVAILABLE; "
            "{{ $value }} pod(s) of {{ $labels.deployment }} are not.",
        ),
        Rule(
            alert="TFServingModelLoadFailed",
            expr=f"(sum by (namespace, pod, model_path) (increase({LOAD_FAILURES}[15m])) > 0)"
            f" or sum by (namespace, pod, model_path) ({LOAD_FAILURES} > 0 unless {LOAD_FAILURES} offset 15m)",
            severity="warning",
            summary="A model version failed to load",
            description="{{ $labels.model_path }} failed to load on {{ $labels.pod }}; the "
            "previous version keeps serving.",
        ),
        Rule(
            alert="TFServingHighErrorRatio",
            expr=f'tfserving:errors:ratio_rate5m{{namespace="{ns}"}} > {thresholds.error_ratio}',
            duration="10m",
            severity="critical",
            summary="Model {{ $labels.model_name }} is failing requests",
            description=f"More than {thresholds.error_ratio:.0%} of requests fail server-side "
            "(now {{ $value | humanizePercentage }}).",
        ),
        Rule(
            alert="TFServingLatencySLO",
            expr=f'tfserving:request_latency_seconds:p99{{namespace="{ns}"}} > {thresholds.latency_p99_ms / 1000}',
            duration="10m",
            severity="warning",
            summary="Model {{ $labels.model_name }} p99 latency is above its SLO",
            description=f"p99 latency has been above {thresholds.latency_p99_ms} ms for 10 "
            "minutes (now {{ $value | humanizeDuration }}).",
        ),
        Rule(
            alert="TFServingBatchQueueing",
            expr=f'tfserving:batch_queueing_seconds:p99{{namespace="{ns}"}} > {thresholds.queueing_p99_ms / 1000}',
            duration="10m",
            severity="warning",
            summary="Requests wait long for a batch",
            description=f"p99 batching queueing latency is above {thresholds.queueing_p99_ms} ms.",
        ),
        Rule(
            alert="GPUSaturated",
            expr=f"avg by (Hostname, gpu) (avg_over_time(DCGM_FI_DEV_GPU_UTIL[15m])) > {thresholds.gpu_utilisation_percent}",
            duration="15m",
            severity="warning",
            summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is saturated",
            description=f"Utilisation above {thresholds.gpu_utilisation_percent}% for 15 minutes.",
        ),
        Rule(
            alert="GPUMemoryNearlyFull",
            expr=f"tfserving:gpu_memory_used:ratio > {thresholds.gpu_memory_percent / 100}",
            duration="10m",
            severity="warning",
            summary="GPU {{ $labels.gpu }} on {{ $labels.Hostname }} is nearly out of memory",
            description=f"Framebuffer use above {thresholds.gpu_memory_percent}%.",
        ),
        Rule(
            alert="TFServingPodsRestarting",
            # increase() extrapolates to the window's edges (prometheus promql/functions.go
            # extrapolatedRate): 3 restarts in an hour read as 3.002 when the scrapes do not fall
            # on the window's start. Restarts are whole numbers; rounding counts them.
            expr=f"round(sum by (namespace, pod) (increase(kube_pod_container_status_restarts_total{{{pods}}}[1h])))"
            f" > {thresholds.restarts_per_hour}",
            severity="warning",
            summary="Pod {{ $labels.pod }} keeps restarting",
            description=f"More than {thresholds.restarts_per_hour} container restarts in an hour.",
        ),
        Rule(
            # Only an autoscaler with room to move can be "pinned": with min == max it always
            # sits at its maximum, by configuration.
            alert="TFServingAutoscalerAtMax",
            expr=f'(max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_status_current_replicas{{namespace="{ns}"}})'
            f' >= max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_max_replicas{{namespace="{ns}"}}))'
            f' and on (namespace, horizontalpodautoscaler) (max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_max_replicas{{namespace="{ns}"}})'
            f' > max by (namespace, horizontalpodautoscaler) (kube_horizontalpodautoscaler_spec_min_replicas{{namespace="{ns}"}}))',
            duration="15m",
            severity="warning",
            summary="The serving autoscaler is pinned at its maximum",
            description="Load needs more replicas than allowed; raise the maximum or the GPU pool size.",
        ),
        Rule(
            alert="GPUNodeNotReady",
            expr=f'(((kube_node_status_condition{{condition="Ready", status="true"}} == 0)'
            f" and on (node) ({GPU_CAPACITY}))"
            f' unless on (node) kube_node_spec_taint{{key="{SCALE_DOWN_TAINT}"}})'
            f" and on () ({wanted})",
            duration="10m",
            severity="critical",
            summary="GPU node {{ $labels.node }} is not Ready",
            description="A GPU node has not been Ready for 10 minutes while serving wants replicas; "
            "its pods cannot serve.",
        ),
    ]


def prometheus_rule_spec(
    rules: Iterable[Rule], alerts: Iterable[Rule], runbook_base: str
) -> dict[str, Any]:
    return {
        "groups": [
            {"name": "tf-serving.recording", "interval": "30s", "rules": [r.manifest() for r in rules]},
            {"name": "tf-serving.alerts", "rules": [a.manifest(runbook_base) for a in alerts]},
        ]
    }


def service_monitor_spec(serving: ServingOutputs) -> dict[str, Any]:
    # Stable and canary Services both carry the workload's labels.
    return {
        "selector": {"matchLabels": dict(serving.selector)},
        "namespaceSelector": {"matchNames": [serving.namespace]},
        "endpoints": [
            {"port": "http", "path": serving.metrics_path, "interval": "15s", "scrapeTimeout": "10s"}
        ],
    }


def _panel(panel_id: int, title: str, exprs: Mapping[str, str], unit: str, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (legend, expr) in enumerate(exprs.items())
        ],
    }


def dashboard_panels(serving: ServingOutputs) -> list[dict[str, Any]]:
    ns, deployment = serving.namespace, serving.name
    sel = f'namespace="{ns}"'
    rows: list[tuple[str, dict[str, str], str]] = [
        ("Requests per second by model", {"{{model_name}}": f"tfserving:requests:rate1m{{{sel}}}"}, "reqps"),
        ("Server error ratio by model", {"{{model_name}}": f"tfserving:errors:ratio_rate5m{{{sel}}}"}, "percentunit"),
        (
            "Request latency p50 / p95 / p99 by model",
            {f"{{{{model_name}}}} p{q}": f"tfserving:request_latency_seconds:p{q}{{{sel}}}" for q in ("50", "95", "99")},
            "s",
        ),
        (
            "Batch size (rows per executed batch, per request)",
            {
                "executed": "sum(rate(:tensorflow:serving:batching_session:processed_batch_size_sum[5m]))"
                " / sum(rate(:tensorflow:serving:batching_session:processed_batch_size_count[5m]))",
                "per request": "sum(rate(:tensorflow:serving:batching_session:input_batch_size_sum[5m]))"
                " / sum(rate(:tensorflow:serving:batching_session:input_batch_size_count[5m]))",
            },
            "short",
        ),
        ("Batching queueing latency p99", {"p99": f"tfserving:batch_queueing_seconds:p99{{{sel}}}"}, "s"),
        ("GPU utilisation by node", {"{{Hostname}} gpu {{gpu}}": "DCGM_FI_DEV_GPU_UTIL"}, "percent"),
        ("GPU memory used by node", {"{{Hostname}} gpu {{gpu}}": "tfserving:gpu_memory_used:ratio"}, "percentunit"),
        (
            "Serving replicas: ready vs desired",
            {
                "ready": f'sum(kube_deployment_status_replicas_available{{namespace="{ns}", deployment="{deployment}"}})',
                "desired": f'sum(kube_deployment_spec_replicas{{namespace="{ns}", deployment="{deployment}"}})',
                "autoscaler wants": f'sum(kube_horizontalpodautoscaler_status_desired_replicas{{namespace="{ns}"}})',
            },
            "short",
        ),
        ("Nodes per pool", {"{{" + POOL_METRIC_LABEL + "}}": f"count by ({POOL_METRIC_LABEL}) (kube_node_labels)"}, "short"),
    ]
    return [
        _panel(i + 1, title, exprs, unit, x=(i % 2) * 12, y=(i // 2) * 8)
        for i, (title, exprs, unit) in enumerate(rows)
    ]


def dashboard(serving: ServingOutputs) -> dict[str, Any]:
    return {
        "uid": f"tf-serving-{serving.namespace}",
        "title": f"TF Serving ({serving.namespace})",
        "tags": ["tf-serving", "gpu"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"}
            ]
        },
        "panels": dashboard_panels(serving),
    }


def alertmanager_config(cfg: MonitoringConfig, secrets: Mapping[str, str]) -> dict[str, Any]:
    """Alertmanager's configuration: one route per receiver and severity set."""
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    routes = []
    for name, receiver in sorted(cfg.receivers.items()):
        secret = secrets[name]
        if receiver.type == "slack":
            target: dict[str, Any] = {
                "slack_configs": [
                    {"api_url": secret, "channel": receiver.slack_channel, "send_resolved": True}
                ]
            }
        elif receiver.type == "pagerduty":
            target = {"pagerduty_configs": [{"routing_key": secret, "send_resolved": True}]}
        else:
            target = {"webhook_configs": [{"url": secret, "send_resolved": True}]}
        receivers.append({"name": name, **target})
        routes.append(
            {
                "receiver": name,
                "matchers": [f'severity=~"{"|".join(receiver.severities)}"'],
                "continue": True,
            }
        )
    return {
        "route": {
            "receiver": "null",
            "group_by": ["alertname", "namespace"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [{"receiver": "null", "matchers": ['alertname="Watchdog"']}, *routes],
        },
        "receivers": receivers,
    }


# Components the chart scrapes by default that an EKS cluster does not expose. Each switch
# removes the component's Service, ServiceMonitor and rules (templates/exporters/<component>/
# and templates/prometheus/rules-1.14/*.yaml are gated on `<component>.enabled`); left on, their
# `absent(up{job=...})` alerts fire at severity critical for ever.
EKS_UNSCRAPABLE_COMPONENTS: dict[str, dict[str, Any]] = {
    # EKS runs the control plane out of the cluster: no kube-controller-manager, kube-scheduler
    # or etcd pod exists for the chart's selector Services to find.
    "kubeControllerManager": {"enabled": False},
    "kubeScheduler": {"enabled": False},
    "kubeEtcd": {"enabled": False},
    # kube-proxy (the EKS add-on, installed with its default configuration) serves metrics on
    # kube-proxy's default metricsBindAddress 127.0.0.1:10249 (KubeProxyConfiguration
    # v1alpha1), which a scrape from another pod cannot reach; the add-on's configuration
    # schema has no setting for it (aws/containers-roadmap#657).
    "kubeProxy": {"enabled": False},
}


def stack_values(
    cfg: MonitoringConfig,
    admin_secret: str,
    alertmanager: Mapping[str, Any],
    node_selector: Mapping[str, str],
    storage_class: str,
) -> dict[str, Any]:
    storage = {
        "volumeClaimTemplate": {
            "spec": {
                "storageClassName": storage_class,
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": f"{cfg.storage_gib}Gi"}},
            }
        }
    }
    return {
        "crds": {"enabled": True},
        "prometheus": {
            "service": {"port": PROMETHEUS_PORT},
            "prometheusSpec": {
                "replicas": cfg.replicas,
                "retention": cfg.retention,
                "storageSpec": storage,
                # Pick up ServiceMonitors and rules from every namespace, not just this release's.
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "podMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
                "nodeSelector": dict(node_selector),
                "resources": {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}},
            }
        },
        "alertmanager": {
            "config": dict(alertmanager),
            "alertmanagerSpec": {
                "replicas": cfg.replicas,
                "nodeSelector": dict(node_selector),
                "storage": {
                    "volumeClaimTemplate": {
                        "spec": {
                            "storageClassName": storage_class,
                            "accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": "5Gi"}},
                        }
                    }
                },
            },
        },
        "grafana": {
            "admin": {"existingSecret": admin_secret, "userKey": "admin-user", "passwordKey": "admin-password"},
            "nodeSelector": dict(node_selector),
            "persistence": {"enabled": True, "storageClassName": storage_class, "size": "10Gi"},
            "sidecar": {"dashboards": {"enabled": True, "label": DASHBOARD_LABEL, "searchNamespace": "ALL"}},
        },
        # Node labels kube-state-metrics may export, for the GPU alerts and per-pool panels.
        "kube-state-metrics": {"metricLabelsAllowlist": [f"nodes=[{GPU_PRESENT_LABEL},{POOL_LABEL}]"]},
        **EKS_UNSCRAPABLE_COMPONENTS,
        "prometheusOperator": {"nodeSelector": dict(node_selector)},
    }


# kube-prometheus-stack's Prometheus Service: `<fullname>-prometheus` on prometheus.service.port
# (templates/prometheus/service.yaml); fullname is the release name when it contains the chart
# name, cut to 26 characters (templates/_helpers.tpl "kube-prometheus-stack.fullname"), and
# helm_release names the release after the chart.
PROMETHEUS_PORT = 9090


def stack_prometheus_url(namespace: str) -> str:
    """The in-cluster URL of the stack's own Prometheus, in monitoring's namespace."""
    release = catalog.CHARTS["kube-prometheus-stack"].name
    fullname = release[:26].rstrip("-")
    return f"http://{fullname}-prometheus.{namespace}.svc:{PROMETHEUS_PORT}"


@dataclass(frozen=True)
class PrometheusStackOutputs:
    """What the rest of the stack needs of its own Prometheus."""

    # Prometheus, for in-cluster clients (the autoscalers).
    url: str
    # What installs the Prometheus Operator's CRDs: a ServiceMonitor or rule (ours, or one a
    # chart ships) is created only after it.
    crds_ready: tuple[pulumi.Resource, ...]


class PrometheusStack(pulumi.ComponentResource):
    """kube-prometheus-stack: created early, so charts that ship ServiceMonitors (DCGM, the
    load balancer controller) can wait for its CRDs."""

    outputs: PrometheusStackOutputs

    def __init__(
        self,
        name: str,
        cfg: MonitoringConfig,
        *,
        grafana_admin_password: str | None,
        alerting_secrets: Mapping[str, str],
        cluster: ClusterOutputs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tf-serving-eks:monitoring:PrometheusStack", name, None, opts)
        k8s_child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        namespace = podsecurity.namespace(
            f"{name}-namespace",
            cfg.namespace,
            component="monitoring",
            # node-exporter reads the host (hostPID, hostNetwork, host paths).
            level="privileged",
            opts=k8s_child,
        )
        password: pulumi.Input[str]
        if grafana_admin_password is not None:
            password = pulumi.Output.secret(grafana_admin_password)
        else:
            password = random.RandomPassword(
                f"{name}-grafana-admin-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
            ).result
        admin = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="grafana-admin", namespace=cfg.namespace, labels=k8s_labels("monitoring", "grafana")
            ),
            string_data={"admin-user": "admin", "admin-password": password},
            opts=pulumi.ResourceOptions.merge(k8s_child, pulumi.ResourceOptions(depends_on=[namespace])),
        )
        values = pulumi.Output.secret(
            stack_values(
                cfg,
                "grafana-admin",
                alertmanager_config(cfg, alerting_secrets),
                cluster.system_node_selector,
                cluster.storage_class,
            )
        )
        release = helm_release(
            f"{name}-kube-prometheus-stack",
            catalog.CHARTS["kube-prometheus-stack"],
            cfg.namespace,
            values,
            # Prometheus, Alertmanager and Grafana claim gp3 volumes: the provisioner and the
            # class must exist, or the claims stay Pending and the release times out.
            pulumi.ResourceOptions.merge(
                k8s_child, pulumi.ResourceOptions(depends_on=[namespace, admin, *cluster.storage_ready])
            ),
        )
        self.outputs = PrometheusStackOutputs(url=stack_prometheus_url(cfg.namespace), crds_ready=(release,))
        self.register_outputs({})


@dataclass(frozen=True)
class MonitoringOutputs:
    """Nothing downstream reads what Monitoring makes; the empty outputs keep every component
    read the same way."""


class Monitoring(pulumi.ComponentResource):
    """Our ServiceMonitor, rules and dashboard (for the stack's or an existing Prometheus)."""

    outputs: MonitoringOutputs

    def __init__(
        self,
        name: str,
        cfg: MonitoringConfig,
        *,
        serving: ServingOutputs,
        cluster: ClusterOutputs,
        prometheus: PrometheusStackOutputs | None,
        scales_from_zero: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tf-serving-eks:monitoring:Monitoring", name, None, opts)
        k8s_child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        labels = k8s_labels("monitoring", serving.name, dict(cfg.rule_labels))
        # With an existing operator its CRDs are there already.
        after_crds = pulumi.ResourceOptions.merge(
            k8s_child, pulumi.ResourceOptions(depends_on=list(prometheus.crds_ready if prometheus else ()))
        )
        serving_custom_resource(
            f"{name}-service-monitor",
            serving,
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
            service_monitor_spec(serving),
            labels=labels,
            opts=after_crds,
        )
        serving_custom_resource(
            f"{name}-rules",
            serving,
            "monitoring.coreos.com/v1",
            "PrometheusRule",
            prometheus_rule_spec(
                recording_rules(), alert_rules(serving, cfg.thresholds, scales_from_zero), cfg.runbook_base_url
            ),
            labels=labels,
            opts=after_crds,
        )
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=f"{serving.name}-dashboard",
                namespace=cfg.namespace,
                labels={**labels, DASHBOARD_LABEL: "1"},
            ),
            data={"tf-serving.json": json.dumps(dashboard(serving), indent=1, sort_keys=True)},
            opts=after_crds,
        )
        self.outputs = MonitoringOutputs()
        self.register_outputs({})
