"""Karpenter, the provisioner of the GPU pools that set `provisioner: karpenter` (stack key
`gpu_pools`, section `karpenter`).

Per cluster, only when some pool uses it: the karpenter-crd chart, then the karpenter chart
(both pinned, catalog.CHARTS) on the system node group, with its controller's EKS Pod Identity
role and the IAM policy Karpenter documents for v1.14, scoped by the cluster's tags; the role
its nodes run as and the EKS access entry that lets them join; the interruption queue, its
queue policy and the EventBridge rules that feed it. Per Karpenter pool: an EC2NodeClass
(AMI, volumes, metadata options, subnets and security groups by discovery tag, tags) and a
NodePool (instance types, capacity type, GPU limit, the pool's taint and labels, disruption).

It must not create managed node groups, the NVIDIA device plugin or DCGM exporter
(components/gpu_pools.py does, for every pool), nor tag the cluster's subnets and security
group for discovery (components/cluster.py does), nor export stack outputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import catalog
from components.cluster import DISCOVERY_TAG, ClusterOutputs
from components.config import GpuPoolConfig, karpenter_controller_replicas
from components.config.gpu_pools import NodeDisruptionConfig
from components.gpu_pools import GPU_RESOURCE, pool_labels
from components.helm import controller, helm_release, service_monitor_values
from components.iam import policy_document
from components.naming import k8s_labels
from components.nodes import BOTTLEROCKET_DATA_DEVICE, METADATA_HOP_LIMIT, ROOT_DEVICE, node_role
from components.node_bootstrap import images_volume, pool_user_data
from components.resources import child_options

KARPENTER_NAMESPACE = "kube-system"
KARPENTER_SERVICE_ACCOUNT = "karpenter"
NODE_POOL_API = "karpenter.sh/v1"
NODE_CLASS_API = "karpenter.k8s.aws/v1"
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
CAPACITY_TYPE_LABEL = "karpenter.sh/capacity-type"
# Karpenter's capacity types (NodePool docs, karpenter.sh/capacity-type: spot, on-demand).
CAPACITY_TYPES = {"SPOT": "spot", "ON_DEMAND": "on-demand"}
# components/node_bootstrap.images_volume's EC2 API names, as the EC2NodeClass spells them.
EBS_FIELDS = {"iops": "iops", "throughput": "throughput", "snapshotId": "snapshotID"}
# Bottlerocket's OS volume, as Karpenter's default block device mappings for the family have
# it (website/content/en/v1.14/concepts/nodeclasses.md, spec.blockDeviceMappings: Bottlerocket).
BOTTLEROCKET_OS_VOLUME = "4Gi"

# The EventBridge rules Karpenter's getting-started template sends to the interruption queue
# (website/content/en/v1.14/getting-started/getting-started-with-karpenter/cloudformation.yaml):
# by our rule name, the documented event pattern.
INTERRUPTION_EVENTS: dict[str, dict[str, list[str]]] = {
    "scheduled-change": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "instance-state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "capacity-reservation-interruption": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"],
    },
}
# The CRDs outlive a failed or removed release: deleting a CRD deletes every NodePool and
# NodeClaim of it, and Karpenter then terminates their nodes. `keep` makes Helm leave the
# object on uninstall (Helm docs, "Tell Helm Not To Uninstall a Resource"); the chart adds
# these annotations to each CRD (karpenter-crd 1.14.1 values.yaml, additionalAnnotations).
CRD_VALUES = {"additionalAnnotations": {"helm.sh/resource-policy": "keep"}}
# The same template: messages older than 5 minutes are of no use to the controller.
QUEUE_RETENTION_SECONDS = 300


def controller_policy_statements(
    partition: str, region: str, account_id: str, cluster: str, node_role_arn: str, queue_arn: str
) -> list[dict[str, Any]]:
    """The controller's permissions: the NodeLifecycle, IAMIntegration, EKSIntegration,
    Interruption and ResourceDiscovery policies of Karpenter's v1.14 CloudFormation template
    (website/content/en/v1.14/getting-started/getting-started-with-karpenter/cloudformation.yaml,
    explained in reference/cloudformation.md), with the same Sids and conditions. Left out: the
    ZonalShift policy (settings.enableZonalShift stays off)."""
    ec2 = f"arn:{partition}:ec2:{region}"
    owned = {f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned", "aws:RequestTag/eks:eks-cluster-name": cluster}
    resource_owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned"}
    tagged_by_karpenter = [
        f"{ec2}:*:{kind}/*"
        for kind in ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")
    ]
    profile = f"arn:{partition}:iam::{account_id}:instance-profile/*"
    return [
        {
            "Sid": "AllowScopedEC2InstanceAccessActions",
            "Effect": "Allow",
            "Resource": [
                f"{ec2}::image/*",
                f"{ec2}::snapshot/*",
                f"{ec2}:*:security-group/*",
                f"{ec2}:*:subnet/*",
                f"{ec2}:*:capacity-reservation/*",
                f"{ec2}:*:placement-group/*",
            ],
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
        },
        {
            "Sid": "AllowScopedEC2LaunchTemplateAccessActions",
            "Effect": "Allow",
            "Resource": f"{ec2}:*:launch-template/*",
            "Action": ["ec2:RunInstances", "ec2:CreateFleet"],
            "Condition": {
                "StringEquals": resource_owned,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedEC2InstanceActionsWithTags",
            "Effect": "Allow",
            "Resource": tagged_by_karpenter,
            "Action": ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            "Condition": {
                "StringEquals": owned,
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceCreationTagging",
            "Effect": "Allow",
            "Resource": tagged_by_karpenter,
            "Action": "ec2:CreateTags",
            "Condition": {
                "StringEquals": {**owned, "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowScopedResourceTagging",
            "Effect": "Allow",
            "Resource": f"{ec2}:*:instance/*",
            "Action": "ec2:CreateTags",
            "Condition": {
                "StringEquals": resource_owned,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]},
            },
        },
        {
            "Sid": "AllowScopedDeletion",
            "Effect": "Allow",
            "Resource": [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
            "Action": ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
            "Condition": {
                "StringEquals": resource_owned,
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
        },
        {
            "Sid": "AllowPassingInstanceRole",
            "Effect": "Allow",
            "Resource": node_role_arn,
            "Action": "iam:PassRole",
            "Condition": {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}},
        },
        {
            "Sid": "AllowScopedInstanceProfileCreationActions",
            "Effect": "Allow",
            "Resource": profile,
            "Action": ["iam:CreateInstanceProfile"],
            "Condition": {
                "StringEquals": {**owned, "aws:RequestTag/topology.kubernetes.io/region": region},
                "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
        {
            "Sid": "AllowScopedInstanceProfileTagActions",
            "Effect": "Allow",
            "Resource": profile,
            "Action": ["iam:TagInstanceProfile"],
            "Condition": {
                "StringEquals": {
                    **resource_owned,
                    "aws:ResourceTag/topology.kubernetes.io/region": region,
                    **owned,
                    "aws:RequestTag/topology.kubernetes.io/region": region,
                },
                "StringLike": {
                    "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                },
            },
        },
        {
            "Sid": "AllowScopedInstanceProfileActions",
            "Effect": "Allow",
            "Resource": profile,
            "Action": ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
            "Condition": {
                "StringEquals": {**resource_owned, "aws:ResourceTag/topology.kubernetes.io/region": region},
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
            },
        },
        {
            "Sid": "AllowAPIServerEndpointDiscovery",
            "Effect": "Allow",
            "Resource": f"arn:{partition}:eks:{region}:{account_id}:cluster/{cluster}",
            "Action": "eks:DescribeCluster",
        },
        {
            "Sid": "AllowInterruptionQueueActions",
            "Effect": "Allow",
            "Resource": queue_arn,
            "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
        },
        {
            "Sid": "AllowRegionalReadActions",
            "Effect": "Allow",
            "Resource": "*",
            "Action": [
                "ec2:DescribeCapacityReservations",
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribePlacementGroups",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory",
                "ec2:DescribeSubnets",
            ],
            "Condition": {"StringEquals": {"aws:RequestedRegion": region}},
        },
        {
            "Sid": "AllowSSMReadActions",
            "Effect": "Allow",
            "Resource": f"arn:{partition}:ssm:{region}::parameter/aws/service/*",
            "Action": "ssm:GetParameter",
        },
        {"Sid": "AllowPricingReadActions", "Effect": "Allow", "Resource": "*", "Action": "pricing:GetProducts"},
        {
            "Sid": "AllowUnscopedInstanceProfileListAction",
            "Effect": "Allow",
            "Resource": "*",
            "Action": "iam:ListInstanceProfiles",
        },
        {
            "Sid": "AllowInstanceProfileReadActions",
            "Effect": "Allow",
            "Resource": profile,
            "Action": "iam:GetInstanceProfile",
        },
    ]


def queue_policy(queue_arn: str) -> dict[str, Any]:
    """EventBridge (and SQS itself) may send to the queue; nothing over plain HTTP (the
    template's KarpenterInterruptionQueuePolicy)."""
    return {
        "Version": "2012-10-17",
        "Id": "EC2InterruptionPolicy",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                "Principal": "*",
            },
        ],
    }


def karpenter_values(
    cluster_name: str,
    queue_name: str,
    environment: str,
    node_selector: Mapping[str, str],
    service_monitor: Mapping[str, str] | None,
) -> dict[str, Any]:
    """The karpenter chart's values (charts/karpenter-1.14.1/values.yaml)."""
    return {
        "settings": {"clusterName": cluster_name, "interruptionQueue": queue_name},
        "serviceAccount": {"create": True, "name": KARPENTER_SERVICE_ACCOUNT},
        "replicas": karpenter_controller_replicas(environment),
        # Beside the chart's own affinity (no karpenter.sh/nodepool label: never on a node it
        # launched), on the system node group.
        "nodeSelector": {"kubernetes.io/os": "linux", **node_selector},
        # The getting-started install's figures (website/content/en/v1.14/getting-started/
        # getting-started-with-karpenter/scripts/step08-apply-helm-chart.sh): 1 CPU and 1Gi,
        # limits equal to requests (Guaranteed QoS: the last pod the kubelet evicts).
        "controller": {
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        },
        "serviceMonitor": service_monitor_values(service_monitor),
    }


def block_device_mappings(pool: GpuPoolConfig) -> list[dict[str, Any]]:
    """An encrypted gp3 volume for images and models, of the pool's size: the root volume on
    AL2023, the data volume on Bottlerocket (whose OS volume keeps its default size)."""

    def volume(device: str, size: str, extra: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "deviceName": device,
            "ebs": {
                "volumeSize": size,
                "volumeType": "gp3",
                "encrypted": True,
                "deleteOnTermination": True,
                # EC2NodeClass v1 blockDeviceMappings[].ebs: iops, throughput, snapshotID.
                **{EBS_FIELDS[k]: v for k, v in extra.items()},
            },
        }

    images = images_volume(pool)
    if pool.is_bottlerocket:
        return [
            volume(ROOT_DEVICE, BOTTLEROCKET_OS_VOLUME, {}),
            volume(BOTTLEROCKET_DATA_DEVICE, f"{pool.disk_size_gib}Gi", images),
        ]
    return [volume(ROOT_DEVICE, f"{pool.disk_size_gib}Gi", images)]


def ec2_node_class_spec(
    pool_name: str, pool: GpuPoolConfig, cluster_name: str, role_name: str, tags: Mapping[str, str]
) -> dict[str, Any]:
    """The pool's EC2NodeClass spec (karpenter.k8s.aws/v1)."""
    discovery = [{"tags": {DISCOVERY_TAG: cluster_name}}]
    return {
        "amiSelectorTerms": [{"alias": catalog.KARPENTER_AMI_ALIASES[pool.ami_type]}],
        "role": role_name,
        "subnetSelectorTerms": discovery,
        "securityGroupSelectorTerms": discovery,
        # IMDSv2 only, one hop: no pod reaches the node role (components/nodes.py).
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": METADATA_HOP_LIMIT,
            "httpTokens": "required",
        },
        "blockDeviceMappings": block_device_mappings(pool),
        # Reservations Karpenter fills first (v1.14 tasks/odcrs.md: it does no open matching,
        # so every reservation to use is listed); the controller may already describe and
        # launch into them (controller_policy_statements).
        **({"capacityReservationSelectorTerms": [t.selector() for t in pool.karpenter.capacity_reservations]}
           if pool.karpenter.capacity_reservations else {}),
        # Karpenter puts its own NodeConfig (cluster, kubelet) before ours and nodeadm merges
        # them (components/node_bootstrap.py).
        **({"userData": user_data} if (user_data := pool_user_data(pool, karpenter=True)) else {}),
        # The instance store as one RAID0 array for the kubelet and containerd (v1.14
        # concepts/nodeclasses.md, instanceStorePolicy): what nodeadm's localStorage does on
        # managed node groups, and Karpenter then counts it as the node's ephemeral storage.
        **({"instanceStorePolicy": "RAID0"} if pool.instance_store == "raid0" else {}),
        # Karpenter's instances are not Pulumi's: the provider's default tags never reach them.
        "tags": {**tags, "gpu-pool": pool_name},
    }


def capacity_types(pool: GpuPoolConfig) -> list[str]:
    """The pool's capacity type, after `reserved` when it lists reservations: Karpenter
    prefers reserved capacity and falls back to the others the NodePool admits (v1.14
    tasks/odcrs.md, "Prioritization Behavior")."""
    own = [CAPACITY_TYPES[pool.capacity_type]]
    return ["reserved", *own] if pool.karpenter.capacity_reservations else own


def node_pool_body(
    pool_name: str,
    pool: GpuPoolConfig,
    settings: NodeDisruptionConfig,
    node_class_ref: dict[str, str],
    requirements: list[dict[str, Any]],
) -> dict[str, Any]:
    """A karpenter.sh/v1 NodePool spec, ours or EKS Auto Mode's: the same labels and taint as a
    managed node group pool's nodes (gpu_pools.pool_labels), so the serving workload schedules
    alike; max_size nodes' worth of GPUs as the limit; the pool's disruption settings."""
    return {
        "template": {
            "metadata": {"labels": pool_labels(pool_name, pool)},
            "spec": {
                "nodeClassRef": node_class_ref,
                "requirements": requirements,
                "taints": [{"key": pool.taint.key, "value": pool.taint.value, "effect": pool.taint.effect}],
                "expireAfter": settings.expire_after,
            },
        },
        # max_size nodes' worth of GPUs: the pool's ceiling, as for a managed node group pool.
        "limits": {GPU_RESOURCE: str(pool.max_size * pool.gpus_per_node)},
        "disruption": {
            "consolidationPolicy": settings.consolidation_policy,
            "consolidateAfter": settings.consolidate_after,
            "budgets": [b.model_dump(exclude_none=True) for b in settings.budgets],
        },
    }


def node_pool_spec(pool_name: str, pool: GpuPoolConfig, node_class: str) -> dict[str, Any]:
    """The pool's NodePool spec (karpenter.sh/v1) for our Karpenter."""
    return node_pool_body(
        pool_name,
        pool,
        pool.karpenter,
        {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class},
        [
            {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": list(pool.instance_types)},
            {"key": CAPACITY_TYPE_LABEL, "operator": "In", "values": capacity_types(pool)},
            {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        ],
    )


@dataclass(frozen=True)
class NodePoolOutputs:
    """What the rest of the stack needs of a provisioner of NodePools (Karpenter, Auto Mode)."""

    # The role every node of these pools runs as (one for all of them).
    node_role_name: pulumi.Output[str]
    # Per pool, its NodePool's name.
    node_pools: dict[str, str]


KarpenterOutputs = NodePoolOutputs


class Karpenter(pulumi.ComponentResource):
    """Karpenter's controller, its AWS side, and an EC2NodeClass + NodePool per pool."""

    outputs: KarpenterOutputs

    def __init__(
        self,
        name: str,
        pools: Mapping[str, GpuPoolConfig],
        *,
        cluster: ClusterOutputs,
        environment: str,
        region: str,
        partition: str,
        account_id: str,
        tags: Mapping[str, str],
        service_monitor: Mapping[str, str] | None,
        monitoring_ready: list[pulumi.Resource],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tf-serving-eks:karpenter:Karpenter", name, None, opts)
        role, attachments = node_role(f"{name}-node-role", partition, self)
        # Karpenter's nodes join through an access entry of type EC2_LINUX (Bottlerocket
        # included); EKS makes it itself only for managed node groups (EKS user guide,
        # "Create access entries": types).
        access = aws.eks.AccessEntry(
            f"{name}-node-access",
            cluster_name=cluster.name,
            principal_arn=role.arn,
            type="EC2_LINUX",
            opts=child_options(self),
        )
        queue = aws.sqs.Queue(
            f"{name}-interruption",
            message_retention_seconds=QUEUE_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,
            opts=child_options(self),
        )
        aws.sqs.QueuePolicy(
            f"{name}-interruption-policy",
            queue_url=queue.url,
            policy=queue.arn.apply(lambda arn: json.dumps(queue_policy(arn))),
            opts=child_options(self),
        )
        for rule_name, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{rule_name}",
                description=f"Karpenter interruption handling: {pattern['detail-type'][0]}",
                event_pattern=json.dumps(pattern),
                opts=child_options(self),
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{rule_name}-target",
                rule=rule.name,
                target_id="KarpenterInterruptionQueueTarget",
                arn=queue.arn,
                opts=child_options(self),
            )
        crds = helm_release(
            f"{name}-crd",
            catalog.CHARTS["karpenter-crd"],
            KARPENTER_NAMESPACE,
            CRD_VALUES,
            child_options(self, cluster.provider),
        )
        policy = pulumi.Output.all(cluster.name, role.arn, queue.arn).apply(
            lambda a: policy_document(controller_policy_statements(partition, region, account_id, a[0], a[1], a[2]))
        )
        values = pulumi.Output.all(cluster.name, queue.name).apply(
            lambda a: karpenter_values(a[0], a[1], environment, cluster.system_node_selector, service_monitor)
        )
        release = controller(
            name,
            catalog.CHARTS["karpenter"],
            namespace=KARPENTER_NAMESPACE,
            service_account=KARPENTER_SERVICE_ACCOUNT,
            description="Karpenter controller: launches and removes this cluster's GPU nodes",
            cluster_name=cluster.name,
            policy=policy,
            values=values,
            parent=self,
            provider=cluster.provider,
            depends_on=[crds, *monitoring_ready],
            skip_crds=True,
        ).release
        node_pools: dict[str, str] = {}
        for pool_name, pool in pools.items():
            labels = k8s_labels("karpenter", pool_name)
            node_class = k8s.apiextensions.CustomResource(
                f"{name}-{pool_name}-node-class",
                api_version=NODE_CLASS_API,
                kind="EC2NodeClass",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=pool_name, labels=labels),
                spec=self._node_class_spec(pool_name, pool, cluster.name, role.name, tags),
                opts=child_options(self, cluster.provider, depends_on=[crds, access, *attachments]),
            )
            k8s.apiextensions.CustomResource(
                f"{name}-{pool_name}-node-pool",
                api_version=NODE_POOL_API,
                kind="NodePool",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=pool_name, labels=labels),
                spec=node_pool_spec(pool_name, pool, pool_name),
                opts=child_options(self, cluster.provider, depends_on=[crds, node_class, release]),
            )
            node_pools[pool_name] = pool_name
        self.outputs = KarpenterOutputs(node_role_name=role.name, node_pools=node_pools)
        self.register_outputs({"node_role_name": role.name})

    @staticmethod
    def _node_class_spec(
        pool_name: str,
        pool: GpuPoolConfig,
        cluster_name: pulumi.Output[str],
        role_name: pulumi.Output[str],
        tags: Mapping[str, str],
    ) -> pulumi.Output[dict[str, Any]]:
        return pulumi.Output.all(cluster_name, role_name).apply(
            lambda a: ec2_node_class_spec(pool_name, pool, a[0], a[1], tags)
        )
