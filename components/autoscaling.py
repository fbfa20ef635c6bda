"""The `autoscaling` stack key: serving pods follow load, through the HPA (with
prometheus-adapter or metrics-server) or KEDA, with the scaling behaviour per environment.

It scales pods only: GPU nodes follow the pods through cluster-autoscaler (the
`node_autoscaling` key, not this module), and it must not create the Prometheus it reads.

One definition per metric (`CUSTOM_METRICS`) yields both the prometheus-adapter rule that
exposes it and the HPA (or KEDA trigger) that reads it, so names and queries cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components import catalog
from components.cluster import ClusterOutputs
from components.config import AutoscalingConfig, MetricKind, ScalingPolicy
from components.config.autoscaling import prewarm_start
from components.custom_resources import serving_custom_resource
from components.helm import helm_release
from components.monitoring import PrometheusStackOutputs
from components.naming import k8s_labels
from components.promql import (
    BATCH_QUEUEING_BUCKETS,
    PER_POD_WINDOW,
    REQUEST_LATENCY_BUCKETS,
    histogram_quantile_seconds,
)
from components.serving import ServingOutputs, pod_name_regex

ADAPTER_NAMESPACE = "kube-system"
KEDA_NAMESPACE = "keda"
METRICS_SERVER_NAMESPACE = "kube-system"


@dataclass(frozen=True)
class CustomMetric:
    """A per-pod metric from Prometheus: adapter rule, HPA metric and KEDA query in one place."""

    name: str  # as the custom metrics API serves it
    series: str  # seriesQuery: which series carry it
    query: str  # metricsQuery, with the adapter's <<.Series>> / <<.LabelMatchers>> / <<.GroupBy>>
    # KEDA: a query over the whole Deployment (`{ns}`, and `{pods}` the regex of its pods'
    # names, so the canary Deployment's pods beside it do not count) and how HPA should read it.
    keda_query: str
    keda_metric_type: Literal["AverageValue", "Value"]
    scale: float = 1.0  # config unit -> metric unit (ms -> s)
    # Label of the series that names the pod and its namespace (DCGM's are re-labelled by
    # the scrape because the exporter pod has its own `pod` / `namespace`).
    pod_label: str = "pod"
    namespace_label: str = "namespace"

    def adapter_rule(self) -> dict[str, Any]:
        metric = self.series.split("{", 1)[0]
        return {
            "seriesQuery": self.series,
            "resources": {
                "overrides": {
                    self.namespace_label: {"resource": "namespace"},
                    self.pod_label: {"resource": "pod"},
                }
            },
            "name": {"matches": f"^{metric}$", "as": self.name},
            "metricsQuery": self.query,
        }


def _quantile(name: str, buckets: str, q: str) -> CustomMetric:
    """A latency quantile per pod (adapter) or over the Deployment's pods (KEDA), in seconds."""
    return CustomMetric(
        name=name,
        series=f'{buckets}{{namespace!="",pod!=""}}',
        query=histogram_quantile_seconds(
            q, "<<.Series>>{<<.LabelMatchers>>}", ("le", "<<.GroupBy>>"), PER_POD_WINDOW, grouping_last=True
        ),
        keda_query=histogram_quantile_seconds(
            q, f'{buckets}{{namespace="{{ns}}", pod=~"{{pods}}"}}', ("le",), PER_POD_WINDOW
        ),
        keda_metric_type="Value",
        scale=0.001,
    )


def _latency(q: str) -> CustomMetric:
    return _quantile(f"tfserving_request_latency_p{q}_seconds", REQUEST_LATENCY_BUCKETS, q)


CUSTOM_METRICS: dict[MetricKind, CustomMetric] = {
    "requests_per_second": CustomMetric(
        name="tfserving_requests_per_second",
        series=':tensorflow:serving:request_count{namespace!="",pod!=""}',
        query="sum(rate(<<.Series>>{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)",
        keda_query='sum(rate(:tensorflow:serving:request_count{namespace="{ns}", pod=~"{pods}"}[1m]))',
        keda_metric_type="AverageValue",
    ),
    "latency_p95": _latency("95"),
    "latency_p99": _latency("99"),
    "batch_queueing_p99": _quantile("tfserving_batch_queueing_p99_seconds", BATCH_QUEUEING_BUCKETS, "99"),
    "gpu_utilisation": CustomMetric(
        name="tfserving_gpu_utilisation_percent",
        series='DCGM_FI_DEV_GPU_UTIL{exported_namespace!="",exported_pod!=""}',
        query="avg(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
        keda_query='avg(DCGM_FI_DEV_GPU_UTIL{exported_namespace="{ns}", exported_pod=~"{pods}"})',
        keda_metric_type="Value",
        pod_label="exported_pod",
        namespace_label="exported_namespace",
    ),
}


def quantity(value: float) -> str:
    """A Kubernetes quantity for a metric target (milli-units below 10)."""
    if value >= 10 and float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def adapter_rules(kinds: list[MetricKind]) -> list[dict[str, Any]]:
    return [CUSTOM_METRICS[k].adapter_rule() for k in kinds if k in CUSTOM_METRICS]


def adapter_values(prometheus_url: str, kinds: list[MetricKind], node_selector: Mapping[str, str]) -> dict[str, Any]:
    base, _, port = prometheus_url.rpartition(":")
    url, port_number = (base, int(port)) if port.isdigit() else (prometheus_url, 80)
    return {
        "prometheus": {"url": url, "port": port_number},
        "replicas": 2,
        # Serve exactly our metrics, nothing else (no default rules).
        "rules": {"default": False, "custom": adapter_rules(kinds)},
        "nodeSelector": dict(node_selector),
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
    }


def hpa_metrics(metrics: Mapping[MetricKind, float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind, target in sorted(metrics.items()):
        if kind == "cpu":
            out.append(
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": int(target)}},
                }
            )
            continue
        metric = CUSTOM_METRICS[kind]
        out.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric.name},
                    "target": {"type": "AverageValue", "averageValue": quantity(target * metric.scale)},
                },
            }
        )
    return out


def _policy(policy: ScalingPolicy, select: str) -> dict[str, Any]:
    return {
        "stabilizationWindowSeconds": policy.stabilisation_seconds,
        "selectPolicy": select,
        "policies": [
            {"type": "Percent", "value": policy.percent, "periodSeconds": policy.period_seconds},
            {"type": "Pods", "value": policy.pods, "periodSeconds": policy.period_seconds},
        ],
    }


def behavior(cfg: AutoscalingConfig) -> dict[str, Any]:
    """Fast up (the larger of the two policies), stabilised down (the smaller)."""
    return {"scaleUp": _policy(cfg.scale_up, "Max"), "scaleDown": _policy(cfg.scale_down, "Min")}


def hpa_spec(cfg: AutoscalingConfig, deployment: str) -> dict[str, Any]:
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicas": cfg.min_replicas,
        "maxReplicas": cfg.max_replicas,
        "metrics": hpa_metrics(cfg.metrics),
        "behavior": behavior(cfg),
    }


def keda_query(metric: CustomMetric, namespace: str, deployment: str) -> str:
    """The metric's query over the pods of `deployment` only."""
    return metric.keda_query.replace("{ns}", namespace).replace("{pods}", pod_name_regex(deployment))


def keda_triggers(cfg: AutoscalingConfig, prometheus_url: str, namespace: str, deployment: str) -> list[dict[str, Any]]:
    triggers: list[dict[str, Any]] = []
    for kind, target in sorted(cfg.metrics.items()):
        if kind == "cpu":
            triggers.append({"type": "cpu", "metricType": "Utilization", "metadata": {"value": str(int(target))}})
            continue
        metric = CUSTOM_METRICS[kind]
        triggers.append(
            {
                "type": "prometheus",
                "name": kind.replace("_", "-"),
                "metricType": metric.keda_metric_type,
                "metadata": {
                    "serverAddress": prometheus_url,
                    "query": keda_query(metric, namespace, deployment),
                    "threshold": str(round(target * metric.scale, 6)),
                },
            }
        )
    if cfg.off_hours is not None:
        window = cfg.off_hours
        triggers.append(
            {
                "type": "cron",
                "name": "working-hours",
                "metadata": {
                    "timezone": window.timezone,
                    "start": window.start,
                    "end": window.end,
                    "desiredReplicas": str(window.replicas),
                },
            }
        )
        if window.prewarm_minutes:
            # From the lead time to the window's start: KEDA scales to the largest of its
            # triggers, so the two cron triggers together hold the replicas from pre-warm to end.
            triggers.append(
                {
                    "type": "cron",
                    "name": "pre-warm",
                    "metadata": {
                        "timezone": window.timezone,
                        "start": prewarm_start(window.start, window.prewarm_minutes),
                        "end": window.start,
                        "desiredReplicas": str(window.replicas),
                    },
                }
            )
    return triggers


def scaled_object_spec(cfg: AutoscalingConfig, prometheus_url: str, namespace: str, deployment: str) -> dict[str, Any]:
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicaCount": cfg.min_replicas,
        "maxReplicaCount": cfg.max_replicas,
        "pollingInterval": 15,
        # After the last activity, how long before scaling to zero (when min is 0).
        "cooldownPeriod": 600,
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior(cfg)}},
        "triggers": keda_triggers(cfg, prometheus_url, namespace, deployment),
    }


@dataclass(frozen=True)
class AutoscalingOutputs:
    """Nothing downstream reads what Autoscaling makes; the empty outputs keep every component
    read the same way."""


class Autoscaling(pulumi.ComponentResource):
    outputs: AutoscalingOutputs

    def __init__(
        self,
        name: str,
        cfg: AutoscalingConfig,
        *,
        serving: ServingOutputs,
        cluster: ClusterOutputs,
        prometheus: PrometheusStackOutputs | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`prometheus`: the stack's own Prometheus, read unless `autoscaling.prometheus_url`
        names another."""
        super().__init__("tf-serving-eks:autoscaling:Autoscaling", name, None, opts)
        k8s_child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        labels = k8s_labels("autoscaling", serving.name)
        # Config refuses custom metrics with neither (StackConfig: autoscaling.prometheus_url).
        prometheus_url = cfg.prometheus_url or (prometheus.url if prometheus else "")
        kinds = sorted(cfg.metrics)
        ready: list[pulumi.Resource] = [serving.deployment]
        node_selector = cluster.system_node_selector

        if "cpu" in cfg.metrics:
            ready.append(
                helm_release(
                    f"{name}-metrics-server",
                    catalog.CHARTS["metrics-server"],
                    METRICS_SERVER_NAMESPACE,
                    {"replicas": 2, "nodeSelector": dict(node_selector)},
                    k8s_child,
                )
            )
        if cfg.min_replicas == 0:
            pulumi.log.warn(
                "autoscaling.min_replicas is 0: with no pod running, requests fail until the "
                "off-hours window or a manual scale brings one up, then wait for a GPU node "
                "and the model load (minutes). See the README's cold-start figures.",
                resource=self,
            )

        if cfg.engine == "hpa":
            custom = [k for k in kinds if k != "cpu"]
            if custom:
                ready.append(
                    helm_release(
                        f"{name}-prometheus-adapter",
                        catalog.CHARTS["prometheus-adapter"],
                        ADAPTER_NAMESPACE,
                        adapter_values(prometheus_url, kinds, node_selector),
                        k8s_child,
                    )
                )
            # Its spec is built as data, shared with KEDA's behaviour block.
            serving_custom_resource(
                f"{name}-hpa",
                serving,
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                hpa_spec(cfg, serving.name),
                labels=labels,
                opts=pulumi.ResourceOptions.merge(k8s_child, pulumi.ResourceOptions(depends_on=ready)),
            )
        else:
            keda = helm_release(
                f"{name}-keda",
                catalog.CHARTS["keda"],
                KEDA_NAMESPACE,
                {"nodeSelector": dict(node_selector)},
                pulumi.ResourceOptions.merge(k8s_child, pulumi.ResourceOptions(depends_on=ready[1:])),
                create_namespace=True,
            )
            serving_custom_resource(
                f"{name}-scaled-object",
                serving,
                "keda.sh/v1alpha1",
                "ScaledObject",
                scaled_object_spec(cfg, prometheus_url, serving.namespace, serving.name),
                labels=labels,
                opts=pulumi.ResourceOptions.merge(
                    k8s_child, pulumi.ResourceOptions(depends_on=[keda, serving.deployment])
                ),
            )
        self.outputs = AutoscalingOutputs()
        self.register_outputs({})
