"""Facts the program reasons with: Kubernetes versions, add-on pins, instance types and
their prices (and the node cost estimate they give), what fits on a node, chart pins.

It holds sourced data and plain arithmetic on it; it must not import the Pulumi SDK or any
component (config validation and the commands use it offline).

Sources (checked 2026-11):
- EKS Kubernetes versions: EKS user guide, "Understand the Kubernetes version lifecycle on
  EKS" (1.34 standard support ends 2026-12-02, 1.35 on 2027-03-27, 1.36 on 2027-08-02).
- kube-proxy and coredns builds: EKS user guide tables "latest version per Kubernetes
  version" (managing-kube-proxy, managing-coredns).
- vpc-cni, eks-pod-identity-agent, aws-ebs-csi-driver: `aws eks describe-addon-versions`
  results for these Kubernetes versions. Re-check with
  `aws eks describe-addon-versions --addon-name NAME --kubernetes-version X.Y` before
  moving a pin; `cluster.addons.*` overrides any of them per stack.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from components import validation

KubernetesVersion = Literal["1.34", "1.35", "1.36"]
DEFAULT_KUBERNETES_VERSION: KubernetesVersion = "1.36"

AddonName = Literal[
    "vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "aws-ebs-csi-driver"
]

_SHARED_ADDONS: dict[AddonName, str] = {
    # Network policy enforcement needs >= v1.14; admin network policies >= v1.21.
    "vpc-cni": "v1.22.4-eksbuild.3",
    "eks-pod-identity-agent": "v1.3.10-eksbuild.3",
    "aws-ebs-csi-driver": "v1.66.0-eksbuild.1",
}

ADDON_VERSIONS: dict[KubernetesVersion, dict[AddonName, str]] = {
    "1.34": {
        **_SHARED_ADDONS,
        "coredns": "v1.13.2-eksbuild.11",
        "kube-proxy": "v1.34.6-eksbuild.13",
    },
    "1.35": {
        **_SHARED_ADDONS,
        "coredns": "v1.14.3-eksbuild.3",
        "kube-proxy": "v1.35.3-eksbuild.13",
    },
    "1.36": {
        **_SHARED_ADDONS,
        "coredns": "v1.14.3-eksbuild.3",
        "kube-proxy": "v1.36.0-eksbuild.14",
    },
}


# --- EC2 instance types -------------------------------------------------------------------
#
# GPU types: GPU count and model, GPU memory, vCPUs and memory from EC2 DescribeInstanceTypes
# as published in Karpenter's generated instance-type reference (aws/karpenter-provider-aws,
# website/content/en/docs/reference/instance-types.md). On-demand Linux prices (USD/hour)
# from Karpenter's pricing snapshot pkg/providers/pricing/zz_generated.pricing_aws.go at
# commit 265ee0ba5b8e (generated 2026-02-09, us-east-1). us-west-2 lists the same on-demand
# prices for these types; for any other region the estimate says it uses us-east-1 prices.
# Left out on purpose: p5.4xlarge (EC2 reports 0 GPUs for it, so autoscalers can't plan it).

GpuModel = Literal["T4", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100", "H200"]
AmiType = Literal["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"]
PRICED_REGIONS = ("us-east-1", "us-west-2")
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpus: int
    memory_gib: int
    usd_per_hour: float
    gpus: int = 0
    gpu_model: GpuModel | None = None
    gpu_memory_gib: int = 0

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


def _gpu_family(
    family: str, model: GpuModel, gpu_mem: int, sizes: list[tuple[str, int, int, int, float]]
) -> dict[str, InstanceType]:
    return {
        f"{family}.{size}": InstanceType(f"{family}.{size}", vcpus, mem, price, gpus, model, gpu_mem)
        for size, gpus, vcpus, mem, price in sizes
    }


GPU_INSTANCE_TYPES: dict[str, InstanceType] = {
    **_gpu_family("g4dn", "T4", 16, [
        ("xlarge", 1, 4, 16, 0.526), ("2xlarge", 1, 8, 32, 0.752), ("4xlarge", 1, 16, 64, 1.204),
        ("8xlarge", 1, 32, 128, 2.176), ("12xlarge", 4, 48, 192, 3.912),
        ("16xlarge", 1, 64, 256, 4.352), ("metal", 8, 96, 384, 7.824),
    ]),
    **_gpu_family("g5", "A10G", 24, [
        ("xlarge", 1, 4, 16, 1.006), ("2xlarge", 1, 8, 32, 1.212), ("4xlarge", 1, 16, 64, 1.624),
        ("8xlarge", 1, 32, 128, 2.448), ("12xlarge", 4, 48, 192, 5.672),
        ("16xlarge", 1, 64, 256, 4.096), ("24xlarge", 4, 96, 384, 8.144),
        ("48xlarge", 8, 192, 768, 16.288),
    ]),
    **_gpu_family("g6", "L4", 24, [
        ("xlarge", 1, 4, 16, 0.8048), ("2xlarge", 1, 8, 32, 0.9776), ("4xlarge", 1, 16, 64, 1.3232),
        ("8xlarge", 1, 32, 128, 2.0144), ("12xlarge", 4, 48, 192, 4.6016),
        ("16xlarge", 1, 64, 256, 3.3968), ("24xlarge", 4, 96, 384, 6.6752),
        ("48xlarge", 8, 192, 768, 13.3504),
    ]),
    **_gpu_family("g6e", "L40S", 48, [
        ("xlarge", 1, 4, 32, 1.861), ("2xlarge", 1, 8, 64, 2.24208), ("4xlarge", 1, 16, 128, 3.00424),
        ("8xlarge", 1, 32, 256, 4.52856), ("12xlarge", 4, 48, 384, 10.49264),
        ("16xlarge", 1, 64, 512, 7.57719), ("24xlarge", 4, 96, 768, 15.06559),
        ("48xlarge", 8, 192, 1536, 30.13118),
    ]),
    **_gpu_family("p4d", "A100-40GB", 40, [("24xlarge", 8, 96, 1152, 21.957642)]),
    **_gpu_family("p4de", "A100-80GB", 80, [("24xlarge", 8, 96, 1152, 27.44705)]),
    **_gpu_family("p5", "H100", 80, [("48xlarge", 8, 192, 2048, 55.04)]),
    **_gpu_family("p5en", "H200", 141, [("48xlarge", 8, 192, 2048, 63.296)]),
}

# Instance store (NVMe) per GPU type, in GB as EC2 reports it (DescribeInstanceTypes
# InstanceStorageInfo.TotalSizeInGB), from the label karpenter.k8s.aws/instance-local-nvme in
# Karpenter's generated reference (aws/karpenter-provider-aws
# website/content/en/docs/reference/instance-types.md, commit 1d927085dd81). Every type in the
# catalogue has some; it is what nodeadm's `localStorage: RAID0` stripes and mounts.
LOCAL_NVME_GB: dict[str, int] = {
    "g4dn.xlarge": 125, "g4dn.2xlarge": 225, "g4dn.4xlarge": 225, "g4dn.8xlarge": 900,
    "g4dn.12xlarge": 900, "g4dn.16xlarge": 900, "g4dn.metal": 1800,
    "g5.xlarge": 250, "g5.2xlarge": 450, "g5.4xlarge": 600, "g5.8xlarge": 900,
    "g5.12xlarge": 3800, "g5.16xlarge": 1900, "g5.24xlarge": 3800, "g5.48xlarge": 7600,
    "g6.xlarge": 250, "g6.2xlarge": 450, "g6.4xlarge": 600, "g6.8xlarge": 900,
    "g6.12xlarge": 3760, "g6.16xlarge": 1880, "g6.24xlarge": 3760, "g6.48xlarge": 7520,
    "g6e.xlarge": 250, "g6e.2xlarge": 450, "g6e.4xlarge": 600, "g6e.8xlarge": 900,
    "g6e.12xlarge": 3800, "g6e.16xlarge": 1900, "g6e.24xlarge": 3800, "g6e.48xlarge": 7600,
    "p4d.24xlarge": 8000, "p4de.24xlarge": 8000, "p5.48xlarge": 30400, "p5en.48xlarge": 30400,
}


def local_nvme_gib(instance_type: str) -> float:
    """The type's instance store in GiB (0 without one); EC2's GB are 10^9 bytes."""
    return LOCAL_NVME_GB.get(instance_type, 0) * 1e9 / 2**30


# What a GPU node's disk holds besides the node-local model cache, our allowance (not an
# upstream figure): the serving image (~6 GB compressed, kept beside its unpacked layers), the
# sync and daemon images, logs and the kubelet's own files; on the root volume also the
# NVIDIA AMI's operating system. The serving pods' own copies of their models are added to it.
NODE_DISK_RESERVE_GIB = {"root_volume": 40, "instance_store": 20}


# Value of the `k8s.amazonaws.com/accelerator` node label per GPU model: the GPU types
# cluster-autoscaler's AWS provider names (cloudprovider/aws/aws_cloud_provider.go,
# availableGPUTypes); H100 and H200 are not in that list yet and follow its pattern. CA
# needs only the label's presence to wait for a GPU still coming; the value is the type its
# --gpu-total limits count.
ACCELERATOR_LABEL_VALUES: dict[GpuModel, str] = {
    "T4": "nvidia-tesla-t4",
    "A10G": "nvidia-a10g",
    "L4": "nvidia-l4",
    "L40S": "nvidia-l40s",
    "A100-40GB": "nvidia-tesla-a100",
    "A100-80GB": "nvidia-tesla-a100",
    "H100": "nvidia-h100",
    "H200": "nvidia-h200",
}

# System node group types we price (us-east-1 on-demand Linux list prices).
GENERAL_INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in (
        InstanceType("t3.large", 2, 8, 0.0832),
        InstanceType("t3.xlarge", 4, 16, 0.1664),
        InstanceType("m5.large", 2, 8, 0.096),
        InstanceType("m6i.large", 2, 8, 0.096),
        InstanceType("m6i.xlarge", 4, 16, 0.192),
        InstanceType("m7i.large", 2, 8, 0.1008),
        InstanceType("m7i.xlarge", 4, 16, 0.2016),
    )
}


def instance_type(name: str) -> InstanceType | None:
    return GPU_INSTANCE_TYPES.get(name) or GENERAL_INSTANCE_TYPES.get(name)


def monthly_cost_range(
    pools: Mapping[str, tuple[list[str], int, int]]
) -> tuple[float, float]:
    """(all pools at min size, all at max size) in USD/month, priced at each pool's dearest
    type; a pool of types the catalogue does not price costs nothing here. A pool is
    (instance types, min size, max size)."""
    low = high = 0.0
    for types, min_size, max_size in pools.values():
        known = [instance_type(t) for t in types]
        hourly = max(t.usd_per_hour for t in known if t is not None) if any(known) else 0.0
        low += hourly * min_size * HOURS_PER_MONTH
        high += hourly * max_size * HOURS_PER_MONTH
    return round(low, 2), round(high, 2)


def node_cost_range(types: list[str]) -> tuple[float, float]:
    """One node of a pool for a month, USD: its cheapest and its dearest priced type (a
    Karpenter pool may launch any of its types, a managed node group prefers its first)."""
    hourly = [t.usd_per_hour for t in (instance_type(n) for n in types) if t is not None]
    if not hourly:
        return 0.0, 0.0
    return round(min(hourly) * HOURS_PER_MONTH, 2), round(max(hourly) * HOURS_PER_MONTH, 2)


# --- What a pod can get on a node ----------------------------------------------------------
#
# Allocatable is capacity minus what the EKS AMI reserves: nodeadm (awslabs/amazon-eks-ami
# at 81fec2e8, nodeadm/internal/kubelet/config.go, withDefaultReservedResources) sets
# kubeReserved cpu by getCPUMillicoresToReserve (6% of the first core, 1% of the second,
# 0.5% of cores 3-4, 0.25% of the rest, each range truncated to whole millicores), memory
# by getMemoryMebibytesToReserve (11 MiB per max pod + 255 MiB), and evictionHard
# memory.available 100Mi. Max pods is the VPC CNI's ENI limit (eni_max_pods.go,
# calculateStandardMaxPods: ENIs x (IPv4 per ENI - 1) + 2), from the same commit's
# instance-info.jsonl (defaultMaxENIs, ipv4AddressesPerInterface).
EVICTION_MEMORY_MIB = 100

ENI_LIMITS: dict[str, tuple[int, int]] = {
    "g4dn.xlarge": (3, 10), "g4dn.2xlarge": (3, 10), "g4dn.4xlarge": (3, 10),
    "g4dn.8xlarge": (4, 15), "g4dn.12xlarge": (8, 30), "g4dn.16xlarge": (4, 15),
    "g4dn.metal": (15, 50),
    "g5.xlarge": (4, 15), "g5.2xlarge": (4, 15), "g5.4xlarge": (8, 30), "g5.8xlarge": (8, 30),
    "g5.12xlarge": (15, 50), "g5.16xlarge": (8, 30), "g5.24xlarge": (15, 50),
    "g5.48xlarge": (7, 50),
    "g6.xlarge": (4, 15), "g6.2xlarge": (4, 15), "g6.4xlarge": (8, 30), "g6.8xlarge": (8, 30),
    "g6.12xlarge": (8, 30), "g6.16xlarge": (15, 50), "g6.24xlarge": (15, 50),
    "g6.48xlarge": (15, 50),
    "g6e.xlarge": (4, 15), "g6e.2xlarge": (4, 15), "g6e.4xlarge": (8, 30),
    "g6e.8xlarge": (8, 30), "g6e.12xlarge": (10, 30), "g6e.16xlarge": (15, 50),
    "g6e.24xlarge": (10, 50), "g6e.48xlarge": (10, 50),
    "p4d.24xlarge": (15, 50), "p4de.24xlarge": (15, 50), "p5.48xlarge": (2, 50),
    "p5en.48xlarge": (4, 50),
    "t3.large": (3, 12), "t3.xlarge": (4, 15), "m5.large": (3, 10), "m6i.large": (3, 10),
    "m6i.xlarge": (4, 15), "m7i.large": (3, 10), "m7i.xlarge": (4, 15),
}


@dataclass(frozen=True)
class Requests:
    """What a container, a pod or a set of pods asks the scheduler for."""

    cpu_milli: int = 0
    memory_mib: int = 0
    pods: int = 0

    def __add__(self, other: Requests) -> Requests:
        return Requests(
            self.cpu_milli + other.cpu_milli, self.memory_mib + other.memory_mib, self.pods + other.pods
        )

    def times(self, n: int) -> Requests:
        return Requests(self.cpu_milli * n, self.memory_mib * n, self.pods * n)

    def fits(self, room: Requests) -> bool:
        return (
            self.cpu_milli <= room.cpu_milli
            and self.memory_mib <= room.memory_mib
            and self.pods <= room.pods
        )

    def minus(self, other: Requests) -> Requests:
        return Requests(
            self.cpu_milli - other.cpu_milli, self.memory_mib - other.memory_mib, self.pods - other.pods
        )


def max_pods(instance: InstanceType) -> int:
    enis, ips = ENI_LIMITS[instance.name]
    return enis * (ips - 1) + 2


def kube_reserved_cpu_milli(vcpus: int) -> int:
    total = vcpus * 1000
    reserved = 0
    for start, end, basis_points in ((0, 1000, 600), (1000, 2000, 100), (2000, 4000, 50), (4000, total, 25)):
        if total > start:
            reserved += (min(total, end) - start) * basis_points // 10000
    return reserved


def kube_reserved_memory_mib(instance: InstanceType) -> int:
    return 11 * max_pods(instance) + 255


def node_allocatable(instance: InstanceType) -> Requests:
    """The node's allocatable CPU, memory and pod slots, as the kubelet reports them."""
    return Requests(
        instance.vcpus * 1000 - kube_reserved_cpu_milli(instance.vcpus),
        instance.memory_gib * 1024 - kube_reserved_memory_mib(instance) - EVICTION_MEMORY_MIB,
        max_pods(instance),
    )


def pod_requests(app: list[Requests], init: list[tuple[Requests, bool]] | None = None) -> Requests:
    """A pod's effective request (KEP-753, k8s docs "Sidecar containers", "Resource sharing
    within containers"): init containers run in order; a sidecar (restartPolicy Always)
    keeps running, so it adds to every later init container and to the app containers;
    a plain init container needs only its own request plus the sidecars started before it.
    The pod asks for the larger of the app phase and the highest init step."""
    sidecars = Requests()
    peak = Requests()
    for request, is_sidecar in init or []:
        step = sidecars + request
        peak = Requests(max(peak.cpu_milli, step.cpu_milli), max(peak.memory_mib, step.memory_mib))
        if is_sidecar:
            sidecars = sidecars + request
    running = sidecars
    for request in app:
        running = running + request
    return Requests(
        max(peak.cpu_milli, running.cpu_milli), max(peak.memory_mib, running.memory_mib), 1
    )


# Per-node daemons the EKS managed add-ons run on every node, with the requests of their
# pods (all containers): aws-node 25m (aws/amazon-vpc-cni-k8s at b5218838,
# charts/aws-vpc-cni/values.yaml `resources`; its node agent and init container ask
# nothing); kube-proxy 100m (the EKS kube-proxy add-on's DaemonSet, EKS user guide
# "managing-kube-proxy"); ebs-csi-node 10m/40Mi plus its registrar and liveness probe at
# 10m/32Mi each (kubernetes-sigs/aws-ebs-csi-driver at 429e202e, charts values.yaml
# `node.resources` and templates/_node.tpl defaults); eks-pod-identity-agent nothing
# (aws/eks-pod-identity-agent at d4dc0f3f, charts values.yaml `resources: {}`).
EKS_ADDON_DAEMONS: dict[str, Requests] = {
    "aws-node": Requests(25, 0, 1),
    "kube-proxy": Requests(100, 0, 1),
    "ebs-csi-node": Requests(30, 104, 1),
    "eks-pod-identity-agent": Requests(0, 0, 1),
}

# Requests of the per-node daemons our charts run; the value builders take them from here
# so the fit rules and the rendered values cannot drift apart.
FLUENT_BIT_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "250Mi"}}
DEVICE_PLUGIN_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
DCGM_EXPORTER_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "500m", "memory": "512Mi"},
}
# node-exporter (kube-prometheus-stack's prometheus-node-exporter chart) asks nothing by
# default (values.yaml `resources: {}`); it still takes a pod slot.
MODEL_SYNC_RESOURCES = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}


def cpu_milli(quantity: str) -> int:
    """Kubernetes CPU quantity ("2", "1.5", "500m", "2e3m") in millicores (the quantity grammar
    of components/validation.py)."""
    return validation.cpu_millicores(quantity)


def memory_mib(quantity: str) -> int:
    """Kubernetes memory quantity ("8Gi", "512Mi", "8G") in whole MiB, rounded up."""
    return -(-validation.memory_bytes(quantity) // (1024 * 1024))


def requests_of(resources: dict[str, dict[str, str]]) -> Requests:
    asked = resources.get("requests", {})
    return Requests(cpu_milli(asked.get("cpu", "0")), memory_mib(asked.get("memory", "0")))


# The node-local model cache's folder-maker (components/model_cache.py): it only sleeps.
MODEL_CACHE_DIR_RESOURCES = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}}


def daemon_requests(
    *, gpu_node: bool, logs: bool, node_exporter: bool, model_cache: bool = False
) -> dict[str, Requests]:
    """Every per-node daemon on a node of this kind, by name."""
    daemons = dict(EKS_ADDON_DAEMONS)
    if model_cache and gpu_node:
        daemons["model-cache-dir"] = requests_of(MODEL_CACHE_DIR_RESOURCES) + Requests(pods=1)
    if logs:
        daemons["fluent-bit"] = requests_of(FLUENT_BIT_RESOURCES) + Requests(pods=1)
    if node_exporter:
        daemons["node-exporter"] = Requests(pods=1)
    if gpu_node:
        daemons["nvidia-device-plugin"] = requests_of(DEVICE_PLUGIN_RESOURCES) + Requests(pods=1)
        daemons["dcgm-exporter"] = requests_of(DCGM_EXPORTER_RESOURCES) + Requests(pods=1)
    return daemons


def room_for_pods(instance: InstanceType, daemons: dict[str, Requests]) -> Requests:
    """What is left on an otherwise empty node for our pods, after reservations and daemons."""
    room = node_allocatable(instance)
    for request in daemons.values():
        room = room.minus(request)
    return room


def pods_that_fit(pod: Requests, room: Requests) -> int:
    """How many pods of `pod` fit in `room`, by CPU, memory and pod slots."""
    bounds = [room.pods // max(pod.pods, 1)]
    if pod.cpu_milli:
        bounds.append(room.cpu_milli // pod.cpu_milli)
    if pod.memory_mib:
        bounds.append(room.memory_mib // pod.memory_mib)
    return max(0, min(bounds))


def describe_room(room: Requests) -> str:
    return f"{room.cpu_milli / 1000:g} vCPU and {room.memory_mib / 1024:.1f} GiB"


def describe_requests(pod: Requests) -> str:
    return f"{pod.cpu_milli / 1000:g} vCPU and {pod.memory_mib / 1024:.1f} GiB"


# --- Upstream Helm charts we install, pinned -----------------------------------------------


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    repo: str


CHARTS: dict[str, Chart] = {
    c.name: c
    for c in (
        Chart("nvidia-device-plugin", "0.20.0", "https://nvidia.github.io/k8s-device-plugin"),
        Chart("dcgm-exporter", "4.8.2", "https://nvidia.github.io/dcgm-exporter/helm-charts"),
        Chart("cluster-autoscaler", "9.59.0", "https://kubernetes.github.io/autoscaler"),
        # Controller v3.5.0; the policy it needs is its published docs/install/iam_policy.json
        # at that tag, kept as components/policies/aws-load-balancer-controller-v3.5.0.json.
        Chart("aws-load-balancer-controller", "3.5.0", "https://aws.github.io/eks-charts"),
        Chart("external-dns", "1.21.1", "https://kubernetes-sigs.github.io/external-dns/"),
        Chart("metrics-server", "3.13.1", "https://kubernetes-sigs.github.io/metrics-server/"),
        Chart(
            "prometheus-adapter", "5.3.0", "https://prometheus-community.github.io/helm-charts"
        ),
        Chart("keda", "2.20.2", "https://kedacore.github.io/charts"),
        # Prometheus Operator v0.93.1, Grafana, kube-state-metrics, node-exporter.
        Chart(
            "kube-prometheus-stack", "88.5.3", "https://prometheus-community.github.io/helm-charts"
        ),
        # aws/eks-charts stable/aws-for-fluent-bit, newest published (image 3.2.1, Fluent Bit 4.2).
        Chart("aws-for-fluent-bit", "0.2.0", "https://aws.github.io/eks-charts"),
        # Karpenter 1.14.1 and its CRDs as their own chart, installed first: Helm installs a
        # chart's crds/ only once and never upgrades them, so the project recommends the
        # karpenter-crd chart (karpenter-provider-aws website/content/en/v1.14/upgrading/
        # upgrade-guide.md, "CRD Upgrades").
        Chart("karpenter-crd", "1.14.1", "oci://public.ecr.aws/karpenter"),
        Chart("karpenter", "1.14.1", "oci://public.ecr.aws/karpenter"),
    )
}

# Karpenter pools pick their EKS-optimised AMI by alias at a pinned release, never @latest (a
# new AMI would roll every node as drift). AL2023 v20260520 is the release Karpenter 1.14's own
# e2e suite pins as a known older AMI for the Kubernetes versions it tests
# (karpenter-provider-aws test/suites/ami/suite_test.go); Bottlerocket v1.46.0 is the one its
# AMI family tests name (pkg/providers/amifamily/bottlerocket_test.go). With an alias and an
# NVIDIA instance type Karpenter picks the NVIDIA variant itself (EC2NodeClass docs,
# amiSelectorTerms: "alias").
KARPENTER_AMI_ALIASES: dict[AmiType, str] = {
    "AL2023_x86_64_NVIDIA": "al2023@v20260520",
    "BOTTLEROCKET_x86_64_NVIDIA": "bottlerocket@v1.46.0",
}

# cluster-autoscaler's minor must match the cluster's (kubernetes/kops' mapping, 2026-07).
CLUSTER_AUTOSCALER_IMAGE_TAGS: dict[KubernetesVersion, str] = {
    "1.34": "v1.34.4",
    "1.35": "v1.35.1",
    "1.36": "v1.36.0",
}

# Controller v3.5.0 is built against Gateway API v1.6 (standard channel; v1.6.1 is its patch).
GATEWAY_API_VERSION = "v1.6.1"
GATEWAY_API_CRDS_URL = (
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/"
    f"{GATEWAY_API_VERSION}/standard-install.yaml"
)


# --- Cold start figures ------------------------------------------------------------------------
#
# What components/cold_start.py models the time from zero GPU nodes to a first prediction
# with. Each figure says where it comes from; "estimate" marks a typical value we have not
# measured on an account, to be replaced by your own (README, "Cold start budget").


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str


COLD_START: dict[str, Figure] = {
    # cluster-autoscaler FAQ (kubernetes/autoscaler cluster-autoscaler/FAQ.md): --scan-interval
    # defaults to 10s; a pending pod waits up to one scan before the scale-up.
    "decide_cluster_autoscaler": Figure(10, "s", "cluster-autoscaler FAQ, --scan-interval default 10s"),
    # Karpenter settings (karpenter.sh docs, v1.14 reference/settings): it launches once no new
    # pending pod has come for BATCH_IDLE_DURATION (1s), at most BATCH_MAX_DURATION (10s).
    "decide_karpenter": Figure(1, "s", "Karpenter settings, BATCH_IDLE_DURATION default 1s (one pending pod)"),
    "instance_launch": Figure(45, "s", "estimate: EC2 RunInstances to running, GPU instance"),
    "instance_start_stopped": Figure(30, "s", "estimate: EC2 StartInstances of a stopped warm-pool instance"),
    "instance_running_warm": Figure(5, "s", "estimate: a Running warm-pool instance moved into the group"),
    # Boot, nodeadm, kubelet join, NVIDIA driver load and device plugin registration.
    "node_ready": Figure(90, "s", "estimate: GPU AMI boot to a node advertising nvidia.com/gpu"),
    "node_ready_warm": Figure(30, "s", "estimate: a warm-pool instance, initialised once, rejoining"),
    # The serving GPU image (tensorflow/serving:<v>-gpu), unpacked.
    "serving_image": Figure(6, "GiB", "estimate: tensorflow/serving GPU image, unpacked"),
    # containerd#8881: a 5.4 GB deep-learning image pulled in 120 s with containerd's one
    # unpack thread, 40 s with parallel unpack (about 45 and 135 MiB/s).
    "pull_serial": Figure(45, "MiB/s", "containerd/containerd#8881: 5.4 GB in 120 s, serial unpack"),
    "pull_parallel": Figure(135, "MiB/s", "containerd/containerd#8881: 5.4 GB in 40 s, parallel unpack"),
    "pull_prepulled": Figure(15, "s", "estimate: images already on the snapshot's volume; containerd only starts"),
    # S3 performance guidelines (docs.aws.amazon.com/AmazonS3/latest/userguide/
    # optimizing-performance-guidelines.html): one request reaches about 85-90 MB/s; the AWS CLI
    # makes 10 at once by default (max_concurrent_requests, aws s3 configuration docs).
    "s3_per_request": Figure(85, "MiB/s", "Amazon S3 performance guidelines, 85-90 MB/s per request"),
    "s3_requests": Figure(10, "requests", "AWS CLI s3 max_concurrent_requests default 10"),
    # CUDA context, cuDNN/cuBLAS libraries and TF Serving's first model on the GPU.
    "gpu_runtime_init": Figure(15, "s", "estimate: CUDA context and TensorFlow GPU libraries"),
    "model_read": Figure(500, "MiB/s", "estimate: SavedModel restore from a local volume"),
    "model_default_size": Figure(1, "GiB", "assumed size of a model that declares no gpu_memory_gib"),
}
