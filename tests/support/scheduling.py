"""Where the Kubernetes scheduler lets a pod land: a pod spec's nodeSelector, required node
affinity and tolerations judged against a node's labels and taints, by the upstream rules.

Sources (read at kubernetes/component-helpers, kubernetes/api, kubernetes/apimachinery HEAD):
- component-helpers scheduling/corev1/nodeaffinity/nodeaffinity.go, RequiredNodeAffinity.Match:
  every nodeSelector pair equal to the node's label, AND (when requiredDuringScheduling... is
  set) any one of its nodeSelectorTerms; a term holds when all its matchExpressions do; an
  empty term is skipped, so it selects nothing; no term left selects nothing.
- apimachinery pkg/labels/selector.go, Requirement.Matches: In needs the key with a listed
  value; NotIn and DoesNotExist hold when the key is absent; Gt / Lt need the key, and both
  the label's and the requirement's value must parse as integers, else no match
  (NewRequirement's parse error fails the term, nodeaffinity.go newNodeSelectorTerm).
- api core/v1/toleration.go, Toleration.ToleratesTaint: an empty effect matches every effect,
  an empty key every key; Exists matches any value; "" means Equal; Lt / Gt compare numbers
  only with the TaintTolerationComparisonOperators feature gate, else they tolerate nothing.
- component-helpers scheduling/corev1/helpers.go, FindMatchingUntoleratedTaint, with the
  scheduler's TaintToleration filter keeping only NoSchedule and NoExecute taints
  (PreferNoSchedule only scores).
- kubernetes pkg/apis/core/validation/validation.go (ValidateNodeSelectorRequirement,
  ValidateNodeSelectorTerm, ValidateTolerations): what the API server refuses before any
  scheduler sees it; that raises InvalidSpec here, so a bad rendering is named, not judged.

It judges plain dicts as rendered (pod specs, chart values) against labels and taints it is
given; it must not import the code under test, and it does not model resources, preferred
affinity, pod (anti-)affinity, topology spread or matchFields (node names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

# core/v1 NodeSelectorOperator; metav1.LabelSelectorOperator has only the first four
# (apimachinery pkg/apis/meta/v1/helpers.go, LabelSelectorAsSelector).
NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
LABEL_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
TOLERATION_OPERATORS = ("", "Equal", "Exists", "Lt", "Gt")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
# The effects the scheduler's TaintToleration filter refuses a pod for (pkg/scheduler/framework/
# plugins/tainttoleration/taint_toleration.go, Filter).
REPELLING_EFFECTS = ("NoSchedule", "NoExecute")
# The EKS API spells taint effects in upper case (EKS API reference, Taint: NO_SCHEDULE |
# NO_EXECUTE | PREFER_NO_SCHEDULE); the kubelet registers them as core/v1 TaintEffect.
EKS_TAINT_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "NO_EXECUTE": "NoExecute", "PREFER_NO_SCHEDULE": "PreferNoSchedule"}


class InvalidSpec(ValueError):
    """The API server would refuse this pod spec: no scheduler ever judges it."""


class Taint(NamedTuple):
    key: str
    value: str
    effect: str  # a core/v1 TaintEffect

    @classmethod
    def from_eks(cls, taint: Mapping[str, Any]) -> Taint:
        """A node group's taint as the EKS API takes it (effect NO_SCHEDULE ...)."""
        return cls(str(taint["key"]), str(taint.get("value") or ""), EKS_TAINT_EFFECTS[taint["effect"]])


class Node(Protocol):
    """What the scheduler reads of a node here: its labels and taints."""

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def taints(self) -> Sequence[Taint]: ...


def _integer(text: str) -> int | None:
    """strconv.ParseInt(text, 10, 64): an optional sign and decimal digits, nothing else
    (Python's int() would also take spaces and underscores)."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def requirement_holds(
    expression: Mapping[str, Any],
    labels: Mapping[str, str],
    operators: Sequence[str] = NODE_SELECTOR_OPERATORS,
) -> bool:
    """One matchExpressions entry against a node's (or object's) labels."""
    key, op = expression.get("key"), expression.get("operator")
    values = [str(v) for v in expression.get("values") or []]
    if not key:
        raise InvalidSpec(f"requirement {dict(expression)}: key is empty")
    if op not in operators:
        raise InvalidSpec(f"requirement {dict(expression)}: operator {op!r} is not one of {list(operators)}")
    if op in ("In", "NotIn") and not values:
        raise InvalidSpec(f"requirement {dict(expression)}: values must be specified for In / NotIn")
    if op in ("Exists", "DoesNotExist") and values:
        raise InvalidSpec(f"requirement {dict(expression)}: values may not be specified for Exists / DoesNotExist")
    if op in ("Gt", "Lt") and len(values) != 1:
        raise InvalidSpec(f"requirement {dict(expression)}: Gt / Lt take exactly one value")
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    # Gt / Lt: a value that is not an integer matches nothing, on either side.
    limit, have = _integer(values[0]), _integer(labels.get(key, ""))
    if limit is None or have is None:
        return False
    return have > limit if op == "Gt" else have < limit


def node_selector_holds(node_selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A core/v1 NodeSelector (requiredDuringSchedulingIgnoredDuringExecution): its terms ORed,
    each term's matchExpressions ANDed."""
    terms = node_selector.get("nodeSelectorTerms") or []
    if not terms:
        raise InvalidSpec("nodeSelectorTerms: must have at least one node selector term")
    for term in terms:
        if term.get("matchFields"):
            raise NotImplementedError("matchFields (node names) are not modelled")
        expressions = term.get("matchExpressions") or []
        if not expressions:
            raise InvalidSpec(f"node selector term {dict(term)}: must have at least one requirement")
        if all(requirement_holds(e, labels) for e in expressions):
            return True
    return False


def affinity_holds(pod_spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """The NodeAffinity filter: nodeSelector (exact match of every pair) and the required
    node affinity."""
    if any(labels.get(str(k)) != str(v) for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    return required is None or node_selector_holds(required, labels)


def _check_toleration(toleration: Mapping[str, Any]) -> None:
    key, op = toleration.get("key") or "", toleration.get("operator") or ""
    if op not in TOLERATION_OPERATORS:
        raise InvalidSpec(f"toleration {dict(toleration)}: operator {op!r} is not one of Equal, Exists, Lt, Gt")
    if not key and op != "Exists":
        raise InvalidSpec(f"toleration {dict(toleration)}: operator must be Exists when key is empty")
    if op == "Exists" and toleration.get("value"):
        raise InvalidSpec(f"toleration {dict(toleration)}: value must be empty when operator is Exists")
    if (toleration.get("effect") or "") not in ("", *TAINT_EFFECTS):
        raise InvalidSpec(f"toleration {dict(toleration)}: effect {toleration.get('effect')!r} unknown")


def toleration_tolerates(toleration: Mapping[str, Any], taint: Taint, *, comparison_operators: bool = False) -> bool:
    """One toleration against one taint (Toleration.ToleratesTaint)."""
    _check_toleration(toleration)
    effect, key = toleration.get("effect") or "", toleration.get("key") or ""
    if effect and effect != taint.effect:
        return False
    if key and key != taint.key:
        return False
    op, value = toleration.get("operator") or "", str(toleration.get("value") or "")
    if op in ("", "Equal"):
        return value == taint.value
    if op == "Exists":
        return True
    if not comparison_operators:
        return False
    # compareNumericValues: the taint's value against the toleration's, both integers.
    limit, have = _integer(value), _integer(taint.value)
    if limit is None or have is None:
        return False
    return have < limit if op == "Lt" else have > limit


def tolerates(tolerations: Sequence[Mapping[str, Any]] | None, taint: Taint) -> bool:
    """Any one of the tolerations tolerates the taint (TolerationsTolerateTaint)."""
    return any(toleration_tolerates(t, taint) for t in tolerations or [])


def untolerated(tolerations: Sequence[Mapping[str, Any]] | None, taints: Sequence[Taint]) -> list[Taint]:
    """The node's NoSchedule / NoExecute taints these tolerations leave standing."""
    return [t for t in taints if t.effect in REPELLING_EFFECTS and not tolerates(tolerations, t)]


def can_land(pod_spec: Mapping[str, Any], node: Node) -> bool:
    """The scheduler's NodeAffinity and TaintToleration filters for a pod on the node."""
    return affinity_holds(pod_spec, node.labels) and not untolerated(pod_spec.get("tolerations"), node.taints)
