"""Pieces every EKS managed node group of ours shares: node role and launch template."""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_aws as aws

from components.iam import role_with_managed_policies, service_trust_policy

NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)
# Two hops so that containers can still reach IMDSv2 through the node's network namespace;
# our own workloads use EKS Pod Identity and never need the node's credentials.
METADATA_HOP_LIMIT = 2
ROOT_DEVICE = "/dev/xvda"
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
    disk_size_gib: int, tags: Mapping[str, str], device_name: str = ROOT_DEVICE
) -> aws.ec2.LaunchTemplateArgs:
    """IMDSv2 only, an encrypted gp3 volume at `device_name`, tags on instances and volumes."""
    return aws.ec2.LaunchTemplateArgs(
        update_default_version=True,
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
