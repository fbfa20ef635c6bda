"""GPU node pools that scale from zero, with the NVIDIA stack their nodes need (stack key
`gpu_pools`).

Per managed-node-group pool (keyed by name): one node role and launch template, and one EKS
managed node group per availability zone of the private subnets (keyed by pool and zone name), all on
the NVIDIA EKS AMI with the same taint and labels (the scheduling contract GPU workloads
use), and node-template tags on each Auto Scaling group so cluster-autoscaler can build a
node from nothing, in the right zone. One group per zone because cluster-autoscaler builds
a multi-AZ group's template node in its first zone only (cloudprovider/aws/aws_manager.go,
getAsgTemplate), which a strict zone spread cannot use; --balance-similar-node-groups keeps
the zones level. Per cluster: the NVIDIA device plugin and the DCGM exporter, each from its
upstream chart, pinned, for the pools whose nodes can run them. A Karpenter or Auto Mode pool's
nodes come from its NodePool (components/karpenter.py, components/auto_mode.py), with the same
labels and taint (pool_labels): no node group and no node-template tags here. Auto Mode nodes
bring their own NVIDIA device plugin and run neither chart's DaemonSet.

It must not install or configure cluster-autoscaler, Karpenter or Auto Mode (components/node_autoscaling.py,
components/karpenter.py and components/auto_mode.py do,
reading these pools' outputs), nor export stack outputs (components/stack.py does).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import yaml

from components import catalog
from components.cluster import POOL_LABEL, ClusterOutputs
from components.config import GpuPoolConfig, TaintConfig, zone_share
from components.helm import GPU_NODE_WAIT_SECONDS, helm_release, service_monitor_values
from components.nodes import (
    BOTTLEROCKET_DATA_DEVICE,
    ROOT_DEVICE,
    autoscaled_by_tag,
    autoscaling_group_name,
    launch_template_args,
    node_group_timeouts,
    node_role,
)
from components.node_bootstrap import images_volume, launch_template_user_data
from components.podsecurity import namespace
from components.resources import child_options

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_MODEL_LABEL = "tf-serving-eks/gpu-model"
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
# cluster-autoscaler's AWS GPU label (cloudprovider/aws/aws_cloud_provider.go, GPULabel): a
# node carrying it but no allocatable nvidia.com/gpu yet is a GPU still coming, not a node
# without GPUs (processors/customresources/gpu_processor.go), so CA does not add another.
ACCELERATOR_LABEL = "k8s.amazonaws.com/accelerator"
# Who runs the NVIDIA device plugin on a pool's nodes: the chart's DaemonSet, or the host
# (Bottlerocket's NVIDIA variants run nvidia-k8s-device-plugin as a system service).
DEVICE_PLUGIN_LABEL = "tf-serving-eks/nvidia-device-plugin"
DEVICE_PLUGIN_FROM_CHART = "daemonset"
DEVICE_PLUGIN_FROM_HOST = "host"
# EKS Auto Mode labels every node it manages eks.amazonaws.com/compute-type=auto (EKS user guide,
# latest/ug/automode/create-node-pool.adoc, supported labels).
COMPUTE_TYPE_LABEL = "eks.amazonaws.com/compute-type"
AUTO_COMPUTE_TYPE = "auto"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
NVIDIA_NAMESPACE = "nvidia"
NODE_TEMPLATE_TAG = "k8s.io/cluster-autoscaler/node-template"
# EKS maps Kubernetes taint effects to its own enum.
EKS_TAINT_EFFECT = {
    "NoSchedule": "NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
}


@dataclass(frozen=True)
class GpuScheduling:
    """The contract a GPU workload must follow to land on a pool's nodes."""

    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]


@dataclass(frozen=True)
class GpuPoolsOutputs:
    """What the rest of the stack needs of the GPU pools."""

    # Per pool, what a GPU workload carries to land on its nodes.
    scheduling: dict[str, GpuScheduling]
    # Per managed-node-group pool, its node groups' names by zone name.
    node_group_names: dict[str, dict[str, pulumi.Output[str]]]
    # Per pool, the IAM role its nodes run as.
    node_role_names: dict[str, pulumi.Output[str]]
    # Every pool's node groups: what must exist before something that manages them starts.
    node_groups: list[aws.eks.NodeGroup]


def pool_labels(pool_name: str, pool: GpuPoolConfig) -> dict[str, str]:
    """Labels of every node of the pool, the same in each of its zones."""
    labels = {
        POOL_LABEL: pool_name,
        GPU_MODEL_LABEL: pool.gpu_model,
        GPU_PRESENT_LABEL: "true",
        ACCELERATOR_LABEL: catalog.ACCELERATOR_LABEL_VALUES[pool.instances[0].gpu_model],  # type: ignore[index]
        # Auto Mode runs the NVIDIA device plugin inside the node, "not visible as a daemon
        # set" (EKS user guide, auto-accelerated), as Bottlerocket's NVIDIA variants do.
        DEVICE_PLUGIN_LABEL: (
            DEVICE_PLUGIN_FROM_HOST if pool.is_bottlerocket or pool.uses_auto_mode else DEVICE_PLUGIN_FROM_CHART
        ),
    }
    if pool.time_slicing_replicas > 1:
        labels[DEVICE_PLUGIN_CONFIG_LABEL] = time_slicing_config_name(pool.time_slicing_replicas)
    return labels


def toleration(taint: TaintConfig) -> dict[str, str]:
    return {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}


def scheduling(pool_name: str, pool: GpuPoolConfig) -> GpuScheduling:
    return GpuScheduling(
        node_selector={POOL_LABEL: pool_name, GPU_PRESENT_LABEL: "true"},
        tolerations=[toleration(pool.taint)],
    )


def node_template_tags(pool_name: str, pool: GpuPoolConfig, zone: str, region: str) -> dict[str, str]:
    """Auto Scaling group tags cluster-autoscaler reads to imagine a node of an empty group:
    the pool's labels and the group's zone (cloudprovider/aws/README.md, node-template tags;
    tag labels override the zone CA would guess, aws_manager.go buildNodeFromTemplate)."""
    labels = {**pool_labels(pool_name, pool), ZONE_LABEL: zone, REGION_LABEL: region}
    tags = {f"{NODE_TEMPLATE_TAG}/label/{k}": v for k, v in labels.items()}
    tags[f"{NODE_TEMPLATE_TAG}/taint/{pool.taint.key}"] = f"{pool.taint.value}:{pool.taint.effect}"
    tags[f"{NODE_TEMPLATE_TAG}/resources/{GPU_RESOURCE}"] = str(pool.gpus_per_node)
    tags[f"{NODE_TEMPLATE_TAG}/resources/ephemeral-storage"] = f"{pool.disk_size_gib}G"
    return tags


# EKS API WarmPoolConfig.poolState takes these names (EKS user guide, "warm pools with managed
# node groups"; pulumi-aws 7.51.1 eks.NodeGroup warm_pool_config.pool_state: STOPPED, RUNNING,
# HIBERNATED).
WARM_POOL_STATES = {"Stopped": "STOPPED", "Running": "RUNNING", "Hibernated": "HIBERNATED"}


def warm_pool_args(pool: GpuPoolConfig, min_size: int, max_size: int) -> aws.eks.NodeGroupWarmPoolConfigArgs | None:
    """One zone's warm pool: at least `min_size` instances, and never more prepared (warm plus
    in the group) than the group's `max_size` (EC2 Auto Scaling's MaxGroupPreparedCapacity;
    the group's nodes plus the warm ones then never exceed what the pool may have)."""
    warm = pool.warm_pool
    if not warm.enabled:
        return None
    return aws.eks.NodeGroupWarmPoolConfigArgs(
        min_size=min_size,
        max_group_prepared_capacity=max_size,
        pool_state=WARM_POOL_STATES[warm.pool_state],
        reuse_on_scale_in=warm.reuse_on_scale_in,
    )


def time_slicing_config_name(replicas: int) -> str:
    return f"time-sliced-{replicas}"


def device_plugin_config(replicas: int) -> str:
    """A device plugin config file: whole GPUs, or each GPU shared by `replicas` pods."""
    config: dict[str, Any] = {"version": "v1", "flags": {"migStrategy": "none"}}
    if replicas > 1:
        config["sharing"] = {
            "timeSlicing": {
                "renameByDefault": False,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": GPU_RESOURCE, "replicas": replicas}],
            }
        }
    return yaml.safe_dump(config, sort_keys=False)


def gpu_daemonset_tolerations(pools: Mapping[str, GpuPoolConfig]) -> list[dict[str, str]]:
    unique = {(p.taint.key, p.taint.effect) for p in pools.values()}
    return [{"key": k, "operator": "Exists", "effect": e} for k, e in sorted(unique)]


def device_plugin_affinity() -> dict[str, Any]:
    """GPU nodes whose device plugin is ours to run. It replaces the chart's default
    affinity (values.yaml: any of three GPU labels; Helm replaces lists, it does not merge
    them), whose terms would also match Bottlerocket nodes, which run their own plugin."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": GPU_PRESENT_LABEL, "operator": "In", "values": ["true"]},
                            {
                                "key": DEVICE_PLUGIN_LABEL,
                                "operator": "In",
                                "values": [DEVICE_PLUGIN_FROM_CHART],
                            },
                        ]
                    }
                ]
            }
        }
    }


def device_plugin_values(pools: Mapping[str, GpuPoolConfig]) -> dict[str, Any]:
    replicas = sorted({p.time_slicing_replicas for p in pools.values() if p.time_slicing_replicas > 1})
    config_map = {"default": device_plugin_config(1)}
    config_map.update({time_slicing_config_name(r): device_plugin_config(r) for r in replicas})
    return {
        "config": {"map": config_map, "default": "default"},
        "nodeSelector": {GPU_PRESENT_LABEL: "true"},
        "affinity": device_plugin_affinity(),
        "tolerations": gpu_daemonset_tolerations(pools),
        "resources": copy.deepcopy(catalog.DEVICE_PLUGIN_RESOURCES),
    }


def not_on_auto_mode_nodes() -> dict[str, Any]:
    """GPU nodes that are not EKS Auto Mode's. Auto Mode nodes are appliances (read-only root,
    SELinux enforcing, no host access: latest/ug/automode/automode.adoc, "Nodes") with a GPU
    stack of AWS's; the guide documents no DCGM host engine or exporter for them, so the
    chart's exporter (host paths, SYS_ADMIN) is kept off rather than left to crash-loop."""
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": COMPUTE_TYPE_LABEL, "operator": "NotIn", "values": [AUTO_COMPUTE_TYPE]}]}
                ]
            }
        }
    }


def runs_gpu_daemonsets(pool: GpuPoolConfig) -> bool:
    """Whether the pool's nodes take the chart DaemonSets (device plugin, DCGM exporter)."""
    return not pool.uses_auto_mode


def dcgm_exporter_values(
    pools: Mapping[str, GpuPoolConfig],
    service_monitor: Mapping[str, str] | None,
    beside_auto_mode: bool = False,
) -> dict[str, Any]:
    """`pools`: those whose nodes run it; `beside_auto_mode`: the cluster also has Auto Mode
    GPU nodes (labelled gpu.present like ours), which it must stay off."""
    values: dict[str, Any] = {
        "nodeSelector": {GPU_PRESENT_LABEL: "true"},
        "tolerations": gpu_daemonset_tolerations(pools),
        "serviceMonitor": service_monitor_values(service_monitor, interval="15s"),
        "resources": copy.deepcopy(catalog.DCGM_EXPORTER_RESOURCES),
    }
    if beside_auto_mode:
        values["affinity"] = not_on_auto_mode_nodes()
    return values


# The type this component was registered under before it was named after its stack key.
FORMER_TYPE = "tf-serving-eks:gpu:GpuNodePool"


class GpuPools(pulumi.ComponentResource):
    """Every GPU pool's node groups, and the NVIDIA device plugin and DCGM exporter on them."""

    outputs: GpuPoolsOutputs

    def __init__(
        self,
        name: str,
        pools: Mapping[str, GpuPoolConfig],
        *,
        cluster: ClusterOutputs,
        region: str,
        partition: str,
        service_monitor: Mapping[str, str] | None,
        monitoring_ready: list[pulumi.Resource],
        karpenter_node_role_name: pulumi.Output[str] | None = None,
        auto_mode_node_role_name: pulumi.Output[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        # Deployed stacks hold this component, and through it every child, under the old type.
        renamed = pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=FORMER_TYPE)])
        super().__init__(
            "tf-serving-eks:gpu_pools:GpuPools", name, None, pulumi.ResourceOptions.merge(opts, renamed)
        )
        self._name = name
        self._cluster = cluster
        self._partition = partition
        self._region = region

        node_role_names: dict[str, pulumi.Output[str]] = {}
        node_group_names: dict[str, dict[str, pulumi.Output[str]]] = {}
        groups: list[aws.eks.NodeGroup] = []
        for pool_name, pool in pools.items():
            if pool.uses_karpenter:
                assert karpenter_node_role_name is not None, "Karpenter pools need Karpenter's node role"
                node_role_names[pool_name] = karpenter_node_role_name
                continue
            if pool.uses_auto_mode:
                assert auto_mode_node_role_name is not None, "Auto Mode pools need its node role"
                node_role_names[pool_name] = auto_mode_node_role_name
                continue
            role, by_zone = self._node_groups(pool_name, pool)
            node_role_names[pool_name] = role.name
            node_group_names[pool_name] = {z: g.node_group_name for z, g in by_zone.items()}
            groups.extend(by_zone.values())

        # The charts' DaemonSets serve only pools whose nodes run them: a stack whose pools are
        # all Auto Mode's installs neither.
        daemonset_pools = {n: p for n, p in pools.items() if runs_gpu_daemonsets(p)}
        if daemonset_pools:
            nvidia = namespace(
                f"{name}-nvidia-namespace",
                NVIDIA_NAMESPACE,
                component="gpu",
                # The device plugin mounts host paths and DCGM needs SYS_ADMIN.
                level="privileged",
                opts=child_options(self, cluster.provider),
            )
            helm_release(
                f"{name}-device-plugin",
                catalog.CHARTS["nvidia-device-plugin"],
                NVIDIA_NAMESPACE,
                device_plugin_values(daemonset_pools),
                child_options(self, cluster.provider, depends_on=[nvidia]),
                timeout_seconds=GPU_NODE_WAIT_SECONDS,
            )
            helm_release(
                f"{name}-dcgm-exporter",
                catalog.CHARTS["dcgm-exporter"],
                NVIDIA_NAMESPACE,
                dcgm_exporter_values(
                    daemonset_pools, service_monitor, beside_auto_mode=len(daemonset_pools) < len(pools)
                ),
                # Its ServiceMonitor needs the Prometheus Operator's CRDs.
                child_options(self, cluster.provider, depends_on=[nvidia, *monitoring_ready]),
                timeout_seconds=GPU_NODE_WAIT_SECONDS,
            )
        self.outputs = GpuPoolsOutputs(
            scheduling={pool_name: scheduling(pool_name, pool) for pool_name, pool in pools.items()},
            node_group_names=node_group_names,
            node_role_names=node_role_names,
            node_groups=groups,
        )
        self.register_outputs({"node_groups": node_group_names})

    def _node_groups(
        self, pool_name: str, pool: GpuPoolConfig
    ) -> tuple[aws.iam.Role, dict[str, aws.eks.NodeGroup]]:
        """The pool's node role, and one node group per zone, sharing that role and one launch
        template: EKS labels nodes with their launch template's ID, so one template keeps the
        groups "similar"."""
        n = f"{self._name}-{pool_name}"
        zones = sorted(self._cluster.private_subnet_ids_by_zone)
        if not zones:
            raise ValueError(f"gpu_pools.{pool_name}: the cluster exposes no private subnets by zone")
        role, attachments = node_role(f"{n}-node-role", self._partition, self)
        device = BOTTLEROCKET_DATA_DEVICE if pool.is_bottlerocket else ROOT_DEVICE
        volume = images_volume(pool)
        template = aws.ec2.LaunchTemplate(
            f"{n}-lt",
            args=launch_template_args(
                pool.disk_size_gib,
                {"gpu-pool": pool_name},
                device,
                user_data=launch_template_user_data(pool),
                iops=volume["iops"],
                throughput_mibps=volume["throughput"],
                snapshot_id=volume.get("snapshotId"),
            ),
            opts=child_options(self),
        )
        sizes = zip(
            zone_share(pool.min_size, len(zones)),
            zone_share(pool.desired_size, len(zones)),
            zone_share(pool.max_size, len(zones)),
        )
        groups: dict[str, aws.eks.NodeGroup] = {}
        warm_sizes = zone_share(pool.warm_pool.min_size, len(zones))
        for (zone, (min_size, desired_size, max_size)), warm_min in zip(zip(zones, sizes), warm_sizes):
            g = f"{n}-{zone}"
            group = aws.eks.NodeGroup(
                f"{g}-nodes",
                cluster_name=self._cluster.name,
                node_role_arn=role.arn,
                subnet_ids=self._cluster.private_subnet_ids_by_zone[zone],
                ami_type=pool.ami_type,
                capacity_type=pool.capacity_type,
                instance_types=list(pool.instance_types),
                labels=pool_labels(pool_name, pool),
                taints=[
                    aws.eks.NodeGroupTaintArgs(
                        key=pool.taint.key,
                        value=pool.taint.value,
                        effect=EKS_TAINT_EFFECT[pool.taint.effect],
                    )
                ],
                scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                    min_size=min_size, desired_size=desired_size, max_size=max_size
                ),
                update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=pool.max_unavailable),
                launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                    id=template.id, version=template.latest_version.apply(str)
                ),
                warm_pool_config=warm_pool_args(pool, warm_min, max_size),
                tags={"gpu-pool": pool_name},
                opts=child_options(
                    self,
                    depends_on=attachments,
                    # cluster-autoscaler owns the node count once the group exists.
                    ignore_changes=["scalingConfig.desiredSize"],
                    custom_timeouts=node_group_timeouts(max_size, pool.max_unavailable),
                ),
            )
            asg_name = autoscaling_group_name(group)
            for key, value in node_template_tags(pool_name, pool, zone, self._region).items():
                suffix = key.removeprefix(f"{NODE_TEMPLATE_TAG}/").replace("/", "-").replace(".", "-")
                aws.autoscaling.Tag(
                    f"{g}-asg-tag-{suffix}",
                    autoscaling_group_name=asg_name,
                    tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                    opts=child_options(self),
                )
            autoscaled_by_tag(g, group, self)
            groups[zone] = group
        return role, groups
