"""Pieces every EKS managed node group of ours shares: node role, launch template, timeouts,
and the tag that lets this stack's cluster-autoscaler find the group.

It must not create node groups: the cluster's system group and the GPU pools make their
own, from these pieces.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from components.iam import role_with_managed_policies, service_trust_policy
from components.resources import child_options

# No AmazonEKS_CNI_Policy: the VPC CNI has its own Pod Identity role (cluster.py). What is
# left is what the kubelet, image pulls, SSM and the Pod Identity agent (hostNetwork,
# eks-auth:AssumeRoleForPodIdentity is in AmazonEKSWorkerNodePolicy) need.
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)
# One hop: IMDSv2 answers the node and hostNetwork pods, but its PUT token response dies
# at the pod's network namespace, so no pod can take the node role's credentials (EKS Best
# Practices Guide, Security: "Restrict access to the instance profile assigned to the worker
# node"). Every pod that calls AWS gets its region/VPC as config and its credentials from
# EKS Pod Identity or IRSA (tests/test_cluster.py checks this for everything we deploy).
METADATA_HOP_LIMIT = 1
ROOT_DEVICE = "/dev/xvda"
# cluster-autoscaler finds its Auto Scaling groups by tag (cloudprovider/aws/README.md,
# "Auto-Discovery Setup"). EKS tags every managed group of a cluster with
# k8s.io/cluster-autoscaler/<cluster>: ours and, on a cluster in mode existing, the ones its
# owners run (and may scale with their own autoscaler). This tag, which only we write and
# only on our groups, narrows discovery and the scaling permission to this stack's groups.
AUTOSCALED_BY_TAG = "tf-serving-eks/autoscaled-by"
# Bottlerocket keeps images and pod data on its second volume, so that is the one to size.
BOTTLEROCKET_DATA_DEVICE = "/dev/xvdb"


def node_role(
    name: str, partition: str, parent: pulumi.Resource
) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
    return role_with_managed_policies(
        name,
        service_trust_policy("ec2.amazonaws.com"),
        NODE_MANAGED_POLICIES,
        partition,
        parent,
        description="EKS worker nodes",
    )


def launch_template_args(
    disk_size_gib: int,
    tags: Mapping[str, str],
    device_name: str = ROOT_DEVICE,
    *,
    user_data: str | None = None,
    iops: int | None = None,
    throughput_mibps: int | None = None,
    snapshot_id: str | None = None,
) -> aws.ec2.LaunchTemplateArgs:
    """IMDSv2 only, an encrypted gp3 volume at `device_name` (with the IOPS, throughput and
    source snapshot given, else gp3's included 3000 IOPS and 125 MiB/s), tags on instances and
    volumes, and `user_data` (base64) if given."""
    return aws.ec2.LaunchTemplateArgs(
        update_default_version=True,
        user_data=user_data,
        metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
            http_endpoint="enabled",
            http_tokens="required",
            http_put_response_hop_limit=METADATA_HOP_LIMIT,
        ),
        block_device_mappings=[
            aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=device_name,
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_size=disk_size_gib,
                    volume_type="gp3",
                    iops=iops,
                    throughput=throughput_mibps,
                    snapshot_id=snapshot_id,
                    encrypted="true",
                    delete_on_termination="true",
                ),
            )
        ],
        tag_specifications=[
            aws.ec2.LaunchTemplateTagSpecificationArgs(resource_type=kind, tags=dict(tags))
            for kind in ("instance", "volume")
        ],
        tags=dict(tags),
    )


# EKS replaces a managed node group's nodes `max_unavailable` at a time on every AMI or
# launch-template change; each batch launches new nodes, waits for them to join, then
# drains the old ones, giving each pod up to 15 minutes before it forces the eviction
# (EKS user guide, "Understand each phase of node updates": scale up, upgrade with a 15
# minute pod eviction timeout, scale down). GPU nodes boot a large AMI and pull a ~6 GB
# image: 25 minutes a batch bounds it; Pulumi's default wait for an update is 60 minutes.
NODE_BATCH_MINUTES = 25


def node_group_timeouts(max_size: int, max_unavailable: int) -> pulumi.CustomTimeouts:
    """How long Pulumi waits on a node group: long enough for a rolling replacement of all of
    its nodes, batch by batch."""
    batches = -(-max(max_size, 1) // max(max_unavailable, 1))
    minutes = max(60, batches * NODE_BATCH_MINUTES)
    return pulumi.CustomTimeouts(create="60m", update=f"{minutes}m", delete="60m")



def autoscaling_group_name(group: aws.eks.NodeGroup) -> pulumi.Output[str]:
    """The Auto Scaling group EKS made for the managed node group (one per group)."""
    return group.resources.apply(lambda r: r[0].autoscaling_groups[0].name or "")  # type: ignore[index]


def autoscaled_by_tag(name: str, group: aws.eks.NodeGroup, parent: pulumi.Resource) -> aws.autoscaling.Tag:
    """`AUTOSCALED_BY_TAG` = the stack's name on the Auto Scaling group EKS made for `group`
    (the group's own tags do not reach it: EKS user guide, "Managed node groups")."""
    return aws.autoscaling.Tag(
        f"{name}-asg-tag-autoscaled-by",
        autoscaling_group_name=autoscaling_group_name(group),
        tag=aws.autoscaling.TagTagArgs(key=AUTOSCALED_BY_TAG, value=pulumi.get_stack(), propagate_at_launch=False),
        opts=child_options(parent),
    )
