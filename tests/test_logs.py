"""Container logs: the log group, Fluent Bit's least-privilege identity, the pinned chart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s
import pytest

from components import catalog
from components.cluster import ClusterOutputs
from components.config import LogsConfig
from components.gpu_pools import GpuPoolsOutputs, GpuScheduling
from components.logs import ClusterLogs, fluent_bit_policy, fluent_bit_values
from tools.lib.mock_engine import Registered, Rendering, render

CLUSTER = "tfs-test"
REGION = "us-east-1"
RETENTION_DAYS = 14
GPU_TOLERATION = {
    "key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"
}
OTHER_TOLERATION = {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}

LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
RELEASE = "kubernetes:helm.sh/v3:Release"

# Keys of the aws-for-fluent-bit chart's values, read from aws/eks-charts
# stable/aws-for-fluent-bit/values.yaml (0.2.x; the reference folder has no copy of it).
# `priorityClassName` is commented out there but documented in the chart's README and read by
# templates/daemonset.yaml.
UPSTREAM_TOP_LEVEL_KEYS = {
    "global", "image", "imagePullSecrets", "nameOverride", "fullnameOverride",
    "podSecurityContext", "containerSecurityContext", "rbac", "service", "input", "filter",
    "cloudWatch", "cloudWatchLogs", "firehose", "kinesis", "kinesis_streams", "elasticsearch",
    "s3", "opensearch", "serviceAccount", "resources", "priorityClassName", "updateStrategy",
    "nodeSelector", "tolerations", "affinity", "annotations", "hostNetwork", "dnsPolicy", "env",
    "volumes", "volumeMounts", "livenessProbe", "readinessProbe", "serviceMonitor",
}
UPSTREAM_NESTED_KEYS = {
    "serviceAccount": {"create", "annotations", "name"},
    "input": {
        "enabled", "tag", "path", "db", "multilineParser", "memBufLimit", "skipLongLines",
        "refreshInterval", "extraInputs", "pathKey", "parser", "dockerMode",
    },
    "filter": {
        "enabled", "match", "kubeURL", "mergeLog", "mergeLogKey", "keepLog", "k8sLoggingParser",
        "k8sLoggingExclude", "bufferSize", "extraFilters",
    },
    "cloudWatchLogs": {
        "enabled", "match", "region", "logGroupName", "logGroupTemplate", "logStreamName",
        "logStreamPrefix", "logStreamTemplate", "logKey", "logFormat", "roleArn",
        "autoCreateGroup", "logRetentionDays", "endpoint", "metricNamespace", "metricDimensions",
        "stsEndpoint", "autoRetryRequests", "externalId", "extraOutputs",
    },
}
# Every output the chart can render besides cloudWatchLogs (its configmap template); the old
# Go `cloudWatch` plugin among them.
UPSTREAM_OTHER_OUTPUTS = (
    "cloudWatch", "firehose", "kinesis", "kinesis_streams", "elasticsearch", "s3", "opensearch",
)


def cluster_outputs(provider: k8s.Provider) -> ClusterOutputs:
    """The cluster as ClusterLogs reads it: its name and Kubernetes provider."""
    unused: pulumi.Output[Any] = pulumi.Output.from_input("")
    return ClusterOutputs(
        name=pulumi.Output.from_input(CLUSTER),
        endpoint=unused, kubernetes_version=unused, oidc_issuer_url=unused,
        oidc_provider_arn=unused, vpc_id=unused, vpc_cidr=unused, private_subnet_ids=unused,
        public_subnet_cidrs=unused, private_subnet_cidrs=unused, node_security_group_id=unused,
        provider=provider,
    )


def gpu_pools_outputs() -> GpuPoolsOutputs:
    """Two pools, one tainted like the NVIDIA default and one with its own taint."""
    return GpuPoolsOutputs(
        scheduling={
            "gpu": GpuScheduling(node_selector={}, tolerations=[GPU_TOLERATION]),
            "other": GpuScheduling(node_selector={}, tolerations=[OTHER_TOLERATION]),
        },
        node_group_names={}, node_role_names={}, node_groups=[],
    )


def program() -> Mapping[str, Any]:
    aws_provider = aws.Provider("aws", region=REGION)
    provider = k8s.Provider("k8s", kubeconfig="{}")
    logs = ClusterLogs(
        "logs",
        LogsConfig(enabled=True, retention_days=RETENTION_DAYS),
        cluster=cluster_outputs(provider),
        gpu_pools=gpu_pools_outputs(),
        region=REGION,
        opts=pulumi.ResourceOptions(providers=[aws_provider]),
    )
    return {"log_group_name": logs.outputs.log_group_name}


@pytest.fixture(scope="module")
def rendering() -> Rendering:
    return render("test", {"aws:region": REGION}, [], program=program)


def release(r: Rendering) -> Registered:
    found = [x for x in r.of_type(RELEASE) if x.inputs["chart"] == "aws-for-fluent-bit"]
    assert len(found) == 1
    return found[0]


def values(r: Rendering) -> dict[str, Any]:
    found: dict[str, Any] = release(r).inputs["values"]
    return found


def test_log_group_is_per_cluster_with_retention(rendering: Rendering) -> None:
    group = rendering.one(LOG_GROUP, "logs-log-group")
    assert group.inputs["name"] == f"/aws/eks/{CLUSTER}/containers"
    assert group.inputs["retentionInDays"] == RETENTION_DAYS
    assert rendering.outputs["log_group_name"] == f"/aws/eks/{CLUSTER}/containers"


def test_children_are_named_after_the_component_and_parented(rendering: Rendering) -> None:
    component = rendering.one("tf-serving-eks:logs:ClusterLogs", "logs")
    children = [r for r in rendering.resources if r.parent == component.urn]
    assert {(c.type, c.name) for c in children} == {
        (LOG_GROUP, "logs-log-group"),
        ("aws:iam/role:Role", "logs-fluent-bit-role"),
        ("aws:eks/podIdentityAssociation:PodIdentityAssociation", "logs-fluent-bit-identity"),
        ("aws:iam/rolePolicy:RolePolicy", "logs-fluent-bit-policy"),
        (RELEASE, "logs-fluent-bit"),
    }


def test_identity_is_pod_identity_for_the_chart_service_account(rendering: Rendering) -> None:
    assoc = rendering.one(
        "aws:eks/podIdentityAssociation:PodIdentityAssociation", "logs-fluent-bit-identity"
    ).inputs
    role = rendering.one("aws:iam/role:Role", "logs-fluent-bit-role")
    assert (assoc["clusterName"], assoc["namespace"], assoc["serviceAccount"]) == (
        CLUSTER, "kube-system", "aws-for-fluent-bit",
    )
    assert assoc["roleArn"] == role.outputs["arn"]
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
    assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert values(rendering)["serviceAccount"] == {"create": True, "name": assoc["serviceAccount"]}
    assert release(rendering).inputs["namespace"] == assoc["namespace"]


def test_policy_allows_only_streams_and_events_on_that_log_group(rendering: Rendering) -> None:
    group_arn = rendering.one(LOG_GROUP, "logs-log-group").outputs["arn"]
    role = rendering.one("aws:iam/role:Role", "logs-fluent-bit-role")
    policy = rendering.one("aws:iam/rolePolicy:RolePolicy", "logs-fluent-bit-policy").inputs
    # The mock engine gives a resource the ID `<name>-<hash>`.
    assert policy["role"].startswith(f"{role.name}-")
    statements = json.loads(policy["policy"])["Statement"]
    assert len(statements) == 1
    statement = statements[0]
    assert statement["Effect"] == "Allow" and "Condition" not in statement
    assert sorted(statement["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == [group_arn, f"{group_arn}:*"]


def test_policy_document_for_a_real_arn_never_widens() -> None:
    arn = f"arn:aws:logs:{REGION}:123456789012:log-group:/aws/eks/{CLUSTER}/containers"
    for given in (arn, f"{arn}:*"):
        statement = json.loads(fluent_bit_policy(given))["Statement"][0]
        assert statement["Resource"] == [arn, f"{arn}:*"]
        actions = set(statement["Action"])
        assert not actions & {"logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:*"}
        assert all(not r.endswith("log-group:*") and r != "*" for r in statement["Resource"])


def test_chart_is_pinned_and_installed_after_its_identity(rendering: Rendering) -> None:
    chart = catalog.CHARTS["aws-for-fluent-bit"]
    assert (chart.name, chart.version, chart.repo) == (
        "aws-for-fluent-bit", "0.2.0", "https://aws.github.io/eks-charts",
    )
    inputs = release(rendering).inputs
    assert (inputs["name"], inputs["chart"], inputs["version"]) == (
        "aws-for-fluent-bit", "aws-for-fluent-bit", "0.2.0",
    )
    assert inputs["repositoryOpts"]["repo"] == "https://aws.github.io/eks-charts"
    waits_for = set(release(rendering).depends_on)
    for token, name in (
        (LOG_GROUP, "logs-log-group"),
        ("aws:eks/podIdentityAssociation:PodIdentityAssociation", "logs-fluent-bit-identity"),
        ("aws:iam/rolePolicy:RolePolicy", "logs-fluent-bit-policy"),
    ):
        assert rendering.one(token, name).urn in waits_for, name
    provider = rendering.one("pulumi:providers:kubernetes", "k8s")
    assert release(rendering).provider.startswith(provider.urn)


def test_values_ship_to_the_group_with_the_c_plugin_only(rendering: Rendering) -> None:
    v = values(rendering)
    cw = v["cloudWatchLogs"]
    assert cw["enabled"] is True
    assert (cw["logGroupName"], cw["region"]) == (f"/aws/eks/{CLUSTER}/containers", REGION)
    # The group exists (Pulumi) and has its retention: Fluent Bit must not create or change it,
    # nor route to other groups. The chart leaves falsy options out of the plugin config.
    assert cw["autoCreateGroup"] is False
    assert not cw.get("logRetentionDays")
    assert not cw.get("logGroupTemplate")
    for output in UPSTREAM_OTHER_OUTPUTS:
        assert v[output] == {"enabled": False}, output
    assert v["input"]["enabled"] is True and v["input"]["path"] == "/var/log/containers/*.log"
    assert v["filter"]["enabled"] is True


def test_daemonset_tolerates_the_given_taints_so_gpu_nodes_ship(rendering: Rendering) -> None:
    v = values(rendering)
    assert v["tolerations"] == [GPU_TOLERATION, OTHER_TOLERATION]
    assert v["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert v["priorityClassName"] == "system-node-critical"
    assert v["resources"]["limits"]["memory"]


def test_tolerations_are_copied_and_deduplicated() -> None:
    given = [dict(GPU_TOLERATION), dict(GPU_TOLERATION)]
    v = fluent_bit_values(CLUSTER, REGION, "/g", given, "sa")
    assert v["tolerations"] == [GPU_TOLERATION]
    v["tolerations"][0]["key"] = "changed"
    assert given[0]["key"] == "nvidia.com/gpu"
    assert fluent_bit_values(CLUSTER, REGION, "/g", [], "sa")["tolerations"] == []


def test_values_use_only_keys_the_upstream_chart_has() -> None:
    v = fluent_bit_values(CLUSTER, REGION, "/g", [GPU_TOLERATION], "aws-for-fluent-bit")
    assert set(v) <= UPSTREAM_TOP_LEVEL_KEYS, set(v) - UPSTREAM_TOP_LEVEL_KEYS
    for key, allowed in UPSTREAM_NESTED_KEYS.items():
        assert set(v[key]) <= allowed, (key, set(v[key]) - allowed)
    for output in UPSTREAM_OTHER_OUTPUTS:
        assert set(v[output]) == {"enabled"}, output
