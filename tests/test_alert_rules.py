"""Every alerting rule a stack loads, proved silent on a healthy EKS cluster, with the real
chart rendered by the real helm; our "down" alerts run through promtool's rule unit tests.

The rule the first test states, for every alert of kube-prometheus-stack (rendered with
`helm template` from the pinned chart sources, with exactly the values, release name and
namespace our program passes, at the stack's Kubernetes version) and of our own
PrometheusRule:

  An alert must not be able to fire on a healthy EKS cluster by construction. The parts of an
  expression that depend on how the cluster is built, not on how it behaves, are:
  - presence: a selector under `absent(...)` / `absent_over_time(...)` or on the right of
    `unless` fires when its series are missing, so it must name a scrape job that a rendered
    ServiceMonitor produces against a target that exists on EKS;
  - reachability: a selector on `up` fires when a target cannot be scraped, so every job it
    can match must be reachable from the Prometheus pods on EKS;
  - liveness: every `job` a selector names must be produced by some scrape job, else the rule
    belongs to a component that is not scraped and must be switched off with it;
  - constant alerts (no series at all, or only the synthetic ALERTS series: Watchdog,
    InfoInhibitor) fire all the time, so Alertmanager must route them to the null receiver.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from components.monitoring import EKS_UNSCRAPABLE_COMPONENTS
from tests.conftest import rendered_stack
from tests.support.external_tools import chart_dir, helm_template, promtool
from tests.support import parse, raw_stack, render_raw
from tools.lib.mock_engine import Registered, Rendering

RELEASE = "kubernetes:helm.sh/v3:Release"


# --- the stacks: the repo's, and generated ones that exercise the other autoscaling shapes ---


def _generated(name: str) -> dict[str, Any]:
    if name == "keda-scale-to-zero":
        raw = raw_stack("dev")
        raw["autoscaling"] = {"engine": "keda", "min_replicas": 0, "max_replicas": 3, "metrics": {"requests_per_second": 5}}
        raw["monitoring"]["receivers"] = {"team": {"type": "webhook", "severities": ["critical", "warning"]}}
        raw["alerting_secrets"] = {"team": "https://alerts.example.com/hook"}
        return raw
    if name == "hpa-fixed-size":
        raw = raw_stack("prod")
        # min == max: an autoscaler that always sits at its maximum, by configuration.
        raw["autoscaling"] = {"engine": "hpa", "min_replicas": 2, "max_replicas": 2, "metrics": {"cpu": 70}}
        return raw
    if name == "existing-operator":
        raw = raw_stack("dev")
        raw["monitoring"] = {"mode": "existing-operator", "namespace": "observability", "rule_labels": {"release": "prom"}}
        raw["autoscaling"]["prometheus_url"] = "http://prometheus.observability.svc:9090"
        return raw
    raise KeyError(name)


STACKS = ["dev", "prod", "keda-scale-to-zero", "hpa-fixed-size", "existing-operator"]
_renderings: dict[str, Rendering] = {}
_charts: dict[str, list[dict[str, Any]]] = {}


def raw_for(stack: str) -> dict[str, Any]:
    return raw_stack(stack) if stack in ("dev", "prod") else _generated(stack)


def rendering(stack: str) -> Rendering:
    if stack not in _renderings:
        _renderings[stack] = rendered_stack(stack) if stack in ("dev", "prod") else render_raw(_generated(stack), stack)
    return _renderings[stack]


def stack_release(r: Rendering) -> Registered | None:
    return next((x for x in r.of_type(RELEASE) if x.inputs["chart"] == "kube-prometheus-stack"), None)


def chart_objects(stack: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """kube-prometheus-stack as Helm renders it for this stack (none in existing-operator mode)."""
    if stack not in _charts:
        r = rendering(stack)
        release = stack_release(r)
        if release is None:
            _charts[stack] = []
        else:
            i = release.inputs
            _charts[stack] = helm_template(
                i["name"], chart_dir(i["chart"], i["version"]), i["namespace"], i["values"],
                str(r.outputs["kubernetes_version"]), tmp_path_factory.mktemp(stack),
            )
    return _charts[stack]


# --- what exists on a healthy EKS cluster, and what Prometheus scrapes there ---


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    # Port names/numbers another pod cannot reach, with why.
    unreachable: Mapping[str, str]
    # Container port names -> numbers (for Services with a named targetPort).
    ports: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    labels: Mapping[str, str]
    selector: Mapping[str, str] | None  # None: endpoints kept by a controller (always present)
    ports: Mapping[str, str]  # port name -> target port (name or number)


# Pods EKS itself runs (managed add-ons our cluster component installs); the control plane
# (kube-apiserver, kube-controller-manager, kube-scheduler, etcd) runs outside the cluster, so
# no pod of it exists here.
EKS_PODS = [
    # coredns add-on: labels k8s-app=kube-dns, Corefile `prometheus :9153`.
    Pod("kube-system", {"k8s-app": "kube-dns", "eks.amazonaws.com/component": "coredns"}, {}),
    # kube-proxy add-on (hostNetwork DaemonSet): metricsBindAddress defaults to 127.0.0.1:10249
    # (KubeProxyConfiguration v1alpha1); the add-on's configuration cannot change it.
    Pod("kube-system", {"k8s-app": "kube-proxy"}, {"10249": "kube-proxy serves metrics on 127.0.0.1 only"}),
    Pod("kube-system", {"k8s-app": "aws-node"}, {}),
]
# Services whose endpoints are kept by a controller, not a selector.
EKS_SERVICES = [
    # The API server's Service: EKS serves /metrics to the Prometheus ClusterRole.
    Service("kubernetes", "default", {"component": "apiserver", "provider": "kubernetes"}, None, {"https": "443"}),
]


def operator_pods(objects: list[dict[str, Any]]) -> Iterator[Pod]:
    """Pods the Prometheus Operator creates for the Prometheus and Alertmanager resources, with
    the labels its StatefulSets give them (prometheus-operator pkg/prometheus/server/
    statefulset.go, pkg/alertmanager/statefulset.go: app.kubernetes.io/name plus
    operator.prometheus.io/name, resp. alertmanager=<name>)."""
    for o in objects:
        name, ns = o["metadata"]["name"], o["metadata"].get("namespace", "")
        if o["kind"] == "Prometheus":
            yield Pod(ns, {"app.kubernetes.io/name": "prometheus", "operator.prometheus.io/name": name, "prometheus": name}, {})
        elif o["kind"] == "Alertmanager":
            yield Pod(ns, {"app.kubernetes.io/name": "alertmanager", "alertmanager": name, "operator.prometheus.io/name": name}, {})


def workload_pods(objects: list[dict[str, Any]], default_ns: str) -> Iterator[Pod]:
    for o in objects:
        if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            template = o["spec"]["template"]
            ports = {
                str(p["name"]): str(p["containerPort"])
                for c in template["spec"]["containers"] for p in c.get("ports", []) if "name" in p
            }
            yield Pod(o["metadata"].get("namespace", default_ns), template["metadata"].get("labels", {}), {}, ports)


def services(objects: list[dict[str, Any]], default_ns: str) -> Iterator[Service]:
    for o in objects:
        if o["kind"] == "Service":
            yield Service(
                o["metadata"]["name"], o["metadata"].get("namespace", default_ns), o["metadata"].get("labels", {}),
                o["spec"].get("selector") or {}, {p.get("name", ""): str(p.get("targetPort", p["port"])) for p in o["spec"]["ports"]},
            )


def kubelet_service(objects: list[dict[str, Any]]) -> Iterator[Service]:
    """The kubelet Service the operator keeps (its --kubelet-service flag; pkg/kubelet/
    controller.go labels it k8s-app=kubelet and app.kubernetes.io/name=kubelet, port
    https-metrics = 10250, which the cluster security group opens between nodes)."""
    for o in objects:
        if o["kind"] == "Deployment" and any(
            a.startswith("--kubelet-service=") for c in o["spec"]["template"]["spec"]["containers"] for a in c.get("args", [])
        ):
            arg = next(a for c in o["spec"]["template"]["spec"]["containers"] for a in c.get("args", []) if a.startswith("--kubelet-service="))
            ns, name = arg.split("=", 1)[1].split("/")
            yield Service(name, ns, {"k8s-app": "kubelet", "app.kubernetes.io/name": "kubelet"}, None, {"https-metrics": "10250", "http-metrics": "10255"})


@dataclass(frozen=True)
class Job:
    name: str
    reachable: bool
    why: str


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"selector form not modelled: {selector}"
    return dict(selector.get("matchLabels", {})).items() <= dict(labels).items()


def admitted(pod: Pod, port: str, policies: list[dict[str, Any]], prometheus_ns: str) -> bool:
    """NetworkPolicy: a selected pod takes ingress only from what a rule lets in."""
    mine = [p for p in policies if p["metadata"].get("namespace") == pod.namespace and selects(p["spec"]["podSelector"], pod.labels)]
    if not mine:
        return True
    for policy in mine:
        for rule in policy["spec"].get("ingress", []):
            ports = {str(p["port"]) for p in rule.get("ports", [])}
            sources = [f.get("namespaceSelector", {}).get("matchLabels", {}) for f in rule.get("from", [])]
            if (not ports or port in ports) and {"kubernetes.io/metadata.name": prometheus_ns} in sources:
                return True
    return False


def scrape_jobs(chart: list[dict[str, Any]], ours: list[dict[str, Any]], prometheus_ns: str) -> dict[str, Job]:
    """The `job` label of every target the ServiceMonitors produce. prometheus-operator
    pkg/prometheus/promcfg.go: job is the Service's name, replaced by the value of the
    Service's label named by `jobLabel` when that label is set."""
    objects = chart + ours
    pods = [*EKS_PODS, *operator_pods(objects), *workload_pods(objects, prometheus_ns)]
    svcs = [*EKS_SERVICES, *kubelet_service(objects), *services(objects, prometheus_ns)]
    policies = [o for o in ours if o["kind"] == "NetworkPolicy"]
    assert not [o for o in objects if o["kind"] == "PodMonitor"], "PodMonitors are not modelled here"
    jobs: dict[str, Job] = {}
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        spec = monitor["spec"]
        names = spec.get("namespaceSelector", {}).get("matchNames") or [monitor["metadata"]["namespace"]]
        for svc in svcs:
            if svc.namespace not in names or not selects(spec["selector"], svc.labels):
                continue
            backing = [p for p in pods if p.namespace == svc.namespace and svc.selector is not None and svc.selector.items() <= dict(p.labels).items()]
            if svc.selector is not None and not backing:
                continue  # no endpoints: no target, no series
            for endpoint in spec["endpoints"]:
                if endpoint.get("port") not in svc.ports:
                    continue
                blocked = []
                for p in backing:
                    port = p.ports.get(svc.ports[endpoint["port"]], svc.ports[endpoint["port"]])
                    if port in p.unreachable:
                        blocked.append(p.unreachable[port])
                    elif not admitted(p, port, policies, prometheus_ns):
                        blocked.append(f"a NetworkPolicy keeps Prometheus from port {port}")
                job = svc.labels.get(spec.get("jobLabel", ""), "") or svc.name
                jobs[job] = Job(job, not blocked, "; ".join(blocked) or f"{svc.namespace}/{svc.name}:{endpoint['port']}")
    return jobs


# --- the rules and what their expressions depend on ---


@dataclass(frozen=True)
class Alert:
    source: str
    name: str
    expr: str
    labels: Mapping[str, str]


def alerts_of(objects: list[dict[str, Any]], source: str) -> list[Alert]:
    return [
        Alert(f"{source}:{o['metadata']['name']}", rule["alert"], rule["expr"], {**rule.get("labels", {}), "alertname": rule["alert"]})
        for o in objects if o["kind"] == "PrometheusRule"
        for group in o["spec"]["groups"] for rule in group["rules"] if "alert" in rule
    ]


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)
    must_exist: bool  # under absent() or right of unless


COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}


def filters(node: Any) -> bool:
    """Whether an expression filters on a value (a comparison without `bool`)."""
    if isinstance(node, promql_parser.BinaryExpr):
        if str(node.op) in COMPARISONS and not (node.modifier is not None and node.modifier.return_bool):
            return True
        return filters(node.lhs) or filters(node.rhs)
    if isinstance(node, promql_parser.Call):
        return any(filters(a) for a in node.args)
    return any(
        filters(getattr(node, a)) for a in ("expr", "vector_selector") if getattr(node, a, None) is not None
    )


def selectors(expr: str) -> list[Selector]:
    found: list[Selector] = []

    def visit(node: Any, must_exist: bool) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            ms = tuple((m.name, str(m.op).split(".")[-1], m.value) for m in node.matchers.matchers)
            found.append(Selector(node.name or "", ms, must_exist))
            return
        if isinstance(node, promql_parser.Call):
            inner = must_exist or node.func.name in ("absent", "absent_over_time")
            for arg in node.args:
                visit(arg, inner)
            return
        if isinstance(node, promql_parser.BinaryExpr):
            # `inventory unless healthy` (KubeletDown: every node unless its kubelet is up)
            # fires when `healthy` is missing; `failure unless excluded` does not.
            visit(node.lhs, must_exist)
            visit(node.rhs, must_exist or (str(node.op) == "unless" and not filters(node.lhs)))
            return
        for attr in ("expr", "vector_selector", "param"):
            child = getattr(node, attr, None)
            if child is not None and not isinstance(child, (str, int, float)):
                visit(child, must_exist)

    visit(promql_parser.parse(expr), False)
    return found


def matches(op: str, value: str, candidate: str) -> bool:
    if op == "Equal":
        return candidate == value
    if op == "NotEqual":
        return candidate != value
    if op == "Re":
        return re.fullmatch(value, candidate) is not None
    return re.fullmatch(value, candidate) is None


def jobs_matched(selector: Selector, jobs: Mapping[str, Job]) -> list[Job] | None:
    """The jobs a selector can read from (None: it does not constrain `job`)."""
    on_job = [(op, v) for label, op, v in selector.matchers if label == "job"]
    if not on_job:
        return None
    return [j for name, j in jobs.items() if all(matches(op, v, name) for op, v in on_job)]


# --- Alertmanager routing (alertmanager dispatch/route.go: a route takes an alert when all its
# matchers match; the first matching child takes it and stops the walk unless `continue`) ---


def _matcher(text: str) -> tuple[str, str, str]:
    m = re.fullmatch(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"(.*)"\s*', text)
    assert m, text
    return m.group(1), {"=": "Equal", "!=": "NotEqual", "=~": "Re", "!~": "NotRe"}[m.group(2)], m.group(3)


def receivers_for(route: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for child in route.get("routes", []):
        assert set(child) <= {"receiver", "matchers", "continue", "routes", "group_by"}, child
        if all(matches(op, v, labels.get(name, "")) for name, op, v in map(_matcher, child.get("matchers", []))):
            out += receivers_for({**child, "receiver": child.get("receiver", route["receiver"])}, labels)
            if not child.get("continue", False):
                return out
    return out or [route["receiver"]]


# --- the proof ---


def violations(stack: str, chart: list[dict[str, Any]]) -> list[str]:
    r = rendering(stack)
    ours = r.k8s_objects()
    release = stack_release(r)
    prometheus_ns = parse(raw_for(stack), stack).monitoring.namespace
    jobs = scrape_jobs(chart, ours, prometheus_ns)
    route = release.inputs["values"]["alertmanager"]["config"]["route"] if release else None
    alerts = alerts_of(chart, "chart") + alerts_of(ours, "ours")
    assert len({a.name for a in alerts}) > (10 if release is None else 100), "too few alerts: the collection is broken"
    problems = []
    for alert in alerts:
        where = f"{stack}: {alert.source} {alert.name}"
        sels = selectors(alert.expr)
        if all(s.metric == "ALERTS" for s in sels):
            if route is None:
                problems.append(f"{where}: fires constantly and no Alertmanager of ours routes it")
            elif set(receivers_for(route, alert.labels)) != {"null"}:
                problems.append(f"{where}: fires constantly but routes to {receivers_for(route, alert.labels)}")
            continue
        for s in sels:
            matched = jobs_matched(s, jobs)
            if matched == []:
                problems.append(f"{where}: selector {s.metric}{s.matchers} names no scraped job (rule of a component not scraped)")
                continue
            considered = list(jobs.values()) if matched is None else matched
            if s.metric == "up" or s.must_exist:
                if s.must_exist and matched is None and s.metric == "up":
                    problems.append(f"{where}: absent/unless over every job cannot be proved")
                for job in considered:
                    if not job.reachable:
                        problems.append(f"{where}: job {job.name} cannot be scraped on EKS ({job.why})")
            if s.must_exist and matched is None and s.metric != "up":
                problems.append(f"{where}: presence of {s.metric} without a job cannot be proved")
    return problems


@pytest.mark.parametrize("stack", STACKS)
def test_no_alert_can_fire_on_a_healthy_eks_cluster(stack: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    problems = violations(stack, chart_objects(stack, tmp_path_factory))
    assert not problems, "\n".join(problems)


def test_the_proof_catches_the_chart_defaults_on_eks(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Against the chart's own defaults for the EKS components, the same proof fails: the
    controller-manager, scheduler and etcd rules name jobs nothing produces, kube-proxy's
    target cannot be scraped."""
    r = rendering("prod")
    release = stack_release(r)
    assert release is not None, "prod installs kube-prometheus-stack"
    values = copy.deepcopy(release.inputs["values"])
    for key in EKS_UNSCRAPABLE_COMPONENTS:
        values.pop(key)
    chart = helm_template(
        release.inputs["name"], chart_dir("kube-prometheus-stack", release.inputs["version"]), "monitoring",
        values, str(r.outputs["kubernetes_version"]), tmp_path_factory.mktemp("defaults"),
    )
    text = "\n".join(violations("prod", chart))
    for needle in ("KubeControllerManagerDown", "KubeSchedulerDown", "etcdInsufficientMembers", "KubeProxyDown", "kube-proxy cannot be scraped"):
        assert needle in text, needle


def test_routing_model_follows_alertmanager() -> None:
    route = {
        "receiver": "null",
        "routes": [
            {"receiver": "null", "matchers": ['alertname="Watchdog"']},
            {"receiver": "pager", "matchers": ['severity=~"critical"'], "continue": True},
            {"receiver": "chat", "matchers": ['severity=~"critical|warning"'], "continue": True},
        ],
    }
    assert receivers_for(route, {"alertname": "Watchdog", "severity": "critical"}) == ["null"]
    assert receivers_for(route, {"alertname": "X", "severity": "critical"}) == ["pager", "chat"]
    assert receivers_for(route, {"alertname": "X", "severity": "none"}) == ["null"]


def test_no_other_chart_loads_alerting_rules() -> None:
    """Our rules and kube-prometheus-stack's are the whole set: no other release turns on its
    chart's PrometheusRule (keda, cluster-autoscaler and others ship one, off by default)."""

    def enabled_rules(values: Any, path: str) -> Iterator[str]:
        if isinstance(values, dict):
            for key, value in values.items():
                if "prometheusrule" in key.lower() and isinstance(value, dict) and value.get("enabled"):
                    yield f"{path}.{key}"
                yield from enabled_rules(value, f"{path}.{key}")

    for stack in STACKS:
        for release in rendering(stack).of_type(RELEASE):
            if release.inputs["chart"] != "kube-prometheus-stack":
                assert not list(enabled_rules(release.inputs["values"], release.inputs["chart"])), stack


# --- item: "down" alerts know scaled-to-zero from down (promtool rule unit tests) ---

DOWN_CLASS = ("TFServingDown", "TFServingModelNotAvailable", "GPUNodeNotReady")


def our_rule_file(r: Rendering, path: Path) -> dict[str, Any]:
    """Our PrometheusRule's groups as a Prometheus rule file. Annotations are dropped: promtool
    compares them verbatim and they are not what these tests are about."""
    spec = copy.deepcopy(next(m for m in r.k8s_objects() if m["kind"] == "PrometheusRule")["spec"])
    for group in spec["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    path.write_text(yaml.safe_dump(spec))
    return spec


def _series(name: str, labels: Mapping[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def down_tests(ns: str, deployment: str, down_after: int) -> list[dict[str, Any]]:
    """Series in, alerts out: each down alert fires on failure, is silent when healthy and when
    scaled to zero on purpose. Times in minutes, one sample a minute."""
    dep = {"namespace": ns, "deployment": deployment}
    pod = {"namespace": ns, "pod": f"{deployment}-7d9f8b6c4-x2v5q", "uid": "u1"}
    node = {"node": "ip-10-0-1-1.ec2.internal"}
    n = 90

    def case(name: str, series: list[dict[str, str]], firing: Mapping[str, list[dict[str, str]]], at: int = n) -> dict[str, Any]:
        return {
            "name": name,
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": f"{at}m", "alertname": alert, "exp_alerts": [{"exp_labels": lab} for lab in firing.get(alert, [])]}
                for alert in DOWN_CLASS
            ],
        }

    gpu_node = [
        _series("kube_node_status_condition", {**node, "condition": "Ready", "status": "true"}, f"1x{n}"),
        _series("kube_node_status_capacity", {**node, "resource": "nvidia_com_gpu", "unit": "integer"}, f"1x{n}"),
    ]
    ready = [_series("kube_pod_status_ready", {**pod, "condition": c}, f"{v}x{n}") for c, v in (("true", 1), ("false", 0))]
    return [
        case("healthy", [_series("kube_deployment_spec_replicas", dep, f"2x{n}"), _series("kube_deployment_status_replicas_available", dep, f"2x{n}"), *ready, *gpu_node], {}),
        case(
            "scaled to zero on purpose: no pod, the GPU node going away",
            [
                _series("kube_deployment_spec_replicas", dep, f"0x{n}"),
                _series("kube_deployment_status_replicas_available", dep, f"0x{n}"),
                _series("kube_node_status_condition", {**node, "condition": "Ready", "status": "true"}, f"0x{n}"),
                _series("kube_node_status_capacity", {**node, "resource": "nvidia_com_gpu", "unit": "integer"}, f"1x{n}"),
            ],
            {},
        ),
        case(
            "scale-down node removal while serving elsewhere",
            [
                _series("kube_deployment_spec_replicas", dep, f"1x{n}"),
                _series("kube_deployment_status_replicas_available", dep, f"1x{n}"),
                _series("kube_node_status_condition", {**node, "condition": "Ready", "status": "true"}, f"0x{n}"),
                _series("kube_node_status_capacity", {**node, "resource": "nvidia_com_gpu", "unit": "integer"}, f"1x{n}"),
                _series("kube_node_spec_taint", {**node, "key": "ToBeDeletedByClusterAutoscaler", "value": "1700000000", "effect": "NoSchedule"}, f"1x{n}"),
            ],
            {},
        ),
        case(
            "down: replicas wanted, none available, pod not ready, GPU node lost",
            [
                _series("kube_deployment_spec_replicas", dep, f"1x{n}"),
                _series("kube_deployment_status_replicas_available", dep, f"0x{n}"),
                _series("kube_pod_status_ready", {**pod, "condition": "false"}, f"1x{n}"),
                _series("kube_node_status_condition", {**node, "condition": "Ready", "status": "true"}, f"0x{n}"),
                _series("kube_node_status_capacity", {**node, "resource": "nvidia_com_gpu", "unit": "integer"}, f"1x{n}"),
            ],
            {
                "TFServingDown": [{"namespace": ns, "deployment": deployment, "severity": "critical"}],
                "TFServingModelNotAvailable": [{"namespace": ns, "deployment": deployment, "severity": "warning"}],
                "GPUNodeNotReady": [{**node, "condition": "Ready", "status": "true", "severity": "critical"}],
            },
        ),
        case(
            "down is reported once the wait is over, not before",
            [_series("kube_deployment_spec_replicas", dep, f"1x{n}"), _series("kube_deployment_status_replicas_available", dep, f"0x{n}")],
            {},
            at=down_after - 1,
        ),
        case(
            "scale-up from zero: a normal cold start (10 minutes) is not down",
            [
                _series("kube_deployment_spec_replicas", dep, f"0x30 1x{n - 30}"),
                _series("kube_deployment_status_replicas_available", dep, f"0x40 1x{n - 40}"),
            ],
            {},
            at=45,
        ),
    ]


def _minutes(duration: str) -> int:
    return int(duration[:-1]) * {"m": 1, "h": 60}[duration[-1]]


@pytest.mark.parametrize("stack", STACKS)
def test_down_alerts_know_scaled_to_zero_from_down(stack: str, tmp_path: Path) -> None:
    r = rendering(stack)
    spec = our_rule_file(r, tmp_path / "rules.yaml")
    rules = {rule["alert"]: rule for g in spec["groups"] for rule in g["rules"] if "alert" in rule}
    deployment = next(m for m in r.k8s_objects() if m["kind"] == "Deployment" and not m["metadata"]["name"].endswith("-canary"))
    ns, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
    down_after = _minutes(rules["TFServingDown"]["for"])
    scales_from_zero = any(m["kind"] == "ScaledObject" and m["spec"]["minReplicaCount"] == 0 for m in r.k8s_objects())
    if scales_from_zero:
        # README: a cold start takes 5 to 10 minutes; "down" must wait longer than that.
        assert down_after > 10, rules["TFServingDown"]["for"]
    tests = down_tests(ns, name, down_after)
    if not scales_from_zero:
        tests = [t for t in tests if not t["name"].startswith("scale-up from zero")]
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}, sort_keys=False)
    )
    done = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The harness reports a missed alert: the old TFServingDown (available < 1, blind to the
    desired count) fires when scaled to zero on purpose."""
    old = {"groups": [{"name": "old", "rules": [{
        "alert": "TFServingDown", "for": "5m", "labels": {"severity": "critical"},
        "expr": 'max(kube_deployment_status_replicas_available{namespace="tf-serving", deployment="tf-serving"}) < 1',
    }]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(old))
    tests = [t for t in down_tests("tf-serving", "tf-serving", 5) if t["name"].startswith("scaled to zero")]
    for t in tests:
        t["alert_rule_test"] = [x for x in t["alert_rule_test"] if x["alertname"] == "TFServingDown"]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}))
    done = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode != 0 and "TFServingDown" in done.stdout + done.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_promtool_accepts_every_rule_file(stack: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    files = []
    for i, o in enumerate(o for o in chart_objects(stack, tmp_path_factory) + rendering(stack).k8s_objects() if o["kind"] == "PrometheusRule"):
        path = tmp_path / f"rules-{i}.yaml"
        path.write_text(yaml.safe_dump(o["spec"]))
        files.append(path.name)
    done = promtool("check", "rules", *files, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_autoscaler_at_max_needs_room_to_move(stack: str, tmp_path: Path) -> None:
    """An HPA with min == max always sits at its maximum (a fixed size, healthy); only one
    with room to move is 'pinned'. kube-state-metrics v2.20.0 internal/store/
    horizontalpodautoscaler.go: spec_min/max_replicas and status_current_replicas, labels
    namespace and horizontalpodautoscaler."""
    r = rendering(stack)
    our_rule_file(r, tmp_path / "rules.yaml")
    ns = next(m for m in r.k8s_objects() if m["kind"] == "Deployment")["metadata"]["namespace"]
    hpa = {"namespace": ns, "horizontalpodautoscaler": "tf-serving"}

    def case(name: str, low: int, high: int, current: int, fires: bool) -> dict[str, Any]:
        return {
            "name": name,
            "interval": "1m",
            "input_series": [
                _series("kube_horizontalpodautoscaler_spec_min_replicas", hpa, f"{low}x60"),
                _series("kube_horizontalpodautoscaler_spec_max_replicas", hpa, f"{high}x60"),
                _series("kube_horizontalpodautoscaler_status_current_replicas", hpa, f"{current}x60"),
            ],
            "alert_rule_test": [{
                "eval_time": "60m", "alertname": "TFServingAutoscalerAtMax",
                "exp_alerts": [{"exp_labels": {**hpa, "severity": "warning"}}] if fires else [],
            }],
        }

    tests = [
        case("fixed size", 2, 2, 2, False),
        case("room to grow, below max", 1, 4, 3, False),
        case("pinned at max", 1, 4, 4, True),
    ]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}))
    done = promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
