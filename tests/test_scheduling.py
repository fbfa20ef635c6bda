"""The scheduling evaluator (tests/support/scheduling.py): each rule holds where Kubernetes
says it holds and fails where Kubernetes says it fails; specs the API server refuses raise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.scheduling import (
    InvalidSpec,
    Taint,
    affinity_holds,
    can_land,
    requirement_holds,
    toleration_tolerates,
    tolerates,
    untolerated,
)

LABELS = {"zone": "a", "gpus": "4", "name": "g5", "neg": "-3"}
GPU = Taint("nvidia.com/gpu", "true", "NoSchedule")


@dataclass(frozen=True)
class FakeNode:
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))
    taints: tuple[Taint, ...] = ()


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}}


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": op, **({"values": list(values)} if values else {})}


# --- matchExpressions (labels.Requirement.Matches) ---------------------------------------

@pytest.mark.parametrize(
    "expression, holds",
    [
        (expr("zone", "In", "a", "b"), True),
        (expr("zone", "In", "b"), False),
        (expr("missing", "In", "a"), False),
        (expr("zone", "NotIn", "b"), True),
        (expr("zone", "NotIn", "a"), False),
        (expr("missing", "NotIn", "a"), True),
        (expr("zone", "Exists"), True),
        (expr("missing", "Exists"), False),
        (expr("missing", "DoesNotExist"), True),
        (expr("zone", "DoesNotExist"), False),
        (expr("gpus", "Gt", "3"), True),
        (expr("gpus", "Gt", "4"), False),
        (expr("gpus", "Lt", "5"), True),
        (expr("gpus", "Lt", "4"), False),
        (expr("neg", "Lt", "-2"), True),
        (expr("missing", "Gt", "0"), False),
        (expr("name", "Gt", "0"), False),  # the label is not an integer
        (expr("gpus", "Gt", "three"), False),  # the requirement is not an integer
        (expr("gpus", "Gt", "1_0"), False),  # ParseInt takes no underscores (Python's int would)
    ],
)
def test_each_operator_holds_and_fails_as_labels_selector_does(expression: dict[str, Any], holds: bool) -> None:
    assert requirement_holds(expression, LABELS) is holds


@pytest.mark.parametrize(
    "expression",
    [
        expr("zone", "In"),
        expr("zone", "NotIn"),
        expr("zone", "Exists", "a"),
        expr("zone", "DoesNotExist", "a"),
        expr("gpus", "Gt"),
        expr("gpus", "Lt", "1", "2"),
        expr("zone", "Equals", "a"),
        expr("", "Exists"),
    ],
)
def test_requirements_the_api_server_refuses_raise(expression: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec):
        requirement_holds(expression, LABELS)


def test_label_selectors_refuse_the_numeric_operators() -> None:
    from tests.support.scheduling import LABEL_SELECTOR_OPERATORS

    assert requirement_holds(expr("zone", "In", "a"), LABELS, LABEL_SELECTOR_OPERATORS)
    with pytest.raises(InvalidSpec):
        requirement_holds(expr("gpus", "Gt", "1"), LABELS, LABEL_SELECTOR_OPERATORS)


# --- nodeSelector and required node affinity ---------------------------------------------

def test_node_selector_is_an_exact_match_of_every_pair() -> None:
    assert affinity_holds({}, LABELS)
    assert affinity_holds({"nodeSelector": {"zone": "a", "gpus": "4"}}, LABELS)
    assert not affinity_holds({"nodeSelector": {"zone": "a", "gpus": "8"}}, LABELS)
    assert not affinity_holds({"nodeSelector": {"zone": "A"}}, LABELS)
    assert not affinity_holds({"nodeSelector": {"missing": ""}}, LABELS)


def test_terms_are_ored_and_expressions_anded() -> None:
    both = {"matchExpressions": [expr("zone", "In", "a"), expr("gpus", "Gt", "2")]}
    one_wrong = {"matchExpressions": [expr("zone", "In", "a"), expr("gpus", "Gt", "8")]}
    other_wrong = {"matchExpressions": [expr("zone", "In", "b")]}
    assert affinity_holds(required(both), LABELS)
    assert not affinity_holds(required(one_wrong), LABELS), "one failing expression fails its term"
    assert affinity_holds(required(one_wrong, both), LABELS), "any one term is enough"
    assert not affinity_holds(required(one_wrong, other_wrong), LABELS), "no term holds"


def test_node_selector_and_affinity_must_both_hold() -> None:
    term = {"matchExpressions": [expr("zone", "In", "a")]}
    assert affinity_holds({"nodeSelector": {"gpus": "4"}, **required(term)}, LABELS)
    assert not affinity_holds({"nodeSelector": {"gpus": "8"}, **required(term)}, LABELS)
    wrong_term = {"matchExpressions": [expr("zone", "In", "b")]}
    assert not affinity_holds({"nodeSelector": {"gpus": "4"}, **required(wrong_term)}, LABELS)


def test_empty_affinity_blocks_constrain_nothing_but_empty_terms_are_refused() -> None:
    assert affinity_holds({"affinity": {}}, LABELS)
    assert affinity_holds({"affinity": {"nodeAffinity": {}}}, LABELS)
    with pytest.raises(InvalidSpec):
        affinity_holds(required(), LABELS)
    with pytest.raises(InvalidSpec):
        affinity_holds(required({}), LABELS)
    with pytest.raises(NotImplementedError):
        affinity_holds(required({"matchFields": [expr("metadata.name", "In", "n1")]}), LABELS)


# --- tolerations (Toleration.ToleratesTaint) ---------------------------------------------

@pytest.mark.parametrize(
    "toleration, tolerated",
    [
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "value": "true"}, True),  # operator defaults to Equal, any effect
        ({"key": "nvidia.com/gpu", "value": "false"}, False),
        ({"key": "nvidia.com/gpu"}, False),  # Equal to "" is not Equal to "true"
        ({"key": "other", "value": "true"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "other", "operator": "Exists"}, False),
        ({"operator": "Exists"}, True),  # empty key with Exists: every taint
        ({"operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Gt", "value": "0"}, False),  # needs the feature gate
    ],
)
def test_each_toleration_rule_holds_and_fails(toleration: dict[str, Any], tolerated: bool) -> None:
    assert toleration_tolerates(toleration, GPU) is tolerated


def test_comparison_operators_compare_numbers_only_with_the_feature_gate() -> None:
    level = Taint("level", "5", "NoSchedule")
    on = {"comparison_operators": True}
    assert toleration_tolerates({"key": "level", "operator": "Lt", "value": "6"}, level, **on)
    assert not toleration_tolerates({"key": "level", "operator": "Lt", "value": "5"}, level, **on)
    assert toleration_tolerates({"key": "level", "operator": "Gt", "value": "4"}, level, **on)
    assert not toleration_tolerates({"key": "level", "operator": "Gt", "value": "x"}, level, **on)
    assert not toleration_tolerates({"key": "level", "operator": "Lt", "value": "6"}, level)


@pytest.mark.parametrize(
    "toleration",
    [
        {"value": "true"},  # empty key needs Exists
        {"operator": "Equal", "value": "true"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "value": "true"},
        {"key": "nvidia.com/gpu", "operator": "Matches"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "Never"},
    ],
)
def test_tolerations_the_api_server_refuses_raise(toleration: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec):
        toleration_tolerates(toleration, GPU)


def test_any_toleration_is_enough_and_only_repelling_taints_count() -> None:
    soft = Taint("soft", "", "PreferNoSchedule")
    evict = Taint("evict", "x", "NoExecute")
    assert not tolerates([], GPU) and not tolerates(None, GPU)
    assert tolerates([{"key": "other", "operator": "Exists"}, {"key": "nvidia.com/gpu", "operator": "Exists"}], GPU)
    assert untolerated([], [GPU, soft, evict]) == [GPU, evict]
    assert untolerated([{"key": "evict", "operator": "Exists"}], [GPU, soft, evict]) == [GPU]


def test_eks_taints_are_read_with_the_kubelets_effect_names() -> None:
    assert Taint.from_eks({"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}) == GPU
    assert Taint.from_eks({"key": "k", "effect": "NO_EXECUTE"}) == Taint("k", "", "NoExecute")
    with pytest.raises(KeyError):
        Taint.from_eks({"key": "k", "effect": "NoSchedule"})


# --- the whole filter ---------------------------------------------------------------------

def test_a_pod_lands_only_when_affinity_and_every_repelling_taint_allow() -> None:
    node = FakeNode(taints=(GPU, Taint("soft", "", "PreferNoSchedule")))
    gpu_pod = {"nodeSelector": {"zone": "a"}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}
    assert can_land(gpu_pod, node)
    assert not can_land({"nodeSelector": {"zone": "a"}}, node), "the GPU taint repels"
    assert not can_land({**gpu_pod, "nodeSelector": {"zone": "b"}}, node), "the selector misses"
    assert can_land({}, FakeNode()), "an untainted node takes an unconstrained pod"
