"""The whole stack: components in dependency order, and the stack outputs."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from components.cluster import Cluster
from components.config import StackConfig, load_stack_config
from components.naming import base_tags


def build_stack(cfg: StackConfig) -> dict[str, Any]:
    """Create every component for `cfg`; return the stack outputs."""
    aws_provider = aws.Provider(
        "aws",
        region=cfg.aws_region,
        default_tags=aws.ProviderDefaultTagsArgs(tags=base_tags(cfg, pulumi.get_stack())),
    )
    invoke = pulumi.InvokeOptions(provider=aws_provider)
    account_id = aws.get_caller_identity(opts=invoke).account_id
    partition = aws.get_partition(opts=invoke).partition

    cluster = Cluster(
        "cluster",
        cfg.cluster,
        region=cfg.aws_region,
        partition=partition,
        account_id=account_id,
        aws_provider=aws_provider,
        opts=pulumi.ResourceOptions(providers=[aws_provider]),
    ).outputs

    return {
        "environment": cfg.environment,
        "region": cfg.aws_region,
        "cluster_name": cluster.name,
        "cluster_endpoint": cluster.endpoint,
        "kubernetes_version": cluster.kubernetes_version,
        "oidc_issuer_url": cluster.oidc_issuer_url,
        "oidc_provider_arn": cluster.oidc_provider_arn,
        "vpc_id": cluster.vpc_id,
        "private_subnet_ids": cluster.private_subnet_ids,
        "node_security_group_id": cluster.node_security_group_id,
        "kubeconfig_command": cluster.name.apply(
            lambda name: f"aws eks update-kubeconfig --name {name} --region {cfg.aws_region}"
        ),
    }


def program() -> dict[str, Any]:
    """The Pulumi program: load and validate config, build, export."""
    outputs = build_stack(load_stack_config())
    for key, value in outputs.items():
        pulumi.export(key, value)
    return outputs
