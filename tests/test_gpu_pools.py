"""GPU node pools: node groups, scheduling contract, node-template tags, NVIDIA charts, costs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from components import catalog
from components.config import StackConfigError
from components.config import zone_share
from components.catalog import monthly_cost_range
from tests.support import NODE_ROLE_POLICIES, node_role_policies, parse, raw_stack, render_raw
from tests.support import conformance
from tests.support.scheduling import Taint, can_land
from tools.lib.mock_engine import EXISTING_SUBNETS, Rendering, existing_subnet_zone

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
# Charts whose default values are not in the reference data; tests/test_logs.py checks the
# keys we set against the chart's published values instead.
UNREFERENCED_CHARTS = {"aws-for-fluent-bit"}
RELEASE = "kubernetes:helm.sh/v3:Release"


def gpu_groups(r: Rendering) -> dict[str, dict[str, Any]]:
    return {g.name: g.inputs for g in r.of_type(NODE_GROUP) if g.component == "gpu_pools"}


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


def pool_groups(r: Rendering, pool: str) -> dict[str, dict[str, Any]]:
    """A pool's node groups by zone (the zone its subnets are in)."""
    zone_of = subnet_zones(r)
    out = {}
    for name, inputs in gpu_groups(r).items():
        if inputs["labels"]["tf-serving-eks/pool"] == pool:
            zones = {zone_of[s] for s in inputs["subnetIds"]}
            assert len(zones) == 1, f"{name} spans zones {zones}"
            out[zones.pop()] = inputs
    return out


def subnet_zones(r: Rendering) -> dict[str, str]:
    """Subnet ID -> zone: the subnets the stack created, or the mock's existing subnets."""
    zones = {s.outputs["id"]: s.inputs["availabilityZone"] for s in r.of_type("aws:ec2/subnet:Subnet")}
    for token, args in r.invokes:
        if token == "aws:ec2/getSubnet:getSubnet":
            zones[args["id"]] = existing_subnet_zone(r_region(r), args["id"])
    return zones


def r_region(r: Rendering) -> str:
    return str(r.outputs["region"])


def test_pools_are_keyed_node_groups_with_env_capacity(dev: Rendering, prod: Rendering) -> None:
    dev_zones = [f"us-east-1{z}" for z in "abc"]
    assert set(gpu_groups(dev)) == {f"gpu-l4-{z}-nodes" for z in dev_zones}
    assert set(gpu_groups(prod)) == {f"gpu-{p}-us-west-2{z}-nodes" for p in ("a10g", "l4") for z in "abc"}
    for group in gpu_groups(dev).values():
        assert group["capacityType"] == "SPOT"
        assert group["amiType"] == "AL2023_x86_64_NVIDIA"
        assert group["instanceTypes"] == ["g6.xlarge"]
    prod_a10g = pool_groups(prod, "a10g")
    assert {g["capacityType"] for g in prod_a10g.values()} == {"ON_DEMAND"}
    assert {g["amiType"] for g in pool_groups(prod, "l4").values()} == {"BOTTLEROCKET_x86_64_NVIDIA"}
    for registered in prod.of_type(NODE_GROUP):
        assert registered.ignore_changes == ["scalingConfig.desiredSize"]


def test_each_pool_has_one_node_group_per_zone_of_the_private_subnets(stack_name: str) -> None:
    # cluster-autoscaler builds a group's template node in the group's first AZ only
    # (cloudprovider/aws/aws_manager.go, getAsgTemplate: AvailabilityZones[0]), so a group
    # must live in exactly one zone, and each zone of the private subnets needs its own group.
    from tests.conftest import rendered_stack

    r = rendered_stack(stack_name)
    cfg = parse(raw_stack(stack_name), stack_name)
    zone_of = subnet_zones(r)
    private = r.outputs["private_subnet_ids"]
    all_zones = {zone_of[s] for s in private}
    for pool in cfg.gpu_pools:
        groups = pool_groups(r, pool)
        assert set(groups) == all_zones, pool
        assert sorted(s for g in groups.values() for s in g["subnetIds"]) == sorted(private)
        assert set(r.outputs["gpu_node_groups"][pool]) == all_zones


def existing_cluster_raw(subnets: list[str]) -> dict[str, Any]:
    raw = raw_stack("dev")
    raw["cluster"] = {"mode": "existing", "name": "shared-gpu", "existing": {"private_subnet_ids": subnets}}
    return raw


def test_existing_cluster_subnets_are_grouped_by_their_zone() -> None:
    # Two of these subnets share a zone (the mock's existing_subnet_zone): one group gets both.
    subnets = [*EXISTING_SUBNETS, "subnet-0fedcba9876543210"]
    r = render_raw(existing_cluster_raw(subnets))
    groups = pool_groups(r, "l4")
    zone_of = {s: existing_subnet_zone("us-east-1", s) for s in subnets}
    expected: dict[str, list[str]] = {}
    for subnet in subnets:
        expected.setdefault(zone_of[subnet], []).append(subnet)
    assert {z: sorted(g["subnetIds"]) for z, g in groups.items()} == {z: sorted(v) for z, v in expected.items()}


def test_existing_cluster_zones_that_cannot_split_a_pool_are_refused_before_anything() -> None:
    raw = existing_cluster_raw(list(EXISTING_SUBNETS))
    raw["gpu_pools"]["l4"]["max_size"] = 2  # three zones, each group needs max_size >= 1
    raw["gpu_pools"]["l4"]["desired_size"] = 0
    with pytest.raises(StackConfigError) as info:
        render_raw(raw, stack="shared")
    message = str(info.value)
    assert message.startswith("stack 'shared': invalid configuration")
    assert "tf-serving-eks:gpu_pools.l4.max_size" in message and "(got 2)" in message
    assert "at least 3" in message


@pytest.mark.parametrize("total", range(0, 13))
@pytest.mark.parametrize("zones", range(1, 7))
def test_zone_share_splits_totals_evenly_and_keeps_min_desired_max_ordered(total: int, zones: int) -> None:
    shares = zone_share(total, zones)
    assert sum(shares) == total and len(shares) == zones
    assert max(shares) - min(shares) <= 1
    more = zone_share(total + 1, zones)
    assert all(a <= b for a, b in zip(shares, more)), "a larger total never shrinks a zone"


def test_node_groups_carry_their_share_of_the_pool_sizes(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    r = rendered_stack(stack_name)
    cfg = parse(raw_stack(stack_name), stack_name)
    for name, pool in cfg.gpu_pools.items():
        groups = pool_groups(r, name)
        zones = sorted(groups)
        for key, total in (("minSize", pool.min_size), ("desiredSize", pool.desired_size), ("maxSize", pool.max_size)):
            got = [groups[z]["scalingConfig"][key] for z in zones]
            assert got == zone_share(total, len(zones)), (name, key)
        for g in groups.values():
            sc = g["scalingConfig"]
            assert sc["maxSize"] >= 1 and sc["minSize"] <= sc["desiredSize"] <= sc["maxSize"]


def test_gpu_defaults_follow_environment() -> None:
    pool = {"instance_types": ["g5.2xlarge"]}
    dev_raw, prod_raw = raw_stack("dev"), raw_stack("prod")
    dev_raw["serving"]["gpu_pool"] = prod_raw["serving"]["gpu_pool"] = "a"
    dev_raw["serving"]["gpu_memory_fraction"] = 0.9
    dev_raw["serving"].pop("model_cache", None)  # on dev's own pool's instance store
    prod_raw["autoscaling"]["enabled"] = False
    dev = parse({**dev_raw, "gpu_pools": {"a": pool}}).gpu_pools["a"]
    prod = parse({**prod_raw, "gpu_pools": {"a": pool}}).gpu_pools["a"]
    assert (dev.capacity_type, dev.min_size) == ("SPOT", 0)
    # The defaults split over the default 3 AZs: one standing node per zone in prod.
    assert (prod.capacity_type, prod.min_size) == ("ON_DEMAND", 3)
    assert dev.max_size >= 3 and prod.max_size >= 3


def test_taint_and_labels_form_the_scheduling_contract(dev: Rendering) -> None:
    group = gpu_groups(dev)["gpu-l4-us-east-1a-nodes"]
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
    a10g_groups = [name for name, g in gpu_groups(prod).items() if g["labels"]["tf-serving-eks/pool"] == "a10g"]
    assert a10g_groups
    for name in a10g_groups:
        assert node_role_policies(prod, name) == NODE_ROLE_POLICIES, name
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
        # Parallel image pull is on: nodeadm's advised 600 MiB/s (tests/test_cold_start.py).
        "iops": 3000,
        "throughput": 600,
    }
    bottlerocket = prod.one("aws:ec2/launchTemplate:LaunchTemplate", "gpu-l4-lt").inputs
    assert bottlerocket["blockDeviceMappings"][0]["deviceName"] == "/dev/xvdb"


def test_node_template_tags_let_empty_pools_scale_from_zero(dev: Rendering, prod: Rendering) -> None:
    tags = asg_tags(dev, "gpu-l4-us-east-1a-asg-tag")
    base = "k8s.io/cluster-autoscaler/node-template"
    assert tags[f"{base}/label/tf-serving-eks/pool"] == "l4"
    assert tags[f"{base}/label/nvidia.com/gpu.present"] == "true"
    assert tags[f"{base}/taint/nvidia.com/gpu"] == "true:NoSchedule"
    assert tags[f"{base}/resources/nvidia.com/gpu"] == "2", "1 L4 GPU shared by 2 pods in dev"
    assert asg_tags(prod, "gpu-a10g-us-west-2b-asg-tag")[f"{base}/resources/nvidia.com/gpu"] == "1"
    for tag in dev.of_type("aws:autoscaling/tag:Tag"):
        assert tag.inputs["tag"]["propagateAtLaunch"] is False
        if not tag.name.startswith("gpu-l4-"):
            continue  # the system group's: tests/test_chart_renders.py, discovery
        zone = tag.name.removeprefix("gpu-l4-").split("-asg-tag-")[0]
        assert tag.inputs["autoscalingGroupName"].startswith(f"eks-gpu-l4-{zone}-nodes-")


def test_device_plugin_runs_on_gpu_nodes_with_time_slicing_in_dev(dev: Rendering, prod: Rendering) -> None:
    dev_values = release(dev, "nvidia-device-plugin")
    assert dev_values["version"] == catalog.CHARTS["nvidia-device-plugin"].version
    assert dev_values["repositoryOpts"]["repo"] == "https://nvidia.github.io/k8s-device-plugin"
    values = dev_values["values"]
    assert values["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in values["tolerations"]
    sliced = yaml.safe_load(values["config"]["map"]["time-sliced-2"])
    assert sliced["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 2}]
    assert gpu_groups(dev)["gpu-l4-us-east-1a-nodes"]["labels"]["nvidia.com/device-plugin.config"] == "time-sliced-2"
    prod_map = release(prod, "nvidia-device-plugin")["values"]["config"]["map"]
    assert set(prod_map) == {"default"} and "sharing" not in yaml.safe_load(prod_map["default"])
    assert "nvidia.com/device-plugin.config" not in gpu_groups(prod)["gpu-a10g-us-west-2a-nodes"]["labels"]


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


def test_the_component_keeps_the_urn_deployed_stacks_hold(dev: Rendering) -> None:
    # Registered as tf-serving-eks:gpu:GpuNodePool before it was named after its stack key;
    # the alias carries it, and through it every child, without a replacement.
    component = dev.one("tf-serving-eks:gpu_pools:GpuPools", "gpu")
    assert [{k: v for k, v in a.items() if v} for a in component.aliases] == [
        {"type": "tf-serving-eks:gpu:GpuNodePool"}
    ]
    assert {r.component for r in dev.resources if r.parent == component.urn} == {"gpu_pools"}


def test_no_pools_means_no_nvidia_stack() -> None:
    raw = raw_stack("dev")
    del raw["gpu_pools"]
    del raw["serving"]["gpu_pool"]
    raw["serving"].pop("model_cache", None)
    rendering = render_raw(raw)
    charts = {r.inputs["chart"] for r in rendering.of_type(RELEASE)}
    assert "cluster-autoscaler" in charts
    assert not charts & {"nvidia-device-plugin", "dcgm-exporter"}
    assert not gpu_groups(rendering)


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
    problems = conformance.helm_values_problems("dcgm-exporter", "4.8.2", {"serviceMonitr": {"enabled": True}})
    assert problems == ["dcgm-exporter 4.8.2: unknown value 'serviceMonitr'"]


BAD_POOLS: list[tuple[str, dict[str, Any], str, str]] = [
    ("unknown type", {"instance_types": ["g9.xlarge"]}, "gpu_pools.x.instance_types.0", "not in the GPU catalogue"),
    ("not a GPU type", {"instance_types": ["m7i.large"]}, "gpu_pools.x.instance_types.0", "not a GPU instance type"),
    (
        "mixed GPU models",
        {"instance_types": ["g5.xlarge", "g6.xlarge"]},
        "gpu_pools.x.instance_types",
        "pool 'x' mixes node shapes",
    ),
    (
        "mixed GPU counts",
        {"instance_types": ["g5.xlarge", "g5.12xlarge"]},
        "gpu_pools.x.instance_types",
        "pool 'x' mixes node shapes",
    ),
    (
        "mixed sizes of one GPU model and count",
        {"instance_types": ["g6.xlarge", "g6.2xlarge"]},
        "gpu_pools.x.instance_types",
        "g6.xlarge (4 vCPU, 16 GiB, 1x L4) and g6.2xlarge (8 vCPU, 32 GiB, 1x L4)",
    ),
    (
        "time-slicing on Bottlerocket",
        {"instance_types": ["g6.xlarge"], "ami_type": "BOTTLEROCKET_x86_64_NVIDIA", "time_slicing_replicas": 2},
        "gpu_pools.x.time_slicing_replicas",
        "does not run on Bottlerocket",
    ),
    (
        "fewer nodes than zones",
        {"instance_types": ["g6.xlarge"], "max_size": 2},
        "gpu_pools.x.max_size",
        "one node group in each of the 3 zones",
    ),
    (
        "pool name too long for its node group names",
        {"instance_types": ["g6.xlarge"], "__name": "a" * 25},
        "gpu_pools." + "a" * 25,
        "at most 24 characters",
    ),
    ("min above max", {"instance_types": ["g5.xlarge"], "min_size": 3, "max_size": 2, "desired_size": 2}, "gpu_pools.x.min_size", "<= max_size (2)"),
    ("bad taint effect", {"instance_types": ["g5.xlarge"], "taint": {"effect": "Never"}}, "gpu_pools.x.taint.effect", "'NoSchedule'"),
    ("unknown AMI", {"instance_types": ["g5.xlarge"], "ami_type": "AL2_x86_64_GPU"}, "gpu_pools.x.ami_type", "AL2023_x86_64_NVIDIA"),
    ("disk too small for images", {"instance_types": ["g5.xlarge"], "disk_size_gib": 20}, "gpu_pools.x.disk_size_gib", "greater than or equal to 50"),
]


@pytest.mark.parametrize("pool, key, fragment", [b[1:] for b in BAD_POOLS], ids=[b[0] for b in BAD_POOLS])
def test_impossible_pools_are_refused(pool: dict[str, Any], key: str, fragment: str) -> None:
    pool = dict(pool)
    name = pool.pop("__name", "x")
    with pytest.raises(StackConfigError) as info:
        parse({**raw_stack("dev"), "gpu_pools": {name: pool}, "serving": {"models": {"m": {}}}})
    assert f"tf-serving-eks:{key}" in str(info.value) and fragment in str(info.value), str(info.value)


def test_prod_refuses_time_slicing() -> None:
    raw = raw_stack("prod")
    raw["gpu_pools"]["a10g"]["time_slicing_replicas"] = 2
    raw["serving"]["gpu_memory_fraction"] = 0.45
    # Two pods that fit one node together, so the prod rule is what refuses.
    raw["serving"].update(cpu="2", memory="8Gi")
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


def test_monthly_cost_range_is_min_and_max_of_all_pools() -> None:
    low, high = monthly_cost_range({"a": (["g5.xlarge"], 1, 3), "b": (["g6.xlarge", "g6.2xlarge"], 0, 2)})
    assert low == round(1.006 * 730, 2)
    assert high == round((1.006 * 3 + 0.9776 * 2) * 730, 2)


# --- What the software that reads our output will do with it ------------------------------

ACCELERATOR = "k8s.amazonaws.com/accelerator"
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


@dataclass(frozen=True)
class JoinedNode:
    """A node of a managed node group as it joins: the group's labels and taints (EKS passes
    them to the kubelet) plus the well-known labels kubelet and cloud provider set."""

    labels: dict[str, str]
    taints: tuple[Taint, ...]
    ami_type: str


def group_node(group: dict[str, Any], zone: str) -> JoinedNode:
    labels = {**group["labels"], "kubernetes.io/os": "linux", "topology.kubernetes.io/zone": zone}
    return JoinedNode(labels, tuple(Taint.from_eks(t) for t in group.get("taints", [])), group["amiType"])


def gpu_nodes(r: Rendering) -> list[JoinedNode]:
    zone_of = subnet_zones(r)
    return [group_node(g, zone_of[g["subnetIds"][0]]) for g in gpu_groups(r).values()]


def helm_coalesce(defaults: Any, ours: Any) -> Any:
    """Helm's merge of user values over a chart's values.yaml (pkg/chart/common/util
    coalesce): maps merge key by key, anything else (lists included) is replaced, null deletes."""
    if isinstance(defaults, dict) and isinstance(ours, dict):
        merged = dict(defaults)
        for key, value in ours.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = helm_coalesce(defaults.get(key), value)
        return merged
    return ours


def daemonset_spec(r: Rendering, chart: str) -> dict[str, Any]:
    """The pod spec fields the chart's DaemonSet template copies from its values: both
    nvidia-device-plugin 0.20.0 (templates/daemonset-device-plugin.yml) and dcgm-exporter
    4.8.2 (templates/daemonset.yaml) render .Values.nodeSelector, .Values.affinity and
    .Values.tolerations verbatim when set."""
    if not conformance.HELM_VALUES_DIR.is_dir():
        pytest.fail(f"reference chart values missing: {conformance.HELM_VALUES_DIR}")
    ours = release(r, chart)
    defaults = conformance.chart_defaults(chart, ours["version"])
    assert defaults is not None, chart
    values = helm_coalesce(defaults, ours["values"])
    return {k: values.get(k) for k in ("nodeSelector", "affinity", "tolerations")}


def mixed_os_rendering() -> Rendering:
    """A dev stack with an AL2023 pool, a Bottlerocket pool and a pool with its own taint."""
    raw = raw_stack("dev")
    raw["gpu_pools"]["br"] = {"instance_types": ["g6.2xlarge"], "ami_type": "BOTTLEROCKET_x86_64_NVIDIA"}
    raw["gpu_pools"]["t4"] = {
        "instance_types": ["g4dn.xlarge"],
        "ami_type": "BOTTLEROCKET_x86_64_NVIDIA",
        "taint": {"key": "gpu-class", "value": "t4", "effect": "NoExecute"},
    }
    raw["gpu_pools"]["a10g"] = {"instance_types": ["g5.xlarge"], "taint": {"key": "dedicated", "value": "ml"}}
    return render_raw(raw)


def renderings_with_pools(dev: Rendering, prod: Rendering) -> list[Rendering]:
    return [dev, prod, mixed_os_rendering()]


def test_every_gpu_node_runs_exactly_one_nvidia_device_plugin(dev: Rendering, prod: Rendering) -> None:
    # Bottlerocket's NVIDIA variants run nvidia-k8s-device-plugin as a host service
    # (bottlerocket.dev, settings.kubelet-device-plugins); two plugins would both register
    # nvidia.com/gpu with the kubelet. Every other GPU node needs the chart's DaemonSet.
    checked = set()
    for r in renderings_with_pools(dev, prod):
        plugin = daemonset_spec(r, "nvidia-device-plugin")
        for node in gpu_nodes(r):
            host_plugin = node.ami_type.startswith("BOTTLEROCKET")
            assert can_land(plugin, node) != host_plugin, (r.stack, node)
            checked.add(host_plugin)
    assert checked == {True, False}, "both kinds of node were checked"


def test_dcgm_exporter_runs_on_every_gpu_node_bottlerocket_included(dev: Rendering, prod: Rendering) -> None:
    for r in renderings_with_pools(dev, prod):
        exporter = daemonset_spec(r, "dcgm-exporter")
        for node in gpu_nodes(r):
            assert can_land(exporter, node), (r.stack, node)


def test_the_charts_default_affinity_would_put_a_second_plugin_on_bottlerocket(prod: Rendering) -> None:
    # The evaluator can fail: with the chart's own affinity (any node labelled
    # nvidia.com/gpu.present=true), the DaemonSet lands on Bottlerocket nodes too.
    defaults = conformance.chart_defaults("nvidia-device-plugin", "0.20.0")
    assert defaults is not None
    ours = dict(release(prod, "nvidia-device-plugin")["values"])
    del ours["affinity"]
    spec = {k: helm_coalesce(defaults, ours).get(k) for k in ("nodeSelector", "affinity", "tolerations")}
    bottlerocket = [n for n in gpu_nodes(prod) if n.ami_type.startswith("BOTTLEROCKET")]
    assert bottlerocket and all(can_land(spec, n) for n in bottlerocket)


def test_device_plugin_stays_off_nodes_that_are_not_gpu_nodes(dev: Rendering) -> None:
    plugin = daemonset_spec(dev, "nvidia-device-plugin")
    system = dev.one(NODE_GROUP, "cluster-system-nodes").inputs
    assert not can_land(plugin, group_node(system, "us-east-1a"))


def every_gpu_model_rendering() -> Rendering:
    """A dev stack with a pool of every GPU model in the catalogue (one type each)."""
    raw = raw_stack("dev")
    first_of_model: dict[str, str] = {}
    for name, t in catalog.GPU_INSTANCE_TYPES.items():
        first_of_model.setdefault(str(t.gpu_model), name)
    raw["gpu_pools"].update(
        {f"m-{model.lower()}": {"instance_types": [name]} for model, name in first_of_model.items()}
    )
    return render_raw(raw)


def ca_sees_gpu_coming(node_labels: dict[str, str], allocatable_gpus: int) -> bool:
    """processors/customresources/gpu_processor.go, FilterOutNodesWithUnreadyResources: a
    Ready node with the provider's GPU label (cloudprovider/aws: k8s.amazonaws.com/accelerator)
    but no allocatable nvidia.com/gpu is counted as not ready yet, so a GPU is coming."""
    return ACCELERATOR in node_labels and allocatable_gpus == 0


def test_gpu_nodes_tell_cluster_autoscaler_their_gpu_is_coming(dev: Rendering, prod: Rendering) -> None:
    # Without the label a freshly joined GPU node, whose device plugin has not yet advertised
    # its GPUs, looks like a node without GPUs, and CA adds another for the pending pod
    # (cloudprovider/aws/README.md, "Special note on GPU instances").
    for r in (dev, prod, every_gpu_model_rendering()):
        for name, group in gpu_groups(r).items():
            assert ca_sees_gpu_coming(group["labels"], allocatable_gpus=0), name
            model = group["labels"]["tf-serving-eks/gpu-model"]
            assert group["labels"][ACCELERATOR] == catalog.ACCELERATOR_LABEL_VALUES[model]
            # The template node of an empty group must carry it too, or it differs from the
            # nodes the group really makes.
            tags = asg_tags(r, name.removesuffix("-nodes") + "-asg-tag-")
            assert tags[f"{TEMPLATE}/label/{ACCELERATOR}"] == group["labels"][ACCELERATOR], name


def test_accelerator_label_check_can_fail() -> None:
    assert not ca_sees_gpu_coming({"nvidia.com/gpu.present": "true"}, allocatable_gpus=0)
    assert not ca_sees_gpu_coming({ACCELERATOR: "nvidia-l4"}, allocatable_gpus=1)


def schedule_spread(pods: int, nodes_per_zone: list[int], pods_per_node: int) -> int:
    """Pods the scheduler places one by one under a zone spread of maxSkew 1, DoNotSchedule
    (PodTopologySpread: a zone may take a pod only if its count stays within 1 of the
    emptiest zone's), on nodes already there (cluster-autoscaler adds them up to max)."""
    room = [n * pods_per_node for n in nodes_per_zone]
    counts = [0] * len(room)
    for _ in range(pods):
        fits = [i for i, c in enumerate(counts) if c < room[i] and c + 1 - min(counts) <= 1]
        if not fits:
            break
        counts[min(fits, key=lambda i: counts[i])] += 1
    return sum(counts)


def test_prod_serving_pods_fit_their_pool_at_max_under_the_strict_zone_spread(prod: Rendering) -> None:
    cfg = parse(raw_stack("prod"), "prod")
    pool_name = cfg.serving.gpu_pool
    assert pool_name
    pool = cfg.gpu_pools[pool_name]
    groups = pool_groups(prod, pool_name)
    at_max = [groups[z]["scalingConfig"]["maxSize"] for z in sorted(groups)]
    at_min = [groups[z]["scalingConfig"]["minSize"] for z in sorted(groups)]
    per_node = pool.gpus_per_node // cfg.serving.gpus
    assert schedule_spread(cfg.autoscaling.max_replicas, at_max, per_node) == cfg.autoscaling.max_replicas
    assert len(set(at_min)) == 1, "standing nodes are the same in every zone"


STRICT_BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("min not a multiple of the zones", {"min_size": 2, "desired_size": 3}, "gpu_pools.a10g.min_size", "multiple of 3"),
    ("desired not a multiple of the zones", {"desired_size": 4}, "gpu_pools.a10g.desired_size", "multiple of 3"),
    (
        # 4 GPUs per node over 3 zones at 2/1/1 nodes: 8/4/4 GPUs, but skew 1 stops at 5/4/4.
        "max too uneven for the spread",
        {"instance_types": ["g5.12xlarge"], "max_size": 4, "__max_replicas": 16},
        "gpu_pools.a10g.max_size",
        "room for 13 pods",
    ),
]


@pytest.mark.parametrize("change, key, fragment", [c[1:] for c in STRICT_BAD], ids=[c[0] for c in STRICT_BAD])
def test_strict_spread_and_node_groups_that_cannot_agree_are_refused(change: dict[str, Any], key: str, fragment: str) -> None:
    raw = raw_stack("prod")
    change = dict(change)
    raw["autoscaling"]["max_replicas"] = change.pop("__max_replicas", raw["autoscaling"]["max_replicas"])
    raw["gpu_pools"]["a10g"].update(change)
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    assert f"tf-serving-eks:{key}" in str(info.value) and fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("az_count", [3, 4, 5])
@pytest.mark.parametrize("max_size", [2, 4, 5, 8, 9])
@pytest.mark.parametrize("max_replicas", [2, 8, 16, 30])
@pytest.mark.parametrize("instance_type", ["g5.2xlarge", "g5.12xlarge"])
def test_the_strict_spread_rule_agrees_with_the_scheduler(
    az_count: int, max_size: int, max_replicas: int, instance_type: str
) -> None:
    # Accepted configs can place every pod at max; refused ones cannot.
    raw = raw_stack("prod")
    raw["cluster"]["vpc"]["az_count"] = az_count
    raw["gpu_pools"]["a10g"].update(
        {"instance_types": [instance_type], "min_size": 0, "desired_size": 0, "max_size": max_size}
    )
    raw["gpu_pools"]["l4"]["max_size"] = 12
    raw["autoscaling"]["max_replicas"] = max_replicas
    per_node = catalog.GPU_INSTANCE_TYPES[instance_type].gpus
    placed = schedule_spread(max_replicas, zone_share(max_size, az_count), per_node) if max_size >= az_count else 0
    try:
        parse(raw)
    except StackConfigError as exc:
        assert placed < max_replicas, str(exc)
    else:
        assert placed == max_replicas


def test_pools_mixing_node_shapes_are_refused_naming_pool_and_types() -> None:
    # cloudprovider/aws/README.md: CA plans a group by its first instance type only, so
    # every type of a pool must give the same vCPUs, memory and GPUs.
    names = sorted(catalog.GPU_INSTANCE_TYPES)
    checked = 0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ta, tb = catalog.GPU_INSTANCE_TYPES[a], catalog.GPU_INSTANCE_TYPES[b]
            if a.split(".")[0] != b.split(".")[0] and a.split(".")[1] != b.split(".")[1]:
                continue  # same family or same size: enough pairs, quickly
            same = (ta.vcpus, ta.memory_gib, ta.gpus, ta.gpu_model) == (tb.vcpus, tb.memory_gib, tb.gpus, tb.gpu_model)
            raw = {**raw_stack("dev"), "gpu_pools": {"mixed": {"instance_types": [a, b]}}, "serving": {"models": {"m": {}}}}
            if same:
                parse(raw)
                continue
            with pytest.raises(StackConfigError) as info:
                parse(raw)
            message = str(info.value)
            assert "tf-serving-eks:gpu_pools.mixed.instance_types: pool 'mixed' mixes node shapes" in message
            assert f"{a} (" in message and f"{b} (" in message
            checked += 1
    assert checked > 50
