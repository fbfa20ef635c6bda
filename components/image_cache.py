"""The `serving.image_cache` key: an ECR pull-through cache of Docker Hub, so a GPU scale-up
pulls tensorflow/serving (~6 GB) from ECR in the cluster's region instead of from Docker Hub
through NAT, and never meets Docker Hub's pull limits.

It owns the cache rule, its credentials secret and the nodes' pull permission; it must not
choose the image (serving.py and images.py do) nor touch the node roles beyond attaching
that permission.

AWS docs, Amazon ECR user guide: "Creating a pull through cache rule" (Docker Hub rules need
a Secrets Manager secret named `ecr-pullthroughcache/...` holding `username` and
`accessToken`, in the rule's account and region), "IAM permissions required to sync an
upstream registry" (the puller needs `ecr:BatchImportUpstreamImage`, and
`ecr:CreateRepository` for the first pull of an image), "Pulling an image with a pull
through cache rule" (`<account>.dkr.ecr.<region>.amazonaws.com/<prefix>/<repository>:<tag>`;
non-official Docker Hub images without `library/`). A cached image keeps its manifest, so
its digest is the one Docker Hub serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.config import ImageCacheConfig
from components.iam import policy_document

DOCKER_HUB = "registry-1.docker.io"
SECRET_PREFIX = "ecr-pullthroughcache/"
# ECR CreatePullThroughCacheRule: ecrRepositoryPrefix is 2-30 characters of lower-case path
# segments, and one rule per prefix exists per account and region.
MAX_PREFIX = 30


def repository_prefix(configured: str | None, stack: str) -> str:
    """The cache's ECR prefix: configured, or `<stack>/docker-hub` (unique per stack)."""
    if configured:
        return configured
    suffix = "/docker-hub"
    segment = re.sub(r"[^a-z0-9]+", "-", stack.lower()).strip("-")[: MAX_PREFIX - len(suffix)].strip("-")
    return f"{segment or 'stack'}{suffix}"


def cache_pull_policy(partition: str, region: str, account_id: str, prefix: str) -> str:
    """What a node needs beyond AmazonEC2ContainerRegistryPullOnly to pull through the cache."""
    return policy_document(
        [
            {
                "Sid": "PullThroughCache",
                "Effect": "Allow",
                "Action": ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"],
                "Resource": f"arn:{partition}:ecr:{region}:{account_id}:repository/{prefix}/*",
            }
        ]
    )


@dataclass(frozen=True)
class ImageCacheOutputs:
    """Where pods pull through the cache, and what such a pull must wait for."""

    # `<account>.dkr.ecr.<region>.amazonaws.com/<prefix>`: put before `tensorflow/serving:...`.
    mirror: pulumi.Output[str]
    node_policy_arn: pulumi.Output[str]
    # The cache rule and the nodes' permission to import through it.
    pull_ready: tuple[pulumi.Resource, ...]


class ImageCache(pulumi.ComponentResource):
    outputs: ImageCacheOutputs

    def __init__(
        self,
        name: str,
        cfg: ImageCacheConfig,
        *,
        docker_hub_access_token: str,
        stack: str,
        region: str,
        partition: str,
        account_id: pulumi.Input[str],
        node_role_names: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tf-serving-eks:image_cache:ImageCache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        assert cfg.docker_hub_username is not None  # config rule: enabled needs the user
        prefix = repository_prefix(cfg.repository_prefix, stack)
        secret = aws.secretsmanager.Secret(
            f"{name}-credentials",
            name=f"{SECRET_PREFIX}{prefix.replace('/', '-')}",
            description="Docker Hub credentials of the ECR pull-through cache rule",
            recovery_window_in_days=7,
            opts=child,
        )
        version = aws.secretsmanager.SecretVersion(
            f"{name}-credentials-version",
            secret_id=secret.id,
            secret_string=pulumi.Output.secret(
                json.dumps({"username": cfg.docker_hub_username, "accessToken": docker_hub_access_token})
            ),
            opts=child,
        )
        rule = aws.ecr.PullThroughCacheRule(
            f"{name}-rule",
            ecr_repository_prefix=prefix,
            upstream_registry_url=DOCKER_HUB,
            credential_arn=secret.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[version]),
        )
        policy = aws.iam.Policy(
            f"{name}-node-policy",
            description="Pull images through the ECR pull-through cache",
            policy=pulumi.Output.from_input(account_id).apply(
                lambda account: cache_pull_policy(partition, region, account, prefix)
            ),
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-{key}-attachment", role=role, policy_arn=policy.arn, opts=child)
            for key, role in sorted(node_role_names.items())
        ]
        mirror = pulumi.Output.from_input(account_id).apply(
            lambda account: f"{account}.dkr.ecr.{region}.amazonaws.com/{prefix}"
        )
        self.outputs = ImageCacheOutputs(mirror=mirror, node_policy_arn=policy.arn, pull_ready=(rule, *attachments))
        self.register_outputs({"mirror": mirror})
