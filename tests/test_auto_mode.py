"""EKS Auto Mode pools (gpu_pools.<name>.provisioner: auto-mode): the dev and prod stack files
with the serving pool's nodes from Auto Mode, rendered under the mock engine.

Sources of the rules stated here: the EKS user guide (awsdocs/amazon-eks-user-guide,
latest/ug/automode/): auto-learn-iam.adoc (cluster and node roles), create-node-class.adoc
(NodeClass fields, the access entry of a custom node role), create-node-pool.adoc (NodePool
labels), auto-enable-existing.adoc (the three capabilities switched together), auto-accelerated
(the built-in NVIDIA device plugin).
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import pytest

from components import catalog
from components.config import StackConfigError
from tests.support import chart_renders as cr
from tests.support import conformance, parse, raw_stack, render_raw
from tests.support.scheduling import can_land, requirement_holds
from tests.test_karpenter import do_not_disrupt_active
from tools.lib.mock_engine import Registered, Rendering

NODE_POOL = "kubernetes:karpenter.sh/v1:NodePool"
NODE_CLASS = "kubernetes:eks.amazonaws.com/v1:NodeClass"
EKS = "aws:eks/cluster:Cluster"
Raw = dict[str, Any]
VARIANTS = ("dev", "prod")


def auto_mode_raw(stack: str, pool: str | None = None) -> Raw:
    """The repo's stack file with one pool (default: the serving pool) made an Auto Mode pool."""
    raw = raw_stack(stack)
    pool = pool or raw["serving"]["gpu_pool"]
    for key in ("min_size", "desired_size", "max_unavailable", "ami_type", "time_slicing_replicas", "instance_store"):
        raw["gpu_pools"][pool].pop(key, None)
    raw["gpu_pools"][pool]["provisioner"] = "auto-mode"
    if pool == raw["serving"]["gpu_pool"]:
        # The node-local model cache's host folder is not made on Auto Mode nodes.
        raw["serving"].pop("model_cache", None)
        # No DCGM exporter on Auto Mode nodes: prod scales on its other metrics.
        raw.get("autoscaling", {}).get("metrics", {}).pop("gpu_utilisation", None)
    return raw


@functools.cache
def rendering(stack: str) -> Rendering:
    return render_raw(auto_mode_raw(stack), stack=f"auto-mode-{stack}")


def serving_pool(stack: str) -> str:
    return str(raw_stack(stack)["serving"]["gpu_pool"])


def manifests(r: Rendering, kind: str) -> list[dict[str, Any]]:
    return [m for m in r.k8s_objects() if m["kind"] == kind]


def one(r: Rendering, type_token: str, suffix: str) -> Registered:
    found = [x for x in r.of_type(type_token) if x.name.endswith(suffix)]
    assert len(found) == 1, f"{type_token} *{suffix}: {[x.name for x in found]}"
    return found[0]


def cluster_policies(r: Rendering) -> set[str]:
    """The AWS managed policies on the role the EKS cluster runs as (by its roleArn)."""
    role = str(r.of_type(EKS)[0].inputs["roleArn"]).split("/")[-1]
    return {
        str(a.inputs["policyArn"]).split("/")[-1]
        for a in r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == role
    }


# --- the cluster ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", VARIANTS)
def test_the_cluster_is_switched_into_auto_mode_with_its_three_capabilities_and_no_builtin_pools(stack: str) -> None:
    eks = rendering(stack).of_type(EKS)[0].inputs
    # All three together, or EKS refuses the request (auto-enable-existing.adoc).
    assert eks["computeConfig"] == {"enabled": True, "nodePools": []}
    assert eks["storageConfig"] == {"blockStorage": {"enabled": True}}
    assert eks["kubernetesNetworkConfig"]["elasticLoadBalancing"] == {"enabled": True}
    # No built-in pool, so no node role at cluster level (the NodeClass names ours).
    assert "nodeRoleArn" not in eks["computeConfig"]
    assert eks["bootstrapSelfManagedAddons"] is False


def test_a_stack_without_auto_mode_pools_leaves_the_cluster_as_it_was() -> None:
    plain = cr.stack("dev")
    eks = plain.of_type(EKS)[0].inputs
    assert "computeConfig" not in eks and "storageConfig" not in eks
    assert "elasticLoadBalancing" not in (eks.get("kubernetesNetworkConfig") or {})
    assert cluster_policies(plain) == {"AmazonEKSClusterPolicy"}
    assert not plain.of_type(NODE_CLASS) and not [x for x in plain.of_type("aws:iam/rolePolicy:RolePolicy") if "auto-mode" in x.name]


@pytest.mark.parametrize("stack", VARIANTS)
def test_the_cluster_role_has_auto_modes_policies_and_may_tag_what_auto_mode_launches(stack: str) -> None:
    r = rendering(stack)
    assert cluster_policies(r) == {
        "AmazonEKSClusterPolicy",
        "AmazonEKSComputePolicy",
        "AmazonEKSBlockStoragePolicy",
        "AmazonEKSLoadBalancingPolicy",
        "AmazonEKSNetworkingPolicy",
    }
    role = one(r, "aws:iam/role:Role", "control-plane-role")
    trust = json.loads(str(role.inputs["assumeRolePolicy"]))
    assert {"sts:AssumeRole", "sts:TagSession"} <= set(trust["Statement"][0]["Action"])
    tagging = one(r, "aws:iam/rolePolicy:RolePolicy", "auto-mode-tagging")
    assert tagging.inputs["role"] == role.outputs["name"]
    statement = json.loads(str(tagging.inputs["policy"]))["Statement"][0]
    # Only for launches of this cluster's node classes (the tags Auto Mode puts on each).
    assert statement["Condition"]["StringEquals"] == {"aws:RequestTag/eks:eks-cluster-name": f"tfs-{stack}"}
    assert set(statement["Action"]) == {"ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateLaunchTemplate"}


# --- the node role and its access ------------------------------------------------------------


@pytest.mark.parametrize("stack", VARIANTS)
def test_the_node_role_joins_through_an_ec2_access_entry_with_the_auto_node_policy(stack: str) -> None:
    r = rendering(stack)
    role = one(r, "aws:iam/role:Role", "auto-mode-node-role")
    assert "ec2.amazonaws.com" in json.dumps(role.inputs["assumeRolePolicy"])
    attached = {
        str(a.inputs["policyArn"]).split("/")[-1]
        for a in r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.inputs["role"] == role.outputs["name"] and ":iam::aws:policy/" in str(a.inputs["policyArn"])
    }
    assert attached == {"AmazonEKSWorkerNodeMinimalPolicy", "AmazonEC2ContainerRegistryPullOnly"}
    entry = one(r, "aws:eks/accessEntry:AccessEntry", "auto-mode-node-access")
    assert entry.inputs["type"] == "EC2" and entry.inputs["principalArn"] == role.outputs["arn"]
    association = one(r, "aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "auto-mode-node-access-policy")
    assert association.inputs["principalArn"] == role.outputs["arn"]
    assert association.inputs["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSAutoNodePolicy"
    assert association.inputs["accessScope"] == {"type": "cluster"}
    # The node class names the role the access entry admits.
    (node_class,) = manifests(r, "NodeClass")
    assert node_class["spec"]["role"] == role.outputs["name"]


# --- the custom resources ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", VARIANTS)
def test_node_class_and_node_pool_validate_against_the_guide_and_the_pinned_crd(stack: str) -> None:
    r = rendering(stack)
    version = str(r.outputs["kubernetes_version"])
    for kind in ("NodeClass", "NodePool"):
        (obj,) = manifests(r, kind)
        assert conformance.validate_object(obj, version) == []


def test_schema_checks_catch_a_wrong_node_class() -> None:
    (good,) = manifests(rendering("dev"), "NodeClass")
    for edit in (
        lambda s: s["ephemeralStorage"].update(size="60000Gi"),
        lambda s: s["ephemeralStorage"].update(iops=100),
        lambda s: s.update(amiSelectorTerms=[{"alias": "al2023@latest"}]),
        lambda s: s.pop("role"),
    ):
        bad = copy.deepcopy(good)
        edit(bad["spec"])
        assert conformance.validate_object(bad, "1.36"), bad["spec"]


@pytest.mark.parametrize("stack", VARIANTS)
def test_node_class_launches_in_the_clusters_private_subnets_with_the_pools_disk(stack: str) -> None:
    r = rendering(stack)
    cfg = parse(auto_mode_raw(stack), stack)
    pool = cfg.gpu_pools[serving_pool(stack)]
    (node_class,) = manifests(r, "NodeClass")
    spec = node_class["spec"]
    private = [s.outputs["id"] for s in r.of_type("aws:ec2/subnet:Subnet") if "-private-" in s.name]
    assert private and sorted(t["id"] for t in spec["subnetSelectorTerms"]) == sorted(private)
    eks = r.of_type(EKS)[0]
    assert spec["securityGroupSelectorTerms"] == [{"id": eks.outputs["vpcConfig"]["clusterSecurityGroupId"]}]
    assert spec["ephemeralStorage"] == {
        "size": f"{pool.disk_size_gib}Gi",
        "iops": pool.image_pull.volume_iops,
        "throughput": pool.volume_throughput_mibps,
    }
    assert spec["tags"]["environment"] == stack and spec["tags"]["gpu-pool"] == serving_pool(stack)


@pytest.mark.parametrize("stack", VARIANTS)
def test_node_pool_admits_exactly_the_pools_instance_types_and_capacity_type(stack: str) -> None:
    cfg = parse(auto_mode_raw(stack), stack)
    pool = cfg.gpu_pools[serving_pool(stack)]
    (node_pool,) = manifests(rendering(stack), "NodePool")
    spec = node_pool["spec"]["template"]["spec"]
    assert spec["nodeClassRef"] == {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": serving_pool(stack)}
    capacity = {"SPOT": "spot", "ON_DEMAND": "on-demand"}

    def admits(instance_type: str, capacity_type: str) -> bool:
        labels = {
            "node.kubernetes.io/instance-type": instance_type,
            "karpenter.sh/capacity-type": capacity_type,
            "kubernetes.io/arch": "amd64",
        }
        return all(requirement_holds(req, labels) for req in spec["requirements"])

    every_type = sorted(catalog.GPU_INSTANCE_TYPES)
    assert {t for t in every_type if admits(t, capacity[pool.capacity_type])} == set(pool.instance_types)
    # kubernetes.io/os is a label Auto Mode does not support in requirements (create-node-pool.adoc).
    assert "kubernetes.io/os" not in {req["key"] for req in spec["requirements"]}
    assert node_pool["spec"]["limits"] == {"nvidia.com/gpu": str(pool.max_size * pool.gpus_per_node)}
    assert spec["expireAfter"] == "336h"


@pytest.mark.parametrize("stack", VARIANTS)
def test_serving_pods_land_on_auto_mode_nodes_and_no_gpu_daemonset_of_ours_does(stack: str) -> None:
    r = rendering(stack)
    nodes = [n for n in cr.karpenter_nodes(r) if n.auto_mode]
    assert nodes and all(n.gpu for n in nodes)
    serving = next(
        m for m in r.k8s_objects()
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "tf-serving" and m["metadata"]["namespace"] == "tf-serving"
    )
    assert all(can_land(cr.pod_template(serving) or {}, n) for n in nodes)
    charts = cr.rendering_charts(f"auto-mode-{stack}", r)
    assert cr.gpu_daemonset_problems(charts) == []
    releases = {x.inputs["chart"] for x in r.of_type(cr.HELM_RELEASE)}
    assert "karpenter" not in releases
    # prod keeps a managed-node-group pool beside it: the device plugin and DCGM serve that one.
    others = set(raw_stack(stack)["gpu_pools"]) - {serving_pool(stack)}
    assert ("dcgm-exporter" in releases) == bool(others)
    assert ("nvidia-device-plugin" in releases) == bool(others)


def test_a_dcgm_exporter_that_would_land_on_an_auto_mode_node_is_found() -> None:
    r = rendering("prod")
    charts = cr.rendering_charts("auto-mode-prod", r)
    release = next(x for x in r.of_type(cr.HELM_RELEASE) if x.inputs["chart"] == "dcgm-exporter")
    changed_rendering = copy.deepcopy(r)
    for x in changed_rendering.resources:
        if x.type == cr.HELM_RELEASE and x.name == release.name:
            x.inputs["values"].pop("affinity")
    changed = cr.rendering_charts("auto-mode-prod-dcgm-everywhere", changed_rendering)
    problems = cr.gpu_daemonset_problems(changed)
    assert any("lands on Auto Mode node" in p for p in problems), problems
    assert cr.gpu_daemonset_problems(charts) == []


@pytest.mark.parametrize("stack", VARIANTS)
def test_a_pool_of_auto_mode_has_no_node_group_and_no_cluster_autoscaler_tags(stack: str) -> None:
    r = rendering(stack)
    pool = serving_pool(stack)
    assert not [g for g in r.of_type(cr.NODE_GROUP) if f"-{pool}-" in g.name]
    assert not [t for t in r.of_type(cr.ASG_TAG) if f"-{pool}-" in t.name]
    assert [x.name for x in r.of_type(NODE_POOL)] == [f"auto-mode-{pool}-node-pool"]
    assert [x.name for x in r.of_type(NODE_CLASS)] == [f"auto-mode-{pool}-node-class"]
    assert not r.of_type("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")


def test_serving_pods_on_auto_mode_nodes_are_protected_while_they_load() -> None:
    r = rendering("dev")
    serving = next(m for m in r.k8s_objects() if m["kind"] == "Deployment" and m["metadata"]["name"] == "tf-serving")
    annotations = serving["spec"]["template"]["metadata"].get("annotations") or {}
    # Auto Mode runs Karpenter, which reads the annotation as kubernetes-sigs/karpenter does.
    assert do_not_disrupt_active(annotations, 60)
    assert not do_not_disrupt_active(annotations, 24 * 3600)


def test_preview_names_the_provisioner_and_its_types() -> None:
    pools = rendering("dev").outputs["node_cost_usd_per_month"]["pools"]
    pool = pools[serving_pool("dev")]
    assert pool["provisioner"] == "auto-mode" and pool["min"] == 0


# --- refused configs -----------------------------------------------------------------------------


def refusal(raw: Raw, stack: str = "dev") -> str:
    with pytest.raises(StackConfigError) as caught:
        parse(raw, stack)
    return str(caught.value)


def pool_of(raw: Raw) -> dict[str, Any]:
    return dict(raw["gpu_pools"][raw["serving"]["gpu_pool"]])


def with_pool(**settings: Any) -> Raw:
    raw = auto_mode_raw("dev")
    raw["gpu_pools"][raw["serving"]["gpu_pool"]].update(settings)
    return raw


@pytest.mark.parametrize(
    ("settings", "key", "words"),
    [
        ({"ami_type": "BOTTLEROCKET_x86_64_NVIDIA"}, "ami_type", "EKS Auto Mode picks the AMI of its nodes itself"),
        ({"time_slicing_replicas": 2}, "time_slicing_replicas", "runs its own NVIDIA device plugin"),
        ({"min_size": 1}, "min_size", "EKS Auto Mode keeps no standing nodes"),
        ({"max_unavailable": 1}, "max_unavailable", "EKS Auto Mode keeps no standing nodes"),
        ({"instance_types": ["p5en.48xlarge"]}, "instance_types.0", "EKS Auto Mode does not launch the p5en family"),
        ({"auto_mode": {"expire_after": "720h"}}, "auto_mode.expire_after", "replaces every node after 21 days"),
        ({"auto_mode": {"expire_after": "Never"}}, "auto_mode.expire_after", "replaces every node after 21 days"),
        ({"auto_mode": {"capacity_reservations": [{"id": "cr-0123456789abcdef0"}]}}, "auto_mode.capacity_reservations", "unknown key; allowed keys: budgets"),
        ({"karpenter": {"consolidate_after": "1m"}}, "karpenter", "is for provisioner: karpenter only"),
        ({"warm_pool": {"enabled": True}}, "warm_pool.enabled", "EKS Auto Mode launches its nodes without one"),
        ({"image_pull": {"parallel": True}}, "image_pull.parallel", "take no user data"),
        ({"instance_store": "raid0", "instance_types": ["g6.xlarge"]}, "instance_store", "take no nodeadm settings"),
        ({"image_pull": {"prepulled_snapshot_id": "snap-0123456789abcdef0"}}, "image_pull.prepulled_snapshot_id", "take no user data"),
    ],
)
def test_keys_auto_mode_cannot_honour_are_refused(settings: Raw, key: str, words: str) -> None:
    message = refusal(with_pool(**settings))
    assert f"tf-serving-eks:gpu_pools.{serving_pool('dev')}.{key}:" in message and words in message, message


def test_an_auto_mode_section_on_another_provisioners_pool_is_refused() -> None:
    raw = raw_stack("dev")
    raw["gpu_pools"][serving_pool("dev")]["auto_mode"] = {"expire_after": "24h"}
    assert "is for provisioner: auto-mode only; this pool's provisioner is managed-node-group" in refusal(raw)


def test_auto_mode_on_an_existing_cluster_is_refused() -> None:
    raw = auto_mode_raw("dev")
    raw["cluster"] = {"mode": "existing", "name": "tfs-dev"}
    message = refusal(raw)
    assert f"gpu_pools.{serving_pool('dev')}.provisioner: needs cluster.mode create" in message, message


def test_auto_mode_beside_karpenter_is_refused() -> None:
    raw = auto_mode_raw("prod")
    other = next(p for p in raw["gpu_pools"] if p != serving_pool("prod"))
    for key in ("min_size", "desired_size", "max_unavailable"):
        raw["gpu_pools"][other].pop(key, None)
    raw["gpu_pools"][other]["provisioner"] = "karpenter"
    message = refusal(raw, "prod")
    assert f"gpu_pools.{other}.provisioner:" in message and "a stack uses karpenter or auto-mode pools, not both" in message


def test_scaling_on_gpu_utilisation_of_an_auto_mode_pool_is_refused() -> None:
    raw = auto_mode_raw("prod")
    raw.setdefault("autoscaling", {}).setdefault("metrics", {})["gpu_utilisation"] = 70
    raw["autoscaling"]["enabled"] = True
    message = refusal(raw, "prod")
    assert "autoscaling.metrics.gpu_utilisation" in message and "DCGM exporter" in message, message


def test_the_volume_settings_reach_the_node_class() -> None:
    raw = with_pool(image_pull={"volume_iops": 6000, "volume_throughput_mibps": 500})
    (node_class,) = manifests(render_raw(raw, stack="auto-mode-volume"), "NodeClass")
    assert node_class["spec"]["ephemeralStorage"]["iops"] == 6000
    assert node_class["spec"]["ephemeralStorage"]["throughput"] == 500


def test_beside_an_auto_mode_pool_the_serving_pods_stay_on_the_managed_pool_they_name() -> None:
    raw = auto_mode_raw("prod", pool="l4")
    r = render_raw(raw, stack="auto-mode-beside")
    serving = next(
        m for m in r.k8s_objects()
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "tf-serving" and m["metadata"]["namespace"] == "tf-serving"
    )
    auto_nodes = [n for n in cr.karpenter_nodes(r) if n.auto_mode]
    named = [g for g in cr.node_groups(r) if g.labels.get("tf-serving-eks/pool") == serving_pool("prod")]
    assert auto_nodes and named
    assert not any(can_land(cr.pod_template(serving) or {}, n) for n in auto_nodes)
    assert all(can_land(cr.pod_template(serving) or {}, g) for g in named)
    assert cr.gpu_daemonset_problems(cr.rendering_charts("auto-mode-beside", r)) == []


def test_the_model_cache_on_an_auto_mode_serving_pool_is_refused() -> None:
    raw = auto_mode_raw("dev")
    raw["serving"]["model_cache"] = {"enabled": True}
    message = refusal(raw)
    assert "tf-serving-eks:serving.model_cache.enabled:" in message and "uses EKS Auto Mode" in message, message
