"""What TF Serving and pulumi-kubernetes will do with the serving workload we render.

Neither runs here, so each rule is stated from its source and applied to every serving
Deployment of every stack (the repo's stack files and generated ones with labels and a
canary).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.support import mounted_config_map, raw_stack, render_raw
from tests.support import tfs_config
from tests.support.scheduling import Taint, tolerates
from tools.lib.mock_engine import Rendering

Manifest = dict[str, Any]
SERVING = {"app.kubernetes.io/component": "serving", "app.kubernetes.io/part-of": "tf-serving-eks"}


def _stacks() -> dict[str, dict[str, Any]]:
    labelled = raw_stack("dev")
    labelled["serving"]["models"] = {
        "resnet": {"version_policy": "specific", "versions": [3, 4], "labels": {"stable": 3, "next": 4}},
        "bert": {"version_policy": "latest", "latest_count": 2},
    }
    canary = raw_stack("prod")
    canary["serving"]["models"]["resnet"]["canary"] = {"version": 4, "weight": 10}
    cpu = raw_stack("dev")
    cpu["serving"].pop("gpu_pool")
    cpu["serving"].pop("gpu_memory_fraction")
    cpu["serving"].pop("model_cache", None)
    cpu["serving"]["models"] = {"half-plus-two": {"version_policy": "specific", "versions": [1], "labels": {"stable": 1}}}
    return {"dev": raw_stack("dev"), "prod": raw_stack("prod"), "labelled": labelled, "canary": canary, "cpu": cpu}


STACKS = _stacks()
_rendered: dict[str, Rendering] = {}


def rendered(name: str) -> Rendering:
    if name not in _rendered:
        _rendered[name] = render_raw(copy.deepcopy(STACKS[name]), stack=name)
    return _rendered[name]


def deployments(r: Rendering) -> list[Manifest]:
    return [m for m in r.k8s_objects() if m["kind"] == "Deployment" and m["metadata"].get("namespace") == "tf-serving"]


def server_container(dep: Manifest) -> Manifest:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "tf-serving")


def flags(container: Manifest) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in container["args"] if a.startswith("--"))


def first_config_outcome(args: dict[str, str], models_config: Any) -> str | None:
    """TF Serving's answer to its first model config, from tensorflow/serving
    model_servers/server_core.cc: ReloadConfig calls UpdateModelVersionLabelMap before
    AddModelsViaModelConfigList, so on the first config no version is loaded yet; a label
    on a version that is not available is refused (FailedPrecondition, the server exits)
    unless --allow_version_labels_for_unavailable_models (main.cc) is true. The flag only
    covers labels not yet assigned, which at start is every label."""
    allow = args.get("allow_version_labels_for_unavailable_models", "false") == "true"
    for model in models_config.model_config_list.config:
        for label, version in model.version_labels.items():
            if not allow:
                return f"label {label} -> version {version} of {model.name} is not available"
    return None


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_serving_pod_accepts_its_first_config(stack: str) -> None:
    r = rendered(stack)
    checked = 0
    for dep in deployments(r):
        name = dep["metadata"]["name"]
        text = mounted_config_map(r, name, "tf-serving-config")["models.config"]
        refusal = first_config_outcome(flags(server_container(dep)), tfs_config.parse("models.config", text))
        assert refusal is None, f"{stack}: {name} would exit at start: {refusal}"
        checked += 1
    assert checked >= 1


def test_the_rule_refuses_a_label_without_the_flag() -> None:
    config = tfs_config.parse(
        "models.config",
        'model_config_list { config { name: "m" base_path: "/models/m" model_platform: "tensorflow" '
        "version_labels { key: \"stable\" value: 3 } } }",
    )
    assert first_config_outcome({}, config) is not None
    assert first_config_outcome({"allow_version_labels_for_unavailable_models": "true"}, config) is None


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_a_running_pod_never_sees_its_config_change(stack: str) -> None:
    """A live reload that moves a label to a version not yet loaded is refused, and
    server_core.cc keeps the refused config (config_ is set before the label map fails), so
    that version would never load: no config file is polled, and each pod mounts
    immutable ConfigMaps, so any change reaches pods only by a rolling update."""
    r = rendered(stack)
    by_name = {m["metadata"]["name"]: m for m in r.k8s_objects() if m["kind"] == "ConfigMap"}
    for dep in deployments(r):
        args = flags(server_container(dep))
        assert int(args.get("model_config_file_poll_wait_seconds", "0")) == 0, dep["metadata"]["name"]
        for volume in dep["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                assert by_name[volume["configMap"]["name"]].get("immutable") is True, volume


def pod_template_of(r: Rendering, dep_name: str) -> Manifest:
    return next(d for d in deployments(r) if d["metadata"]["name"] == dep_name)["spec"]["template"]


def test_moving_a_label_rolls_the_pods_and_nothing_else_does() -> None:
    before = copy.deepcopy(STACKS["labelled"])
    after = copy.deepcopy(before)
    after["serving"]["models"]["resnet"]["labels"] = {"stable": 4, "next": 4}
    again = render_raw(copy.deepcopy(before), stack="labelled")
    moved = render_raw(after, stack="labelled")
    assert pod_template_of(again, "tf-serving") == pod_template_of(rendered("labelled"), "tf-serving")
    assert pod_template_of(moved, "tf-serving") != pod_template_of(rendered("labelled"), "tf-serving")


# pulumi-kubernetes' await rules (provider/pkg/await/awaiters.go): a Deployment waits
# until Available with every replica updated (deployment.go), a Service with a selector
# until it has a ready endpoint (service.go: subset.Addresses), a StatefulSet, DaemonSet,
# Pod, Job or PVC until ready; 10 minutes unless told otherwise, and a failed await fails
# `pulumi up`. The annotation pulumi.com/skipAwait=true turns the wait off.
AWAITED = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "Job", "PersistentVolumeClaim", "Service"}


def awaited(obj: Manifest) -> bool:
    if obj["kind"] not in AWAITED:
        return False
    if obj["kind"] == "PersistentVolumeClaim" and obj.get("spec", {}).get("volumeName"):
        # Pre-bound to a volume of ours: the PV controller binds it with no pod at all
        # (kubernetes pkg/controller/volume/persistentvolume pv_controller.go, syncUnboundClaim:
        # claim.Spec.VolumeName set), so waiting for it never waits for a model.
        return False
    if (obj["metadata"].get("annotations") or {}).get("pulumi.com/skipAwait") == "true":
        return False
    if obj["kind"] == "Service":
        spec = obj.get("spec", {})
        return bool(spec.get("selector")) and spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None"
    return True


def selects_serving_pods(obj: Manifest) -> bool:
    if obj["kind"] == "Service":
        labels = obj["spec"].get("selector") or {}
    else:
        labels = (obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels")) or obj["metadata"].get("labels", {})
    return SERVING.items() <= labels.items() or labels.get("app.kubernetes.io/component") == "serving"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_first_pulumi_up_does_not_wait_for_models_nobody_has_published(stack: str) -> None:
    """Serving pods are Ready only after a model is published to the bucket this same
    `pulumi up` creates (and, on a GPU pool at zero, after a node and a ~6 GB image):
    nothing that needs them Ready may be awaited, or the first deploy fails and the
    autoscaler objects after it are never created."""
    r = rendered(stack)
    waiting = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in r.k8s_objects()
        if awaited(o) and (selects_serving_pods(o) or o["metadata"].get("namespace") == "tf-serving" and o["kind"] != "Service")
    ]
    assert waiting == [], f"{stack}: pulumi would wait for serving pods: {waiting}"
    assert any(not awaited(o) for o in r.k8s_objects() if o["kind"] == "Deployment"), "rule applied to nothing"


def test_the_await_rule_sees_a_plain_deployment() -> None:
    plain = {"kind": "Deployment", "metadata": {"name": "x", "labels": SERVING}, "spec": {"template": {"metadata": {"labels": SERVING}}}}
    assert awaited(plain) and selects_serving_pods(plain)


def test_stack_tells_how_to_watch_the_rollout() -> None:
    out = rendered("prod").outputs
    assert "kubectl -n tf-serving rollout status deployment/tf-serving" in out["serving_rollout_check"]


def minutes(duration: str) -> int:
    assert duration.endswith("m"), duration
    return int(duration[:-1])


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_pulumi_waits_long_enough_for_a_rolling_node_group_update(stack: str) -> None:
    """EKS replaces a managed node group's nodes `maxUnavailable` at a time; per batch it
    launches and joins new nodes, then drains old ones with a 15-minute eviction timeout
    (EKS user guide, "Understand each phase of node updates"). A GPU node takes over 5
    minutes to boot and join, so a batch may take 20 minutes: Pulumi's update wait (60
    minutes unless the program says) must cover every batch, or `pulumi up` fails mid-way."""
    groups = [x for x in rendered(stack).resources if x.type == "aws:eks/nodeGroup:NodeGroup"]
    assert groups
    for group in groups:
        size = group.inputs["scalingConfig"]["maxSize"]
        batch = group.inputs.get("updateConfig", {}).get("maxUnavailable", 1)
        needed = -(-size // batch) * 20
        waited = minutes(group.custom_timeouts.get("update", "60m"))
        assert waited >= needed, f"{stack}: {group.name} waits {waited} min for an update that may take {needed}"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_helm_waits_long_enough_for_daemonsets_on_new_gpu_nodes(stack: str) -> None:
    """An atomic Helm release waits for its DaemonSets on every node they tolerate; GPU
    nodes created in the same `pulumi up` boot, join and pull first. A release whose pods
    tolerate a GPU pool's taint needs more than Helm's 10 minutes."""
    r = rendered(stack)
    # The taints are those the GPU pools' scheduling contract tolerates, one for one.
    taints = [Taint(t["key"], t.get("value", ""), t["effect"]) for s in r.outputs["gpu_scheduling"].values() for t in s["tolerations"]]
    checked = 0
    for release in (x for x in r.resources if x.type == "kubernetes:helm.sh/v3:Release"):
        tolerations = [t for t in json_walk(release.inputs.get("values", {}), "tolerations") if isinstance(t, dict)]
        if any(tolerates(tolerations, taint) for taint in taints):
            checked += 1
            assert release.inputs["timeout"] >= 1200, f"{stack}: {release.name} waits {release.inputs['timeout']} s"
    assert checked or not taints


def json_walk(value: Any, key: str) -> list[Any]:
    found: list[Any] = []
    if isinstance(value, dict):
        for k, v in value.items():
            found += v if k == key and isinstance(v, list) else json_walk(v, key)
    elif isinstance(value, list):
        for v in value:
            found += json_walk(v, key)
    return found
