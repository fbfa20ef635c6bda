"""Every pod of every grid config fits the nodes it can land on, judged from the rendered
objects as the scheduler would: node groups (instance type, labels, taints, max size) from
the rendered EKS node groups and Karpenter NodePools; pods and their requests from the rendered Deployments and
StatefulSets; per-node daemons from the rendered DaemonSets and from each DaemonSet chart's
Helm values over the pinned chart's defaults (../shared/reference/charts), plus the EKS
add-ons' daemons (catalog.EKS_ADDON_DAEMONS, sourced there).

Scheduler rules used: a pod may land on a node when its nodeSelector is a subset of the
node's labels, its required node affinity matches, and its tolerations cover every
NoSchedule/NoExecute taint (tests/support/scheduling.py, which cites the sources); its request is
max(sum(app) + sum(sidecars), max_i(init_i + sidecars started before i)) (KEP-753,
"Sidecar containers"); a node holds pods while the sum of requests stays within
allocatable (capacity minus kube-reserved and eviction, as the EKS AMI's nodeadm sets them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import catalog
from tests.support import chart_renders as cr
from tests.support.config_grid import GRID, rendered
from tests.support.scheduling import Taint, can_land
from tools.lib.mock_engine import Rendering

CHARTS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "charts"
if not CHARTS.is_dir():
    CHARTS = Path("/work/shared/reference/charts")

# DaemonSet charts we install: chart name -> values key of the DaemonSet (None: top level)
# and where its chart defaults live under the reference charts.
DAEMONSET_CHARTS: dict[str, tuple[str | None, str]] = {
    "nvidia-device-plugin": (None, "nvidia-device-plugin-{v}/values.yaml"),
    "dcgm-exporter": (None, "dcgm-exporter-{v}/values.yaml"),
    "aws-for-fluent-bit": (None, "aws-for-fluent-bit-{v}/values.yaml"),
    "kube-prometheus-stack": (
        "prometheus-node-exporter",
        "kube-prometheus-stack-{v}/charts/prometheus-node-exporter/values.yaml",
    ),
}

# Controller Deployments our charts run, read the same way: chart -> (pod name, values key
# of the pod's settings (None: top level), key of its resources within them, replica key).
HELM_WORKLOADS: dict[str, list[tuple[str, str | None, str, str]]] = {
    "cluster-autoscaler": [("cluster-autoscaler", None, "resources", "replicaCount")],
    "external-dns": [("external-dns", None, "resources", "replicaCount")],
    "aws-load-balancer-controller": [("aws-load-balancer-controller", None, "resources", "replicaCount")],
    "prometheus-adapter": [("prometheus-adapter", None, "resources", "replicas")],
    # keda values.yaml: one resources block per Deployment, shared nodeSelector.
    "keda": [
        ("keda-operator", None, "resources.operator", "operator.replicaCount"),
        ("keda-metrics-server", None, "resources.metricServer", "metricsServer.replicaCount"),
        ("keda-webhooks", None, "resources.webhooks", "webhooks.replicaCount"),
    ],
    "kube-prometheus-stack": [
        ("prometheus", "prometheus.prometheusSpec", "resources", "replicas"),
        ("alertmanager", "alertmanager.alertmanagerSpec", "resources", "replicas"),
        ("prometheus-operator", "prometheusOperator", "resources", "replicaCount"),
    ],
}

_UNITS = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity as a plain number (cores, bytes)."""
    found = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text))
    assert found and found.group(2) in _UNITS, f"not a quantity: {text!r}"
    return float(found.group(1)) * _UNITS[found.group(2)]


@dataclass(frozen=True)
class Need:
    cpu_milli: float = 0
    memory_mib: float = 0
    gpus: int = 0
    pods: int = 1

    def __add__(self, other: Need) -> Need:
        return Need(
            self.cpu_milli + other.cpu_milli,
            self.memory_mib + other.memory_mib,
            self.gpus + other.gpus,
            self.pods + other.pods,
        )


def container_need(container: dict[str, Any]) -> Need:
    resources = container.get("resources") or {}
    asked = dict(resources.get("limits") or {})
    asked.update(resources.get("requests") or {})  # a limit alone sets the request too
    return Need(
        quantity(asked.get("cpu", 0)) * 1000,
        quantity(asked.get("memory", 0)) / 2**20,
        int(quantity((resources.get("limits") or {}).get("nvidia.com/gpu", 0))),
        0,
    )


def pod_need(spec: dict[str, Any]) -> Need:
    sidecars, peak = Need(pods=0), Need(pods=0)
    for init in spec.get("initContainers") or []:
        step = sidecars + container_need(init)
        peak = Need(max(peak.cpu_milli, step.cpu_milli), max(peak.memory_mib, step.memory_mib), max(peak.gpus, step.gpus), 0)
        if init.get("restartPolicy") == "Always":
            sidecars = sidecars + container_need(init)
    running = sidecars
    for app in spec["containers"]:
        running = running + container_need(app)
    return Need(
        max(peak.cpu_milli, running.cpu_milli),
        max(peak.memory_mib, running.memory_mib),
        max(peak.gpus, running.gpus),
        1,
    )


@dataclass
class NodeGroup:
    name: str
    instance: catalog.InstanceType
    labels: dict[str, str]
    taints: list[Taint]
    max_size: int
    daemons: dict[str, Need] = field(default_factory=dict)

    def room(self) -> Need:
        alloc = catalog.node_allocatable(self.instance)
        taken = Need(pods=0)
        for need in self.daemons.values():
            taken = taken + need
        return Need(
            alloc.cpu_milli - taken.cpu_milli,
            alloc.memory_mib - taken.memory_mib,
            0,
            alloc.pods - taken.pods,
        )


def node_groups(r: Rendering) -> list[NodeGroup]:
    groups = []
    for res in r.resources:
        if res.type != "aws:eks/nodeGroup:NodeGroup":
            continue
        types = res.inputs["instanceTypes"]
        instance = catalog.instance_type(types[0])
        assert instance is not None, f"{res.name}: {types[0]} not in the catalogue"
        labels = {
            **(res.inputs.get("labels") or {}),
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": instance.name,
        }
        taints = [Taint.from_eks(t) for t in res.inputs.get("taints") or []]
        groups.append(NodeGroup(res.name, instance, labels, taints, res.inputs["scalingConfig"]["maxSize"]))
    return groups + karpenter_node_groups(r)


def karpenter_node_groups(r: Rendering) -> list[NodeGroup]:
    """A Karpenter NodePool's nodes, one group per instance type it admits (labels and taints
    as tests/support/chart_renders.py karpenter_nodes models them). Its GPU limit bounds the
    whole pool: split evenly over its types, so a pool is never judged larger than it is."""
    groups = []
    limits = {
        m["metadata"]["name"]: int(m["spec"]["limits"]["nvidia.com/gpu"])
        for m in r.k8s_objects() if m["kind"] == "NodePool"
    }
    nodes = cr.karpenter_nodes(r)
    for node in nodes:
        pool = node.labels["karpenter.sh/nodepool"]
        instance = catalog.instance_type(node.labels["node.kubernetes.io/instance-type"])
        assert instance is not None, f"{node.name}: not in the catalogue"
        group = NodeGroup(node.name, instance, dict(node.labels), list(node.taints), 0)
        share = sum(1 for n in nodes if n.labels["karpenter.sh/nodepool"] == pool)
        group.max_size = limits[pool] // _gpus_advertised(r, group) // share
        groups.append(group)
    return groups


def _merge(base: Any, top: Any) -> Any:
    """Helm's values coalescing: maps merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for k, v in top.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return top


def helm_daemonsets(r: Rendering) -> dict[str, dict[str, Any]]:
    """Each DaemonSet a Helm release runs: its pod spec as the chart builds it from the values."""
    out = {}
    for res in r.resources:
        if not res.type.startswith("kubernetes:helm.sh") or res.inputs.get("chart") not in DAEMONSET_CHARTS:
            continue
        chart = res.inputs["chart"]
        key, defaults_path = DAEMONSET_CHARTS[chart]
        path = CHARTS / defaults_path.format(v=catalog.CHARTS[chart].version)
        assert path.is_file(), f"reference chart values missing: {path}"
        values = _merge(yaml.safe_load(path.read_text()) or {}, (res.inputs.get("values") or {}).get(key, {}) if key else res.inputs.get("values") or {})
        resources = values.get("resources") or {}
        out[res.name] = {
            "nodeSelector": values.get("nodeSelector") or {},
            "affinity": values.get("affinity") or {},
            "tolerations": values.get("tolerations") or [],
            "containers": [{"resources": resources}],
        }
    return out


def _at(values: Any, dotted: str | None) -> Any:
    for part in (dotted or "").split(".") if dotted else []:
        values = (values or {}).get(part) if isinstance(values, dict) else None
    return values


def helm_workloads(r: Rendering) -> list[tuple[str, dict[str, Any], int]]:
    """Each controller pod a Helm release runs: (name, pod spec, replicas), from the values
    over the pinned chart's defaults."""
    out = []
    for res in r.resources:
        chart = res.inputs.get("chart")
        if not res.type.startswith("kubernetes:helm.sh") or chart not in HELM_WORKLOADS:
            continue
        path = CHARTS / f"{chart}-{catalog.CHARTS[chart].version}" / "values.yaml"
        assert path.is_file(), f"reference chart values missing: {path}"
        values = _merge(yaml.safe_load(path.read_text()) or {}, res.inputs.get("values") or {})
        for name, key, resources, replicas in HELM_WORKLOADS[chart]:
            pod = _at(values, key) or {}
            spec = {
                "nodeSelector": pod.get("nodeSelector") or {},
                "affinity": pod.get("affinity") or {},
                "tolerations": pod.get("tolerations") or [],
                "containers": [{"resources": _at(pod, resources) or {}}],
            }
            out.append((name, spec, int(_at(pod, replicas) or 1)))
    return out


def with_daemons(r: Rendering, objects: list[dict[str, Any]]) -> list[NodeGroup]:
    groups = node_groups(r)
    daemonsets = helm_daemonsets(r)
    for m in objects:
        if m["kind"] == "DaemonSet":
            daemonsets[m["metadata"]["name"]] = m["spec"]["template"]["spec"]
    for group in groups:
        group.daemons = {name: Need(need.cpu_milli, need.memory_mib, 0, 1) for name, need in catalog.EKS_ADDON_DAEMONS.items()}
        for name, spec in daemonsets.items():
            if can_land(spec, group):
                group.daemons[name] = pod_need(spec)
    return groups


def _gpus_advertised(r: Rendering, group: NodeGroup) -> int:
    """nvidia.com/gpu a node of `group` advertises: its GPUs times the time-slicing replicas of
    the device plugin config its label selects (the chart's config.map)."""
    plugin = next((res for res in r.resources if res.inputs.get("chart") == "nvidia-device-plugin"), None)
    replicas = 1
    config_name = group.labels.get("nvidia.com/device-plugin.config")
    if plugin is not None and config_name:
        text = plugin.inputs["values"]["config"]["map"][config_name]
        sharing = (yaml.safe_load(text) or {}).get("sharing", {}).get("timeSlicing", {})
        replicas = max([1] + [int(x.get("replicas", 1)) for x in sharing.get("resources", [])])
    return group.instance.gpus * replicas


def _most_replicas(objects: list[dict[str, Any]], name: str, default: int) -> int:
    for m in objects:
        target = (m.get("spec") or {}).get("scaleTargetRef", {}).get("name")
        if target != name:
            continue
        if m["kind"] == "HorizontalPodAutoscaler":
            return int(m["spec"]["maxReplicas"])
        if m["kind"] == "ScaledObject":
            return int(m["spec"].get("maxReplicaCount", 100))
    return default


def describe(need: Need) -> str:
    return f"{need.cpu_milli / 1000:g} vCPU, {need.memory_mib / 1024:.2f} GiB, {need.pods} pod slot(s)"


def fit_problems(r: Rendering, objects: list[dict[str, Any]] | None = None) -> list[str]:
    """Why some rendered pod cannot run on the nodes it can land on (empty when all fit);
    `objects` defaults to the rendering's Kubernetes objects."""
    objects = r.k8s_objects() if objects is None else objects
    problems = []
    groups = with_daemons(r, objects)
    # A cluster the stack creates has no nodes but its node groups.
    owns_all_nodes = any(res.type == "aws:eks/cluster:Cluster" and not res.read for res in r.resources)
    workloads = [m for m in objects if m["kind"] in ("Deployment", "StatefulSet")]
    # Pods that land on the same node groups share them: the canary beside the stable pods.
    demand: dict[str, list[tuple[str, Need, int]]] = {}
    pods = [
        (w["metadata"]["name"], w["spec"]["template"]["spec"], _most_replicas(objects, w["metadata"]["name"], int(w["spec"].get("replicas", 1))))
        for w in workloads
    ] + helm_workloads(r)
    for name, spec, count in pods:
        need = pod_need(spec)
        targets = [g for g in groups if can_land(spec, g)]
        if not targets and not owns_all_nodes:
            continue  # lands on an existing cluster's own nodes: not ours to know
        if not targets:
            problems.append(f"{name}: no node group of the stack can take its pods")
            continue
        for g in targets:
            room = g.room()
            if need.gpus > _gpus_advertised(r, g):
                problems.append(f"{name}: asks {need.gpus} GPU(s), {g.instance.name} nodes of {g.name} offer {_gpus_advertised(r, g)}")
            if not (need.cpu_milli <= room.cpu_milli and need.memory_mib <= room.memory_mib and room.pods >= 1):
                problems.append(
                    f"{name}: pod needs {describe(need)}; {g.instance.name} nodes of {g.name} have "
                    f"{describe(room)} after reservations and daemons ({', '.join(sorted(g.daemons))})"
                )
            if need.gpus:
                # Time-slicing: as many of these pods land on one node as its GPUs allow.
                together = _gpus_advertised(r, g) // need.gpus
                if together > 1 and (
                    together * need.cpu_milli > room.cpu_milli or together * need.memory_mib > room.memory_mib
                ):
                    problems.append(
                        f"{name}: {together} pods share each {g.instance.name} node of {g.name} by GPU "
                        f"but need {together * need.cpu_milli / 1000:g} vCPU / {together * need.memory_mib / 1024:.2f} GiB; "
                        f"the node has {describe(room)}"
                    )
        key = ",".join(sorted(g.name for g in targets))
        demand.setdefault(key, []).append((name, need, count))
    by_name = {g.name: g for g in groups}
    for key, sharing in demand.items():
        capacity_cpu = capacity_mem = capacity_gpu = 0.0
        for gname in key.split(","):
            g = by_name[gname]
            room = g.room()
            capacity_cpu += room.cpu_milli * g.max_size
            capacity_mem += room.memory_mib * g.max_size
            capacity_gpu += _gpus_advertised(r, g) * g.max_size
        cpu = sum(n.cpu_milli * c for _, n, c in sharing)
        mem = sum(n.memory_mib * c for _, n, c in sharing)
        gpu = sum(n.gpus * c for _, n, c in sharing)
        if cpu > capacity_cpu or mem > capacity_mem or gpu > capacity_gpu:
            listing = ", ".join(f"{c}x {name}" for name, _, c in sharing)
            problems.append(
                f"{listing} need {cpu / 1000:g} vCPU / {mem / 1024:.1f} GiB / {gpu} GPU(s) at most replicas; "
                f"node groups {key} hold {capacity_cpu / 1000:g} / {capacity_mem / 1024:.1f} / {capacity_gpu:g} at max size"
            )
    return problems


@pytest.mark.parametrize("name", sorted(GRID))
def test_every_pod_fits_the_nodes_it_can_land_on(name: str) -> None:
    assert fit_problems(rendered(name)) == []


def test_grid_covers_the_config_space() -> None:
    def has(pred: Any) -> bool:
        return any(pred(raw) for raw in GRID.values())

    assert has(lambda c: not c.get("gpu_pools")) and has(lambda c: c.get("gpu_pools"))
    assert has(lambda c: any(m.get("canary") for m in c["serving"]["models"].values()))
    assert has(lambda c: c.get("autoscaling", {}).get("engine") == "keda")
    assert has(lambda c: c.get("autoscaling", {}).get("engine") == "hpa")
    assert has(lambda c: c.get("autoscaling", {}).get("enabled") is False)
    assert has(lambda c: c["cluster"].get("mode") == "existing")
    assert has(lambda c: c.get("monitoring", {}).get("enabled") is False)
    assert has(lambda c: "ingress" not in c) and has(lambda c: "ingress" in c)
    assert has(lambda c: c["serving"].get("namespace", "tf-serving") != "tf-serving")
    assert {c["environment"] for c in GRID.values()} >= {"dev", "prod"}


def test_fit_check_sees_a_pod_too_big_for_its_nodes() -> None:
    # The check must be able to fail: a rendered CPU-serving pod grown past a t3.large.
    r = rendered("dev-cpu")
    objects = r.k8s_objects()
    assert fit_problems(r, objects) == []
    dep = next(m for m in objects if m["kind"] == "Deployment" and m["metadata"]["name"] == "tf-serving")
    spec = dep["spec"]["template"]["spec"]
    # 1.75 vCPU plus the 50m sidecar: more than a t3.large has left after the daemons.
    spec["containers"][0]["resources"] = {"requests": {"cpu": "1750m", "memory": "1Gi"}}
    assert any("tf-serving: pod needs" in p for p in fit_problems(r, objects))
    # Room to scale out: the autoscaler's 20 default pods need more than 3 t3.large nodes.
    spec["containers"][0]["resources"] = {"requests": {"cpu": "750m", "memory": "3Gi"}}
    scaler = next(m for m in objects if m["kind"] == "ScaledObject")
    scaler["spec"]["maxReplicaCount"] = 20
    assert any("at max size" in p for p in fit_problems(r, objects)), fit_problems(r, objects)


def test_sidecars_count_and_plain_init_containers_do_not_add() -> None:
    spec = {
        "initContainers": [
            {"name": "init", "resources": {"requests": {"cpu": "500m", "memory": "64Mi"}}},
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
        ],
        "containers": [{"name": "app", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}],
    }
    assert pod_need(spec) == Need(1050, 1024 + 128, 0, 1)
