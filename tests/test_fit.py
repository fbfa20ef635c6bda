"""Every serving pod fits the nodes it can land on, checked on the config before anything
exists: node allocatable as the EKS AMI computes it, the per-node daemons, the pod's whole
request (sidecars included), time-sliced neighbours and the canary pod."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from components import catalog
from components.catalog import Requests
from components.config import StackConfigError
from tests.support import parse, raw_stack

# nodeadm getCPUMillicoresToReserve (awslabs/amazon-eks-ami nodeadm/internal/kubelet/config.go):
# 6% of the first core, 1% of the second, 0.5% of cores 3 and 4, 0.25% of every further core.
NODEADM_CPU_RESERVED = {1: 60, 2: 70, 4: 80, 8: 90, 16: 110, 48: 190, 96: 310, 192: 550}


@pytest.mark.parametrize("vcpus", sorted(NODEADM_CPU_RESERVED))
def test_cpu_reservation_follows_nodeadm(vcpus: int) -> None:
    assert catalog.kube_reserved_cpu_milli(vcpus) == NODEADM_CPU_RESERVED[vcpus]


@pytest.mark.parametrize("name", sorted({**catalog.GPU_INSTANCE_TYPES, **catalog.GENERAL_INSTANCE_TYPES}))
def test_every_catalogued_type_has_its_allocatable(name: str) -> None:
    # nodeadm: max pods = ENIs x (IPv4 per ENI - 1) + 2 (eni_max_pods.go); kube-reserved
    # memory 11 MiB a pod + 255 MiB; eviction 100Mi.
    instance = catalog.instance_type(name)
    assert instance is not None
    enis, ips = catalog.ENI_LIMITS[name]
    pods = enis * (ips - 1) + 2
    room = catalog.node_allocatable(instance)
    assert room.pods == pods
    assert room.memory_mib == instance.memory_gib * 1024 - (11 * pods + 255) - 100
    assert room.cpu_milli == instance.vcpus * 1000 - catalog.kube_reserved_cpu_milli(instance.vcpus)


def test_published_max_pods() -> None:
    # The EKS user guide's max-pods table (eni-max-pods): t3.large 35, m5.large 29, g5.xlarge 58.
    assert catalog.max_pods(catalog.GENERAL_INSTANCE_TYPES["t3.large"]) == 35
    assert catalog.max_pods(catalog.GENERAL_INSTANCE_TYPES["m5.large"]) == 29
    assert catalog.max_pods(catalog.GPU_INSTANCE_TYPES["g5.xlarge"]) == 58


# KEP-753 / k8s docs "Sidecar containers" (resource sharing): pod request =
# max(sum(app) + sum(sidecars), max over init containers i of request_i + sidecars started before i).
POD_FORMULA = [
    ("app only", [Requests(1000, 100)], [], Requests(1000, 100, 1)),
    ("plain init bigger than the app", [Requests(100, 100)], [(Requests(500, 50), False)], Requests(500, 100, 1)),
    ("sidecar adds to the app", [Requests(1000, 100)], [(Requests(50, 128), True)], Requests(1050, 228, 1)),
    (
        "init after a sidecar runs beside it",
        [Requests(10, 10)],
        [(Requests(50, 128), True), (Requests(900, 900), False)],
        Requests(950, 1028, 1),
    ),
    (
        "init before the sidecar does not",
        [Requests(1000, 100)],
        [(Requests(50, 128), False), (Requests(50, 128), True)],
        Requests(1050, 228, 1),
    ),
]


@pytest.mark.parametrize("app,init,expected", [c[1:] for c in POD_FORMULA], ids=[c[0] for c in POD_FORMULA])
def test_pod_request_formula(app: list[Requests], init: list[tuple[Requests, bool]], expected: Requests) -> None:
    assert catalog.pod_requests(app, init) == expected


def minimal(environment: str) -> dict[str, Any]:
    """The smallest stack file the README's config reference allows: required keys only."""
    return {
        "aws:region": "us-east-1",
        "environment": environment,
        "cluster": {"name": "tfs-min"},
        "serving": {"models": {"m": {}}},
    }


@pytest.mark.parametrize("environment", ["dev", "staging"])
def test_minimal_cpu_stack_fits_its_system_nodes(environment: str) -> None:
    raw = minimal(environment)
    if environment != "dev":
        raw["serving"]["image_cache"] = {"enabled": False}
    cfg = parse(raw)
    assert (cfg.serving.cpu, cfg.serving.memory) == ("750m", "3Gi")  # the CPU-serving defaults
    for name in cfg.cluster.system_node_group.instance_types:
        instance = catalog.instance_type(name)
        assert instance is not None
        room = catalog.room_for_pods(instance, cfg.node_daemons(gpu_node=False))
        assert cfg.serving.pod_requests.fits(room), (name, cfg.serving.pod_requests, room)


def test_gpu_serving_keeps_its_environment_defaults() -> None:
    raw = raw_stack("dev")
    for key in ("cpu", "memory"):
        raw["serving"].pop(key)
    raw["serving"]["gpu_memory_fraction"] = 0.4
    raw["gpu_pools"]["l4"]["instance_types"] = ["g6.2xlarge"]  # room for two 2-vCPU pods
    cfg = parse(raw)
    assert (cfg.serving.cpu, cfg.serving.memory) == ("2", "8Gi")


def cpu_stack(environment: str, system_type: str, cpu_milli: int, memory_mib: int) -> dict[str, Any]:
    raw = raw_stack("prod" if environment == "prod" else "dev")
    raw["serving"].pop("gpu_pool")
    raw["serving"].pop("gpu_memory_fraction", None)
    raw["serving"].pop("model_cache", None)
    raw["serving"].update(cpu=f"{cpu_milli}m", memory=f"{memory_mib}Mi")
    raw["cluster"]["system_node_group"].update(instance_types=[system_type], max_size=10)
    metrics = raw.get("autoscaling", {}).get("metrics", {})
    metrics.pop("gpu_utilisation", None)
    return raw


@pytest.mark.parametrize("environment", ["dev", "prod"])
@pytest.mark.parametrize("system_type", sorted(catalog.GENERAL_INSTANCE_TYPES))
def test_cpu_serving_pod_must_fit_a_system_node(environment: str, system_type: str) -> None:
    probe = parse(cpu_stack(environment, system_type, 500, 1024))
    room = catalog.room_for_pods(
        catalog.GENERAL_INSTANCE_TYPES[system_type], probe.node_daemons(gpu_node=False)
    )
    sidecar = catalog.requests_of(catalog.MODEL_SYNC_RESOURCES)
    # The largest tf-serving container that fits beside its model-sync sidecar.
    cpu, memory = room.cpu_milli - sidecar.cpu_milli, room.memory_mib - sidecar.memory_mib
    parse(cpu_stack(environment, system_type, cpu, memory))
    for too_big in ((cpu + 1, memory), (cpu, memory + 1)):
        with pytest.raises(StackConfigError) as err:
            parse(cpu_stack(environment, system_type, *too_big))
        message = str(err.value)
        assert "tf-serving-eks:serving:" in message
        assert f"{system_type} system nodes have" in message and "allocatable" in message


def test_cpu_serving_pods_must_fit_the_system_group_at_max_size() -> None:
    raw = cpu_stack("dev", "t3.large", 1000, 2048)  # one pod a node (1.05 vCPU of 1.775)
    raw["autoscaling"] = {"enabled": False}
    raw["serving"]["replicas"] = 10
    parse(raw)
    raw["serving"]["replicas"] = 11
    with pytest.raises(StackConfigError, match="cluster.system_node_group.max_size: 11 serving pod"):
        parse(raw)


def test_time_sliced_pods_must_fit_a_node_together() -> None:
    raw = raw_stack("dev")  # pool l4: g6.xlarge, two pods per GPU
    pool = parse(raw).gpu_pools["l4"]
    cfg = parse(raw)
    room = catalog.room_for_pods(pool.instances[0], cfg.node_daemons(gpu_node=True))
    sidecar = catalog.requests_of(catalog.MODEL_SYNC_RESOURCES)
    half = room.cpu_milli // 2 - sidecar.cpu_milli
    ok = copy.deepcopy(raw)
    ok["serving"]["cpu"] = f"{half}m"
    parse(ok)
    bad = copy.deepcopy(raw)
    bad["serving"]["cpu"] = f"{half + 1}m"
    with pytest.raises(StackConfigError, match=r"shares each GPU between 2 pods, so 2 serving pods land on each g6.xlarge node"):
        parse(bad)


@pytest.mark.parametrize("scaling", ["hpa", "off"])
def test_canary_pod_needs_room_in_the_pool(scaling: str) -> None:
    raw = raw_stack("prod")
    pool = parse(raw).gpu_pools["a10g"]
    raw["serving"]["models"]["resnet"]["canary"] = {"version": 4, "weight": 10}
    full = pool.gpus_per_node * pool.max_size
    if scaling == "off":
        raw["autoscaling"] = {"enabled": False}
        raw["serving"]["replicas"] = full - 1
    else:
        raw["autoscaling"]["max_replicas"] = full - 1
    parse(raw)  # stable pods plus the canary fill the pool exactly
    if scaling == "off":
        raw["serving"]["replicas"] = full
        match = "serving.replicas"
    else:
        raw["autoscaling"]["max_replicas"] = full
        match = "autoscaling.max_replicas: needs .* GPU\\(s\\) \\(with the canary pod\\)"
    with pytest.raises(StackConfigError, match=match):
        parse(raw)


def test_gpu_pod_counts_its_sidecar() -> None:
    raw = raw_stack("prod")
    cfg = parse(raw)
    pool = cfg.gpu_pools[cfg.serving.gpu_pool or ""]
    room = catalog.room_for_pods(pool.instances[0], cfg.node_daemons(gpu_node=True))
    # tf-serving alone would fit; with the model-sync sidecar it does not.
    raw["serving"]["cpu"] = f"{room.cpu_milli - 10}m"
    with pytest.raises(StackConfigError, match="does not fit pool 'a10g': the serving pod needs"):
        parse(raw)


# --- declared model sizes against one GPU's share -------------------------------------------

def sized_prod(gib: float, *, versions: list[int] | None = None, canary: bool = False, fraction: float = 0.9) -> dict[str, Any]:
    raw = raw_stack("prod")
    model = raw["serving"]["models"]["resnet"]
    model.update(version_policy="specific", versions=versions or [3], gpu_memory_gib=gib)
    model.pop("labels", None)
    if canary:
        model["canary"] = {"version": max(versions or [3]) + 1, "weight": 10}
    raw["serving"]["gpu_memory_fraction"] = fraction
    return raw


def gpu_share_refusal(raw: dict[str, Any]) -> str | None:
    try:
        parse(raw, "prod")
    except StackConfigError as exc:
        return str(exc)
    return None


def test_a_model_fits_when_its_served_versions_and_the_one_loading_fit_the_share() -> None:
    # prod's a10g pool: one A10G of 24 GiB, TF Serving takes 0.9 of it: 21.6 GiB.
    assert gpu_share_refusal(sized_prod(10.8)) is None  # 1 served + 1 loading = 21.6
    message = gpu_share_refusal(sized_prod(10.9))
    assert message and "serving.gpu_memory_fraction" in message and "resnet 10.9 GiB x 2" in message
    assert "21.6 GiB" in message and "at least 0.91" in message


def test_each_served_version_counts_and_a_canary_pod_holds_one_more() -> None:
    assert gpu_share_refusal(sized_prod(7, versions=[2, 3])) is None  # 3 x 7 = 21
    assert gpu_share_refusal(sized_prod(7, versions=[2, 3], canary=True)) is not None  # canary pod: 4 x 7
    message = gpu_share_refusal(sized_prod(7, versions=[2, 3], canary=True))
    assert message and "a canary pod holds 28 GiB" in message


def test_models_too_big_for_any_share_of_the_gpu_are_told_so() -> None:
    message = gpu_share_refusal(sized_prod(13))  # 26 GiB > 24 GiB
    assert message and "no share of this GPU holds them" in message


def test_undeclared_models_are_not_counted() -> None:
    raw = raw_stack("prod")
    assert "gpu_memory_gib" not in raw["serving"]["models"]["resnet"]
    assert gpu_share_refusal(raw) is None


@pytest.mark.parametrize(("shared", "fraction"), [(1, 0.9), (2, 0.45), (3, 0.3), (4, 0.22)])
def test_unset_the_gpu_share_is_divided_among_the_pods_on_one_gpu(shared: int, fraction: float) -> None:
    raw = raw_stack("dev")
    raw["serving"].pop("gpu_memory_fraction", None)
    pool = raw["serving"]["gpu_pool"]
    raw["gpu_pools"][pool]["time_slicing_replicas"] = shared
    raw["gpu_pools"][pool]["max_size"] = 8
    raw["gpu_pools"][pool]["instance_types"] = ["g6.4xlarge"]
    raw.setdefault("monitoring", {}).setdefault("thresholds", {})["gpu_memory_percent"] = 98
    cfg = parse(raw, "dev")
    assert cfg.serving.gpu_memory_fraction == fraction
    # Every pod one GPU takes fits in it together (what the BFC allocators take up front).
    assert cfg.serving.gpu_memory_fraction * shared <= 0.9 + 1e-9


def test_a_written_gpu_share_is_kept_and_still_checked() -> None:
    raw = raw_stack("dev")
    raw["serving"]["gpu_memory_fraction"] = 0.4
    assert parse(raw, "dev").serving.gpu_memory_fraction == 0.4
    raw["serving"]["gpu_memory_fraction"] = 0.9
    with pytest.raises(StackConfigError, match="shares each GPU between 2 pods; the fraction must be at most 0.50"):
        parse(raw, "dev")
