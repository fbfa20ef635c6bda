"""TF Serving workload: config files, Deployment, Service, PDB, NetworkPolicy and wiring."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from google.protobuf import text_format

from components.config import StackConfigError
from components.serving import batching_parameters_text, model_config_text, server_args
from tests.support import mounted_config_map, parse, raw_stack, render_raw
from tests.support import tfs_config
from tools.lib.mock_engine import Rendering

Manifest = dict[str, Any]


def objects(r: Rendering, kind: str, namespace: str | None = "tf-serving") -> list[Manifest]:
    return [
        m for m in r.k8s_objects()
        if m["kind"] == kind and (namespace is None or m["metadata"].get("namespace") == namespace)
    ]


def the(r: Rendering, kind: str) -> Manifest:
    found = objects(r, kind)
    assert len(found) == 1, kind
    return found[0]


def config_map(r: Rendering, volume: str, deployment: str = "tf-serving") -> dict[str, str]:
    return mounted_config_map(r, deployment, volume)


def pod(r: Rendering) -> Manifest:
    return the(r, "Deployment")["spec"]["template"]


def container(r: Rendering, name: str) -> Manifest:
    spec = pod(r)["spec"]
    return next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name)


def test_config_files_are_valid_tf_serving_text_format(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    data = config_map(rendered_stack(stack_name), "tf-serving-config")
    assert set(data) == {"models.config", "batching.config", "monitoring.config"}
    for file_name, text in data.items():
        tfs_config.parse(file_name, text)


def test_model_config_carries_policies_and_labels(dev: Rendering, prod: Rendering) -> None:
    dev_models = tfs_config.parse("models.config", config_map(dev, "tf-serving-config")["models.config"])
    by_name = {c.name: c for c in dev_models.model_config_list.config}
    assert set(by_name) == {"resnet", "half-plus-two"}
    assert by_name["resnet"].base_path == "/models/resnet"
    assert by_name["resnet"].model_version_policy.latest.num_versions == 2
    prod_models = tfs_config.parse("models.config", config_map(prod, "tf-serving-config")["models.config"])
    resnet = prod_models.model_config_list.config[0]
    assert list(resnet.model_version_policy.specific.versions) == [3]
    assert dict(resnet.version_labels) == {"stable": 3}


def test_text_format_check_rejects_a_misspelled_field() -> None:
    text = model_config_text(parse(raw_stack("prod")).serving.models).replace("base_path", "basepath")
    with pytest.raises(text_format.ParseError):
        tfs_config.parse("models.config", text)


def test_tf_serving_messages_are_upstream_generated_code_of_our_release() -> None:
    """The wheel matches the image (every stack file's image_version and the default), its
    config module imports with protobuf alone, and our protobuf runtime is one the wheel
    allows (its gencode predates protobuf's runtime version check, so this is the check)."""
    import importlib.metadata
    import subprocess
    import sys

    from packaging.requirements import Requirement
    from packaging.version import Version

    from components.config.serving import ServingConfig

    release = importlib.metadata.version("tensorflow-serving-api")
    image_versions = {parse(raw_stack(s)).serving.image_version for s in ("dev", "prod")}
    assert image_versions | {ServingConfig.model_fields["image_version"].default} == {release}
    module = tfs_config.message_class("models.config").__module__
    assert module == "tensorflow_serving.config.model_server_config_pb2", "generated, not declared"
    probe = (
        f"import sys, {module}\n"
        "assert not [m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')]"
    )
    assert subprocess.run([sys.executable, "-W", "error", "-c", probe]).returncode == 0
    wanted = [
        Requirement(r) for r in importlib.metadata.requires("tensorflow-serving-api") or []
        if Requirement(r).name == "protobuf"
    ]
    assert wanted and all(
        r.specifier.contains(Version(importlib.metadata.version("protobuf"))) for r in wanted
    )


@pytest.mark.parametrize(
    ("file_name", "text"),
    [
        # enable_large_batch_splitting is a BoolValue upstream, not a bool.
        ("batching.config", "enable_large_batch_splitting: true"),
        ("batching.config", "max_batch_size: 64"),  # an Int64Value: `{ value: 64 }`
        ("batching.config", "batch_timeout_micro { value: 1 }"),
        ("monitoring.config", "prometheus_config { enable: true pth: \"/m\" }"),
        ("models.config", 'model_config_list { config { name: "m" model_version_policy { newest {} } } }'),
        ("models.config", 'model_config_list { config { name: "m" version_labels { key: "a" value: "3" } } }'),
    ],
)
def test_upstream_messages_refuse_what_tf_serving_refuses(file_name: str, text: str) -> None:
    with pytest.raises(text_format.ParseError):
        tfs_config.parse(file_name, text)


def test_upstream_messages_accept_upstream_fields_we_do_not_write() -> None:
    tfs_config.parse("batching.config", "enable_large_batch_splitting { value: true } max_execution_batch_size { value: 8 }")
    tfs_config.parse("models.config", 'model_config_list { config { name: "m" logging_config { sampling_config {} } } }')


def test_batching_and_monitoring_files(prod: Rendering) -> None:
    batching = tfs_config.parse("batching.config", config_map(prod, "tf-serving-config")["batching.config"])
    assert batching.max_batch_size.value == 64
    assert batching.batch_timeout_micros.value == 2000
    assert batching.num_batch_threads.value == 4, "one batch thread per CPU of the pod"
    monitoring = tfs_config.parse("monitoring.config", config_map(prod, "tf-serving-config")["monitoring.config"])
    assert monitoring.prometheus_config.enable is True
    assert monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"
    cfg = parse(raw_stack("prod")).serving.batching
    assert "num_batch_threads { value: 7 }" in batching_parameters_text(cfg, 7)


def test_image_is_pinned_gpu_build_and_flags_are_set(prod: Rendering) -> None:
    serving = container(prod, "tf-serving")
    # Prod runs by digest (pin_image_digests); the tag stays in the reference for people.
    # and pulls through the stack's ECR pull-through cache (tests/test_image_cache.py).
    assert re.fullmatch(
        r"123456789012\.dkr\.ecr\.us-west-2\.amazonaws\.com/prod/docker-hub/tensorflow/serving:2\.19\.1-gpu@sha256:[0-9a-f]{64}",
        serving["image"],
    )
    args = serving["args"]
    for flag in (
        "--port=8500",
        "--rest_api_port=8501",
        "--model_config_file=/etc/tf-serving/models.config",
        "--allow_version_labels_for_unavailable_models=true",
        "--file_system_poll_wait_seconds=15",
        "--enable_batching=true",
        "--batching_parameters_file=/etc/tf-serving/batching.config",
        "--monitoring_config_file=/etc/tf-serving/monitoring.config",
        "--tensorflow_intra_op_parallelism=4",
        "--tensorflow_inter_op_parallelism=4",
        "--per_process_gpu_memory_fraction=0.9",
        "--enable_model_warmup=true",
        # prod serves one model on 4 CPUs: one load thread.
        "--num_load_threads=1",
        "--num_unload_threads=1",
    ):
        assert flag in args, flag
    mounted = {m["mountPath"] for m in serving["volumeMounts"]}
    for path_flag in ("--model_config_file=", "--batching_parameters_file=", "--monitoring_config_file="):
        path = next(a for a in args if a.startswith(path_flag)).split("=", 1)[1]
        assert path.rsplit("/", 1)[0] in mounted


def test_load_threads_follow_the_models_and_the_pods_cpus() -> None:
    from components.config import ServingConfig

    def threads(models: int, cpu: str, load_threads: int | None = None) -> str:
        raw = raw_stack("prod")
        serving = raw["serving"]
        first = next(iter(serving["models"].values()))
        serving["models"] = {f"m{i}": dict(first) for i in range(models)}
        serving["cpu"] = cpu
        if load_threads is not None:
            serving["load_threads"] = load_threads
        cfg: ServingConfig = parse(raw, "prod").serving
        return next(a for a in server_args(cfg) if a.startswith("--num_load_threads="))

    assert threads(1, "4") == "--num_load_threads=1"
    assert threads(3, "4") == "--num_load_threads=3"
    assert threads(6, "2") == "--num_load_threads=2"
    assert threads(3, "500m") == "--num_load_threads=1"
    assert threads(3, "4", load_threads=8) == "--num_load_threads=8"


def test_cpu_serving_uses_the_cpu_image_without_gpu_scheduling() -> None:
    raw = raw_stack("dev")
    del raw["serving"]["gpu_pool"]
    raw["serving"].pop("model_cache", None)
    r = render_raw(raw)
    serving = container(r, "tf-serving")
    assert serving["image"] == "tensorflow/serving:2.19.1"
    assert "nvidia.com/gpu" not in serving["resources"]["limits"]
    assert not any(a.startswith("--per_process_gpu_memory_fraction") for a in serving["args"])
    assert "nodeSelector" not in pod(r)["spec"] and "tolerations" not in pod(r)["spec"]


def test_resources_match_config(dev: Rendering, prod: Rendering) -> None:
    assert container(prod, "tf-serving")["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    }
    assert container(dev, "tf-serving")["resources"]["requests"] == {"cpu": "1500m", "memory": "6Gi"}


def test_pods_use_exactly_the_pool_scheduling_contract(dev: Rendering, prod: Rendering) -> None:
    for r, pool in ((dev, "l4"), (prod, "a10g")):
        spec = pod(r)["spec"]
        contract = r.outputs["gpu_scheduling"][pool]
        assert spec["nodeSelector"] == contract["node_selector"]
        assert spec["tolerations"] == contract["tolerations"]
        groups = [g for g in r.of_type("aws:eks/nodeGroup:NodeGroup") if g.name.startswith(f"gpu-{pool}-")]
        assert groups
        for group in groups:
            assert spec["nodeSelector"].items() <= group.inputs["labels"].items()
            taint = group.inputs["taints"][0]
            assert any(t["key"] == taint["key"] and t["value"] == taint["value"] for t in spec["tolerations"])


def test_spread_across_zones_and_hosts(dev: Rendering, prod: Rendering) -> None:
    def constraints(r: Rendering) -> dict[str, str]:
        return {c["topologyKey"]: c["whenUnsatisfiable"] for c in pod(r)["spec"]["topologySpreadConstraints"]}

    assert constraints(prod) == {"topology.kubernetes.io/zone": "DoNotSchedule", "kubernetes.io/hostname": "ScheduleAnyway"}
    assert constraints(dev)["topology.kubernetes.io/zone"] == "ScheduleAnyway"
    for c in pod(prod)["spec"]["topologySpreadConstraints"]:
        assert c["labelSelector"]["matchLabels"].items() <= pod(prod)["metadata"]["labels"].items()


def test_probes_allow_slow_loads(prod: Rendering) -> None:
    serving = container(prod, "tf-serving")
    startup = serving["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 900
    assert serving["readinessProbe"]["httpGet"] == {"path": "/v1/models/resnet", "port": "http"}
    assert "initialDelaySeconds" not in serving["livenessProbe"], "the startup probe guards the load"
    sidecar = container(prod, "model-sync")
    assert sidecar["readinessProbe"]["exec"]["command"] == ["/bin/bash", "/etc/model-sync/ready.sh"]


def test_restricted_security_everywhere(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    r = rendered_stack(stack_name)
    spec = pod(r)["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in spec["containers"] + spec["initContainers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert "limits" in c["resources"] and "memory" in c["resources"]["limits"], c["name"]
    namespace = next(m for m in r.k8s_objects() if m["kind"] == "Namespace" and m["metadata"]["name"] == "tf-serving")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    writable = {m["mountPath"] for c in spec["containers"] for m in c["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/tmp"}


def test_graceful_shutdown(prod: Rendering) -> None:
    spec = pod(prod)["spec"]
    pre_stop = container(prod, "tf-serving")["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < pre_stop < spec["terminationGracePeriodSeconds"]


def test_priority_class_exists_and_is_used(prod: Rendering) -> None:
    classes = [m for m in prod.k8s_objects() if m["kind"] == "PriorityClass"]
    assert pod(prod)["spec"]["priorityClassName"] == classes[0]["metadata"]["name"]
    assert classes[0]["value"] > 0 and classes[0].get("globalDefault") is False


def test_replicas_belong_to_the_autoscaler_when_there_is_one(dev: Rendering, prod: Rendering) -> None:
    assert "replicas" not in the(dev, "Deployment")["spec"]
    assert "replicas" not in the(prod, "Deployment")["spec"]
    raw = raw_stack("prod")
    raw["autoscaling"] = {"enabled": False}
    assert the(render_raw(raw), "Deployment")["spec"]["replicas"] == 2


def test_service_and_pdb_select_the_pods(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    r = rendered_stack(stack_name)
    pod_labels = pod(r)["metadata"]["labels"]
    service = the(r, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"grpc": (8500, "grpc"), "http": (8501, "http")}
    container_ports = {p["name"]: p["containerPort"] for p in container(r, "tf-serving")["ports"]}
    assert container_ports == {"grpc": 8500, "http": 8501}
    pdb = the(r, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert the(r, "Deployment")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_volumes_reference_objects_that_exist(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    r = rendered_stack(stack_name)
    spec = pod(r)["spec"]
    maps = {m["metadata"]["name"] for m in objects(r, "ConfigMap")}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for v in volumes.values():
        if "configMap" in v:
            assert v["configMap"]["name"] in maps
    for c in spec["containers"] + spec["initContainers"]:
        for mount in c["volumeMounts"]:
            assert mount["name"] in volumes, (c["name"], mount["name"])
    accounts = {m["metadata"]["name"] for m in objects(r, "ServiceAccount")}
    assert spec["serviceAccountName"] in accounts


def test_network_policy(prod: Rendering) -> None:
    policy = the(prod, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert policy["podSelector"]["matchLabels"].items() <= pod(prod)["metadata"]["labels"].items()
    lb, monitoring = policy["ingress"]
    public = {s.inputs["cidrBlock"] for s in prod.of_type("aws:ec2/subnet:Subnet") if "public" in s.name}
    assert {p["ipBlock"]["cidr"] for p in lb["from"]} == public, "ALB targets in IP mode: traffic from its subnets"
    assert {p["port"] for p in lb["ports"]} == {8500, 8501}
    assert monitoring["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert [p["port"] for p in monitoring["ports"]] == [8501]
    dns, agent, https = policy["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert agent["to"][0]["ipBlock"]["cidr"] == "169.254.170.23/32"
    assert https["to"][0]["ipBlock"] == {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}
    assert https["ports"] == [{"port": 443, "protocol": "TCP"}]


def test_pods_carry_the_model_sync_from_the_store(prod: Rendering) -> None:
    spec = pod(prod)["spec"]
    init, sidecar = spec["initContainers"]
    assert (init["name"], sidecar["name"]) == ("model-sync-init", "model-sync")
    assert "restartPolicy" not in init and sidecar["restartPolicy"] == "Always"
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    assert env["MODEL_BUCKET"] == prod.outputs["model_bucket"]
    assert env["MODEL_PREFIX"] == "models" and env["MODEL_ROOT"] == "/models"
    models_txt = config_map(prod, "model-sync")["models.txt"]
    assert models_txt == "resnet specific 3\n"


BAD: list[tuple[str, Any, str, str]] = [
    ("pod bigger than the node", ("cpu", "16"), "tf-serving-eks:serving", "does not fit pool 'a10g'"),
    ("more GPUs than the node has", ("gpus", 2), "tf-serving-eks:serving", "offers 1"),
    ("pool that does not exist", ("gpu_pool", "h100"), "tf-serving-eks:serving.gpu_pool", "no such pool"),
    ("prod with one replica", ("replicas", 1), "tf-serving-eks:serving.replicas", "at least 2 replicas"),
    ("no models", ("models", {}), "tf-serving-eks:serving.models", "at least 1 item"),
    ("bad model name", ("models", {"ResNet": {}}), "tf-serving-eks:serving.models.ResNet", "DNS-1123 label"),
    ("labels with latest policy", ("models", {"m": {"labels": {"stable": 1}}}), "tf-serving-eks:serving.models.m.labels", "need version_policy: specific"),
    ("label on unserved version", ("models", {"m": {"version_policy": "specific", "versions": [1], "labels": {"beta": 2}}}), "tf-serving-eks:serving.models.m.labels.beta", "not served"),
    ("specific without versions", ("models", {"m": {"version_policy": "specific"}}), "tf-serving-eks:serving.models.m.versions", "at least one version"),
    ("version zero", ("models", {"m": {"version_policy": "specific", "versions": [0]}}), "tf-serving-eks:serving.models.m.versions[0]", "greater than or equal to 1"),
    ("bad CPU quantity", ("cpu", "four"), "tf-serving-eks:serving.cpu", "not a Kubernetes quantity"),
]


@pytest.mark.parametrize("change, key, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_serving_config_is_refused(change: tuple[str, Any], key: str, fragment: str) -> None:
    raw = raw_stack("prod")
    raw["autoscaling"] = {"enabled": False}
    raw["serving"][change[0]] = copy.deepcopy(change[1])
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    assert f"{key}:" in str(info.value) and fragment in str(info.value), str(info.value)


def test_gpu_memory_fraction_must_leave_room_for_shared_gpus() -> None:
    raw = raw_stack("dev")
    raw["serving"]["gpu_memory_fraction"] = 0.9
    with pytest.raises(StackConfigError, match="shares each GPU between 2 pods; the fraction must be at most 0.50"):
        parse(raw)
