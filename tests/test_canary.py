"""Canary rollout wiring (second Deployment, weighted routes) and the promotion StackReference."""

from __future__ import annotations

from typing import Any

import pytest

from components.config import StackConfigError
from tests.support import alb_rules
from tests.support.alb_rules import Request
from tests.support import mounted_config_map, parse, raw_stack, secret_keys_for, settings_for
from tests.support import tfs_config
from tools.lib.mock_engine import Rendering, render


def canary_stack(weight: int = 10) -> dict[str, Any]:
    raw = raw_stack("prod")
    raw["serving"]["models"]["resnet"]["canary"] = {"version": 4, "weight": weight}
    return raw


def rendered(raw: dict[str, Any], **kwargs: Any) -> Rendering:
    return render("test", settings_for(raw), secret_keys_for(raw), **kwargs)


@pytest.fixture(scope="module")
def canary() -> Rendering:
    return rendered(canary_stack())


def objects(r: Rendering, kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in r.k8s_objects() if m["kind"] == kind}


def models_config(r: Rendering, deployment: str) -> Any:
    return tfs_config.parse("models.config", mounted_config_map(r, deployment, "tf-serving-config")["models.config"])


def test_canary_pods_load_the_canary_version_with_its_label(canary: Rendering) -> None:
    deployments = objects(canary, "Deployment")
    assert set(deployments) == {"tf-serving", "tf-serving-canary"}
    assert deployments["tf-serving-canary"]["spec"]["replicas"] == 1
    assert "replicas" not in deployments["tf-serving"]["spec"], "the HPA owns the stable count"
    stable = models_config(canary, "tf-serving").model_config_list.config[0]
    assert list(stable.model_version_policy.specific.versions) == [3]
    assert dict(stable.version_labels) == {"stable": 3}
    canary_model = models_config(canary, "tf-serving-canary").model_config_list.config[0]
    assert list(canary_model.model_version_policy.specific.versions) == [3, 4]
    assert dict(canary_model.version_labels) == {"stable": 3, "canary": 4}
    sync = mounted_config_map(canary, "tf-serving-canary", "model-sync")["models.txt"]
    assert sync == "resnet specific 3,4\n"


def test_services_select_their_own_pods(canary: Rendering) -> None:
    deployments = objects(canary, "Deployment")
    for name, service in objects(canary, "Service").items():
        selector = service["spec"]["selector"].items()
        for deployment_name, deployment in deployments.items():
            matches = selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
            assert matches == (deployment_name == name), (name, deployment_name)


def rest(r: Rendering, method: str, path: str) -> dict[str, int]:
    routes = [x.inputs for x in r.resources if x.is_k8s_object and x.inputs.get("kind") in ("HTTPRoute", "GRPCRoute")]
    return {b.name: b.weight for b in alb_rules.route(routes, Request("tfs.example.com", path, method)).backends}


def test_rest_route_splits_the_canaried_model_by_weight(canary: Rendering) -> None:
    assert rest(canary, "POST", "/v1/models/resnet:predict") == {"tf-serving": 90, "tf-serving-canary": 10}
    assert rest(canary, "GET", "/v1/models/resnet/metadata") == {"tf-serving": 90, "tf-serving-canary": 10}
    assert rest(canary, "POST", "/v1/models/resnet/labels/stable:predict") == {"tf-serving": 90, "tf-serving-canary": 10}
    # The canary label and version are loaded only by the canary pods.
    assert rest(canary, "POST", "/v1/models/resnet/labels/canary:predict") == {"tf-serving-canary": 100}
    assert rest(canary, "POST", "/v1/models/resnet/versions/4:classify") == {"tf-serving-canary": 100}
    assert rest(canary, "GET", "/v1/models/resnet/versions/4") == {"tf-serving-canary": 100}


def test_grpc_route_splits_by_weight_and_header(canary: Rendering) -> None:
    routes = [x.inputs for x in canary.resources if x.is_k8s_object and x.inputs.get("kind") == "GRPCRoute"]
    predict = "/tensorflow.serving.PredictionService/Predict"
    split = alb_rules.route(routes, Request("tfs-grpc.example.com", predict))
    assert {b.name: b.weight for b in split.backends} == {"tf-serving": 90, "tf-serving-canary": 10}
    explicit = alb_rules.route(routes, Request("tfs-grpc.example.com", predict, headers={"X-TF-Serving-Track": "canary"}))
    assert {b.name: b.weight for b in explicit.backends} == {"tf-serving-canary": 100}


def test_canary_service_gets_its_target_group_config(canary: Rendering) -> None:
    configs = objects(canary, "TargetGroupConfiguration")
    assert {c["spec"]["targetReference"]["name"] for c in configs.values()} == {"tf-serving", "tf-serving-canary"}


def test_no_canary_means_one_deployment_and_plain_routes(prod: Rendering) -> None:
    assert set(objects(prod, "Deployment")) == {"tf-serving"}
    assert rest(prod, "POST", "/v1/models/resnet:predict") == {"tf-serving": 1}
    assert rest(prod, "POST", "/v1/models/resnet/labels/canary:predict") == {"tf-serving": 1}


def test_network_policy_and_monitoring_cover_canary_pods(canary: Rendering) -> None:
    policy = objects(canary, "NetworkPolicy")["tf-serving"]["spec"]["podSelector"]["matchLabels"]
    monitor = objects(canary, "ServiceMonitor")["tf-serving"]["spec"]["selector"]["matchLabels"]
    for deployment in objects(canary, "Deployment").values():
        assert policy.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for service in objects(canary, "Service").values():
        assert monitor.items() <= service["metadata"]["labels"].items()


@pytest.mark.parametrize(
    "canary_cfg, fragment",
    [
        ({"version": 3, "weight": 10}, "must be newer than the served versions [3]"),
        ({"version": 4, "weight": 101}, "less than or equal to 100"),
    ],
)
def test_bad_canary_is_refused(canary_cfg: dict[str, int], fragment: str) -> None:
    raw = raw_stack("prod")
    raw["serving"]["models"]["resnet"]["canary"] = canary_cfg
    with pytest.raises(StackConfigError, match="serving.models.resnet.canary") as info:
        parse(raw)
    assert fragment in str(info.value)


def test_canary_needs_specific_versions() -> None:
    raw = raw_stack("dev")
    raw["serving"]["models"]["resnet"]["canary"] = {"version": 4}
    with pytest.raises(StackConfigError, match="serving.models.resnet.canary: needs version_policy: specific"):
        parse(raw)


def test_stack_reference_shows_what_would_be_promoted() -> None:
    dev_outputs = {"serving_model_versions": {"resnet": {"versions": [3, 4], "labels": {}}, "bert": {"versions": "latest:1"}}}
    r = rendered(raw_stack("prod"), stack_references={"my-org/tf-serving-eks/dev": dev_outputs})
    reference = r.one("pulumi:pulumi:StackReference")
    assert reference.inputs["name"] == "my-org/tf-serving-eks/dev"
    assert r.outputs["promotion_candidates"] == {
        "bert": {"source": "latest:1", "here": None},
        "resnet": {"source": [3, 4], "here": [3]},
    }
    assert r.outputs["serving_model_versions"]["resnet"] == {"versions": [3], "labels": {"stable": 3}}
