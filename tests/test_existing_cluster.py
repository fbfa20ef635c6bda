"""Mode existing: everything the stack needs of a cluster it did not create is looked up
(and refused clearly when missing), created by us, or a stated prerequisite in the README."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest

from components import catalog
from components.cluster import EXISTING_CLUSTER_PREREQUISITES
from components.config import StackConfigError
from tests.support import dependencies, raw_stack, render_raw
from tools.lib import mock_engine
from tools.lib.mock_engine import Rendering

RELEASE = "kubernetes:helm.sh/v3:Release"
STORAGE_CLASS = "kubernetes:storage.k8s.io/v1:StorageClass"
README = Path(__file__).resolve().parent.parent / "README.md"


def existing(base: str = "prod", **changes: Any) -> dict[str, Any]:
    """A repo stack switched to an existing cluster, keeping its endpoint rules."""
    raw = raw_stack(base)
    raw["cluster"] = {"mode": "existing", "name": "shared-gpu", "endpoint": raw["cluster"]["endpoint"]}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if value is None:
            raw.pop(section, None)
        elif field:
            raw[section] = {**raw.get(section, {}), field: value}
        else:
            raw[section] = value
    return raw


# The existing-mode config space: both identities, monitoring installed / an operator / off,
# ingress internet-facing / internal / off, GPU pools or CPU serving.
GRID: dict[str, dict[str, Any]] = {
    "prod pod-identity, monitoring, public ingress": existing(),
    "prod irsa, no ingress": existing(model_store__identity="irsa", ingress=None),
    "prod irsa, internal ingress, operator monitoring": existing(
        model_store__identity="irsa", ingress__scheme="internal", monitoring__mode="existing-operator",
        autoscaling__prometheus_url="http://prometheus-operated.monitoring.svc:9090",
    ),
    "dev, monitoring off": existing(
        "dev", monitoring={"enabled": False}, autoscaling={"engine": "hpa", "min_replicas": 1, "max_replicas": 2,
                                                          "metrics": {"cpu": 70}}
    ),
}


@pytest.fixture(scope="module")
def grid() -> list[tuple[str, Rendering]]:
    return [(label, render_raw(copy.deepcopy(raw))) for label, raw in GRID.items()]


def test_one_kubernetes_version_the_clusters(grid: list[tuple[str, Rendering]]) -> None:
    """The version the stack reports is the looked-up cluster's, and every version-bound pin
    follows it: cluster-autoscaler's minor must equal the cluster's (cluster-autoscaler
    README, "Releases": "use the version matching your cluster's Kubernetes minor")."""
    for label, r in grid:
        assert r.outputs["kubernetes_version"] == mock_engine.EXISTING_VERSION, label
        for release in r.of_type(RELEASE):
            if release.inputs["chart"] == "cluster-autoscaler":
                tag = release.inputs["values"]["image"]["tag"]
                assert tag.removeprefix("v").rsplit(".", 1)[0] == r.outputs["kubernetes_version"], (label, tag)


@pytest.mark.parametrize("found", ["1.33", "1.37"])
def test_a_cluster_version_without_pins_is_refused(monkeypatch: pytest.MonkeyPatch, found: str) -> None:
    monkeypatch.setattr(mock_engine, "EXISTING_VERSION", found)
    with pytest.raises(StackConfigError, match=rf"cluster.name: existing cluster 'shared-gpu' runs Kubernetes {found}"):
        render_raw(existing())


def test_a_config_version_other_than_the_clusters_is_refused() -> None:
    raw = existing()
    raw["cluster"]["kubernetes_version"] = "1.36"
    with pytest.raises(StackConfigError, match=r"cluster.kubernetes_version: existing cluster 'shared-gpu' runs Kubernetes 1.35"):
        render_raw(raw)
    raw["cluster"]["kubernetes_version"] = mock_engine.EXISTING_VERSION
    assert render_raw(raw).outputs["kubernetes_version"] == mock_engine.EXISTING_VERSION


def claimed_storage_classes(value: object) -> set[str]:
    if isinstance(value, dict):
        found = {str(value["storageClassName"])} if value.get("storageClassName") else set()
        return found.union(*(claimed_storage_classes(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(claimed_storage_classes(v) for v in value))
    return set()


def test_every_claimed_storage_class_is_ours_and_comes_first(grid: list[tuple[str, Rendering]]) -> None:
    """A claim naming a class the cluster lacks stays Pending for ever (Kubernetes docs,
    "Persistent Volumes": a claim with a storageClassName binds only to that class): on a
    cluster we did not create, every class our claims name is one this stack creates, and
    the claimant waits for it."""
    for label, r in grid:
        classes = {c.inputs["metadata"]["name"]: c for c in r.of_type(STORAGE_CLASS)}
        for c in classes.values():
            annotations = c.inputs["metadata"].get("annotations") or {}
            assert "storageclass.kubernetes.io/is-default-class" not in annotations, (
                f"{label}: we must not change the existing cluster's default class"
            )
        for x in r.resources:
            values = x.inputs.get("values") if x.type == RELEASE else x.inputs
            for name in claimed_storage_classes(values):
                assert name in classes, f"{label}: {x.name} claims class {name}, which the stack does not create"
                assert classes[name].urn in dependencies(r, x.urn), f"{label}: {x.name} does not wait for {name}"


def lookups(r: Rendering, token: str) -> list[dict[str, Any]]:
    return [args for t, args in r.invokes if t == token]


def test_needed_add_ons_are_looked_up(grid: list[tuple[str, Rendering]]) -> None:
    for label, r in grid:
        addons = {a["addonName"] for a in lookups(r, "aws:eks/getAddon:getAddon")}
        assert {"vpc-cni", "eks-pod-identity-agent"} <= addons, label
        cfg = GRID[label]
        monitored = cfg.get("monitoring", {}).get("enabled", True) and cfg["monitoring"].get(
            "mode", "kube-prometheus-stack") == "kube-prometheus-stack"
        assert ("aws-ebs-csi-driver" in addons) == monitored, label


@pytest.mark.parametrize(
    ("addon", "key"),
    [("vpc-cni", "cluster.name"), ("eks-pod-identity-agent", "cluster.name"), ("aws-ebs-csi-driver", "monitoring.mode")],
)
def test_a_missing_add_on_is_refused_by_name(monkeypatch: pytest.MonkeyPatch, addon: str, key: str) -> None:
    monkeypatch.setattr(mock_engine, "EXISTING_ADDONS", {k: v for k, v in mock_engine.EXISTING_ADDONS.items() if k != addon})
    with pytest.raises(StackConfigError, match=rf"{re.escape(key)}: existing cluster 'shared-gpu' has no {addon} EKS add-on"):
        render_raw(existing())


@pytest.mark.parametrize("values", ["", '{"enableNetworkPolicy": "false"}', '{"env": {"ENABLE_PREFIX_DELEGATION": "true"}}'])
def test_a_cni_that_does_not_enforce_network_policies_is_refused(monkeypatch: pytest.MonkeyPatch, values: str) -> None:
    """Our NetworkPolicies are the serving pods' only isolation: the VPC CNI enforces them
    only with `enableNetworkPolicy: "true"` (EKS user guide, "Restrict pod network traffic
    with Kubernetes network policies")."""
    monkeypatch.setitem(mock_engine.EXISTING_ADDONS, "vpc-cni", values)
    with pytest.raises(StackConfigError, match="does not enforce NetworkPolicies"):
        render_raw(existing())


def test_irsa_needs_the_accounts_oidc_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    r = render_raw(existing(model_store__identity="irsa"))
    (lookup,) = lookups(r, "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider")
    assert lookup["url"] == r.outputs["oidc_issuer_url"]
    monkeypatch.setattr(mock_engine, "EXISTING_OIDC_PROVIDER", False)
    with pytest.raises(StackConfigError, match="model_store.identity: existing cluster 'shared-gpu' has no IAM OIDC provider"):
        render_raw(existing(model_store__identity="irsa"))


@pytest.mark.parametrize("scheme", ["internet-facing", "internal"])
def test_the_alb_needs_tagged_subnets_in_two_zones(monkeypatch: pytest.MonkeyPatch, scheme: str) -> None:
    """The load balancer controller finds an ALB's subnets only by tag (kubernetes.io/role/elb
    or kubernetes.io/role/internal-elb) and needs two zones (aws-load-balancer-controller
    docs, "Subnet auto-discovery")."""
    fixture = "EXISTING_PUBLIC_SUBNETS" if scheme == "internet-facing" else "EXISTING_SUBNETS"
    monkeypatch.setattr(mock_engine, fixture, getattr(mock_engine, fixture)[:1])
    raw = existing(ingress__scheme=scheme)
    raw["cluster"]["existing"] = {"private_subnet_ids": list(mock_engine.EXISTING_SUBNETS) + ["subnet-0123456789abcdef0"]}
    with pytest.raises(StackConfigError, match=rf"ingress.scheme: .* ALB needs them in at least two zones"):
        render_raw(raw)


def test_serving_admits_the_alb_from_its_subnets_only(grid: list[tuple[str, Rendering]]) -> None:
    for label, r in grid:
        cfg = GRID[label]
        if "ingress" not in cfg:
            continue
        tagged = mock_engine.EXISTING_PUBLIC_SUBNETS if cfg["ingress"]["scheme"] == "internet-facing" else mock_engine.EXISTING_SUBNETS
        subnets = {s: a for s, a in ((a["id"], a) for a in lookups(r, "aws:ec2/getSubnet:getSubnet"))}
        assert set(tagged) <= set(subnets), label
        # The mock's CIDR of each subnet, as the program read it.
        policy = next(p for p in r.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy"))
        blocks = {peer["ipBlock"]["cidr"] for rule in policy.inputs["spec"].get("ingress", [])
                  for peer in rule.get("from", []) if "ipBlock" in peer}
        assert "10.42.0.0/16" not in blocks, f"{label}: the whole VPC may reach the serving pods"


def readme_prerequisites() -> list[str]:
    text = README.read_text()
    section = text.split("### Using an existing cluster", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- \*\*(.+?)\*\*", section, flags=re.MULTILINE)


def test_the_readme_states_every_prerequisite() -> None:
    """The README's list is the preflight's list: the same titles, in the same order."""
    assert readme_prerequisites() == [p.title for p in EXISTING_CLUSTER_PREREQUISITES]
