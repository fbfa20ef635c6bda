"""EKS Auto Mode, the provisioner of the GPU pools that set `provisioner: auto-mode` (stack key
`gpu_pools`, section `auto_mode`).

Per cluster, only when some pool uses it: the role Auto Mode's nodes run as and its EKS access
entry (type EC2, access policy AmazonEKSAutoNodePolicy). Per auto-mode pool: an Auto Mode
NodeClass (eks.amazonaws.com/v1: node role, the cluster's private subnets and security group by
ID, ephemeral storage, tags) and a NodePool (karpenter.sh/v1, Auto Mode's own Karpenter:
instance types, capacity type, GPU limit, the pool's taint and labels, disruption).

Sources: the EKS user guide (awsdocs/amazon-eks-user-guide, latest/ug/automode/): create-node-class
.adoc, create-node-pool.adoc, auto-learn-iam.adoc; latest/ug/manage-access/cluster-auth.adoc.

It must not switch the cluster into Auto Mode or give its role Auto Mode's policies
(components/cluster.py does), nor make managed node groups, the NVIDIA device plugin or DCGM
exporter (components/gpu_pools.py, which keeps them off Auto Mode nodes), nor export stack
outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.cluster import ClusterOutputs
from components.config import GpuPoolConfig
from components.iam import role_with_managed_policies, service_trust_policy
from components.karpenter import (
    CAPACITY_TYPE_LABEL,
    CAPACITY_TYPES,
    INSTANCE_TYPE_LABEL,
    NodePoolOutputs,
    node_pool_body,
)
from components.naming import k8s_labels
from components.resources import child_options

NODE_POOL_API = "karpenter.sh/v1"
NODE_CLASS_API = "eks.amazonaws.com/v1"
NODE_CLASS_GROUP = "eks.amazonaws.com"
# The node role's AWS managed policies (auto-learn-iam.adoc, "Node IAM role"): pulling images
# and assuming Pod Identity roles; no CNI or SSM policy (Auto Mode nodes allow no SSM access).
NODE_MANAGED_POLICIES = ("AmazonEKSWorkerNodeMinimalPolicy", "AmazonEC2ContainerRegistryPullOnly")
# A NodeClass's custom node role joins through an access entry of type EC2 with this access
# policy (create-node-class.adoc, "Considerations"; cluster-auth.adoc, "Considerations for EKS
# Auto Mode"); EKS makes one itself only for the compute config's node role, which we do not set.
ACCESS_ENTRY_TYPE = "EC2"
NODE_ACCESS_POLICY = "arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSAutoNodePolicy"


def node_class_spec(
    pool_name: str,
    pool: GpuPoolConfig,
    role_name: str,
    subnet_ids: Sequence[str],
    security_group_id: str,
    tags: Mapping[str, str],
) -> dict[str, Any]:
    """The pool's NodeClass spec (eks.amazonaws.com/v1, create-node-class.adoc "Node Class
    Specification"): the private subnets and the cluster security group by ID (no discovery
    tags needed), the pool's disk as ephemeral storage."""
    return {
        "role": role_name,
        "subnetSelectorTerms": [{"id": s} for s in subnet_ids],
        "securityGroupSelectorTerms": [{"id": security_group_id}],
        # Enforces our NetworkPolicies on Auto Mode nodes, with the network policy controller
        # the vpc-cni add-on's enableNetworkPolicy switches on (its ConfigMap kube-system/
        # amazon-vpc-cni enable-network-policy-controller, aws/amazon-vpc-cni-k8s charts/
        # aws-vpc-cni/templates/configmap.yaml; auto-net-pol.adoc, steps 1 and 2).
        "networkPolicy": "DefaultAllow",
        # The volume that holds images and pods' ephemeral data: sized and provisioned as the
        # pool's images volume on the other provisioners (image_pull.*).
        "ephemeralStorage": {
            "size": f"{pool.disk_size_gib}Gi",
            "iops": pool.image_pull.volume_iops,
            "throughput": pool.volume_throughput_mibps,
        },
        # Auto Mode's instances are not Pulumi's: the provider's default tags never reach them
        # (the cluster role may add them: cluster.auto_mode_tagging_statements).
        "tags": {**tags, "gpu-pool": pool_name},
    }


def node_pool_spec(pool_name: str, pool: GpuPoolConfig, node_class: str) -> dict[str, Any]:
    """The pool's NodePool spec (karpenter.sh/v1 as Auto Mode runs it). Requirements use labels
    Auto Mode supports (create-node-pool.adoc: node.kubernetes.io/instance-type,
    karpenter.sh/capacity-type, kubernetes.io/arch; kubernetes.io/os is listed as not
    supported, Auto Mode is Linux only)."""
    return node_pool_body(
        pool_name,
        pool,
        pool.auto_mode,
        {"group": NODE_CLASS_GROUP, "kind": "NodeClass", "name": node_class},
        [
            {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": list(pool.instance_types)},
            {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": [CAPACITY_TYPES[pool.capacity_type]]},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        ],
    )


# What the rest of the stack needs of the Auto Mode pools: the role every Auto Mode node of
# ours runs as, and per pool its NodePool's name.
AutoModeOutputs = NodePoolOutputs


class AutoModePools(pulumi.ComponentResource):
    """The Auto Mode node role and its access, and a NodeClass + NodePool per pool."""

    outputs: AutoModeOutputs

    def __init__(
        self,
        name: str,
        pools: Mapping[str, GpuPoolConfig],
        *,
        cluster: ClusterOutputs,
        partition: str,
        tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tf-serving-eks:auto_mode:AutoModePools", name, None, opts)
        role, attachments = role_with_managed_policies(
            f"{name}-node-role",
            service_trust_policy("ec2.amazonaws.com"),
            NODE_MANAGED_POLICIES,
            partition,
            self,
            description="EKS Auto Mode GPU nodes",
        )
        access = aws.eks.AccessEntry(
            f"{name}-node-access",
            cluster_name=cluster.name,
            principal_arn=role.arn,
            type=ACCESS_ENTRY_TYPE,
            opts=child_options(self),
        )
        policy = aws.eks.AccessPolicyAssociation(
            f"{name}-node-access-policy",
            cluster_name=cluster.name,
            principal_arn=role.arn,
            policy_arn=NODE_ACCESS_POLICY.format(partition=partition),
            access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
            opts=child_options(self, depends_on=[access]),
        )
        node_pools: dict[str, str] = {}
        for pool_name, pool in pools.items():
            labels = k8s_labels("auto-mode", pool_name)
            spec = self._node_class_spec(pool_name, pool, role.name, cluster, tags)
            node_class = k8s.apiextensions.CustomResource(
                f"{name}-{pool_name}-node-class",
                api_version=NODE_CLASS_API,
                kind="NodeClass",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=pool_name, labels=labels),
                spec=spec,
                opts=child_options(self, cluster.provider, depends_on=[access, policy, *attachments]),
            )
            k8s.apiextensions.CustomResource(
                f"{name}-{pool_name}-node-pool",
                api_version=NODE_POOL_API,
                kind="NodePool",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=pool_name, labels=labels),
                spec=node_pool_spec(pool_name, pool, pool_name),
                opts=child_options(self, cluster.provider, depends_on=[node_class]),
            )
            node_pools[pool_name] = pool_name
        self.outputs = AutoModeOutputs(node_role_name=role.name, node_pools=node_pools)
        self.register_outputs({"node_role_name": role.name})

    @staticmethod
    def _node_class_spec(
        pool_name: str,
        pool: GpuPoolConfig,
        role_name: pulumi.Output[str],
        cluster: ClusterOutputs,
        tags: Mapping[str, str],
    ) -> pulumi.Output[dict[str, Any]]:
        return pulumi.Output.all(role_name, cluster.private_subnet_ids, cluster.node_security_group_id).apply(
            lambda a: node_class_spec(pool_name, pool, a[0], a[1], a[2], tags)
        )
