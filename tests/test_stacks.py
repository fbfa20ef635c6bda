"""Whole-stack tests: every Pulumi.<stack>.yaml in the repo renders and its objects conform."""

from __future__ import annotations

import copy
from typing import Any

from components.config import parse_stack_config
from tests.conftest import rendered_stack
from tests.support import raw_stack
from tests.support import conformance


def test_stack_renders_with_outputs(stack_name: str) -> None:
    rendering = rendered_stack(stack_name)
    assert rendering.resources
    for key in ("cluster_name", "oidc_provider_arn", "vpc_id", "private_subnet_ids"):
        assert rendering.outputs.get(key), f"{stack_name}: output {key} is empty"


def test_every_kubernetes_object_passes_strict_schema_validation(stack_name: str) -> None:
    rendering = rendered_stack(stack_name)
    version = parse_stack_config(raw_stack(stack_name), stack_name).cluster.kubernetes_version
    objects = rendering.k8s_objects()
    assert objects, "a stack with no Kubernetes objects would pass vacuously"
    assert conformance.validate_objects(objects, version) == []


def test_every_object_carries_the_common_labels(stack_name: str) -> None:
    for manifest in rendered_stack(stack_name).k8s_objects():
        labels = manifest["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "tf-serving-eks", conformance.object_id(manifest)
        assert labels.get("app.kubernetes.io/managed-by") == "pulumi"


def test_object_names_are_unique(stack_name: str) -> None:
    seen = set()
    for manifest in rendered_stack(stack_name).k8s_objects():
        ident = (manifest["apiVersion"], manifest["kind"], manifest["metadata"].get("namespace"), manifest["metadata"]["name"])
        assert ident not in seen, ident
        seen.add(ident)


def test_schema_validation_can_fail() -> None:
    manifest = copy.deepcopy(rendered_stack("dev").k8s_objects()[0])
    manifest["volumeBindingMod"] = "Immediate"
    problems = conformance.validate_object(manifest, "1.36")
    assert problems and "volumeBindingMod" in problems[0]


def test_custom_resources_are_checked_against_reference_crds() -> None:
    good: dict[str, Any] = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "x"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "endpoints": [{"port": "http"}]},
    }
    assert conformance.validate_object(good, "1.36") == []
    bad = copy.deepcopy(good)
    bad["spec"]["endpoints"][0]["prot"] = "http"
    assert conformance.validate_object(bad, "1.36")
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert "no schema" in conformance.validate_object(unknown, "1.36")[0]
