"""Facts the program reasons with: Kubernetes versions, add-on pins, instance types.

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

from dataclasses import dataclass
from typing import Literal

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


# --- What a pod can get on a node ----------------------------------------------------------
#
# EKS AMIs reserve for the kubelet and system daemons (kube-reserved) by formula:
# memory 255 MiB + 11 MiB per pod the node may run; CPU 6% of the first core, 1% of the
# second, 0.5% of cores 3-4 and 0.25% of the rest; plus a 100 MiB hard eviction threshold.
# We assume 110 pods for the memory term (an upper bound, so the check errs safe) and add the
# requests of the per-node daemons (aws-node, kube-proxy, pod identity agent, EBS CSI node,
# NVIDIA device plugin, DCGM exporter).
RESERVATION_MAX_PODS = 110
EVICTION_MEMORY_MIB = 100
DAEMONSET_CPU_MILLI = 400
DAEMONSET_MEMORY_MIB = 600


def kube_reserved_cpu_milli(vcpus: int) -> int:
    reserved = 60.0
    if vcpus >= 2:
        reserved += 10
    reserved += 5 * max(0, min(vcpus, 4) - 2)
    reserved += 2.5 * max(0, vcpus - 4)
    return int(round(reserved))


def allocatable(instance: InstanceType) -> tuple[int, int]:
    """CPU (millicores) and memory (MiB) left for our pods on an otherwise empty node."""
    cpu = instance.vcpus * 1000 - kube_reserved_cpu_milli(instance.vcpus) - DAEMONSET_CPU_MILLI
    memory = (
        instance.memory_gib * 1024
        - (255 + 11 * RESERVATION_MAX_PODS)
        - EVICTION_MEMORY_MIB
        - DAEMONSET_MEMORY_MIB
    )
    return cpu, memory


def pod_fit_problems(
    instance: InstanceType, gpus: int, cpu_milli: int, memory_mib: int, gpu_replicas: int = 1
) -> list[str]:
    """Why a pod with these requests can't run on `instance` (empty when it fits)."""
    problems = []
    cpu, memory = allocatable(instance)
    advertised = instance.gpus * gpu_replicas
    if gpus > advertised:
        problems.append(f"asks {gpus} GPU(s) but {instance.name} offers {advertised}")
    if cpu_milli > cpu:
        problems.append(f"asks {cpu_milli}m CPU but {instance.name} leaves {cpu}m for pods")
    if memory_mib > memory:
        problems.append(f"asks {memory_mib}Mi memory but {instance.name} leaves {memory}Mi for pods")
    return problems


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
    )
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
