"""The CEL validation rules of the pinned NodePool and EC2NodeClass CRDs (karpenter-crd 1.14.1,
/work/shared/reference/crds-pinned), evaluated with a real CEL implementation on every NodePool
and EC2NodeClass the stacks render: the API server runs them at `pulumi up` and refuses an
object that breaks one, which JSON-schema validation alone does not see
(tests/support/cel_rules.py says how they are evaluated)."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import cel_rules, raw_stack, render_raw
from tests.support import config_grid
from tests.support.reference import reference

Raw = dict[str, Any]
SCHEMAS = {
    "NodePool": reference("crds-pinned", "karpenter.sh", "nodepool_v1.json"),
    "EC2NodeClass": reference("crds-pinned", "karpenter.k8s.aws", "ec2nodeclass_v1.json"),
}


@functools.cache
def schema(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMAS[kind].read_text())
    return loaded


def karpenter(raw: Raw, **settings: Any) -> Raw:
    raw = copy.deepcopy(raw)
    pool = raw["serving"]["gpu_pool"]
    for key in ("min_size", "desired_size", "max_unavailable"):
        raw["gpu_pools"][pool].pop(key, None)
    raw["gpu_pools"][pool]["provisioner"] = "karpenter"
    for key, value in settings.items():
        if key == "ami_type":
            raw["gpu_pools"][pool]["ami_type"] = value
            # Refused on Bottlerocket: time slicing, nodeadm's instance store, the node cache.
            raw["gpu_pools"][pool].pop("time_slicing_replicas", None)
            raw["gpu_pools"][pool].pop("instance_store", None)
            raw["serving"].pop("model_cache", None)
        else:
            raw["gpu_pools"][pool].setdefault("karpenter", {})[key] = value
    return raw


def variants() -> Iterator[tuple[str, str, Raw]]:
    """(case, stack, stack file) for every stack with a Karpenter pool we render."""
    for stack in ("dev", "prod"):
        yield f"{stack}", stack, karpenter(raw_stack(stack))
        yield f"{stack}-bottlerocket", stack, karpenter(raw_stack(stack), ami_type="BOTTLEROCKET_x86_64_NVIDIA")
        for policy in ("WhenEmpty", "WhenEmptyOrUnderutilized"):
            yield f"{stack}-{policy}", stack, karpenter(raw_stack(stack), consolidation_policy=policy)
        yield f"{stack}-budgets", stack, karpenter(raw_stack(stack), budgets=[
            {"nodes": "0", "schedule": "0 9 * * mon-fri", "duration": "8h", "reasons": ["Underutilized", "Drifted"]},
            {"nodes": "10%"},
        ], expire_after="Never")
        yield f"{stack}-reserved", stack, karpenter(raw_stack(stack), capacity_reservations=[
            {"id": "cr-0123456789abcdef0"}, {"tags": {"team": "ml"}},
        ])
    for name, raw in config_grid.GRID.items():
        # Auto Mode's NodePools are karpenter.sh/v1 NodePools, kept by the same CRD's rules.
        if any(p.get("provisioner") in ("karpenter", "auto-mode") for p in raw.get("gpu_pools", {}).values()):
            yield f"grid-{name}", name, raw


CASES = {case: (stack, raw) for case, stack, raw in variants()}


@functools.cache
def objects(case: str) -> list[dict[str, Any]]:
    stack, raw = CASES[case]
    rendering = config_grid.rendered(stack) if case.startswith("grid-") else render_raw(raw, stack=stack)
    return [m for m in rendering.k8s_objects() if m["kind"] in SCHEMAS]


def test_every_rule_of_both_crds_is_found_and_compiles() -> None:
    for kind in SCHEMAS:
        found = list(cel_rules.rules(schema(kind)))
        # karpenter-crd 1.14.1: 20 rules on NodePool, 54 on EC2NodeClass.
        assert len(found) == {"NodePool": 20, "EC2NodeClass": 54}[kind], (kind, len(found))
        # Each compiles; the transition rules (oldSelf) are the ones left for updates.
        assert all(cel_rules.compiled(r.rule) is not None for r in found)
        assert {r.path for r in found if r.on_update_only} == {
            "NodePool": {".spec", ".spec.template.spec.nodeClassRef"}, "EC2NodeClass": set(),
        }[kind]


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_node_pools_and_node_classes_keep_every_crd_rule(case: str) -> None:
    found = objects(case)
    # An Auto Mode stack's NodePools name Auto Mode's NodeClass, not an EC2NodeClass.
    auto_mode = any(p.get("provisioner") == "auto-mode" for p in CASES[case][1].get("gpu_pools", {}).values())
    assert {m["kind"] for m in found} == ({"NodePool"} if auto_mode else set(SCHEMAS)), case
    for obj in found:
        assert cel_rules.violations(schema(obj["kind"]), obj) == [], (case, obj["metadata"]["name"])


def first(case: str, kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(m for m in objects(case) if m["kind"] == kind))


def broken(kind: str, edit: Any) -> set[str]:
    obj = first("dev", kind)
    edit(obj["spec"])
    return {v.message for v in cel_rules.violations(schema(kind), obj)}


def requirements(spec: dict[str, Any]) -> list[dict[str, Any]]:
    reqs: list[dict[str, Any]] = spec["template"]["spec"]["requirements"]
    return reqs


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        ("NodePool", lambda s: requirements(s).append({"key": "example.com/x", "operator": "In", "values": []}),
         "requirements with operator 'In' must have a value defined"),
        ("NodePool", lambda s: requirements(s).append({"key": "karpenter.sh/nodepool", "operator": "In", "values": ["x"]}),
         'label "karpenter.sh/nodepool" is restricted'),
        ("NodePool", lambda s: requirements(s).append({"key": "kubernetes.io/hostname", "operator": "In", "values": ["x"]}),
         'label "kubernetes.io/hostname" is restricted'),
        ("NodePool", lambda s: requirements(s).append({"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Gt", "values": ["1", "2"]}),
         "requirements operator 'Gt', 'Lt', 'Gte', or 'Lte' must have a single positive integer value"),
        ("NodePool", lambda s: s["disruption"]["budgets"].append({"nodes": "1", "schedule": "@daily"}),
         "'schedule' must be set with 'duration'"),
        ("NodePool", lambda s: s["template"]["metadata"]["labels"].update({"karpenter.sh/nodepool": "x"}),
         'label "karpenter.sh/nodepool" is restricted'),
        ("EC2NodeClass", lambda s: s.update(amiSelectorTerms=[{"alias": "al2023@latest", "id": "ami-1"}]),
         "'alias' is mutually exclusive, cannot be set with a combination of other fields in amiSelectorTerms"),
        ("EC2NodeClass", lambda s: s.update(amiSelectorTerms=[{"alias": "ubuntu@v1"}]),
         "family is not supported, must be one of the following: 'al2', 'al2023', 'bottlerocket', 'windows2019', 'windows2022', 'windows2025'"),
        ("EC2NodeClass", lambda s: s["tags"].update({"karpenter.sh/nodepool": "x"}),
         "tag contains a restricted tag matching karpenter.sh/nodepool"),
        ("EC2NodeClass", lambda s: s.update(subnetSelectorTerms=[]), "subnetSelectorTerms cannot be empty"),
        ("EC2NodeClass", lambda s: s.update(capacityReservationSelectorTerms=[{"id": "cr-1", "ownerID": "123456789012"}]),
         "'id' is mutually exclusive, cannot be set along with other fields in a capacity reservation selector term"),
        ("EC2NodeClass", lambda s: s.update(instanceProfile="x"), "must specify exactly one of ['role', 'instanceProfile']"),
    ],
)
def test_each_checker_catches_what_the_api_server_would_refuse(kind: str, edit: Any, message: str) -> None:
    messages = broken(kind, edit)
    assert any(message in m for m in messages), messages


def test_the_kubernetes_library_functions_behave_as_upstream() -> None:
    # cel-go ext strings split and k8s regex find, on the inputs the rules give them.
    assert cel_rules.holds("self.split('@')[0] == 'al2023' && self.split('@')[1] == 'v2'", "al2023@v2")
    assert cel_rules.holds("self.find('^([^/]+)') == 'karpenter.sh'", "karpenter.sh/capacity-type")
    assert cel_rules.holds("self.find('^([^/]+)') == 'plain'", "plain")
    assert cel_rules.holds("self.find('[0-9]+') == ''", "none")


def test_defaults_are_applied_before_the_rules_run() -> None:
    schema_ = {"type": "object", "properties": {"a": {"type": "string", "default": "x"}},
               "x-kubernetes-validations": [{"rule": "self.a == 'x'", "message": "a is x"}]}
    assert cel_rules.violations(schema_, {}) == []
    assert [v.message for v in cel_rules.violations(schema_, {"a": "y"})] == ["a is x"]
