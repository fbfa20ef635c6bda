"""The snapshot compare (tests/snapshot.py) finds what a reshaping changed: a URN that moved
without an alias, a changed input, a resource gone; and, like the engine, accepts a URN reached
through an alias, its own or one inherited from an aliased parent."""

from __future__ import annotations

import copy
from typing import Any

from tests.snapshot import compare_documents

HEAD = "urn:pulumi:dev::tf-serving-eks"
STACK = f"{HEAD}::pulumi:pulumi:Stack::tf-serving-eks-dev"


def resource(urn: str, parent: str, type_: str, name: str, **inputs: Any) -> dict[str, Any]:
    return {
        "urn": urn, "type": type_, "name": name, "parent": parent, "provider": "", "custom": True,
        "read": False, "inputs": inputs, "secret_inputs": [], "protect": False,
        "retain_on_delete": False, "ignore_changes": [], "depends_on": [], "custom_timeouts": {},
        "aliases": [],
    }


def tree(component: str, aliases: list[dict[str, Any]] | None = None, bucket: str = "b") -> dict[str, Any]:
    """A component `gpu` of type `component` with one bucket below it."""
    top = resource(f"{HEAD}::{component}::gpu", STACK, component, "gpu")
    top["custom"] = False
    top["aliases"] = aliases or []
    child_type = "aws:s3/bucket:Bucket"
    child = resource(f"{HEAD}::{component}${child_type}::gpu-bucket", top["urn"], child_type, "gpu-bucket", bucket=bucket)
    return {"resources": [top, child], "outputs": {"bucket": bucket}}


OLD = tree("tf-serving-eks:gpu:GpuNodePool")


def test_identical_documents_have_no_difference() -> None:
    assert compare_documents(OLD, copy.deepcopy(OLD)) == []


def test_a_type_change_without_an_alias_replaces_the_component_and_its_children() -> None:
    problems = compare_documents(OLD, tree("tf-serving-eks:gpu_pools:GpuPools"))
    # The component itself holds no state; the bucket below it would be replaced.
    assert sum("gone" in p for p in problems) == 1, problems
    assert sum(p.endswith(": new") for p in problems) == 1, problems
    assert all("Bucket::gpu-bucket" in p for p in problems), problems


def test_an_alias_on_the_parent_carries_its_children_too() -> None:
    new = tree("tf-serving-eks:gpu_pools:GpuPools", aliases=[{"type": "tf-serving-eks:gpu:GpuNodePool"}])
    assert compare_documents(OLD, new) == []


def test_an_alias_by_urn_is_followed() -> None:
    new = tree("tf-serving-eks:gpu_pools:GpuPools", aliases=[{"urn": OLD["resources"][0]["urn"]}])
    assert compare_documents(OLD, new) == []


def test_a_child_moved_to_a_new_parent_needs_an_alias_naming_the_old_parent() -> None:
    new = copy.deepcopy(OLD)
    other_type = "tf-serving-eks:node_autoscaling:NodeAutoscaler"
    other = resource(f"{HEAD}::{other_type}::ca", STACK, other_type, "ca")
    other["custom"] = False
    child = new["resources"][1]
    child["parent"] = other["urn"]
    child["urn"] = f"{HEAD}::{other_type}$aws:s3/bucket:Bucket::gpu-bucket"
    new["resources"].append(other)
    assert any("gone" in p for p in compare_documents(OLD, new))
    child["aliases"] = [{"parentUrn": OLD["resources"][0]["urn"]}]
    problems = compare_documents(OLD, new)
    assert problems == [], problems


def test_a_changed_input_or_output_is_a_difference() -> None:
    new = tree("tf-serving-eks:gpu:GpuNodePool", bucket="other")
    problems = compare_documents(OLD, new)
    assert any(".inputs.bucket" in p and '"b" -> "other"' in p for p in problems), problems
    assert any(p.startswith("outputs: .bucket") for p in problems), problems


def test_urns_in_the_mock_monitors_form_are_matched_as_the_engine_would() -> None:
    """The mock monitor writes a top-level URN with the stack in its type chain and a grandchild
    with only its parent's last type; aliases are resolved on the engine's form all the same."""

    def mock_form(document: dict[str, Any]) -> dict[str, Any]:
        document = copy.deepcopy(document)
        top, child = document["resources"]
        old_top = top["urn"]
        top["urn"] = top["urn"].replace("::tf-serving-eks:", "::pulumi:pulumi:Stack$tf-serving-eks:", 1)
        child["parent"] = top["urn"]
        assert old_top != top["urn"]
        return document

    new = tree("tf-serving-eks:gpu_pools:GpuPools", aliases=[{"type": "tf-serving-eks:gpu:GpuNodePool"}])
    assert compare_documents(mock_form(OLD), mock_form(new)) == []
    assert compare_documents(mock_form(OLD), mock_form(tree("tf-serving-eks:gpu_pools:GpuPools")))
