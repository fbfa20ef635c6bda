"""GPU node pools that scale from zero, with the NVIDIA stack and the cluster autoscaler.

Per pool (keyed by name): one node role and launch template, and one EKS managed node
group per availability zone of the private subnets (keyed by pool and zone name), all on
the NVIDIA EKS AMI with the same taint and labels (the scheduling contract GPU workloads
use), and node-template tags on each Auto Scaling group so cluster-autoscaler can build a
node from nothing, in the right zone. One group per zone because cluster-autoscaler builds
a multi-AZ group's template node in its first zone only (cloudprovider/aws/aws_manager.go,
getAsgTemplate), which a strict zone spread cannot use; --balance-similar-node-groups keeps
the zones level. Per cluster: the NVIDIA device plugin, the DCGM exporter and
cluster-autoscaler, each from its upstream chart, pinned.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import yaml

from components import catalog
from components.cluster import POOL_LABEL, ClusterOutputs
from components.config import GpuPoolConfig, NodeAutoscalingConfig, TaintConfig, zone_share
from components.helm import GPU_NODE_WAIT_SECONDS, helm_release, service_monitor_values
from components.iam import pod_identity_role, policy_document
from components.naming import k8s_labels
from components.nodes import (
    BOTTLEROCKET_DATA_DEVICE,
    ROOT_DEVICE,
    launch_template_args,
    node_group_timeouts,
    node_role,
)

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
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
# Labels that differ between a pool's per-zone groups and that --balance-similar-node-groups
# does not already ignore (processors/nodegroupset/compare_nodegroups.go BasicIgnoredLabels
# and aws_nodegroups.go): `nodegroup-name` is what CA's template node gets from the ASG tag
# eks:nodegroup-name (cloudprovider/aws/aws_manager.go, extractLabelsFromAsg), and EKS nodes
# carry their zone ID as topology.k8s.aws/zone-id.
BALANCING_IGNORED_LABELS = ("nodegroup-name", "topology.k8s.aws/zone-id")
NVIDIA_NAMESPACE = "nvidia"
AUTOSCALER_NAMESPACE = "kube-system"
AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
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

    pool: str
    node_selector: dict[str, str]
    tolerations: list[dict[str, str]]
    gpus_per_node: int
    gpu_model: str
    instance_types: list[str]


def pool_labels(pool_name: str, pool: GpuPoolConfig) -> dict[str, str]:
    """Labels of every node of the pool, the same in each of its zones."""
    labels = {
        POOL_LABEL: pool_name,
        GPU_MODEL_LABEL: pool.gpu_model,
        GPU_PRESENT_LABEL: "true",
        ACCELERATOR_LABEL: catalog.ACCELERATOR_LABEL_VALUES[pool.instances[0].gpu_model],  # type: ignore[index]
        DEVICE_PLUGIN_LABEL: DEVICE_PLUGIN_FROM_HOST if pool.is_bottlerocket else DEVICE_PLUGIN_FROM_CHART,
    }
    if pool.time_slicing_replicas > 1:
        labels[DEVICE_PLUGIN_CONFIG_LABEL] = time_slicing_config_name(pool.time_slicing_replicas)
    return labels


def toleration(taint: TaintConfig) -> dict[str, str]:
    return {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}


def scheduling(pool_name: str, pool: GpuPoolConfig) -> GpuScheduling:
    return GpuScheduling(
        pool=pool_name,
        node_selector={POOL_LABEL: pool_name, GPU_PRESENT_LABEL: "true"},
        tolerations=[toleration(pool.taint)],
        gpus_per_node=pool.gpus_per_node,
        gpu_model=pool.gpu_model,
        instance_types=list(pool.instance_types),
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


def dcgm_exporter_values(
    pools: Mapping[str, GpuPoolConfig], service_monitor: Mapping[str, str] | None
) -> dict[str, Any]:
    return {
        "nodeSelector": {GPU_PRESENT_LABEL: "true"},
        "tolerations": gpu_daemonset_tolerations(pools),
        "serviceMonitor": service_monitor_values(service_monitor, interval="15s"),
        "resources": copy.deepcopy(catalog.DCGM_EXPORTER_RESOURCES),
    }


def cluster_autoscaler_values(
    cluster_name: str,
    region: str,
    cfg: NodeAutoscalingConfig,
    image_tag: str,
    node_selector: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        "autoDiscovery": {"clusterName": cluster_name},
        "image": {"tag": image_tag},
        "rbac": {"serviceAccount": {"create": True, "name": AUTOSCALER_SERVICE_ACCOUNT}},
        "extraArgs": {
            "expander": cfg.expander,
            "balance-similar-node-groups": True,
            "skip-nodes-with-system-pods": False,
            "scale-down-unneeded-time": cfg.scale_down_unneeded_time,
            "scale-down-delay-after-add": cfg.scale_down_delay_after_add,
            "max-node-provision-time": cfg.max_node_provision_time,
            # The chart drops everything from the first "_" of a key (templates/deployment.yaml),
            # so each label is its own --balancing-ignore-label flag.
            **{f"balancing-ignore-label_{i}": label for i, label in enumerate(BALANCING_IGNORED_LABELS, 1)},
        },
        "nodeSelector": dict(node_selector),
        "resources": {
            "requests": {"cpu": "100m", "memory": "300Mi"},
            "limits": {"memory": "600Mi"},
        },
        "containerSecurityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def cluster_autoscaler_policy(cluster_name: str) -> str:
    """Least privilege: read anything, but change only this cluster's Auto Scaling groups."""
    return policy_document(
        [
            {
                "Sid": "ScaleOwnNodeGroups",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"
                    }
                },
            },
            {
                "Sid": "DescribeCapacity",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "autoscaling:DescribeTags",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                    "eks:DescribeNodegroup",
                ],
                "Resource": "*",
            },
        ]
    )


# The type this component was registered under before it was named after its stack key.
FORMER_TYPE = "tf-serving-eks:gpu:GpuNodePool"


class GpuPools(pulumi.ComponentResource):
    scheduling: dict[str, GpuScheduling]
    # Per pool, its node groups by zone name.
    node_group_names: dict[str, dict[str, pulumi.Output[str]]]
    # Per pool, the IAM role its nodes run as.
    node_role_names: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        pools: Mapping[str, GpuPoolConfig],
        autoscaling: NodeAutoscalingConfig,
        *,
        cluster: ClusterOutputs,
        kubernetes_version: catalog.KubernetesVersion,
        region: str,
        partition: str,
        service_monitor: Mapping[str, str] | None,
        monitoring_ready: list[pulumi.Resource],
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
        child = pulumi.ResourceOptions(parent=self)
        k8s_child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)

        self.scheduling = {}
        self.node_group_names = {}
        self.node_role_names = {}
        groups: list[aws.eks.NodeGroup] = []
        for pool_name, pool in pools.items():
            by_zone = self._node_groups(pool_name, pool, child)
            groups.extend(by_zone.values())
            self.scheduling[pool_name] = scheduling(pool_name, pool)
            self.node_group_names[pool_name] = {z: g.node_group_name for z, g in by_zone.items()}

        if pools:
            namespace = k8s.core.v1.Namespace(
                f"{name}-nvidia-namespace",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=NVIDIA_NAMESPACE,
                    labels=k8s_labels(
                        "gpu",
                        NVIDIA_NAMESPACE,
                        # The device plugin mounts host paths and DCGM needs SYS_ADMIN.
                        {"pod-security.kubernetes.io/enforce": "privileged"},
                    ),
                ),
                opts=k8s_child,
            )
            in_namespace = pulumi.ResourceOptions.merge(
                k8s_child, pulumi.ResourceOptions(depends_on=[namespace])
            )
            helm_release(
                f"{name}-device-plugin",
                catalog.CHARTS["nvidia-device-plugin"],
                NVIDIA_NAMESPACE,
                device_plugin_values(pools),
                in_namespace,
                timeout_seconds=GPU_NODE_WAIT_SECONDS,
            )
            helm_release(
                f"{name}-dcgm-exporter",
                catalog.CHARTS["dcgm-exporter"],
                NVIDIA_NAMESPACE,
                dcgm_exporter_values(pools, service_monitor),
                # Its ServiceMonitor needs the Prometheus Operator's CRDs.
                pulumi.ResourceOptions.merge(in_namespace, pulumi.ResourceOptions(depends_on=monitoring_ready)),
                timeout_seconds=GPU_NODE_WAIT_SECONDS,
            )
        if autoscaling.enabled:
            self._cluster_autoscaler(autoscaling, kubernetes_version, region, child, k8s_child, groups)
        self.register_outputs({"node_groups": self.node_group_names})

    def _node_groups(
        self, pool_name: str, pool: GpuPoolConfig, child: pulumi.ResourceOptions
    ) -> dict[str, aws.eks.NodeGroup]:
        """One node group per zone, sharing one role and one launch template: EKS labels
        nodes with their launch template's ID, so one template keeps the groups "similar"."""
        n = f"{self._name}-{pool_name}"
        zones = sorted(self._cluster.private_subnet_ids_by_zone)
        if not zones:
            raise ValueError(f"gpu_pools.{pool_name}: the cluster exposes no private subnets by zone")
        role, attachments = node_role(f"{n}-node-role", self._partition, self)
        self.node_role_names[pool_name] = role.name
        device = BOTTLEROCKET_DATA_DEVICE if pool.is_bottlerocket else ROOT_DEVICE
        template = aws.ec2.LaunchTemplate(
            f"{n}-lt",
            args=launch_template_args(pool.disk_size_gib, {"gpu-pool": pool_name}, device),
            opts=child,
        )
        sizes = zip(
            zone_share(pool.min_size, len(zones)),
            zone_share(pool.desired_size, len(zones)),
            zone_share(pool.max_size, len(zones)),
        )
        groups: dict[str, aws.eks.NodeGroup] = {}
        for zone, (min_size, desired_size, max_size) in zip(zones, sizes):
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
                tags={"gpu-pool": pool_name},
                opts=pulumi.ResourceOptions.merge(
                    child,
                    pulumi.ResourceOptions(
                        depends_on=attachments,
                        # cluster-autoscaler owns the node count once the group exists.
                        ignore_changes=["scalingConfig.desiredSize"],
                        custom_timeouts=node_group_timeouts(max_size, pool.max_unavailable),
                    ),
                ),
            )
            asg_name = group.resources.apply(lambda r: r[0].autoscaling_groups[0].name or "")  # type: ignore[index]
            for key, value in node_template_tags(pool_name, pool, zone, self._region).items():
                suffix = key.removeprefix(f"{NODE_TEMPLATE_TAG}/").replace("/", "-").replace(".", "-")
                aws.autoscaling.Tag(
                    f"{g}-asg-tag-{suffix}",
                    autoscaling_group_name=asg_name,
                    tag=aws.autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                    opts=child,
                )
            groups[zone] = group
        return groups

    def _cluster_autoscaler(
        self,
        cfg: NodeAutoscalingConfig,
        kubernetes_version: catalog.KubernetesVersion,
        region: str,
        child: pulumi.ResourceOptions,
        k8s_child: pulumi.ResourceOptions,
        groups: list[aws.eks.NodeGroup],
    ) -> None:
        n = f"{self._name}-cluster-autoscaler"
        role, association = pod_identity_role(
            n,
            cluster_name=self._cluster.name,
            namespace=AUTOSCALER_NAMESPACE,
            service_account=AUTOSCALER_SERVICE_ACCOUNT,
            description="cluster-autoscaler",
            parent=self,
        )
        aws.iam.RolePolicy(
            f"{n}-policy",
            role=role.id,
            policy=self._cluster.name.apply(cluster_autoscaler_policy),
            opts=child,
        )
        values = self._cluster.name.apply(
            lambda cluster_name: cluster_autoscaler_values(
                cluster_name,
                region,
                cfg,
                catalog.CLUSTER_AUTOSCALER_IMAGE_TAGS[kubernetes_version],
                self._cluster.system_node_selector,
            )
        )
        helm_release(
            n,
            catalog.CHARTS["cluster-autoscaler"],
            AUTOSCALER_NAMESPACE,
            values,
            pulumi.ResourceOptions.merge(
                k8s_child, pulumi.ResourceOptions(depends_on=[association, *groups])
            ),
        )

