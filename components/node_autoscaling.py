"""cluster-autoscaler (stack key `node_autoscaling`): the EKS managed node groups' node
counts follow the pods that need them, GPU pools scaling from zero included.

It installs cluster-autoscaler from its upstream chart, pinned to the cluster's Kubernetes
minor, with an EKS Pod Identity role that may change only this cluster's Auto Scaling
groups. It discovers the groups by the tags EKS puts on them and the one we put on ours
(components/nodes.py), so on a cluster in mode existing it never scales the owners' groups; it must not create or size
node groups, nor write the node-template tags that describe an empty group (the GPU pools
do, components/gpu_pools.py), nor export stack outputs (components/stack.py does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi

from components import catalog
from components.cluster import ClusterOutputs
from components.config import NodeAutoscalingConfig
from components.gpu_pools import FORMER_TYPE as FORMER_POOLS_TYPE, GpuPoolsOutputs
from components.helm import controller
from components.iam import policy_document
from components.nodes import AUTOSCALED_BY_TAG

AUTOSCALER_NAMESPACE = "kube-system"
AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
# Labels that differ between a pool's per-zone groups and that --balance-similar-node-groups
# does not already ignore (processors/nodegroupset/compare_nodegroups.go BasicIgnoredLabels
# and aws_nodegroups.go): `nodegroup-name` is what CA's template node gets from the ASG tag
# eks:nodegroup-name (cloudprovider/aws/aws_manager.go, extractLabelsFromAsg), and EKS nodes
# carry their zone ID as topology.k8s.aws/zone-id.
BALANCING_IGNORED_LABELS = ("nodegroup-name", "topology.k8s.aws/zone-id")


def cluster_autoscaler_values(
    cluster_name: str,
    stack: str,
    region: str,
    cfg: NodeAutoscalingConfig,
    image_tag: str,
    node_selector: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "cloudProvider": "aws",
        "awsRegion": region,
        # The chart's two default tags (EKS's, on every managed group of the cluster) and
        # ours, on this stack's groups only (components/nodes.py, AUTOSCALED_BY_TAG); a
        # group must carry all three (aws_manager.go, parseASGAutoDiscoverySpec: one spec's
        # tags are ANDed).
        "autoDiscovery": {
            "clusterName": cluster_name,
            "tags": [
                "k8s.io/cluster-autoscaler/enabled",
                f"k8s.io/cluster-autoscaler/{cluster_name}",
                f"{AUTOSCALED_BY_TAG}={stack}",
            ],
        },
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


def cluster_autoscaler_policy(cluster_name: str, stack: str) -> str:
    """Least privilege: read anything, but change only this stack's Auto Scaling groups of
    this cluster."""
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
                        f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned",
                        f"aws:ResourceTag/{AUTOSCALED_BY_TAG}": stack,
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


@dataclass(frozen=True)
class NodeAutoscalerOutputs:
    """What the autoscaler leaves for the stack to show (component outputs)."""

    # The IAM role cluster-autoscaler runs as.
    role_arn: pulumi.Output[str]


class NodeAutoscaler(pulumi.ComponentResource):
    """cluster-autoscaler and its identity. `name` is the GPU pools component's: that
    component installed cluster-autoscaler before it had a component of its own, and the
    resources keep the names (`<name>-cluster-autoscaler-*`) and URNs they had there."""

    outputs: NodeAutoscalerOutputs

    def __init__(
        self,
        name: str,
        cfg: NodeAutoscalingConfig,
        *,
        cluster: ClusterOutputs,
        gpu_pools: GpuPoolsOutputs,
        region: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tf-serving-eks:node_autoscaling:NodeAutoscaler", name, None, opts)
        # The GPU pools component as deployed stacks hold it: its former type at the stack
        # root. Each child answers to its URN under it, so nothing is replaced.
        former_parent = pulumi.create_urn(name, FORMER_POOLS_TYPE)
        n = f"{name}-cluster-autoscaler"
        values = cluster.name.apply(
            lambda cluster_name: cluster_autoscaler_values(
                cluster_name,
                pulumi.get_stack(),
                region,
                cfg,
                # The cluster's version (an existing cluster's as looked up).
                catalog.CLUSTER_AUTOSCALER_IMAGE_TAGS[cluster.version],
                cluster.system_node_selector,
            )
        )
        installed = controller(
            n,
            catalog.CHARTS["cluster-autoscaler"],
            namespace=AUTOSCALER_NAMESPACE,
            service_account=AUTOSCALER_SERVICE_ACCOUNT,
            description="cluster-autoscaler",
            cluster_name=cluster.name,
            policy=cluster.name.apply(lambda cluster_name: cluster_autoscaler_policy(cluster_name, pulumi.get_stack())),
            values=values,
            parent=self,
            provider=cluster.provider,
            depends_on=gpu_pools.node_groups,
            wait_for_policy=False,
            aliases=[pulumi.Alias(parent=former_parent)],
        )
        self.outputs = NodeAutoscalerOutputs(role_arn=installed.role.arn)
        self.register_outputs({"role_arn": self.outputs.role_arn})
