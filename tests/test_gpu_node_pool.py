"""GPU node pools: node groups, scheduling contract, NVIDIA charts, cluster-autoscaler, costs."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from components import catalog
from components.config import StackConfigError
from components.gpu_node_pool import monthly_cost_range
from tests.support import parse, raw_stack, render_raw
from tools import conformance
from tools.mock_engine import Rendering

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
# Charts whose default values are not in the reference data; tests/test_logs.py checks the
# keys we set against the chart's published values instead.
UNREFERENCED_CHARTS = {"aws-for-fluent-bit"}
RELEASE = "kubernetes:helm.sh/v3:Release"


def gpu_groups(r: Rendering) -> dict[str, dict[str, Any]]:
    return {g.name: g.inputs for g in r.of_type(NODE_GROUP) if g.component == "gpu"}


def release(r: Rendering, chart: str) -> dict[str, Any]:
    found = [x.inputs for x in r.of_type(RELEASE) if x.inputs["chart"] == chart]
    assert len(found) == 1, chart
    return found[0]


def asg_tags(r: Rendering, prefix: str) -> dict[str, str]:
    return {
        t.inputs["tag"]["key"]: t.inputs["tag"]["value"]
        for t in r.of_type("aws:autoscaling/tag:Tag")
        if t.name.startswith(prefix)
    }


def test_pools_are_keyed_node_groups_with_env_capacity(dev: Rendering, prod: Rendering) -> None:
    assert set(gpu_groups(dev)) == {"gpu-l4-nodes"}
    assert set(gpu_groups(prod)) == {"gpu-a10g-nodes", "gpu-l4-nodes"}
    dev_l4 = gpu_groups(dev)["gpu-l4-nodes"]
    assert dev_l4["capacityType"] == "SPOT"
    assert dev_l4["amiType"] == "AL2023_x86_64_NVIDIA"
    assert dev_l4["instanceTypes"] == ["g6.xlarge", "g6.2xlarge"]
    assert dev_l4["scalingConfig"] == {"minSize": 0, "desiredSize": 0, "maxSize": 2}
    assert dev_l4["subnetIds"] == dev.outputs["private_subnet_ids"]
    prod_groups = gpu_groups(prod)
    assert prod_groups["gpu-a10g-nodes"]["capacityType"] == "ON_DEMAND"
    assert prod_groups["gpu-l4-nodes"]["amiType"] == "BOTTLEROCKET_x86_64_NVIDIA"
    for group in prod.of_type(NODE_GROUP):
        assert group.ignore_changes == ["scalingConfig.desiredSize"]


def test_gpu_defaults_follow_environment() -> None:
    pool = {"instance_types": ["g5.2xlarge"]}
    dev_raw, prod_raw = raw_stack("dev"), raw_stack("prod")
    dev_raw["serving"]["gpu_pool"] = prod_raw["serving"]["gpu_pool"] = "a"
    dev_raw["serving"]["gpu_memory_fraction"] = 0.9
    prod_raw["autoscaling"]["enabled"] = False
    dev = parse({**dev_raw, "gpu_pools": {"a": pool}}).gpu_pools["a"]
    prod = parse({**prod_raw, "gpu_pools": {"a": pool}}).gpu_pools["a"]
    assert (dev.capacity_type, dev.min_size) == ("SPOT", 0)
    assert (prod.capacity_type, prod.min_size) == ("ON_DEMAND", 1)


def test_taint_and_labels_form_the_scheduling_contract(dev: Rendering) -> None:
    group = gpu_groups(dev)["gpu-l4-nodes"]
    assert group["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
    labels = group["labels"]
    assert labels["tf-serving-eks/pool"] == "l4"
    assert labels["tf-serving-eks/gpu-model"] == "L4"
    assert labels["nvidia.com/gpu.present"] == "true"
    contract = dev.outputs["gpu_scheduling"]["l4"]
    assert contract["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    ]
    assert contract["node_selector"].items() <= labels.items()


def test_node_role_and_launch_template(prod: Rendering) -> None:
    attached = {
        a.inputs["policyArn"].split("/")[-1]
        for a in prod.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.name.startswith("gpu-a10g-node-role")
    }
    assert attached == {
        "AmazonEKSWorkerNodePolicy",
        "AmazonEC2ContainerRegistryPullOnly",
        "AmazonSSMManagedInstanceCore",
    }
    a10g = prod.one("aws:ec2/launchTemplate:LaunchTemplate", "gpu-a10g-lt").inputs
    assert a10g["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpTokens": "required",
        "httpPutResponseHopLimit": 1,
    }
    mapping = a10g["blockDeviceMappings"][0]
    assert mapping["deviceName"] == "/dev/xvda"
    assert mapping["ebs"] == {
        "volumeSize": 150,
        "volumeType": "gp3",
        "encrypted": "true",
        "deleteOnTermination": "true",
    }
    bottlerocket = prod.one("aws:ec2/launchTemplate:LaunchTemplate", "gpu-l4-lt").inputs
    assert bottlerocket["blockDeviceMappings"][0]["deviceName"] == "/dev/xvdb"


def test_node_template_tags_let_empty_pools_scale_from_zero(dev: Rendering, prod: Rendering) -> None:
    tags = asg_tags(dev, "gpu-l4-asg-tag")
    base = "k8s.io/cluster-autoscaler/node-template"
    assert tags[f"{base}/label/tf-serving-eks/pool"] == "l4"
    assert tags[f"{base}/label/nvidia.com/gpu.present"] == "true"
    assert tags[f"{base}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags[f"{base}/resources/nvidia.com/gpu"] == "2", "1 L4 GPU shared by 2 pods in dev"
    assert asg_tags(prod, "gpu-a10g-asg-tag")[f"{base}/resources/nvidia.com/gpu"] == "1"
    for tag in dev.of_type("aws:autoscaling/tag:Tag"):
        assert tag.inputs["tag"]["propagateAtLaunch"] is False
        assert tag.inputs["autoscalingGroupName"].startswith("eks-gpu-l4-nodes-")


def test_device_plugin_runs_on_gpu_nodes_with_time_slicing_in_dev(dev: Rendering, prod: Rendering) -> None:
    dev_values = release(dev, "nvidia-device-plugin")
    assert dev_values["version"] == catalog.CHARTS["nvidia-device-plugin"].version
    assert dev_values["repositoryOpts"]["repo"] == "https://nvidia.github.io/k8s-device-plugin"
    values = dev_values["values"]
    assert values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
    sliced = yaml.safe_load(values["config"]["map"]["time-sliced-2"])
    assert sliced["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 2}]
    assert gpu_groups(dev)["gpu-l4-nodes"]["labels"]["nvidia.com/device-plugin.config"] == "time-sliced-2"
    prod_map = release(prod, "nvidia-device-plugin")["values"]["config"]["map"]
    assert set(prod_map) == {"default"} and "sharing" not in yaml.safe_load(prod_map["default"])
    assert "nvidia.com/device-plugin.config" not in gpu_groups(prod)["gpu-a10g-nodes"]["labels"]


def test_dcgm_exporter_on_gpu_nodes_with_service_monitor_only_when_monitoring(dev: Rendering) -> None:
    values = release(dev, "dcgm-exporter")["values"]
    assert values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert values["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert values["serviceMonitor"]["enabled"] is True
    raw = raw_stack("dev")
    raw["monitoring"] = {"enabled": False}
    raw["autoscaling"]["prometheus_url"] = "http://prometheus.observability.svc:9090"
    assert release(render_raw(raw), "dcgm-exporter")["values"]["serviceMonitor"]["enabled"] is False


def test_nvidia_namespace_allows_privileged_daemons(dev: Rendering) -> None:
    ns = [m for m in dev.k8s_objects() if m["kind"] == "Namespace" and m["metadata"]["name"] == "nvidia"]
    assert ns[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert release(dev, "nvidia-device-plugin")["namespace"] == "nvidia"


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
    assert mutating[0]["Condition"] == {
        "StringEquals": {"aws:ResourceTag/k8s.io/cluster-autoscaler/tfs-prod": "owned"}
    }
    for statement in policy["Statement"]:
        if "Condition" not in statement:
            assert all(":Describe" in a or ":Get" in a for a in statement["Action"]), statement


def test_no_pools_means_no_nvidia_stack() -> None:
    raw = raw_stack("dev")
    del raw["gpu_pools"]
    del raw["serving"]["gpu_pool"]
    rendering = render_raw(raw)
    charts = {r.inputs["chart"] for r in rendering.of_type(RELEASE)}
    assert "cluster-autoscaler" in charts
    assert not charts & {"nvidia-device-plugin", "dcgm-exporter"}
    assert not gpu_groups(rendering)


@pytest.mark.skipif(not conformance.HELM_VALUES_DIR.is_dir(), reason="reference chart values not present")
def test_helm_values_use_only_keys_the_pinned_charts_have(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    checked = 0
    for r in rendered_stack(stack_name).of_type(RELEASE):
        if r.inputs["chart"] in UNREFERENCED_CHARTS:
            continue
        assert conformance.helm_values_problems(r.inputs["chart"], r.inputs["version"], r.inputs["values"]) == []
        checked += 1
    assert checked >= 5


def test_helm_values_check_can_fail() -> None:
    if not conformance.HELM_VALUES_DIR.is_dir():
        pytest.skip("reference chart values not present")
    problems = conformance.helm_values_problems("dcgm-exporter", "4.8.2", {"serviceMonitr": {"enabled": True}})
    assert problems == ["dcgm-exporter 4.8.2: unknown value 'serviceMonitr'"]


BAD_POOLS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown type", {"instance_types": ["g9.xlarge"]}, "gpu_pools.x.instance_types.0", "not in the GPU catalogue"),
    ("not a GPU type", {"instance_types": ["m7i.large"]}, "gpu_pools.x.instance_types.0", "not a GPU instance type"),
    (
        "mixed GPU models",
        {"instance_types": ["g5.xlarge", "g6.xlarge"]},
        "gpu_pools.x.instance_types",
        "mixes GPU models or counts",
    ),
    (
        "mixed GPU counts",
        {"instance_types": ["g5.xlarge", "g5.12xlarge"]},
        "gpu_pools.x.instance_types",
        "mixes GPU models or counts",
    ),
    ("min above max", {"instance_types": ["g5.xlarge"], "min_size": 3, "max_size": 2, "desired_size": 2}, "gpu_pools.x.min_size", "<= max_size (2)"),
    ("bad taint effect", {"instance_types": ["g5.xlarge"], "taint": {"effect": "Never"}}, "gpu_pools.x.taint.effect", "'NoSchedule'"),
    ("unknown AMI", {"instance_types": ["g5.xlarge"], "ami_type": "AL2_x86_64_GPU"}, "gpu_pools.x.ami_type", "AL2023_x86_64_NVIDIA"),
    ("disk too small for images", {"instance_types": ["g5.xlarge"], "disk_size_gib": 20}, "gpu_pools.x.disk_size_gib", "greater than or equal to 50"),
]


@pytest.mark.parametrize("pool, key, fragment", [b[1:] for b in BAD_POOLS], ids=[b[0] for b in BAD_POOLS])
def test_impossible_pools_are_refused(pool: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(StackConfigError) as info:
        parse({**raw_stack("dev"), "gpu_pools": {"x": pool}, "serving": {"models": {"m": {}}}})
    assert f"tf-serving-eks:{key}" in str(info.value) and fragment in str(info.value), str(info.value)


def test_prod_refuses_time_slicing() -> None:
    raw = raw_stack("prod")
    raw["gpu_pools"]["a10g"]["time_slicing_replicas"] = 2
    raw["serving"]["gpu_memory_fraction"] = 0.45
    with pytest.raises(StackConfigError, match="gpu_pools.a10g.time_slicing_replicas: time-slicing"):
        parse(raw)


def test_bad_pool_name_is_refused() -> None:
    with pytest.raises(StackConfigError, match="gpu_pools.A10G"):
        parse({**raw_stack("dev"), "gpu_pools": {"A10G": {"instance_types": ["g5.xlarge"]}}, "serving": {"models": {"m": {}}}})


def test_catalogue_entries_are_complete() -> None:
    families = {name.split(".")[0] for name in catalog.GPU_INSTANCE_TYPES}
    assert {"g4dn", "g5", "g6", "g6e", "p4d", "p5"} <= families
    for t in catalog.GPU_INSTANCE_TYPES.values():
        assert t.gpus > 0 and t.gpu_model and t.gpu_memory_gib > 0, t
        assert t.vcpus > 0 and t.memory_gib > 0 and t.usd_per_hour > 0, t


def test_pod_fit_accounts_for_system_reservations() -> None:
    g5 = catalog.GPU_INSTANCE_TYPES["g5.xlarge"]
    cpu, memory = catalog.allocatable(g5)
    assert 3000 < cpu < 4000 and 12000 < memory < 16 * 1024
    assert catalog.pod_fit_problems(g5, gpus=1, cpu_milli=3000, memory_mib=12000) == []
    problems = catalog.pod_fit_problems(g5, gpus=2, cpu_milli=4000, memory_mib=16 * 1024)
    assert len(problems) == 3
    assert "offers 1" in problems[0]
    assert catalog.pod_fit_problems(g5, gpus=2, cpu_milli=100, memory_mib=100, gpu_replicas=2) == []


def test_monthly_cost_range_is_min_and_max_of_all_pools() -> None:
    low, high = monthly_cost_range({"a": (["g5.xlarge"], 1, 3), "b": (["g6.xlarge", "g6.2xlarge"], 0, 2)})
    assert low == round(1.006 * 730, 2)
    assert high == round((1.006 * 3 + 0.9776 * 2) * 730, 2)
