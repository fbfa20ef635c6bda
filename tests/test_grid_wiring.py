"""The routing and wiring checks, run on every configuration of the grid (tests/support/config_grid.py).

Each check follows what the consuming software does with the rendered objects:
- the ALB (tests/support/alb_rules.py evaluates routes the way the AWS Load Balancer Controller
  builds listener rules): every REST call some pod serves reaches only pods that serve it,
  every public gRPC method reaches the gRPC port, the admin RPC is refused;
- Kubernetes: a Service, PDB, HPA, ScaledObject or NetworkPolicy selects or targets pods and
  Deployments the stack renders, in the namespace it renders them (a selector matching nothing
  is silently dead, it is not an error anywhere);
- the Prometheus Operator: a ServiceMonitor selects a rendered Service in a namespace its
  namespaceSelector admits, on a port name that Service has.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import alb_rules
from tests.support.alb_rules import Request
from tests.support.config_grid import GRID, rendered
from tests.support.serving_pods import can_serve, parse_rest, served_by_service
from tests.support import parse
from tests.test_ingress import PUBLIC_GRPC, rest_calls
from tools.lib.mock_engine import Rendering

Manifest = dict[str, Any]
NAMES = sorted(GRID)
WITH_INGRESS = [n for n in NAMES if rendered(n).outputs.get("rest_url")]
ADMIN_RPC = "/tensorflow.serving.ModelService/HandleReloadConfigRequest"


def objects(r: Rendering, kind: str) -> list[Manifest]:
    return [m for m in r.k8s_objects() if m["kind"] == kind]


def routes(r: Rendering) -> list[dict[str, Any]]:
    return [x.inputs for x in r.resources if x.is_k8s_object and x.inputs.get("kind") in ("HTTPRoute", "GRPCRoute")]


def test_the_grid_has_configs_with_ingress() -> None:
    assert len(WITH_INGRESS) >= 5


@pytest.mark.parametrize("name", WITH_INGRESS)
def test_every_rest_call_reaches_pods_that_serve_it(name: str) -> None:
    r = rendered(name)
    served = served_by_service(r)
    host = r.outputs["rest_url"].removeprefix("https://")
    calls = rest_calls(served)
    assert calls
    for method, path in calls:
        outcome = alb_rules.route(routes(r), Request(host, path, method))
        ref = parse_rest(method, path)
        assert ref is not None and not outcome.refused, (name, method, path, outcome)
        for backend in outcome.backends:
            assert can_serve(served[backend.name], ref), f"{name}: {method} {path} reaches {backend.name}"


@pytest.mark.parametrize("name", WITH_INGRESS)
def test_grpc_reaches_the_grpc_port_and_refuses_the_admin_rpc(name: str) -> None:
    r = rendered(name)
    host = r.outputs["grpc_url"].rsplit(":", 1)[0]
    served = served_by_service(r)
    for path in PUBLIC_GRPC:
        outcome = alb_rules.route(routes(r), Request(host, path, headers={"content-type": "application/grpc"}))
        assert not outcome.refused and outcome.services() <= set(served), (name, path)
        assert {b.port for b in outcome.backends} == {8500}
    assert alb_rules.route(routes(r), Request(host, ADMIN_RPC)).refused


def pods(r: Rendering) -> list[tuple[str, dict[str, str]]]:
    """(namespace, labels) of every pod template we render as a typed object."""
    out = []
    for kind in ("Deployment", "DaemonSet", "StatefulSet"):
        for m in objects(r, kind):
            out.append((m["metadata"].get("namespace", "default"), m["spec"]["template"]["metadata"]["labels"]))
    return out


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    return all(labels.get(k) == v for k, v in match.items())


@pytest.mark.parametrize("name", NAMES)
def test_every_selector_and_target_finds_what_it_names(name: str) -> None:
    r = rendered(name)
    all_pods = pods(r)
    namespaces = {m["metadata"]["name"] for m in objects(r, "Namespace")}
    deployments = {(m["metadata"].get("namespace"), m["metadata"]["name"]) for m in objects(r, "Deployment")}
    for svc in objects(r, "Service"):
        ns, sel = svc["metadata"].get("namespace"), svc["spec"].get("selector")
        if sel:
            assert any(p_ns == ns and selects(sel, labels) for p_ns, labels in all_pods), f"{name}: Service {svc['metadata']['name']} selects no pod"
    for pdb in objects(r, "PodDisruptionBudget"):
        ns = pdb["metadata"].get("namespace")
        assert any(p_ns == ns and selects(pdb["spec"]["selector"], labels) for p_ns, labels in all_pods), f"{name}: PDB selects no pod"
    for hpa in objects(r, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        assert (hpa["metadata"].get("namespace"), ref["name"]) in deployments, f"{name}: HPA targets {ref}"
    for so in objects(r, "ScaledObject"):
        ref = so["spec"]["scaleTargetRef"]
        assert (so["metadata"].get("namespace"), ref["name"]) in deployments, f"{name}: ScaledObject targets {ref}"
    monitoring = parse(GRID[name]).monitoring
    # Where the stack's Prometheus runs: a namespace we create, or an existing operator's.
    admitted = namespaces | ({monitoring.namespace} if monitoring.enabled else set())
    for policy in objects(r, "NetworkPolicy"):
        ns = policy["metadata"].get("namespace")
        assert ns in namespaces, f"{name}: NetworkPolicy in a namespace the stack does not create"
        assert any(p_ns == ns and selects(policy["spec"]["podSelector"], labels) for p_ns, labels in all_pods)
        for rule in policy["spec"].get("ingress", []):
            # An empty `from` admits every source (NetworkPolicyIngressRule).
            assert rule.get("from"), f"{name}: NetworkPolicy {policy['metadata']['name']} admits everyone"
            for peer in rule["from"]:
                named = (peer.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
                if named:
                    assert named in admitted, f"{name}: NetworkPolicy admits namespace {named}, where nothing of ours runs"


@pytest.mark.parametrize("name", NAMES)
def test_every_service_monitor_of_ours_selects_a_service_port(name: str) -> None:
    r = rendered(name)
    services = objects(r, "Service")
    monitors = objects(r, "ServiceMonitor")
    if GRID[name].get("monitoring", {}).get("enabled", True):
        assert monitors, f"{name}: monitoring is on but no ServiceMonitor is rendered"
    for sm in monitors:
        spec = sm["spec"]
        allowed = spec.get("namespaceSelector", {}).get("matchNames") or [sm["metadata"].get("namespace")]
        ports = {e.get("port") for e in spec["endpoints"]}
        hits = [
            s
            for s in services
            if s["metadata"].get("namespace") in allowed
            and selects(spec["selector"], s["metadata"].get("labels", {}))
            and ports <= {p.get("name") for p in s["spec"]["ports"]}
        ]
        assert hits, f"{name}: ServiceMonitor {sm['metadata']['name']} selects no Service with ports {ports}"


def test_no_peer_means_no_rule_not_an_open_rule() -> None:
    """With no load balancer subnets and no monitoring, the policy admits nothing: an empty
    `from` would have admitted every source."""
    from components.serving import network_policy_spec

    spec = network_policy_spec(parse(GRID["dev"]).serving, [], None)
    # The args' getters are typed as Pulumi Inputs; the builder passed a plain list.
    policy_types = spec.policy_types
    assert isinstance(policy_types, list)
    assert spec.ingress == [] and "Ingress" in policy_types


def test_an_existing_prometheus_sees_every_service_monitor_the_stack_makes(tmp_path: Any) -> None:
    """A Prometheus that selects ServiceMonitors by label (serviceMonitorSelector) sees only
    those carrying the labels the stack is told about (monitoring.rule_labels): ours and the
    charts' alike, as the real chart renders them (helm template of the pinned sources)."""
    from components import catalog
    from tests.support.external_tools import chart_dir, helm_template
    from tests.support import render_raw

    raw = {**GRID["dev"], "monitoring": {"enabled": True, "mode": "existing-operator", "namespace": "prom",
                                       "rule_labels": {"release": "platform-prometheus"}}}
    raw["autoscaling"] = {**raw["autoscaling"], "prometheus_url": "http://prometheus-operated.prom.svc:9090"}
    r = render_raw(raw, stack="existing-operator")
    wanted = {"release": "platform-prometheus"}
    ours = objects(r, "ServiceMonitor")
    assert ours and all(wanted.items() <= sm["metadata"]["labels"].items() for sm in ours)
    charts = {c.name: c for c in catalog.CHARTS.values()}
    seen = 0
    for release in (x for x in r.resources if x.type == "kubernetes:helm.sh/v3:Release"):
        values = release.inputs.get("values", {})
        if not (values.get("serviceMonitor") or {}).get("enabled"):
            continue
        chart = charts[release.inputs["chart"]]
        rendered_objects = helm_template(
            release.inputs["name"], chart_dir(chart.name, chart.version), release.inputs["namespace"], values, "1.36", tmp_path
        )
        monitors = [o for o in rendered_objects if o["kind"] == "ServiceMonitor"]
        assert monitors, release.name
        for sm in monitors:
            seen += 1
            assert wanted.items() <= (sm["metadata"].get("labels") or {}).items(), f"{release.name}: {sm['metadata']['name']}"
    assert seen >= 2, "the DCGM exporter's and the load balancer controller's ServiceMonitors"
