"""Third-party software from its upstream Helm chart, pinned (see catalog.CHARTS)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.catalog import Chart

# For a release whose DaemonSets also run on GPU nodes: Helm (atomic) waits until they run on
# every node, and GPU nodes that join during the same `pulumi up` boot a GPU AMI first, then
# pull the images: 20 minutes, not Helm's 10.
GPU_NODE_WAIT_SECONDS = 1200


def helm_release(
    name: str,
    chart: Chart,
    namespace: str,
    values: pulumi.Input[Mapping[str, Any]],
    opts: pulumi.ResourceOptions,
    create_namespace: bool = False,
    timeout_seconds: int = 600,
) -> k8s.helm.v3.Release:
    """A Helm release named after its chart (stable object names), rolled back if it fails."""
    return k8s.helm.v3.Release(
        name,
        k8s.helm.v3.ReleaseArgs(
            name=chart.name,
            chart=chart.name,
            version=chart.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            namespace=namespace,
            create_namespace=create_namespace,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            # `atomic` makes Helm wait for every object to be ready, this long, then roll back.
            timeout=timeout_seconds,
        ),
        opts=opts,
    )


def service_monitor_values(labels: Mapping[str, str] | None, **extra: str) -> dict[str, Any]:
    """A chart's `serviceMonitor` values: off for None; else on, carrying `labels` (the
    stack's monitoring.rule_labels), which a Prometheus that selects ServiceMonitors by label
    needs to see it. Both charts we enable it on take `serviceMonitor.additionalLabels`
    (dcgm-exporter 4.8.2 and aws-load-balancer-controller 3.5.0 values.yaml)."""
    if labels is None:
        return {"enabled": False}
    return {"enabled": True, "additionalLabels": dict(labels), **extra}

