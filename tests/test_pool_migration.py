"""Moving the serving pool from managed node groups to Karpenter without downtime, the way the
README's "Moving a pool to Karpenter" tells it: (1) add a Karpenter pool beside the old one,
(2) point `serving.gpu_pool` at it, (3) remove the old pool. Each step is rendered under the
mock engine and compared with the one before, resource by resource (by URN, as the Pulumi
engine matches them), for the dev and the prod stack.

What must hold for no downtime: step 1 touches nothing that serves; step 2 changes only the
serving Deployment, in place (same name and selector: pulumi-kubernetes replaces a Deployment
only for those, metadata.name and the immutable spec.selector, Kubernetes apps/v1 API), with a
rolling update that starts a new pod before it stops an old one, and the new pods land only on
the new pool's nodes; step 3 removes the old pool's resources and nothing else.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import pytest

from tests.support import chart_renders as cr
from tests.support import raw_stack, render_raw
from tests.support.scheduling import can_land
from tools.lib.mock_engine import Registered, Rendering

Raw = dict[str, Any]
VARIANTS = ("dev", "prod")
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def migration_steps(stack: str) -> tuple[str, str, list[Raw]]:
    """The old pool's name, the new one's and the four stack files: before, and after each step."""
    before = raw_stack(stack)
    old = str(before["serving"]["gpu_pool"])
    new = f"k-{old}"
    added = copy.deepcopy(before)
    pool = copy.deepcopy(before["gpu_pools"][old])
    for key in ("min_size", "desired_size", "max_unavailable"):
        pool.pop(key, None)  # refused for Karpenter pools (no standing node count)
    added["gpu_pools"][new] = {**pool, "provisioner": "karpenter"}
    moved = copy.deepcopy(added)
    moved["serving"]["gpu_pool"] = new
    removed = copy.deepcopy(moved)
    del removed["gpu_pools"][old]
    return old, new, [before, added, moved, removed]


@functools.cache
def renderings(stack: str) -> tuple[Rendering, ...]:
    return tuple(render_raw(raw, stack=stack) for raw in migration_steps(stack)[2])


def by_urn(r: Rendering) -> dict[str, Registered]:
    return {x.urn: x for x in r.resources}


def changes(a: Rendering, b: Rendering) -> tuple[set[str], set[str], set[str]]:
    """URNs added, removed and with changed inputs, from `a` to `b`."""
    old, new = by_urn(a), by_urn(b)

    def text(x: Registered) -> str:
        return json.dumps(x.inputs, sort_keys=True, default=str)

    changed = {u for u in old.keys() & new.keys() if text(old[u]) != text(new[u])}
    return new.keys() - old.keys(), old.keys() - new.keys(), changed


def replaced_by(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The fields whose change makes pulumi-kubernetes replace a Deployment (delete, then
    create: every pod goes at once) instead of rolling it."""
    return [
        field for field, get in (("metadata.name", lambda d: d["metadata"]["name"]), ("spec.selector", lambda d: d["spec"]["selector"]))
        if get(a) != get(b)
    ]


def short(urns: set[str]) -> list[str]:
    return sorted(u.split("::")[-1] for u in urns)


@pytest.mark.parametrize("stack", VARIANTS)
def test_adding_the_karpenter_pool_touches_nothing_that_serves(stack: str) -> None:
    before, added = renderings(stack)[:2]
    new_urns, removed, changed = changes(before, added)
    assert not removed
    assert any(by_urn(added)[u].type == "kubernetes:karpenter.sh/v1:NodePool" for u in new_urns)
    # Only the private subnets change: they gain Karpenter's discovery tag, in place.
    assert {by_urn(added)[u].type for u in changed} <= {"aws:ec2/subnet:Subnet"}, short(changed)


@pytest.mark.parametrize("stack", VARIANTS)
def test_moving_the_serving_pool_rolls_the_pods_over_in_place(stack: str) -> None:
    old, new, _ = migration_steps(stack)
    _, added, moved, _ = renderings(stack)
    new_urns, removed, changed = changes(added, moved)
    # The node-local model cache is the pool's nodes' (components/model_cache.py): the new
    # pool gets its own volume, claim and folder-maker, the old pool's go.
    new_cache = {u for u in new_urns if by_urn(moved)[u].name.startswith(f"serving-model-cache-{new}-")}
    old_cache = {u for u in removed if by_urn(added)[u].name.startswith(f"serving-model-cache-{old}-")}
    assert new_urns == new_cache and removed == old_cache, (short(new_urns), short(removed))
    cached = migration_steps(stack)[2][1]["serving"].get("model_cache", {}).get("enabled", False)
    assert len(new_cache) == len(old_cache) == (3 if cached else 0)
    assert {by_urn(moved)[u].type for u in changed} == {DEPLOYMENT}, short(changed)
    for urn in changed:
        a, b = by_urn(added)[urn].inputs, by_urn(moved)[urn].inputs
        assert replaced_by(a, b) == []
        rolling = b["spec"]["strategy"]["rollingUpdate"]
        assert b["spec"]["strategy"]["type"] == "RollingUpdate" and rolling["maxUnavailable"] == 0
        assert rolling["maxSurge"] >= 1
        template = cr.pod_template(b) or {}
        new_nodes = [n for n in cr.karpenter_nodes(moved) if n.labels.get("tf-serving-eks/pool") == new]
        old_nodes = [g for g in cr.node_groups(moved) if g.labels.get("tf-serving-eks/pool") == old]
        assert new_nodes and old_nodes
        assert all(can_land(template, n) for n in new_nodes)
        assert not any(can_land(template, g) for g in old_nodes)
        # Before the move the pods ran on the old pool only.
        assert all(can_land(cr.pod_template(a) or {}, g) for g in old_nodes)


@pytest.mark.parametrize("stack", VARIANTS)
def test_removing_the_old_pool_removes_only_its_own_resources(stack: str) -> None:
    old, _, _ = migration_steps(stack)
    moved, removed_step = renderings(stack)[2:]
    new_urns, removed, changed = changes(moved, removed_step)
    assert not new_urns and not changed, (short(new_urns), short(changed))
    assert removed
    names = short(removed)
    assert all(f"-{old}-" in f"-{n}" or n.startswith(f"gpu-{old}") for n in names), names
    assert any(by_urn(moved)[u].type == "aws:eks/nodeGroup:NodeGroup" for u in removed)


def test_the_comparison_sees_a_change_that_would_cost_serving() -> None:
    # Can fail: a new selector or name on the serving Deployment is seen as a change, and as
    # one that replaces it.
    moved = renderings("dev")[2]
    for field, edit in (("spec.selector", {"matchLabels": {"app": "other"}}), ("metadata.name", "other")):
        tampered = copy.deepcopy(moved)
        for x in tampered.resources:
            if x.type == DEPLOYMENT and x.inputs["metadata"]["name"] == "tf-serving":
                if field == "spec.selector":
                    x.inputs["spec"]["selector"] = edit
                else:
                    x.inputs["metadata"]["name"] = edit
                assert replaced_by(by_urn(moved)[x.urn].inputs, x.inputs) == [field]
        _, _, changed = changes(moved, tampered)
        assert changed and {by_urn(tampered)[u].type for u in changed} == {DEPLOYMENT}
