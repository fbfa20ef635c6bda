"""Third-party software from its upstream Helm chart, pinned (see catalog.CHARTS), and the
recipe for a chart whose pods call AWS: its Pod Identity role, IAM policy and release.

It installs what it is given; it must not build a chart's values or an IAM policy (the
component that owns the chart does, as a pure, tested function).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.catalog import Chart
from components.iam import pod_identity_role
from components.resources import child_options

# For a release whose DaemonSets also run on GPU nodes: Helm (atomic) waits until they run on
# every node, and GPU nodes that join during the same `pulumi up` boot a GPU AMI first, then
# pull the images: 20 minutes, not Helm's 10.
GPU_NODE_WAIT_SECONDS = 1200


def helm_release(
    name: str,
    chart: Chart,
    namespace: str,
    values: pulumi.Input[Mapping[str, Any]],
    opts: pulumi.ResourceOptions,
    create_namespace: bool = False,
    timeout_seconds: int = 600,
    skip_crds: bool = False,
) -> k8s.helm.v3.Release:
    """A Helm release named after its chart (stable object names), rolled back if it fails."""
    return k8s.helm.v3.Release(
        name,
        k8s.helm.v3.ReleaseArgs(
            name=chart.name,
            chart=chart.name,
            version=chart.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            namespace=namespace,
            create_namespace=create_namespace,
            values=values,
            atomic=True,
            cleanup_on_fail=True,
            # `atomic` makes Helm wait for every object to be ready, this long, then roll back.
            timeout=timeout_seconds,
            # Only set for a chart whose CRDs another release owns (unset: Helm's default).
            skip_crds=True if skip_crds else None,
        ),
        opts=opts,
    )


@dataclass(frozen=True)
class Controller:
    """What `controller` made."""

    role: aws.iam.Role
    association: aws.eks.PodIdentityAssociation
    # What gives the role its permissions: the inline policy, or the managed policy's attachment.
    grant: aws.iam.RolePolicy | aws.iam.RolePolicyAttachment
    release: k8s.helm.v3.Release


def controller(
    name: str,
    chart: Chart,
    *,
    namespace: str,
    service_account: str,
    description: str,
    cluster_name: pulumi.Input[str],
    policy: pulumi.Input[str],
    values: pulumi.Input[Mapping[str, Any]],
    parent: pulumi.Resource,
    provider: pulumi.ProviderResource,
    depends_on: Sequence[pulumi.Resource] = (),
    wait_for_policy: bool = True,
    managed_policy_description: str | None = None,
    timeout_seconds: int = 600,
    aliases: Sequence[pulumi.Alias] = (),
    skip_crds: bool = False,
) -> Controller:
    """A chart whose pods call AWS, with its own identity: an EKS Pod Identity role bound to
    the chart's service account, the role's IAM policy, and the pinned release.

    Children of `parent`: `<name>-role`, `<name>-identity`, `<name>-policy` (an inline role
    policy; with `managed_policy_description`, a managed policy of that description, attached
    by `<name>-policy-attachment`) and the release `<name>`, on `provider`. The release waits
    for the identity binding (the pods get their credentials at admission), for `depends_on`
    and, with `wait_for_policy`, for the policy. `aliases` are set on every child; with
    `skip_crds`, Helm leaves the chart's crds/ alone (another release installs them)."""
    aws_opts = child_options(parent, aliases=list(aliases) or None)
    role, association = pod_identity_role(
        name,
        cluster_name=cluster_name,
        namespace=namespace,
        service_account=service_account,
        description=description,
        parent=parent,
        aliases=aliases,
    )
    grant: aws.iam.RolePolicy | aws.iam.RolePolicyAttachment
    if managed_policy_description is None:
        grant = aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=policy, opts=aws_opts)
    else:
        managed = aws.iam.Policy(
            f"{name}-policy", description=managed_policy_description, policy=policy, opts=aws_opts
        )
        grant = aws.iam.RolePolicyAttachment(
            f"{name}-policy-attachment", role=role.name, policy_arn=managed.arn, opts=aws_opts
        )
    release = helm_release(
        name,
        chart,
        namespace,
        values,
        child_options(
            parent,
            provider,
            depends_on=[association, *([grant] if wait_for_policy else []), *depends_on],
            aliases=list(aliases) or None,
        ),
        timeout_seconds=timeout_seconds,
        skip_crds=skip_crds,
    )
    return Controller(role=role, association=association, grant=grant, release=release)


def service_monitor_values(labels: Mapping[str, str] | None, **extra: str) -> dict[str, Any]:
    """A chart's `serviceMonitor` values: off for None; else on, carrying `labels` (the
    stack's monitoring.rule_labels), which a Prometheus that selects ServiceMonitors by label
    needs to see it. Both charts we enable it on take `serviceMonitor.additionalLabels`
    (dcgm-exporter 4.8.2 and aws-load-balancer-controller 3.5.0 values.yaml)."""
    if labels is None:
        return {"enabled": False}
    return {"enabled": True, "additionalLabels": dict(labels), **extra}
