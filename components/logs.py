"""Container logs to CloudWatch Logs: Fluent Bit (aws-for-fluent-bit chart) on every node.

- One log group per cluster, `/aws/eks/<cluster>/containers`, created here with the stack's
  retention; Fluent Bit neither creates groups nor sets their retention.
- Fluent Bit's `cloudwatch_logs` output (the C plugin of Fluent Bit itself); the chart's
  other outputs, including the older Go `cloudwatch` plugin, are off.
- Its identity is an EKS Pod Identity role that may only create streams in, and put events
  to, that one log group. The `cloudwatch_logs` plugin calls CreateLogStream and
  PutLogEvents; it calls CreateLogGroup and PutRetentionPolicy only with `auto_create_group`,
  and never DescribeLogStreams (fluent/fluent-bit plugins/out_cloudwatch_logs/cloudwatch_api.c).
  aws-for-fluent-bit 3.x (Fluent Bit 4+) reads EKS Pod Identity credentials
  (fluent/fluent-bit#10115); 2.x images do not.
- The DaemonSet tolerates every GPU pool's taint, so GPU nodes ship too.

It must not create or change other log groups (the control plane's is the cluster's), nor
export stack outputs (components/stack.py does).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components import catalog
from components.cluster import ClusterOutputs
from components.config import LogsConfig
from components.gpu_pools import GpuPoolsOutputs
from components.helm import GPU_NODE_WAIT_SECONDS, controller
from components.iam import policy_document
from components.resources import child_options

FLUENT_BIT_NAMESPACE = "kube-system"
FLUENT_BIT_SERVICE_ACCOUNT = "aws-for-fluent-bit"
# Only what the cloudwatch_logs output calls when the group exists (see the module docstring).
FLUENT_BIT_LOG_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
# The chart's outputs other than cloudWatchLogs; each is switched off explicitly.
OTHER_OUTPUTS = (
    "cloudWatch",
    "firehose",
    "kinesis",
    "kinesis_streams",
    "elasticsearch",
    "s3",
    "opensearch",
)


def log_group_name(cluster_name: str) -> str:
    return f"/aws/eks/{cluster_name}/containers"


def fluent_bit_values(
    cluster_name: str,
    region: str,
    log_group: str,
    tolerations: list[dict[str, str]],
    service_account: str,
) -> dict[str, Any]:
    """Values of the aws-for-fluent-bit chart: every container's log to one existing group."""
    unique: list[dict[str, str]] = []
    for toleration in tolerations:
        if dict(toleration) not in unique:
            unique.append(dict(toleration))
    values: dict[str, Any] = {
        "serviceAccount": {"create": True, "name": service_account},
        "input": {"enabled": True, "path": "/var/log/containers/*.log"},
        "filter": {"enabled": True},
        "cloudWatchLogs": {
            "enabled": True,
            "match": "kube.*",
            "region": region,
            "logGroupName": log_group,
            # No per-namespace groups: they would need logs:CreateLogGroup.
            "logGroupTemplate": "",
            "logStreamPrefix": f"{cluster_name}.",
            "logStreamTemplate": (
                "$kubernetes['namespace_name'].$kubernetes['pod_name']."
                "$kubernetes['container_name']"
            ),
            "autoCreateGroup": False,
            # Retention is the log group's (Pulumi); 0 leaves it out of the plugin config.
            "logRetentionDays": 0,
        },
        **{output: {"enabled": False} for output in OTHER_OUTPUTS},
        # Scheduled even on a full node: a node without its log shipper loses logs.
        "priorityClassName": "system-node-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": unique,
        "resources": copy.deepcopy(catalog.FLUENT_BIT_RESOURCES),
    }
    return values


def fluent_bit_policy(log_group_arn: str) -> str:
    """Least privilege: create streams in and put events to one log group, nothing else.

    The group's ARN (as the provider reports it, without `:*`) and `<arn>:*`, which covers its
    streams (`...:log-group:NAME:log-stream:STREAM`).
    """
    arn = log_group_arn.removesuffix(":*")
    return policy_document(
        [
            {
                "Sid": "ShipContainerLogs",
                "Effect": "Allow",
                "Action": list(FLUENT_BIT_LOG_ACTIONS),
                "Resource": [arn, f"{arn}:*"],
            }
        ]
    )


@dataclass(frozen=True)
class ClusterLogsOutputs:
    """What the rest of the stack needs of the container logs."""

    log_group_name: pulumi.Output[str]


class ClusterLogs(pulumi.ComponentResource):
    """Fluent Bit on every node, shipping container logs to one CloudWatch log group."""

    outputs: ClusterLogsOutputs

    def __init__(
        self,
        name: str,
        cfg: LogsConfig,
        *,
        cluster: ClusterOutputs,
        gpu_pools: GpuPoolsOutputs,
        region: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tf-serving-eks:logs:ClusterLogs", name, None, opts)
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-log-group",
            name=cluster.name.apply(log_group_name),
            retention_in_days=cfg.retention_days,
            opts=child_options(self),
        )
        # Ship GPU nodes' logs too: tolerate every pool's taint.
        tolerations = [t for s in gpu_pools.scheduling.values() for t in s.tolerations]
        values = pulumi.Output.all(cluster.name, log_group.name).apply(
            lambda args: fluent_bit_values(
                args[0], region, args[1], tolerations, FLUENT_BIT_SERVICE_ACCOUNT
            )
        )
        controller(
            f"{name}-fluent-bit",
            catalog.CHARTS["aws-for-fluent-bit"],
            namespace=FLUENT_BIT_NAMESPACE,
            service_account=FLUENT_BIT_SERVICE_ACCOUNT,
            description="Fluent Bit: container logs to CloudWatch Logs",
            cluster_name=cluster.name,
            policy=log_group.arn.apply(fluent_bit_policy),
            values=values,
            parent=self,
            provider=cluster.provider,
            depends_on=[log_group],
            # It runs on every node, the GPU nodes included.
            timeout_seconds=GPU_NODE_WAIT_SECONDS,
        )
        self.outputs = ClusterLogsOutputs(log_group_name=log_group.name)
        self.register_outputs({"log_group_name": self.outputs.log_group_name})
