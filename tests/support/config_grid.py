"""A grid of realistic stack configs, each one valid, for whole-stack checks over the config
space: with and without GPU pools, GPU nodes from managed node groups, Karpenter or EKS Auto Mode, canary, KEDA / HPA / no autoscaling, existing cluster,
monitoring and ingress on and off, custom namespaces, dev and prod.

    from tests.support.config_grid import GRID, rendered
    for name in GRID: r = rendered(name)   # a tools.lib.mock_engine.Rendering, cached

`GRID` maps a name to a raw config (keys without the project prefix, as tests/support/__init__.py
uses them); `rendered(name)` renders it once per test session.

It holds valid configs only (refusals belong to the validation tests) and asserts nothing.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from tests.support import cpu_serving, raw_stack, render_raw
from tools.lib.mock_engine import Rendering

Raw = dict[str, Any]


def _cpu(raw: Raw) -> Raw:
    """CPU serving: no GPU pool, default CPU-serving requests, no GPU-only metric."""
    raw["gpu_pools"] = {}
    raw["serving"].pop("gpus", None)
    return cpu_serving(raw)


def _canary(raw: Raw) -> Raw:
    raw["serving"]["models"]["resnet"] = {
        "version_policy": "specific",
        "versions": [3],
        "labels": {"stable": 3},
        "canary": {"version": 4, "weight": 20},
    }
    return raw


def _hpa(raw: Raw) -> Raw:
    raw["autoscaling"] = {
        "engine": "hpa",
        "min_replicas": 1,
        "max_replicas": 2,
        "metrics": {"requests_per_second": 10},
    }
    return raw


def _scaling_off(raw: Raw) -> Raw:
    raw["autoscaling"] = {"enabled": False}
    return raw


def _no_ingress(raw: Raw) -> Raw:
    raw.pop("ingress", None)
    return raw


def _no_monitoring(raw: Raw) -> Raw:
    raw["monitoring"] = {"enabled": False}
    # Custom-metric autoscaling reads Prometheus; without it only CPU is left.
    if raw.get("autoscaling", {}).get("enabled", True) and "autoscaling" in raw:
        raw["autoscaling"]["metrics"] = {"cpu": 70}
        raw["autoscaling"].pop("off_hours", None)
        raw["autoscaling"]["min_replicas"] = max(1, raw["autoscaling"].get("min_replicas", 1))
    return raw


def _namespaces(raw: Raw) -> Raw:
    raw["serving"]["namespace"] = "models-prod" if raw["environment"] == "prod" else "models"
    raw["monitoring"] = {**raw.get("monitoring", {}), "namespace": "observability"}
    return raw


def _existing(raw: Raw) -> Raw:
    cluster = raw["cluster"]
    raw["cluster"] = {
        "mode": "existing",
        "name": cluster["name"],
        # Mode existing takes the looked-up cluster's version (tests/test_existing_cluster.py).
    }
    for key in ("admin_principals", "bootstrap_creator_admin", "log_types", "endpoint"):
        if key in cluster and raw["environment"] == "prod":
            raw["cluster"][key] = cluster[key]
    return raw


def _logs(raw: Raw) -> Raw:
    raw["monitoring"] = {**raw.get("monitoring", {}), "logs": {"enabled": True}}
    return raw


def _karpenter(raw: Raw) -> Raw:
    """The serving pool's nodes from Karpenter instead of managed node groups."""
    pool = raw["gpu_pools"][raw["serving"]["gpu_pool"]]
    for key in ("min_size", "desired_size", "max_unavailable"):
        pool.pop(key, None)
    pool["provisioner"] = "karpenter"
    return raw


def _auto_mode(raw: Raw) -> Raw:
    """The serving pool's nodes from EKS Auto Mode (AWS picks the AMI; no time-slicing)."""
    pool = raw["gpu_pools"][raw["serving"]["gpu_pool"]]
    for key in ("min_size", "desired_size", "max_unavailable", "ami_type", "time_slicing_replicas", "instance_store"):
        pool.pop(key, None)
    pool["provisioner"] = "auto-mode"
    raw["serving"].pop("model_cache", None)
    return raw


def _minimal(environment: str) -> Raw:
    """Required keys only: what the README's configuration reference leaves a user to write."""
    raw: Raw = {
        "aws:region": "us-east-1",
        "environment": environment,
        "cluster": {"name": f"tfs-min-{environment}"},
        "serving": {"models": {"m": {}}},
    }
    if environment != "dev":
        raw["serving"]["image_cache"] = {"enabled": False}
    return raw


def _from(stack: str, *steps: Callable[[Raw], Raw]) -> Raw:
    raw = raw_stack(stack)
    for step in steps:
        raw = step(raw)
    return raw


GRID: dict[str, Raw] = {
    "dev": _from("dev"),
    "prod": _from("prod"),
    "minimal-dev": _minimal("dev"),
    "minimal-staging": _minimal("staging"),
    "dev-cpu": _from("dev", _cpu),
    "dev-cpu-canary-hpa": _from("dev", _cpu, _canary, _hpa),
    "dev-canary-keda": _from("dev", _canary),
    "dev-canary-hpa": _from("dev", _canary, _hpa),
    "dev-scaling-off-no-ingress": _from("dev", _scaling_off, _no_ingress),
    "dev-no-monitoring": _from("dev", _no_monitoring, _logs),
    "dev-namespaces": _from("dev", _namespaces, _logs),
    "dev-existing": _from("dev", _existing),
    "dev-karpenter": _from("dev", _karpenter),
    "dev-auto-mode": _from("dev", _auto_mode),
    "dev-existing-cpu-no-ingress": _from("dev", _existing, _cpu, _no_ingress),
    "prod-canary": _from("prod", _canary),
    "prod-namespaces-no-ingress": _from("prod", _namespaces, _no_ingress),
    "prod-existing-canary": _from("prod", _existing, _canary),
}


@functools.cache
def rendered(name: str) -> Rendering:
    """The grid config `name` rendered under the mock engine (once per session)."""
    return render_raw(copy.deepcopy(GRID[name]), stack=f"grid-{name}")
