"""IAM policy documents as pure functions, and the role helpers every component shares.

It knows IAM only; what a role is for, and which policy it holds, is its caller's (a policy
of ours is built beside the component that needs it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from components.resources import child_options

# EKS Pod Identity assumes roles through this service principal, with session tags.
POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"


def managed_policy_arn(partition: str, name: str) -> str:
    return f"arn:{partition}:iam::aws:policy/{name}"


def service_trust_policy(service: str, actions: Sequence[str] = ("sts:AssumeRole",)) -> str:
    """Trust policy letting an AWS service principal assume the role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": list(actions),
                }
            ],
        }
    )


def pod_identity_trust_policy() -> str:
    """Trust policy for an EKS Pod Identity role (the agent needs sts:TagSession too)."""
    return service_trust_policy(POD_IDENTITY_PRINCIPAL, ("sts:AssumeRole", "sts:TagSession"))


def irsa_trust_policy(
    oidc_provider_arn: str, oidc_issuer_url: str, namespace: str, service_account: str
) -> str:
    """Trust policy for IAM Roles for Service Accounts, bound to one service account."""
    issuer = oidc_issuer_url.removeprefix("https://")
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": oidc_provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                            f"{issuer}:aud": "sts.amazonaws.com",
                        }
                    },
                }
            ],
        }
    )


def policy_document(statements: Sequence[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def role_with_managed_policies(
    name: str,
    trust_policy: pulumi.Input[str],
    managed_policy_names: Sequence[str],
    partition: str,
    parent: pulumi.Resource,
    description: str,
) -> tuple[aws.iam.Role, list[aws.iam.RolePolicyAttachment]]:
    """An IAM role with AWS managed policies attached, children named `<name>-<policy>`."""
    role = aws.iam.Role(
        name,
        assume_role_policy=trust_policy,
        description=description,
        opts=child_options(parent),
    )
    attachments = [
        aws.iam.RolePolicyAttachment(
            f"{name}-{policy.split('/')[-1]}",
            role=role.name,
            policy_arn=managed_policy_arn(partition, policy),
            opts=child_options(parent),
        )
        for policy in managed_policy_names
    ]
    return role, attachments


def pod_identity_role(
    name: str,
    *,
    cluster_name: pulumi.Input[str],
    namespace: str,
    service_account: str,
    description: str,
    parent: pulumi.Resource,
    aliases: Sequence[pulumi.Alias] = (),
) -> tuple[aws.iam.Role, aws.eks.PodIdentityAssociation]:
    """A role for one Kubernetes service account through EKS Pod Identity, and its binding.

    Children of `parent` named `<name>-role` and `<name>-identity`, both with `aliases`.
    """
    opts = child_options(parent, aliases=list(aliases) or None)
    role = aws.iam.Role(
        f"{name}-role",
        assume_role_policy=pod_identity_trust_policy(),
        description=f"{description} (EKS Pod Identity)",
        opts=opts,
    )
    association = pod_identity_association(
        f"{name}-identity",
        role,
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        opts=opts,
    )
    return role, association


def pod_identity_association(
    resource_name: str,
    role: aws.iam.Role,
    *,
    cluster_name: pulumi.Input[str],
    namespace: str,
    service_account: str,
    opts: pulumi.ResourceOptions,
) -> aws.eks.PodIdentityAssociation:
    """The EKS Pod Identity binding of `role` (trusting `pod_identity_trust_policy`) to one
    Kubernetes service account."""
    return aws.eks.PodIdentityAssociation(
        resource_name,
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        role_arn=role.arn,
        opts=opts,
    )
