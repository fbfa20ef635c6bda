"""cluster-autoscaler: the pinned chart and its settings, its least-privilege identity, and
what it does with our node groups (a pool's zone groups are balanced as similar, pools are not)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from components import catalog
from tests.support import chart_renders as cr
from tests.test_gpu_pools import (
    NODE_GROUP,
    RELEASE,
    TEMPLATE,
    asg_tags,
    release,
    renderings_with_pools,
    subnet_zones,
)
from tools.lib.mock_engine import Registered, Rendering


def test_cluster_autoscaler_is_pinned_discovers_by_tags_and_uses_env_timings(dev: Rendering, prod: Rendering) -> None:
    for rendering, unneeded, delay in ((dev, "5m", "5m"), (prod, "15m", "10m")):
        ca = release(rendering, "cluster-autoscaler")
        assert ca["version"] == "9.59.0" and ca["namespace"] == "kube-system"
        values = ca["values"]
        assert values["image"]["tag"] == catalog.CLUSTER_AUTOSCALER_IMAGE_TAGS["1.36"]
        assert values["autoDiscovery"]["clusterName"] == rendering.outputs["cluster_name"]
        assert values["extraArgs"]["scale-down-unneeded-time"] == unneeded
        assert values["extraArgs"]["scale-down-delay-after-add"] == delay
        assert values["rbac"]["serviceAccount"]["name"] == "cluster-autoscaler"
        assert values["nodeSelector"] == {"tf-serving-eks/pool": "system"}


def test_cluster_autoscaler_identity_is_least_privilege(prod: Rendering) -> None:
    assoc = prod.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "gpu-cluster-autoscaler-identity").inputs
    assert (assoc["namespace"], assoc["serviceAccount"]) == ("kube-system", "cluster-autoscaler")
    role = prod.one("aws:iam/role:Role", "gpu-cluster-autoscaler-role")
    assert assoc["roleArn"].endswith(role.name + "-" + assoc["roleArn"].rsplit("-", 1)[-1])
    policy = json.loads(prod.one("aws:iam/rolePolicy:RolePolicy", "gpu-cluster-autoscaler-policy").inputs["policy"])
    mutating = [s for s in policy["Statement"] if "autoscaling:SetDesiredCapacity" in s["Action"]]
    (condition,) = mutating
    # Which Auto Scaling groups it may change, judged as IAM does (StringEquals: every key
    # present with its value): each of the stack's groups, and no other group of the cluster.
    groups = cr.node_groups(prod)
    owners = dataclasses.replace(groups[0], name="owners-group", asg_name="eks-owners-group-asg")

    def may_change(group: cr.NodeGroup) -> bool:
        tags = cr.asg_tags(group, prod)
        return all(tags.get(k.removeprefix("aws:ResourceTag/")) == v for k, v in condition["Condition"]["StringEquals"].items())

    assert list(condition["Condition"]) == ["StringEquals"]
    assert [g.name for g in groups if not may_change(g)] == []
    assert not may_change(owners)
    for statement in policy["Statement"]:
        if "Condition" not in statement:
            assert all(":Describe" in a or ":Get" in a for a in statement["Action"]), statement


# cluster-autoscaler's --balance-similar-node-groups on AWS ignores these labels
# (processors/nodegroupset/compare_nodegroups.go BasicIgnoredLabels, aws_nodegroups.go).
CA_IGNORED_LABELS = {
    "kubernetes.io/hostname",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "beta.kubernetes.io/fluentd-ds-ready",
    "kops.k8s.io/instancegroup",
    "alpha.eksctl.io/instance-id",
    "alpha.eksctl.io/nodegroup-name",
    "eks.amazonaws.com/nodegroup",
    "k8s.amazonaws.com/eniConfig",
    "lifecycle",
    "topology.ebs.csi.aws.com/zone",
}


def ca_template_node(r: Rendering, group: Registered, cluster: str) -> dict[str, Any]:
    """The node cluster-autoscaler imagines for an empty managed node group
    (cloudprovider/aws/aws_manager.go buildNodeFromTemplate): generic labels for the first
    instance type and the ASG's zone, then the ASG's node-template and `eks:` tags as labels
    (extractLabelsFromAsg; EKS tags its ASGs eks:cluster-name and eks:nodegroup-name), then
    the DescribeNodegroup labels (aws_wrapper.go getManagedNodegroupInfo); capacity from the
    instance type, overridden by resources tags."""
    inputs = group.inputs
    zone = subnet_zones(r)[inputs["subnetIds"][0]]
    name = group.outputs["nodeGroupName"]
    tags = asg_tags(r, group.name.removesuffix("-nodes") + "-asg-tag-")
    first = catalog.GPU_INSTANCE_TYPES[inputs["instanceTypes"][0]]
    asg_zone = zone  # a one-zone group: its ASG's first zone is its zone
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": first.name,
        "topology.kubernetes.io/region": asg_zone[:-1],
        "topology.kubernetes.io/zone": asg_zone,
        "topology.ebs.csi.aws.com/zone": asg_zone,
        "kubernetes.io/hostname": f"{name}-asg-1",
    }
    labels.update({k.removeprefix(f"{TEMPLATE}/label/"): v for k, v in tags.items() if k.startswith(f"{TEMPLATE}/label/")})
    labels.update({"cluster-name": cluster, "nodegroup-name": name})
    labels.update(
        {
            "amiType": inputs["amiType"],
            "eks.amazonaws.com/capacityType": inputs["capacityType"],
            "eks.amazonaws.com/nodegroup": name,
            **inputs["labels"],
        }
    )
    capacity = {"cpu": str(first.vcpus), "memory": str(first.memory_gib), "nvidia.com/gpu": str(first.gpus), "pods": "110"}
    capacity.update({k.removeprefix(f"{TEMPLATE}/resources/"): v for k, v in tags.items() if k.startswith(f"{TEMPLATE}/resources/")})
    taints = sorted(
        (k.removeprefix(f"{TEMPLATE}/taint/"), v) for k, v in tags.items() if k.startswith(f"{TEMPLATE}/taint/")
    )
    return {"labels": labels, "capacity": capacity, "taints": taints, "zone": zone}


def ca_similar(a: dict[str, Any], b: dict[str, Any], ignored: set[str]) -> bool:
    """compare_nodegroups.go IsCloudProviderNodeInfoSimilar for empty groups: capacities
    equal (memory within 1.5%), and every label not ignored present on both with one value."""
    if a["capacity"] != b["capacity"]:
        return False
    keys = (set(a["labels"]) | set(b["labels"])) - ignored
    return all(a["labels"].get(k) == b["labels"].get(k) for k in keys)


def balancing_ignored_labels(r: Rendering) -> set[str]:
    args = release(r, "cluster-autoscaler")["values"]["extraArgs"]
    # The chart keeps a key up to its first "_" as the flag name (templates/deployment.yaml).
    return {v for k, v in args.items() if k.split("_")[0] == "balancing-ignore-label"}


def test_a_pools_zone_groups_are_similar_for_balancing_and_their_templates_sit_in_their_zone(
    dev: Rendering, prod: Rendering
) -> None:
    for r in renderings_with_pools(dev, prod):
        assert release(r, "cluster-autoscaler")["values"]["extraArgs"]["balance-similar-node-groups"] is True
        ignored = CA_IGNORED_LABELS | balancing_ignored_labels(r)
        cluster = str(r.outputs["cluster_name"])
        by_pool: dict[str, list[dict[str, Any]]] = {}
        for group in r.of_type(NODE_GROUP):
            if group.component == "gpu_pools":
                by_pool.setdefault(group.inputs["labels"]["tf-serving-eks/pool"], []).append(
                    ca_template_node(r, group, cluster)
                )
        for pool, templates in by_pool.items():
            assert len({t["zone"] for t in templates}) == len(templates) > 1, pool
            for t in templates:
                assert t["labels"]["topology.kubernetes.io/zone"] == t["zone"], pool
            first = templates[0]
            for other in templates[1:]:
                assert ca_similar(first, other, ignored), (r.stack, pool, first["zone"], other["zone"])
                assert first["taints"] == other["taints"], pool
        pools = list(by_pool.values())
        for i, a in enumerate(pools):
            for b in pools[i + 1:]:
                assert not ca_similar(a[0], b[0], ignored), "different pools must not be balanced together"


def test_without_our_ignore_labels_the_zone_groups_would_not_balance(dev: Rendering) -> None:
    templates = [ca_template_node(dev, g, "tfs-dev") for g in dev.of_type(NODE_GROUP) if g.component == "gpu_pools"]
    assert not ca_similar(templates[0], templates[1], CA_IGNORED_LABELS)


def test_cluster_autoscaler_is_its_own_component_and_keeps_its_deployed_urns(dev: Rendering) -> None:
    # It was installed by the GPU pools component (then tf-serving-eks:gpu:GpuNodePool "gpu",
    # at the stack root): each resource answers to its URN there, so nothing is replaced.
    component = dev.one("tf-serving-eks:node_autoscaling:NodeAutoscaler")
    children = [r for r in dev.resources if r.parent == component.urn]
    assert {(c.type, c.name) for c in children} == {
        ("aws:iam/role:Role", "gpu-cluster-autoscaler-role"),
        ("aws:eks/podIdentityAssociation:PodIdentityAssociation", "gpu-cluster-autoscaler-identity"),
        ("aws:iam/rolePolicy:RolePolicy", "gpu-cluster-autoscaler-policy"),
        (RELEASE, "gpu-cluster-autoscaler"),
    }
    former_parent = "urn:pulumi:dev::tf-serving-eks::tf-serving-eks:gpu:GpuNodePool::gpu"
    for child in children:
        assert child.aliases == [{"parentUrn": former_parent}], child.name
