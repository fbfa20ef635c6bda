"""Karpenter pools (gpu_pools.<name>.provisioner: karpenter): a dev and a prod stack with one
Karpenter pool, rendered under the mock engine and by the real karpenter charts.

Sources of the rules stated here: karpenter-provider-aws at v1.14.1,
website/content/en/v1.14/getting-started/getting-started-with-karpenter/cloudformation.yaml
(the controller's IAM policy, the interruption queue, its policy and the EventBridge rules).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

import pytest

from components import catalog
from components.config import StackConfigError
from tests.support import chart_renders as cr
from tests.support import conformance, parse, raw_stack, render_raw
from tests.support.scheduling import can_land, requirement_holds
from tools.lib import mock_engine
from tools.lib.mock_engine import Registered, Rendering

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"
Raw = dict[str, Any]


def karpenter_raw(stack: str) -> Raw:
    """The repo's stack file with the serving pool made a Karpenter pool."""
    raw = raw_stack(stack)
    pool = raw["serving"]["gpu_pool"]
    for key in ("min_size", "desired_size", "max_unavailable"):
        raw["gpu_pools"][pool].pop(key, None)
    raw["gpu_pools"][pool]["provisioner"] = "karpenter"
    return raw


VARIANTS = ("dev", "prod")


@functools.cache
def rendering(stack: str) -> Rendering:
    return render_raw(karpenter_raw(stack), stack=f"karpenter-{stack}")


def charts(stack: str) -> cr.StackCharts:
    return cr.rendering_charts(f"karpenter-{stack}", rendering(stack))


def serving_pool(stack: str) -> str:
    return str(raw_stack(stack)["serving"]["gpu_pool"])


def manifest(r: Rendering, kind: str) -> dict[str, Any]:
    found = [m for m in r.k8s_objects() if m["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def one(r: Rendering, type_token: str, suffix: str) -> Registered:
    found = [x for x in r.of_type(type_token) if x.name.endswith(suffix)]
    assert len(found) == 1, f"{type_token} *{suffix}: {[x.name for x in found]}"
    return found[0]


# --- what is made and what is not ------------------------------------------------------------


@pytest.mark.parametrize("stack", VARIANTS)
def test_a_karpenter_pool_has_no_node_group_and_no_node_template_tags(stack: str) -> None:
    r = rendering(stack)
    pool = serving_pool(stack)
    assert not [g for g in r.of_type(cr.NODE_GROUP) if f"-{pool}-" in g.name]
    assert not [t for t in r.of_type(cr.ASG_TAG) if f"-{pool}-" in t.name]
    assert [x.name for x in r.of_type(NODE_POOL)] == [f"karpenter-{pool}-node-pool"]
    assert [x.name for x in r.of_type(NODE_CLASS)] == [f"karpenter-{pool}-node-class"]
    # A managed-node-group pool beside it (prod has two pools) keeps its groups and tags.
    for other in set(raw_stack(stack)["gpu_pools"]) - {pool}:
        assert [g for g in r.of_type(cr.NODE_GROUP) if f"-{other}-" in g.name]
        assert [t for t in r.of_type(cr.ASG_TAG) if f"-{other}-" in t.name and "-asg-tag-label-" in t.name]


def discovery_tagged(monkeypatch: pytest.MonkeyPatch, cluster: str) -> None:
    """The existing cluster's private subnets and cluster security group carry the tag."""
    tag = {"karpenter.sh/discovery": cluster}
    tags = {i: tag for i in [*mock_engine.EXISTING_SUBNETS, "sg-0existing0cluster0"]}
    monkeypatch.setattr(mock_engine, "EXISTING_RESOURCE_TAGS", tags)


def test_cluster_autoscaler_stays_off_an_existing_cluster_whose_pools_are_all_karpenter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = karpenter_raw("dev")
    raw["cluster"] = {"mode": "existing", "name": "tfs-dev"}
    # Without the discovery tags the stack is refused (below); with them, it renders.
    discovery_tagged(monkeypatch, "tfs-dev")
    r = render_raw(raw, stack="karpenter-existing")
    releases = {x.inputs["chart"] for x in r.of_type(cr.HELM_RELEASE)}
    assert "karpenter" in releases and "cluster-autoscaler" not in releases
    # The same stack with a managed-node-group pool keeps it.
    raw = raw_stack("dev")
    raw["cluster"] = {"mode": "existing", "name": "tfs-dev"}
    assert "cluster-autoscaler" in {x.inputs["chart"] for x in render_raw(raw, "mng-existing").of_type(cr.HELM_RELEASE)}


@pytest.mark.parametrize("tagged_for", [None, "another-cluster"])
def test_an_existing_cluster_without_discovery_tags_is_refused(
    monkeypatch: pytest.MonkeyPatch, tagged_for: str | None
) -> None:
    if tagged_for:
        discovery_tagged(monkeypatch, tagged_for)
    raw = karpenter_raw("dev")
    raw["cluster"] = {"mode": "existing", "name": "tfs-dev"}
    with pytest.raises(Exception) as caught:
        render_raw(raw, stack=f"karpenter-existing-{tagged_for}")
    assert "existing cluster 'tfs-dev' has private subnets or a cluster security group without the tag karpenter.sh/discovery=tfs-dev (subnet-" in str(caught.value)
    assert "use provisioner managed-node-group" in str(caught.value)


def test_only_a_karpenter_stack_tags_subnets_and_the_node_security_group_for_discovery() -> None:
    r = rendering("dev")
    private = [s for s in r.of_type("aws:ec2/subnet:Subnet") if "-private-" in s.name]
    public = [s for s in r.of_type("aws:ec2/subnet:Subnet") if "-public-" in s.name]
    assert private and all(s.inputs["tags"].get("karpenter.sh/discovery") == "tfs-dev" for s in private)
    assert not any("karpenter.sh/discovery" in s.inputs["tags"] for s in public)
    tag = one(r, "aws:ec2/tag:Tag", "node-sg-discovery-tag")
    assert tag.inputs["key"] == "karpenter.sh/discovery" and tag.inputs["value"] == "tfs-dev"
    plain = cr.stack("dev")
    assert not any("karpenter.sh/discovery" in (s.inputs.get("tags") or {}) for s in plain.of_type("aws:ec2/subnet:Subnet"))
    assert not plain.of_type("aws:ec2/tag:Tag")


# --- the custom resources -----------------------------------------------------------------------


@pytest.mark.parametrize("stack", VARIANTS)
def test_node_pool_and_node_class_validate_against_the_pinned_crds(stack: str) -> None:
    r = rendering(stack)
    version = str(r.outputs["kubernetes_version"])
    for kind in ("NodePool", "EC2NodeClass"):
        assert conformance.validate_object(manifest(r, kind), version) == []


def test_crd_validation_catches_a_wrong_node_pool() -> None:
    bad = copy.deepcopy(manifest(rendering("dev"), "NodePool"))
    bad["spec"]["disruption"]["consolidationPolicy"] = "Sometimes"
    assert conformance.validate_object(bad, "1.36")
    bad = copy.deepcopy(manifest(rendering("dev"), "EC2NodeClass"))
    bad["spec"]["metadataOptions"]["httpPutResponseHopLimit"] = 0
    assert conformance.validate_object(bad, "1.36")


@pytest.mark.parametrize("stack", VARIANTS)
def test_node_class_launches_hardened_nodes_where_discovery_tags_point(stack: str) -> None:
    r = rendering(stack)
    cfg = parse(karpenter_raw(stack), stack)
    pool = cfg.gpu_pools[serving_pool(stack)]
    spec = manifest(r, "EC2NodeClass")["spec"]
    assert spec["metadataOptions"]["httpTokens"] == "required"
    assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
    volumes = {b["deviceName"]: b["ebs"] for b in spec["blockDeviceMappings"]}
    data = volumes["/dev/xvdb" if pool.is_bottlerocket else "/dev/xvda"]
    assert data == {
        "volumeSize": f"{pool.disk_size_gib}Gi",
        "volumeType": "gp3",
        "encrypted": True,
        "deleteOnTermination": True,
        # The images volume's speed (tests/test_cold_start.py).
        "iops": pool.image_pull.volume_iops,
        "throughput": pool.volume_throughput_mibps,
    }
    assert all(v["encrypted"] for v in volumes.values())
    assert spec["amiSelectorTerms"] == [{"alias": catalog.KARPENTER_AMI_ALIASES[pool.ami_type]}]
    assert "@latest" not in spec["amiSelectorTerms"][0]["alias"]
    discovery = [{"tags": {"karpenter.sh/discovery": cfg.cluster.name}}]
    assert spec["subnetSelectorTerms"] == discovery and spec["securityGroupSelectorTerms"] == discovery
    role = one(r, "aws:iam/role:Role", "karpenter-node-role")
    assert spec["role"] == role.outputs["name"]
    # Tags layered as the provider's default tags are on every resource Pulumi makes.
    assert {"project", "stack", "environment", "managed-by"} <= set(spec["tags"])
    assert spec["tags"]["environment"] == cfg.environment


@pytest.mark.parametrize("stack", VARIANTS)
def test_node_pool_admits_exactly_the_pools_instance_types(stack: str) -> None:
    cfg = parse(karpenter_raw(stack), stack)
    pool = cfg.gpu_pools[serving_pool(stack)]
    requirements = manifest(rendering(stack), "NodePool")["spec"]["template"]["spec"]["requirements"]
    capacity = {"SPOT": "spot", "ON_DEMAND": "on-demand"}

    def admits(instance_type: str, capacity_type: str) -> bool:
        labels = {
            "node.kubernetes.io/instance-type": instance_type,
            "karpenter.sh/capacity-type": capacity_type,
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/os": "linux",
        }
        return all(requirement_holds(req, labels) for req in requirements)

    every_type = sorted(catalog.GPU_INSTANCE_TYPES)
    assert {t for t in every_type if admits(t, capacity[pool.capacity_type])} == set(pool.instance_types)
    other = "on-demand" if pool.capacity_type == "SPOT" else "spot"
    assert not any(admits(t, other) for t in every_type)


@pytest.mark.parametrize("stack", VARIANTS)
def test_node_pool_carries_the_pools_scheduling_contract_limit_and_disruption(stack: str) -> None:
    cfg = parse(karpenter_raw(stack), stack)
    name = serving_pool(stack)
    pool = cfg.gpu_pools[name]
    spec = manifest(rendering(stack), "NodePool")["spec"]
    # The labels a managed node group of the same pool carries (the stack file unchanged).
    group = next(g for g in cr.node_groups(cr.stack(stack)) if g.labels.get("tf-serving-eks/pool") == name)
    managed_labels = {k: v for k, v in group.labels.items() if not k.startswith(("eks.amazonaws.com/", "kubernetes.io/", "node.kubernetes.io/"))}
    assert spec["template"]["metadata"]["labels"] == managed_labels
    assert spec["template"]["spec"]["taints"] == [{"key": pool.taint.key, "value": pool.taint.value, "effect": pool.taint.effect}]
    assert spec["limits"] == {"nvidia.com/gpu": str(pool.max_size * pool.gpus_per_node)}
    expected_policy = {"dev": "WhenEmptyOrUnderutilized", "prod": "WhenEmpty"}[stack]
    assert spec["disruption"]["consolidationPolicy"] == expected_policy
    assert spec["disruption"]["budgets"] == {"dev": [{"nodes": "100%"}], "prod": [{"nodes": "1"}]}[stack]
    assert spec["template"]["spec"]["expireAfter"] == "720h"


@pytest.mark.parametrize("stack", VARIANTS)
def test_serving_pods_and_the_device_plugin_land_on_the_nodes_the_node_pool_makes(stack: str) -> None:
    r = rendering(stack)
    nodes = cr.karpenter_nodes(r)
    assert nodes and all(n.gpu for n in nodes)
    deployments = [m for m in r.k8s_objects() if m["kind"] == "Deployment" and m["metadata"]["namespace"] == "tf-serving"]
    serving = next(d for d in deployments if d["metadata"]["name"] == "tf-serving")
    assert all(can_land(cr.pod_template(serving) or {}, n) for n in nodes)
    # A node of another pool (its label changed) is not one the serving pods may take.
    other = cr.NodeGroup("other", nodes[0].ami_type, {**nodes[0].labels, "tf-serving-eks/pool": "other"}, nodes[0].taints, "", "")
    assert not can_land(cr.pod_template(serving) or {}, other)
    assert cr.gpu_daemonset_problems(charts(stack)) == []


def test_gpu_daemons_that_miss_a_karpenter_node_are_found() -> None:
    c = charts("dev")
    pool = serving_pool("dev")
    r = copy.deepcopy(c.rendering)
    for x in r.resources:
        if x.type == NODE_POOL:
            x.inputs["spec"]["template"]["spec"]["taints"][0]["key"] = "example.com/other"
    changed = copy.copy(c)
    changed.rendering = r
    problems = cr.gpu_daemonset_problems(changed)
    assert any(f"does not tolerate nodepool/{pool}/" in p for p in problems), problems


# --- the controller ---------------------------------------------------------------------------


@pytest.mark.parametrize("stack", VARIANTS)
def test_the_karpenter_charts_render_with_our_values_and_conform(stack: str) -> None:
    c = charts(stack)
    controller = c.release("karpenter")
    crds = c.release("karpenter-crd")
    assert controller is not None and crds is not None
    assert {crd["spec"]["names"]["kind"] for crd in crds.render.crds} >= {"NodePool", "EC2NodeClass", "NodeClaim"}
    # Removing the release must not delete the CRDs, and with them every NodePool's nodes.
    assert all(crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for crd in crds.render.crds)
    assert cr.conformance_problems(c) == []
    assert cr.unserved_kind_problems(c) == []
    deployment = next(m for m in controller.render.of_kind("Deployment"))
    env = cr.container_env(deployment)
    r = rendering(stack)
    assert env.get("CLUSTER_NAME") == r.outputs["cluster_name"]
    queue = one(r, "aws:sqs/queue:Queue", "karpenter-interruption")
    assert env.get("INTERRUPTION_QUEUE") == queue.outputs["name"]
    # On the system node group.
    spec = cr.pod_template(deployment) or {}
    assert spec["nodeSelector"].get("tf-serving-eks/pool") == "system"
    assert deployment["spec"]["replicas"] == {"dev": 1, "prod": 2}[stack]
    # The CRD release comes first, and the controller skips the CRDs it owns.
    assert crds.registered.urn in controller.registered.depends_on
    assert controller.registered.inputs.get("skipCrds") is True


@pytest.mark.parametrize("stack", VARIANTS)
def test_the_controller_runs_as_the_service_account_its_pod_identity_names(stack: str) -> None:
    c = charts(stack)
    controller = c.release("karpenter")
    assert controller is not None
    deployment = next(m for m in controller.render.of_kind("Deployment"))
    association = one(rendering(stack), cr.POD_IDENTITY, "karpenter-identity")
    assert (association.inputs["namespace"], association.inputs["serviceAccount"]) == (
        c.namespace_of(deployment, controller.release),
        (cr.pod_template(deployment) or {})["serviceAccountName"],
    )
    assert cr.identity_problems(c) == []


MUTATING_PREFIXES = ("Create", "Run", "Terminate", "Delete", "Tag", "Add", "Remove", "Pass", "Send")
# Mutating statements the template scopes by resource, not by tag: RunInstances/CreateFleet
# may use any image, subnet, security group... of the region (the launch is tag-scoped by the
# other statements); PassRole only the node role; the queue actions only the queue.
SCOPED_BY_RESOURCE = {"AllowScopedEC2InstanceAccessActions", "AllowPassingInstanceRole", "AllowInterruptionQueueActions"}


def unscoped_mutations(statements: list[dict[str, Any]], cluster: str) -> list[str]:
    """Mutating statements that name `*` or lack a condition on this cluster's tags."""
    problems = []
    for st in statements:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        if not any(a.split(":")[1].startswith(MUTATING_PREFIXES) for a in actions):
            continue
        if "*" in resources:
            problems.append(f"{st.get('Sid')}: mutating actions on *")
            continue
        if st.get("Sid") in SCOPED_BY_RESOURCE:
            continue
        condition = json.dumps(st.get("Condition") or {})
        if f"kubernetes.io/cluster/{cluster}" not in condition:
            problems.append(f"{st.get('Sid')}: not scoped by the cluster's tag")
    return problems


@pytest.mark.parametrize("stack", VARIANTS)
def test_the_controller_policys_mutating_statements_are_scoped_by_the_clusters_tags(stack: str) -> None:
    r = rendering(stack)
    policy = json.loads(one(r, "aws:iam/rolePolicy:RolePolicy", "karpenter-policy").inputs["policy"])
    statements = policy["Statement"]
    cluster = str(r.outputs["cluster_name"])
    assert unscoped_mutations(statements, cluster) == []
    by_sid = {st["Sid"]: st for st in statements}
    node_role = one(r, "aws:iam/role:Role", "karpenter-node-role")
    assert by_sid["AllowPassingInstanceRole"]["Resource"] == node_role.outputs["arn"]
    queue = one(r, "aws:sqs/queue:Queue", "karpenter-interruption")
    assert by_sid["AllowInterruptionQueueActions"]["Resource"] == queue.outputs["arn"]
    # The check can fail: an unscoped termination, and one scoped to another cluster.
    wide = [*statements, {"Sid": "Wide", "Effect": "Allow", "Action": "ec2:TerminateInstances", "Resource": "*"}]
    assert unscoped_mutations(wide, cluster) == ["Wide: mutating actions on *"]
    assert "AllowScopedDeletion: not scoped by the cluster's tag" in unscoped_mutations(statements, "another")


def test_the_queue_policy_admits_eventbridge_and_sqs_and_refuses_plain_http() -> None:
    r = rendering("dev")
    queue = one(r, "aws:sqs/queue:Queue", "karpenter-interruption")
    assert queue.inputs["sqsManagedSseEnabled"] is True
    assert queue.inputs["messageRetentionSeconds"] == 300
    qp = one(r, "aws:sqs/queuePolicy:QueuePolicy", "karpenter-interruption-policy")
    assert qp.inputs["queueUrl"] == queue.outputs["url"]
    allow, deny = json.loads(qp.inputs["policy"])["Statement"]
    assert allow["Effect"] == "Allow" and allow["Action"] == "sqs:SendMessage"
    assert sorted(allow["Principal"]["Service"]) == ["events.amazonaws.com", "sqs.amazonaws.com"]
    assert allow["Resource"] == queue.outputs["arn"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# The template's rules, as written there (ScheduledChangeRule, SpotInterruptionRule,
# RebalanceRule, InstanceStateChangeRule, CapacityReservationInterruptionRule).
DOCUMENTED_PATTERNS = [
    {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    {"source": ["aws.ec2"], "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"]},
]


def test_each_documented_event_rule_feeds_the_queue() -> None:
    r = rendering("dev")
    queue = one(r, "aws:sqs/queue:Queue", "karpenter-interruption")
    rules = r.of_type("aws:cloudwatch/eventRule:EventRule")
    patterns = [json.loads(x.inputs["eventPattern"]) for x in rules]
    assert sorted(patterns, key=json.dumps) == sorted(DOCUMENTED_PATTERNS, key=json.dumps)
    targets = {t.inputs["rule"]: t.inputs["arn"] for t in r.of_type("aws:cloudwatch/eventTarget:EventTarget")}
    assert {x.outputs["name"] for x in rules} == set(targets)
    assert set(targets.values()) == {queue.outputs["arn"]}


def test_the_node_role_joins_through_an_ec2_linux_access_entry() -> None:
    r = rendering("dev")
    entry = one(r, "aws:eks/accessEntry:AccessEntry", "karpenter-node-access")
    role = one(r, "aws:iam/role:Role", "karpenter-node-role")
    assert entry.inputs["type"] == "EC2_LINUX"
    assert entry.inputs["principalArn"] == role.outputs["arn"]
    assert "ec2.amazonaws.com" in json.dumps(role.inputs["assumeRolePolicy"])


# --- refused configs ---------------------------------------------------------------------------


def refusal(raw: Raw, stack: str = "dev") -> str:
    with pytest.raises(StackConfigError) as caught:
        parse(raw, stack)
    return str(caught.value)


def test_karpenter_settings_on_a_managed_node_group_pool_are_refused() -> None:
    raw = raw_stack("dev")
    raw["gpu_pools"]["l4"]["karpenter"] = {"consolidate_after": "1m"}
    assert (
        "tf-serving-eks:gpu_pools.l4.karpenter: is for provisioner: karpenter only; this pool's "
        "provisioner is managed-node-group (remove the section or set provisioner: karpenter)"
    ) in refusal(raw)


@pytest.mark.parametrize(("key", "value"), [("min_size", 1), ("desired_size", 2), ("max_unavailable", 1)])
def test_node_group_keys_on_a_karpenter_pool_are_refused(key: str, value: int) -> None:
    raw = karpenter_raw("dev")
    raw["gpu_pools"]["l4"][key] = value
    assert (
        f"tf-serving-eks:gpu_pools.l4.{key}: is for provisioner: managed-node-group only; Karpenter "
        "keeps no standing nodes (it launches one for each pending pod, up to max_size nodes' "
        f"GPUs) and replaces nodes by its disruption budgets (karpenter.budgets) (got {value})"
    ) in refusal(raw)


def test_a_budget_schedule_without_duration_is_refused() -> None:
    raw = karpenter_raw("dev")
    raw["gpu_pools"]["l4"]["karpenter"] = {"budgets": [{"nodes": "0", "schedule": "0 9 * * mon-fri"}]}
    assert (
        "tf-serving-eks:gpu_pools.l4.karpenter.budgets[0].duration: schedule and duration go "
        'together: set both or neither (got "0 9 * * mon-fri")'
    ) in refusal(raw)


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("consolidate_after", "5 minutes", "must be a whole number of seconds, minutes or hours"),
        ("expire_after", "30d", "must be a whole number of seconds, minutes or hours"),
        ("budgets", [{"nodes": "150%"}], "must be a node count"),
    ],
)
def test_karpenter_values_outside_the_crds_patterns_are_refused(key: str, value: Any, rule: str) -> None:
    raw = karpenter_raw("dev")
    raw["gpu_pools"]["l4"]["karpenter"] = {key: value}
    assert rule in refusal(raw)


def test_prod_refuses_removing_a_node_the_moment_it_empties() -> None:
    raw = karpenter_raw("prod")
    pool = serving_pool("prod")
    raw["gpu_pools"][pool]["karpenter"] = {"consolidate_after": "0s"}
    assert f"tf-serving-eks:gpu_pools.{pool}.karpenter.consolidate_after: prod must not remove a node" in refusal(raw, "prod")


def test_karpenter_needs_a_system_node_per_controller() -> None:
    raw = karpenter_raw("prod")
    raw["environment"] = "staging"
    raw["cluster"]["system_node_group"].update({"min_size": 1, "desired_size": 1, "max_size": 1})
    message = refusal(raw, "staging")
    assert (
        f"tf-serving-eks:cluster.system_node_group.max_size: pool '{serving_pool('prod')}' uses "
        "provisioner karpenter, whose 2 controllers run on separate system nodes in staging: use "
        "at least 2 (got 1)"
    ) in message


# --- serving pods while they load -------------------------------------------------------------

# Go's time.ParseDuration (src/time/format.go): a sequence of decimal numbers, each with a unit;
# Karpenter parses the annotation with it (pkg/utils/pod/scheduling.go parseDoNotDisrupt).
GO_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def go_duration_seconds(value: str) -> float | None:
    """What time.ParseDuration makes of `value`, in seconds; None where it returns an error."""
    sign, body = (-1.0, value[1:]) if value.startswith("-") else (1.0, value.lstrip("+"))
    if body == "0":
        return 0.0
    total, at = 0.0, 0
    while at < len(body):
        m = GO_DURATION.match(body, at)
        if not m or m.group(1) in ("", "."):
            return None
        total += float(m.group(1)) * GO_DURATION_UNITS[m.group(2)]
        at = m.end()
    return sign * total if body else None


def do_not_disrupt_active(annotations: dict[str, str], seconds_since_start: float) -> bool:
    """Karpenter v1.14.1's IsDoNotDisruptActive for a pod whose status.startTime is known."""
    value = annotations.get("karpenter.sh/do-not-disrupt")
    if value is None:
        return False
    if value == "true":
        return True
    window = go_duration_seconds(value)
    if window is None or window <= 0:
        return False  # Karpenter emits an event and ignores the annotation
    return seconds_since_start < window


def test_the_go_duration_evaluator_agrees_with_go() -> None:
    # Cases from Go's own table (src/time/time_test.go parseDurationTests).
    assert go_duration_seconds("1h15m30.918273645s") == pytest.approx(4530.918273645)
    assert go_duration_seconds("1.5h") == 5400 and go_duration_seconds("300ms") == 0.3
    assert go_duration_seconds("0") == 0
    for bad in ("", "3", "15 min", "1d", ".s", "1h-5m", "true"):
        assert go_duration_seconds(bad) is None, bad


def serving_pod_metadata(r: Rendering) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]
        for m in r.k8s_objects()
        if m["kind"] == "Deployment" and m["metadata"]["namespace"] == "tf-serving"
    }


@pytest.mark.parametrize("stack", VARIANTS)
def test_karpenter_leaves_a_loading_serving_pods_node_alone_until_its_load_budget_ends(stack: str) -> None:
    cfg = parse(karpenter_raw(stack), stack)
    probe = next(
        c["startupProbe"]
        for m in rendering(stack).k8s_objects()
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "tf-serving"
        for c in m["spec"]["template"]["spec"]["containers"]
        if c["name"] == "tf-serving"
    )
    # The pod's own limit on loading: the startup probe restarts it after this much running.
    probe_budget = probe["periodSeconds"] * probe["failureThreshold"]
    pods = serving_pod_metadata(rendering(stack))
    assert pods
    for name, meta in pods.items():
        annotations = meta.get("annotations") or {}
        # status.startTime precedes the image pull and the model download: the protection
        # outlasts the probe's budget, and then ends (never a permanent "true").
        assert do_not_disrupt_active(annotations, probe_budget), name
        assert do_not_disrupt_active(annotations, probe_budget + 300), name
        assert not do_not_disrupt_active(annotations, 24 * 3600), name
        assert cfg.serving.startup_timeout_seconds <= probe_budget


def test_canary_pods_on_a_karpenter_pool_are_protected_while_they_load_too() -> None:
    raw = karpenter_raw("prod")
    model = next(iter(raw["serving"]["models"]))
    versions = raw["serving"]["models"][model].get("versions") or [1]
    raw["serving"]["models"][model]["canary"] = {"version": max(versions) + 1, "weight": 10}
    pods = serving_pod_metadata(render_raw(raw, stack="prod"))
    assert set(pods) == {"tf-serving", "tf-serving-canary"}, set(pods)
    for name, meta in pods.items():
        assert do_not_disrupt_active(meta.get("annotations") or {}, 60), name


def test_serving_pods_on_managed_node_groups_carry_no_karpenter_annotation() -> None:
    for stack in VARIANTS:
        for name, meta in serving_pod_metadata(render_raw(raw_stack(stack), stack=stack)).items():
            assert "karpenter.sh/do-not-disrupt" not in (meta.get("annotations") or {}), (stack, name)


def test_a_do_not_disrupt_value_karpenter_would_ignore_is_caught() -> None:
    assert not do_not_disrupt_active({"karpenter.sh/do-not-disrupt": "25 minutes"}, 1)
    assert not do_not_disrupt_active({"karpenter.sh/do-not-disrupt": "0s"}, 0)
    assert not do_not_disrupt_active({"karpenter.sh/do-not-disrupt": "15m"}, 900)


# --- capacity reservations -----------------------------------------------------------------------

RESERVATIONS = [{"id": "cr-0123456789abcdef0"}, {"tags": {"team": "ml-serving", "purpose": "*"}}]


@functools.cache
def reserved_rendering(stack: str) -> Rendering:
    raw = karpenter_raw(stack)
    raw["gpu_pools"][serving_pool(stack)]["karpenter"] = {"capacity_reservations": RESERVATIONS}
    return render_raw(raw, stack=f"karpenter-{stack}")


@pytest.mark.parametrize("stack", VARIANTS)
def test_a_pool_with_reservations_fills_them_first_then_falls_back_to_its_capacity_type(stack: str) -> None:
    r = reserved_rendering(stack)
    version = str(r.outputs["kubernetes_version"])
    node_class, node_pool = manifest(r, "EC2NodeClass"), manifest(r, "NodePool")
    for obj in (node_class, node_pool):
        assert conformance.validate_object(obj, version) == []
    assert node_class["spec"]["capacityReservationSelectorTerms"] == RESERVATIONS
    capacity = next(
        q["values"] for q in node_pool["spec"]["template"]["spec"]["requirements"] if q["key"] == "karpenter.sh/capacity-type"
    )
    own = {"dev": "spot", "prod": "on-demand"}[stack]
    assert capacity == ["reserved", own]
    # Reserved or not, the nodes are the pool's: the serving pods land on either.
    deployment = next(
        m for m in r.k8s_objects() if m["kind"] == "Deployment" and m["metadata"]["name"] == "tf-serving"
    )
    nodes = cr.karpenter_nodes(r)
    for capacity_type in capacity:
        assert all(can_land(cr.pod_template(deployment) or {}, cr.NodeGroup(
            n.name, n.ami_type, {**n.labels, "karpenter.sh/capacity-type": capacity_type}, n.taints, "", ""
        )) for n in nodes)


def test_a_pool_without_reservations_admits_only_its_capacity_type() -> None:
    spec = manifest(rendering("prod"), "NodePool")["spec"]["template"]["spec"]
    assert "capacityReservationSelectorTerms" not in manifest(rendering("prod"), "EC2NodeClass")["spec"]
    assert [q["values"] for q in spec["requirements"] if q["key"] == "karpenter.sh/capacity-type"] == [["on-demand"]]


def test_the_crd_refuses_what_the_reservation_rules_refuse() -> None:
    # The CRD's own pattern: the config's id rule says the same in words.
    bad = copy.deepcopy(manifest(reserved_rendering("dev"), "EC2NodeClass"))
    bad["spec"]["capacityReservationSelectorTerms"] = [{"id": "reservation-1"}]
    assert conformance.validate_object(bad, "1.36")


@pytest.mark.parametrize(
    ("terms", "key", "rule"),
    [
        ([{"id": "cr-0abc", "tags": {"a": "b"}}], "capacity_reservations[0].id", "one of the two, not both"),
        ([{}], "capacity_reservations[0].id", "one of the two, not both"),
        ([{"id": "xr-1"}], "capacity_reservations[0].id", "must be a capacity reservation ID"),
        ([{"tags": {"team": ""}}], "capacity_reservations[0].tags.team", "must not be empty"),
    ],
)
def test_wrong_reservation_terms_are_refused(terms: list[dict[str, Any]], key: str, rule: str) -> None:
    raw = karpenter_raw("dev")
    raw["gpu_pools"][serving_pool("dev")]["karpenter"] = {"capacity_reservations": terms}
    message = refusal(raw)
    assert f"gpu_pools.{serving_pool('dev')}.karpenter.{key}" in message and rule in message, message
