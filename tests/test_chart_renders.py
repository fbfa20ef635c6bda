"""Every Helm release of every stack (the repo's stack files and the grid, tests/support/config_grid.py)
rendered by the real chart: `helm template` of the pinned sources with exactly the chart,
version, release name, namespace and values the program registers, at the stack's
Kubernetes version and with the API versions its cluster serves (tests/support/chart_renders.py).

This module owns the rules the rendered objects must meet, the written exceptions to them
(scanner findings accepted, value keys allowed to go unread) and the scanner run; rendering
and judging live in tests/support/chart_renders.py, and the tests here must not edit the session's
renders (the tests of the checks work on copies).

What is checked, per stack: every object strictly valid; GPU daemons on exactly the GPU
nodes they serve; chart ServiceMonitors select a Service and port the chart renders; chart
pods run as the service accounts our Pod Identity associations name; cluster-autoscaler
discovers exactly our node groups; the load balancer controller runs the Gateway
controllers our GatewayClasses name; prometheus-adapter serves exactly our rules; every
image pinned. Across stacks: the security scanner over the chart objects, and every value
we pass read by the chart's templates (found by rendering with it changed or removed).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import re
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import catalog
from components.config import StackConfig
from components.nodes import AUTOSCALED_BY_TAG
from components.autoscaling import adapter_rules
from tests.support import chart_renders as cr
from tests.support.external_tools import chart_dir, tool
from tests.support import dependencies

pytestmark = pytest.mark.long_running

# Seconds each group took, printed at the end of the session.
_TIMINGS: list[tuple[str, float]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_timings(request: pytest.FixtureRequest) -> Iterator[None]:
    started = time.perf_counter()
    yield
    capture = request.config.pluginmanager.getplugin("capturemanager")
    lines = [f"chart renders: {label} {seconds:.1f}s" for label, seconds in _TIMINGS]
    lines.append(
        f"chart renders: {cr.HELM_RUNS['count']:.0f} helm runs, {cr.HELM_RUNS['seconds']:.1f}s of helm "
        f"({cr.WORKERS} at a time); module {time.perf_counter() - started:.1f}s in all"
    )
    # Printed past pytest's capture: the figures are the point of the run.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines))


def _timed(label: str, started: float) -> None:
    _TIMINGS.append((label, time.perf_counter() - started))


@pytest.fixture(scope="module")
def every_stack() -> dict[str, cr.StackCharts]:
    """All stacks and their releases, rendered once (the mock engine, then helm)."""
    started = time.perf_counter()
    for name in cr.STACKS:
        cr.stack(name)
    _timed(f"{len(cr.STACKS)} stacks under the mock engine", started)
    started = time.perf_counter()
    out = {name: cr.stack_charts(name) for name in cr.STACKS}
    _timed(f"{sum(len(c.releases) for c in out.values())} releases rendered", started)
    return out


# --- per stack ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", cr.STACKS)
def test_every_chart_object_conforms(name: str, every_stack: dict[str, cr.StackCharts]) -> None:
    charts = every_stack[name]
    assert charts.releases, f"{name}: no Helm release"
    assert cr.conformance_problems(charts) == []
    assert cr.unserved_kind_problems(charts) == []


@pytest.mark.parametrize("name", cr.STACKS)
def test_gpu_daemons_run_once_on_every_gpu_node_and_nowhere_else(name: str, every_stack: dict[str, cr.StackCharts]) -> None:
    assert cr.gpu_daemonset_problems(every_stack[name]) == []


@pytest.mark.parametrize("name", cr.STACKS)
def test_chart_service_monitors_select_a_service_port_that_reaches_a_pod(
    name: str, every_stack: dict[str, cr.StackCharts]
) -> None:
    assert cr.service_monitor_problems(every_stack[name]) == []


@pytest.mark.parametrize("name", cr.STACKS)
def test_chart_pods_run_as_the_service_accounts_our_identities_name(name: str, every_stack: dict[str, cr.StackCharts]) -> None:
    assert cr.identity_problems(every_stack[name]) == []


# --- checks of one release: generated only for the stacks whose config installs it; the test
# after them proves the config and the rendering agree on which stacks those are ---


def has_cluster_autoscaler(cfg: StackConfig) -> bool:
    return cfg.installs_cluster_autoscaler


def has_load_balancer_controller(cfg: StackConfig) -> bool:
    return cfg.ingress is not None and cfg.ingress.enabled


def has_prometheus_adapter(cfg: StackConfig) -> bool:
    """The HPA on a custom metric (anything but CPU, which metrics-server serves)."""
    scaling = cfg.autoscaling
    return scaling is not None and scaling.enabled and scaling.engine == "hpa" and any(k != "cpu" for k in scaling.metrics)


def reads_gpu_per_pod(cfg: StackConfig) -> bool:
    return cfg.autoscaling is not None and cfg.autoscaling.enabled and "gpu_utilisation" in cfg.autoscaling.metrics


def stacks_where(predicate: Callable[[StackConfig], bool]) -> list[str]:
    return [name for name in cr.STACKS if predicate(cr.stack_config(name))]


@pytest.mark.parametrize("name", cr.STACKS)
def test_the_release_checks_run_on_exactly_the_stacks_that_have_the_release(
    name: str, every_stack: dict[str, cr.StackCharts]
) -> None:
    charts = every_stack[name]
    cfg = cr.stack_config(name)
    assert (charts.release("cluster-autoscaler") is not None) == has_cluster_autoscaler(cfg)
    assert (charts.release("aws-load-balancer-controller") is not None) == has_load_balancer_controller(cfg)
    if not has_load_balancer_controller(cfg):
        assert not [m for m in charts.rendering.k8s_objects() if m["kind"] == "GatewayClass"], "GatewayClasses, no controller"
    assert (charts.release("prometheus-adapter") is not None) == has_prometheus_adapter(cfg)
    readers = json.dumps(
        [m for m in charts.rendering.k8s_objects() if m["kind"] == "ScaledObject"]
        + [r.release.values["rules"]["custom"] for r in [charts.release("prometheus-adapter")] if r is not None]
    )
    assert ("exported_pod" in readers) == reads_gpu_per_pod(cfg)


@pytest.mark.parametrize("name", stacks_where(has_cluster_autoscaler))
def test_cluster_autoscaler_discovers_exactly_our_node_groups(name: str, every_stack: dict[str, cr.StackCharts]) -> None:
    """The rendered --node-group-auto-discovery matches the Auto Scaling groups of the
    stack's node groups (EKS's tags plus the ones the stack adds) and no other: not a
    managed group of the same cluster that the stack did not make (in mode existing, the
    cluster owners'), which carries EKS's tags, nor a group of another stack."""
    charts = every_stack[name]
    sr = charts.release("cluster-autoscaler")
    groups = cr.node_groups(charts.rendering)
    assert sr is not None and groups
    (deployment,) = sr.render.of_kind("Deployment")
    args = cr.container_args(deployment)
    assert "--cloud-provider=aws" in args
    owners = dataclasses.replace(groups[0], name="owners-group", asg_name="eks-owners-group-asg")
    assert cr.discovered_groups(args, charts.rendering, [owners]) == {g.name for g in groups}
    cluster = charts.rendering.outputs["cluster_name"]
    assert cr.auto_discovery_specs(args) == [
        {"k8s.io/cluster-autoscaler/enabled": "", f"k8s.io/cluster-autoscaler/{cluster}": "", AUTOSCALED_BY_TAG: charts.rendering.stack}
    ]
    assert cr.container_env(deployment).get("AWS_REGION") == charts.rendering.outputs["region"]


@pytest.mark.parametrize("name", stacks_where(has_load_balancer_controller))
def test_load_balancer_controller_runs_the_gateway_controllers_our_gateway_classes_name(
    name: str, every_stack: dict[str, cr.StackCharts]
) -> None:
    """Controller v3.5.0's gates after its start-up CRD detection, against what the cluster
    serves; the Gateway API CRDs it detects are applied before the release (it reads them
    once, at start)."""
    charts = every_stack[name]
    classes = [m for m in charts.rendering.k8s_objects() if m["kind"] == "GatewayClass"]
    sr = charts.release("aws-load-balancer-controller")
    assert sr is not None
    (deployment,) = sr.render.of_kind("Deployment")
    args = cr.container_args(deployment, "aws-load-balancer-controller")
    gates = cr.lbc_feature_gates(args, charts.served)
    assert classes
    for gateway_class in classes:
        gate = cr.LBC_GATEWAY_CONTROLLERS[gateway_class["spec"]["controllerName"]]
        assert gates[gate], f"{name}: {gate} is off, GatewayClass {gateway_class['metadata']['name']} needs it"
    outputs = charts.rendering.outputs
    for flag in (f"--cluster-name={outputs['cluster_name']}", f"--aws-region={outputs['region']}", f"--aws-vpc-id={outputs['vpc_id']}"):
        assert flag in args, f"{name}: {flag} not in {args}"
    crds = [x.urn for x in charts.rendering.of_type(cr.CONFIG_FILE) if x.inputs.get("file") == catalog.GATEWAY_API_CRDS_URL]
    assert crds and set(crds) <= cr_dependencies(charts, sr)


def cr_dependencies(charts: cr.StackCharts, sr: cr.StackRelease) -> set[str]:
    return dependencies(charts.rendering, sr.registered.urn)


@pytest.mark.parametrize("name", stacks_where(has_prometheus_adapter))
def test_prometheus_adapter_serves_exactly_the_rules_we_generate(name: str, every_stack: dict[str, cr.StackCharts]) -> None:
    """The adapter's config file (the ConfigMap its pods mount, followed through the pod
    template) holds exactly our rules and nothing else; every custom metric our HPA reads
    is one of them; the adapter asks the Prometheus we give it."""
    charts = every_stack[name]
    sr = charts.release("prometheus-adapter")
    assert sr is not None
    cfg = cr.stack_config(name)
    wanted = adapter_rules(sorted(cfg.autoscaling.metrics))
    assert sr.release.values["rules"]["custom"] == wanted
    (deployment,) = sr.render.of_kind("Deployment")
    spec = cr.pod_template(deployment) or {}
    args = cr.container_args(deployment)
    config_path = next(a.split("=", 1)[1] for a in args if a.startswith("--config="))
    mount = next(
        m for c in spec["containers"] for m in c.get("volumeMounts") or [] if config_path.startswith(m["mountPath"].rstrip("/") + "/")
    )
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    (config_map,) = [m for m in sr.render.of_kind("ConfigMap") if m["metadata"]["name"] == volume["configMap"]["name"]]
    served = yaml.safe_load(config_map["data"][config_path.rsplit("/", 1)[1]])
    assert served == {"rules": wanted}, f"{name}: the adapter serves {sorted(served)}"
    hpa_metrics = {
        m["pods"]["metric"]["name"]
        for x in charts.rendering.k8s_objects() if x["kind"] == "HorizontalPodAutoscaler"
        for m in x["spec"].get("metrics") or [] if m["type"] == "Pods"
    }
    assert hpa_metrics and hpa_metrics <= {r["name"]["as"] for r in wanted}
    prometheus = sr.release.values["prometheus"]
    assert f"--prometheus-url={prometheus['url']}:{prometheus['port']}" in args


@pytest.mark.parametrize("name", stacks_where(reads_gpu_per_pod))
def test_gpu_utilisation_queries_find_the_serving_pods_in_the_exporter_series(
    name: str, every_stack: dict[str, cr.StackCharts]
) -> None:
    """Our adapter rules and KEDA triggers pick a serving pod's GPU series by exported_pod /
    exported_namespace: that holds only as the DCGM exporter and its ServiceMonitor render."""
    charts = every_stack[name]
    readers: list[Any] = [
        t["metadata"].get("query", "")
        for m in charts.rendering.k8s_objects() if m["kind"] == "ScaledObject"
        for t in m["spec"]["triggers"] if t["type"] == "prometheus"
    ]
    adapter = charts.release("prometheus-adapter")
    if adapter is not None:
        readers += adapter.release.values["rules"]["custom"]
    assert any("exported_pod" in json.dumps(r) for r in readers)
    assert cr.gpu_metric_label_problems(charts, readers) == []


# Charts whose images the prod stack runs by digest (the rest run the chart version's tag).
# Digests are resolved and recorded for our own workload (components/images.py); the
# charts get none, so this is empty; CKV_K8S_43 below is accepted for that reason.
CHARTS_BY_DIGEST_IN_PROD: frozenset[str] = frozenset()


# Charts that install CustomResourceDefinitions and nothing else: no image to pin.
CRD_ONLY_CHARTS = frozenset({"karpenter-crd"})


@pytest.mark.parametrize("name", cr.STACKS)
def test_every_chart_image_is_pinned(name: str, every_stack: dict[str, cr.StackCharts]) -> None:
    charts = every_stack[name]
    unpinned, by_digest = [], set()
    for sr in charts.releases:
        found = [(image, cr.image_pin(image)) for m in sr.render.objects for image in cr.images(m)]
        if sr.release.chart in CRD_ONLY_CHARTS:
            assert not found and sr.render.crds, f"{name}: {sr.release.chart} is no longer CRDs only"
            continue
        assert found, f"{name}: {sr.release.chart} renders no image"
        unpinned += [f"{sr.release.chart}: {image}" for image, pin in found if pin is None]
        if found and all(pin == "digest" for _, pin in found):
            by_digest.add(sr.release.chart)
    assert unpinned == []
    if name == "prod":
        assert by_digest == CHARTS_BY_DIGEST_IN_PROD


# --- what the charts consult -------------------------------------------------------------

# Every `.Capabilities.APIVersions.Has` argument in the templates of the charts we install,
# and whether it holds on the stack's cluster: True (served by every EKS cluster we run),
# False (served by none), "stack" (served when the stack installs or uses it).
CAPABILITY_CHECKS: dict[str, bool | str] = {
    "apiregistration.k8s.io/v1": True,  # kube-aggregator, in every kube-apiserver
    "policy/v1": True,  # PodDisruptionBudget, GA in 1.21
    "autoscaling/v2": True,  # HorizontalPodAutoscaler, GA in 1.23
    "policy/v1beta1/PodSecurityPolicy": False,  # removed in 1.25
    "autoscaling.k8s.io/v1": False,  # Vertical Pod Autoscaler: no stack installs it
    "autoscaling.k8s.io/v1/VerticalPodAutoscaler": False,
    "monitoring.coreos.com/v1": "stack",  # the Prometheus Operator's CRDs
}


@pytest.fixture(scope="module")
def helm_default_api_versions(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """What `helm template` reports in .Capabilities.APIVersions without --api-versions."""
    chart = tmp_path_factory.mktemp("capabilities")
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: capabilities\nversion: 0.1.0\n")
    (chart / "templates").mkdir()
    (chart / "templates" / "c.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  v: {{ .Capabilities.APIVersions | toJson | quote }}\n"
    )
    done = subprocess.run([str(tool("helm")), "template", "c", str(chart)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(yaml.safe_load(done.stdout)["data"]["v"]))


def _capability_checks(chart: str, version: str) -> set[str]:
    found: set[str] = set()
    pattern = re.compile(r'Capabilities\.APIVersions\.Has\s+"([^"]+)"')
    loose = re.compile(r"Capabilities\.APIVersions")
    for path in chart_dir(chart, version).rglob("*"):
        texts = []
        if path.suffix == ".tgz":
            with tarfile.open(path) as packed:
                texts = [
                    (packed.extractfile(m).read().decode(errors="replace"))  # type: ignore[union-attr]
                    for m in packed.getmembers() if m.isfile() and "/templates/" in m.name
                ]
        elif path.is_file() and "templates" in path.parts:
            texts = [path.read_text(errors="replace")]
        for text in texts:
            named = pattern.findall(text)
            assert len(named) == len(loose.findall(text)), f"{chart}: a Capabilities check this test cannot read ({path})"
            found.update(named)
    return found


@pytest.mark.parametrize("name", cr.STACKS)
def test_capability_checks_of_our_charts_see_what_the_cluster_serves(
    name: str, every_stack: dict[str, cr.StackCharts], helm_default_api_versions: set[str]
) -> None:
    """Each check a chart makes evaluates in our render as on the stack's cluster."""
    charts = every_stack[name]
    for sr in charts.releases:
        available = helm_default_api_versions | set(sr.release.api_versions)
        for checked in _capability_checks(sr.release.chart, sr.release.version):
            assert checked in CAPABILITY_CHECKS, f"{sr.release.chart} checks {checked}: say whether EKS serves it"
            holds = CAPABILITY_CHECKS[checked]
            if holds == "stack":
                holds = checked in cr.api_versions_flag(charts.served)
            assert (checked in available) == holds, f"{name}: {sr.release.chart} sees {checked} as {checked in available}"


# --- the scanner over the chart objects ------------------------------------------------

_NETWORK_POLICY = (
    "The stack's NetworkPolicy guards the serving namespace; the charts' controllers ship none "
    "and must reach the API server, AWS APIs and (exporters) be scraped from the monitoring namespace."
)
_TAG = (
    "Chart images run the chart version's tag (test_every_chart_image_is_pinned: never latest); "
    "digests are resolved for our own workload only (components/images.py)."
)
_PULL = "IfNotPresent is each chart's default: with a pinned tag a restarted pod need not reach the registry."
_CPU_LIMIT = (
    "No CPU limit on controllers and daemons: CFS throttling delays their control loops; "
    "a request reserves their share."
)
_TOKEN = "The pod calls the Kubernetes API as its service account, so the token is mounted."
_UID = "The image's own non-root user (UID below 10000) as the chart sets it; the image is built for it."
_SECCOMP_DEFAULT = "The chart sets no seccompProfile for this pod; containerd applies none either (upstream default)."
_NO_PROBE_DAEMON = "The chart defines no probe for this container; the kubelet restarts it if it exits."
_REQUESTS_UNSET = "The chart sets no requests for this container and our values give none; its pod is Burstable by its others."
_ROOT_HOST_AGENT = "A node agent reading host paths (logs, devices, GPU state) as root, as upstream runs it."
_GPU_DEVICE = (
    "NVIDIA device plugin / DCGM exporter: need SYS_ADMIN (or privileged for MPS) to manage GPU devices "
    "(NVIDIA's charts as shipped); confined to GPU nodes by test_gpu_daemons_run_once_on_every_gpu_node_and_nowhere_else."
)
_NON_ROOT_CAPS = (
    "The container runs non-root without privilege escalation: a non-root process holds no "
    "capabilities (NET_RAW included) unless a file grants them."
)

# (check, chart) -> why the finding is accepted. Every finding needs an entry; an entry
# nothing needs any more fails the test too (so the list stays the list of what is true).
ACCEPTED: dict[tuple[str, str], str] = {}


def _accept(check: str, charts: str, reason: str) -> None:
    for chart in charts.split():
        ACCEPTED[(check, chart)] = reason


_ALL = (
    "aws-for-fluent-bit aws-load-balancer-controller cluster-autoscaler dcgm-exporter external-dns keda "
    "kube-prometheus-stack metrics-server nvidia-device-plugin prometheus-adapter"
)
_accept("CKV2_K8S_6", _ALL, _NETWORK_POLICY)
_accept("CKV_K8S_43", _ALL, _TAG)
# Karpenter's chart runs its image by digest and pulls IfNotPresent, and we set its CPU limit:
# only these apply.
_accept("CKV2_K8S_6", "karpenter", _NETWORK_POLICY)
_accept("CKV_K8S_38", "karpenter", _TOKEN)
_accept("CKV_K8S_15", _ALL.replace("keda ", ""), _PULL)
_accept(
    "CKV_K8S_11",
    "aws-for-fluent-bit aws-load-balancer-controller cluster-autoscaler external-dns kube-prometheus-stack "
    "metrics-server nvidia-device-plugin prometheus-adapter",
    _CPU_LIMIT,
)
_accept(
    "CKV_K8S_38",
    "aws-for-fluent-bit aws-load-balancer-controller cluster-autoscaler external-dns keda kube-prometheus-stack "
    "metrics-server nvidia-device-plugin prometheus-adapter",
    _TOKEN,
)
_accept(
    "CKV_K8S_40",
    "aws-load-balancer-controller cluster-autoscaler keda kube-prometheus-stack metrics-server",
    _UID,
)
_accept("CKV_K8S_40", "aws-for-fluent-bit dcgm-exporter nvidia-device-plugin", _ROOT_HOST_AGENT)
_accept("CKV_K8S_31", "aws-for-fluent-bit aws-load-balancer-controller cluster-autoscaler kube-prometheus-stack", _SECCOMP_DEFAULT)
_accept("CKV_K8S_31", "dcgm-exporter nvidia-device-plugin", _GPU_DEVICE)
_accept("CKV_K8S_28", "aws-load-balancer-controller kube-prometheus-stack", _NON_ROOT_CAPS)
_accept("CKV_K8S_37", "aws-load-balancer-controller kube-prometheus-stack", _NON_ROOT_CAPS)
_accept("CKV_K8S_28", "aws-for-fluent-bit", _ROOT_HOST_AGENT)
_accept("CKV_K8S_37", "aws-for-fluent-bit", _ROOT_HOST_AGENT)
_accept("CKV_K8S_28", "nvidia-device-plugin", _GPU_DEVICE)
_accept("CKV_K8S_37", "nvidia-device-plugin", _GPU_DEVICE)
for _check in ("CKV_K8S_16", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_30", "CKV_K8S_39"):
    _accept(_check, "nvidia-device-plugin", _GPU_DEVICE)
for _check in ("CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_29", "CKV_K8S_39"):
    _accept(_check, "dcgm-exporter", _GPU_DEVICE)
_accept("CKV_K8S_17", "nvidia-device-plugin", "The MPS control daemon shares the host PID namespace to serve MPS clients (NVIDIA's chart); it lands only on nodes labelled nvidia.com/mps.capable, which ours are not.")
for _check in ("CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_29", "CKV_K8S_30"):
    _accept(_check, "aws-for-fluent-bit", _ROOT_HOST_AGENT)
_accept("CKV_K8S_9", "aws-for-fluent-bit cluster-autoscaler nvidia-device-plugin", _NO_PROBE_DAEMON)
_accept("CKV_K8S_8", "nvidia-device-plugin", _NO_PROBE_DAEMON)
_accept("CKV_K8S_8", "kube-prometheus-stack", "Grafana's dashboard and datasource sidecars (grafana chart 12.11.1) have no probes; Grafana itself has both.")
_accept("CKV_K8S_9", "kube-prometheus-stack", "Grafana's dashboard and datasource sidecars (grafana chart 12.11.1) have no probes; Grafana itself has both.")
for _check in ("CKV_K8S_10", "CKV_K8S_12"):
    _accept(_check, "kube-prometheus-stack nvidia-device-plugin", _REQUESTS_UNSET)
_accept("CKV_K8S_13", "kube-prometheus-stack metrics-server nvidia-device-plugin", _REQUESTS_UNSET)
_accept("CKV_K8S_23", "cluster-autoscaler", "The image runs as UID 65532 (cluster-autoscaler/Dockerfile at 1.36.0: FROM gcr.io/distroless/static:nonroot); the chart does not say runAsNonRoot.")
_accept("CKV_K8S_29", "cluster-autoscaler", "The container security context is set (drop ALL, read-only root, no escalation: our values); the pod-level one is the chart's empty default.")
_accept("CKV_K8S_29", "metrics-server", "The container security context is set by the chart (non-root, drop ALL, read-only root, RuntimeDefault seccomp); the pod-level one is empty.")
_accept("CKV_K8S_17", "kube-prometheus-stack", "node-exporter reads host process statistics from the host PID namespace, as upstream runs it (non-root, read-only root).")
_accept("CKV_K8S_19", "kube-prometheus-stack", "node-exporter listens on the host network to report node-level network statistics, as upstream runs it.")
_accept("CKV_K8S_20", "kube-prometheus-stack", "node-exporter and Grafana's init container: the chart leaves allowPrivilegeEscalation unset; node-exporter runs non-root with no capabilities.")
_accept("CKV_K8S_22", "kube-prometheus-stack", "Grafana writes to its root filesystem (plugins, sessions) and its init container chowns the data volume (grafana chart 12.11.1).")
_accept("CKV_K8S_25", "kube-prometheus-stack", "Grafana's init-chown-data adds CHOWN and DAC_OVERRIDE to hand the data volume to UID 472, then exits.")
_accept("CKV_K8S_35", "kube-prometheus-stack", "Grafana and its sidecars read the admin credentials from the Secret grafana-admin as environment variables (grafana chart's admin.existingSecret).")
_accept("CKV_K8S_49", "kube-prometheus-stack", "The Prometheus Operator manages its own kinds (monitoring.coreos.com/*) and their StatefulSets, Secrets and ConfigMaps cluster-wide.")
_accept("CKV_K8S_49", "prometheus-adapter", "The adapter serves custom.metrics.k8s.io: the role grants all of that one API group, nothing else.")
_accept("CKV_K8S_155", "kube-prometheus-stack", "The admission job patches the operator's own webhook configurations with the certificate it made.")
_accept("CKV_K8S_155", "keda", "KEDA's operator patches its own webhook configuration with the certificate it rotates (--enable-webhook-patching).")
_accept("CKV2_K8S_5", "kube-prometheus-stack", "Grafana's sidecar watches dashboard ConfigMaps in every namespace (ours live in the serving namespace); the grafana chart grants configmaps and secrets together. The admission job's Role reads Secrets in its own namespace only.")
for _check in ("CKV2_K8S_1", "CKV2_K8S_2", "CKV2_K8S_3", "CKV2_K8S_4", "CKV2_K8S_5"):
    _accept(_check, "prometheus-adapter", "The binding grants custom.metrics.k8s.io only (ClusterRole prometheus-adapter-server-resources); checkov's graph checks read its `*` resources and verbs without the API group.")


def _distinct_objects(every_stack: dict[str, cr.StackCharts]) -> dict[str, tuple[str, dict[str, Any]]]:
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for charts in every_stack.values():
        for sr in charts.releases:
            for manifest in sr.render.objects:
                key = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
                out.setdefault(f"{sr.release.chart}--{key}", (sr.release.chart, manifest))
    return out


def checkov_failures(objects: dict[str, tuple[str, dict[str, Any]]], workdir: Path) -> list[tuple[str, str, str]]:
    """(check, chart, resource) of every failed check, as tests/test_security_scan.py runs
    checkov on our objects (same framework and checks; --skip-download: no platform
    account, so nothing to fetch, and no network wait)."""
    for file_name, (_, manifest) in objects.items():
        (workdir / f"{file_name}.yaml").write_text(yaml.safe_dump(manifest))
    done = subprocess.run(
        [str(tool("checkov")), "-d", str(workdir), "--framework", "kubernetes", "-o", "json", "--compact", "--skip-download"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    failed = []
    for r in report if isinstance(report, list) else [report]:
        for check in r.get("results", {}).get("failed_checks", []):
            chart = Path(check["file_path"]).name.split("--")[0]
            failed.append((check["check_id"], chart, check["resource"]))
    return failed


def test_chart_objects_pass_the_scanner_or_say_why(every_stack: dict[str, cr.StackCharts], tmp_path: Path) -> None:
    started = time.perf_counter()
    objects = _distinct_objects(every_stack)
    failed = checkov_failures(objects, tmp_path)
    _timed(f"checkov over {len(objects)} distinct chart objects", started)
    unexplained = sorted({(check, chart) for check, chart, _ in failed} - set(ACCEPTED))
    assert unexplained == [], f"findings without a reason: {unexplained}"
    stale = sorted(set(ACCEPTED) - {(check, chart) for check, chart, _ in failed})
    assert stale == [], f"accepted findings the scanner no longer reports (drop them): {stale}"
    assert all(len(reason.split()) >= 8 for reason in ACCEPTED.values())


# --- every value we pass is read ---------------------------------------------------------

# (chart, value path with list positions as []) -> why the templates may ignore it. Empty:
# every value every stack passes changes what its chart renders.
UNREAD_ALLOWED: dict[tuple[str, str], str] = {}


def mutation_targets(chart: str) -> list[tuple[cr.Release, list[cr.ValuePath], str]]:
    """The distinct value sets of `chart` in dev and prod, all their leaves; then each grid
    value set whose leaves take paths those do not, only those leaves (a path already
    proven read in dev or prod is not rendered again for every grid config)."""
    out: list[tuple[cr.Release, list[cr.ValuePath], str]] = []
    seen: set[cr.Release] = set()
    shapes: set[str] = set()
    for name in cr.STACKS:
        sr = cr.stack_charts(name).release(chart)
        if sr is None or sr.release in seen:
            continue
        seen.add(sr.release)
        paths = list(cr.leaves(sr.release.values))
        if name not in cr.REPO_STACKS:
            paths = [p for p in paths if cr.path_shape(p) not in shapes]
        shapes.update(cr.path_shape(p) for p in paths)
        if paths:
            out.append((sr.release, paths, name))
    return out


@pytest.mark.parametrize("chart", sorted(catalog.CHARTS))
def test_every_value_we_pass_is_read_by_the_chart(chart: str, every_stack: dict[str, cr.StackCharts]) -> None:
    started = time.perf_counter()
    runs = cr.HELM_RUNS["count"]
    targets = mutation_targets(chart)
    if not targets:
        pytest.skip(f"no stack installs {chart}")
    unread, allowed_used = [], set()
    leaves = 0
    for release, paths, origin in targets:
        leaves += len(paths)
        for verdict in cr.leaf_verdicts(release, paths):
            shape = (chart, cr.path_shape(verdict.path))
            if verdict.read:
                continue
            if shape in UNREAD_ALLOWED:
                allowed_used.add(shape)
            else:
                unread.append(f"{origin}: {cr.path_text(verdict.path)} ({verdict.how})")
    _timed(f"{chart}: {leaves} values of {len(targets)} value sets, {cr.HELM_RUNS['count'] - runs:.0f} helm runs", started)
    assert unread == [], f"{chart}: values its templates never read: {unread}"
    stale = {k for k in UNREAD_ALLOWED if k[0] == chart} - allowed_used
    assert not stale, f"allowed as unread but read now: {stale}"


# --- the checks can fail ---------------------------------------------------------------


def _with_objects(charts: cr.StackCharts, chart: str, change: Any) -> cr.StackCharts:
    """A copy of `charts` whose `chart` render has its objects (copies) passed through
    `change`, which may edit, add or drop them; the session's renders stay as they are."""
    out = copy.copy(charts)
    out.releases = []
    for sr in charts.releases:
        if sr.release.chart == chart:
            manifests = [copy.deepcopy(r.manifest) for r in sr.render.rendered]
            change(manifests)
            changed = cr.ChartRender(sr.release, [cr.Rendered("changed", m) for m in manifests], sr.render.crds)
            sr = cr.StackRelease(sr.registered, sr.release, changed)
        out.releases.append(sr)
    assert any(sr.release.chart == chart for sr in out.releases), f"{charts.name} has no {chart}"
    return out


def test_a_device_plugin_on_bottlerocket_or_a_missing_toleration_is_found(every_stack: dict[str, cr.StackCharts]) -> None:
    prod = every_stack["prod"]
    assert any(g.bottlerocket for g in cr.node_groups(prod.rendering))

    def no_affinity(objects: list[dict[str, Any]]) -> None:
        for o in objects:
            if o["kind"] == "DaemonSet":
                o["spec"]["template"]["spec"].pop("affinity", None)

    assert any("Bottlerocket" in p or "2 NVIDIA device plugins" in p for p in cr.gpu_daemonset_problems(_with_objects(prod, "nvidia-device-plugin", no_affinity)))

    def no_tolerations(objects: list[dict[str, Any]]) -> None:
        for o in objects:
            if o["kind"] == "DaemonSet":
                o["spec"]["template"]["spec"]["tolerations"] = []

    assert any("0 DCGM exporters" in p for p in cr.gpu_daemonset_problems(_with_objects(prod, "dcgm-exporter", no_tolerations)))


def test_a_time_slicing_config_the_plugin_lacks_is_found(every_stack: dict[str, cr.StackCharts]) -> None:
    dev = every_stack["dev"]
    assert any(g.labels.get(cr.DEVICE_PLUGIN_CONFIG_LABEL) for g in cr.node_groups(dev.rendering))

    def drop_config(objects: list[dict[str, Any]]) -> None:
        for o in objects:
            if o["kind"] == "ConfigMap":
                o["data"].pop("time-sliced-2", None)

    assert any("time-sliced-2" in p for p in cr.gpu_daemonset_problems(_with_objects(dev, "nvidia-device-plugin", drop_config)))


def test_gpu_series_that_keep_the_exporter_pod_labels_are_found(every_stack: dict[str, cr.StackCharts]) -> None:
    prod = every_stack["prod"]
    rules = prod.release("prometheus-adapter").release.values["rules"]["custom"]  # type: ignore[union-attr]
    assert cr.gpu_metric_label_problems(prod, rules) == []

    def honour(objects: list[dict[str, Any]]) -> None:
        for o in objects:
            if o["kind"] == "ServiceMonitor":
                o["spec"]["endpoints"][0]["honorLabels"] = True

    assert any("honours labels" in p for p in cr.gpu_metric_label_problems(_with_objects(prod, "dcgm-exporter", honour), rules))


def test_a_service_monitor_on_a_missing_port_is_found(every_stack: dict[str, cr.StackCharts]) -> None:
    prod = every_stack["prod"]

    def rename_port(objects: list[dict[str, Any]]) -> None:
        for o in objects:
            if o["kind"] == "ServiceMonitor":
                o["spec"]["endpoints"][0]["port"] = "metricz"

    assert any("metricz" in p for p in cr.service_monitor_problems(_with_objects(prod, "dcgm-exporter", rename_port)))

    def no_pod(objects: list[dict[str, Any]]) -> None:
        for o in objects:
            if o["kind"] == "DaemonSet":
                o["spec"]["template"]["metadata"]["labels"] = {"app": "other"}

    assert any("selects no pod" in p for p in cr.service_monitor_problems(_with_objects(prod, "dcgm-exporter", no_pod)))


def test_a_pod_under_another_service_account_is_found(every_stack: dict[str, cr.StackCharts]) -> None:
    prod = every_stack["prod"]

    def other_account(objects: list[dict[str, Any]]) -> None:
        for o in objects:
            if o["kind"] == "Deployment":
                o["spec"]["template"]["spec"]["serviceAccountName"] = "default"

    problems = cr.identity_problems(_with_objects(prod, "external-dns", other_account))
    assert any("external-dns: waits for" in p for p in problems) and any("no pod runs as" in p for p in problems)


def test_discovery_of_another_cluster_finds_none_of_ours(every_stack: dict[str, cr.StackCharts]) -> None:
    r = every_stack["prod"].rendering
    args = ["--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/enabled,k8s.io/cluster-autoscaler/other"]
    assert cr.discovered_groups(args, r) == set()
    args = ["--node-group-auto-discovery=asg:tag=k8s.io/cluster-autoscaler/node-template/label/tf-serving-eks/pool=l4"]
    assert cr.discovered_groups(args, r) == {g.name for g in cr.node_groups(r) if g.labels.get("tf-serving-eks/pool") == "l4"}


def test_gateway_controllers_off_when_told_or_when_their_crds_are_missing(every_stack: dict[str, cr.StackCharts]) -> None:
    served = every_stack["prod"].served
    assert not cr.lbc_feature_gates(["--feature-gates=ALBGatewayAPI=false"], served)["ALBGatewayAPI"]
    without_routes = {gv: kinds - {"GRPCRoute"} for gv, kinds in served.items()}
    # Detection turns ALB off even when the flag says true (gateway_feature_flags.go).
    assert not cr.lbc_feature_gates(["--feature-gates=ALBGatewayAPI=true"], without_routes)["ALBGatewayAPI"]
    everything = "--feature-gates=ALBGatewayAPI=true,NLBGatewayAPI=false,GatewayListenerSet=false"
    assert cr.lbc_feature_gates([everything], without_routes)["ALBGatewayAPI"]
    with pytest.raises(AssertionError, match="unknown feature gate"):
        cr.lbc_feature_gates(["--feature-gates=ALBGateway=true"], served)


def test_a_custom_resource_outside_the_reference_is_checked_against_its_installed_crd(
    every_stack: dict[str, cr.StackCharts]
) -> None:
    prod = every_stack["prod"]

    def typo(objects: list[dict[str, Any]]) -> None:
        for o in objects:
            if o["kind"] == "Prometheus":
                o["spec"]["retentionTime"] = "15d"

    problems = cr.conformance_problems(_with_objects(prod, "kube-prometheus-stack", typo))
    assert any("Prometheus" in p and "retentionTime" in p for p in problems), problems


def test_a_kind_the_cluster_does_not_serve_is_found(every_stack: dict[str, cr.StackCharts]) -> None:
    charts = every_stack["grid-dev-no-monitoring"]
    assert "monitoring.coreos.com/v1" not in charts.served

    def add_monitor(objects: list[dict[str, Any]]) -> None:
        objects.append({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "m"}})

    changed = _with_objects(charts, "dcgm-exporter", add_monitor)
    assert any("ServiceMonitor is not served" in p for p in cr.unserved_kind_problems(changed))


def test_an_unread_value_is_found_by_rendering(every_stack: dict[str, cr.StackCharts]) -> None:
    sr = every_stack["prod"].release("external-dns")
    assert sr is not None
    values = {**sr.release.values, "sourcez": ["ingress"], "serviceAccount": {**sr.release.values["serviceAccount"], "enabled": True}}
    release = sr.release.with_values(values)
    verdicts = {cr.path_text(v.path): v for v in cr.leaf_verdicts(release, [("sourcez", 0), ("serviceAccount", "enabled"), ("policy",)])}
    assert not verdicts["sourcez[0]"].read and not verdicts["serviceAccount.enabled"].read
    assert verdicts["policy"].read


def test_pinned_images_and_floating_ones() -> None:
    assert cr.image_pin("registry.k8s.io/a/b:v1.2.3") == "tag"
    assert cr.image_pin("quay.io/x/y:v1@sha256:" + "0" * 64) == "digest"
    assert cr.image_pin("docker.io/library/busybox") is None
    assert cr.image_pin("localhost:5000/busybox:latest") is None
    assert cr.image_pin("localhost:5000/busybox") is None


def test_the_scheduler_rules_used_here() -> None:
    group = cr.NodeGroup("g", "AL2023_x86_64_NVIDIA", {"a": "1", "n": "5"}, (cr.Taint("gpu", "true", "NoSchedule"),), "asg", "c")
    assert not cr.can_land({}, group)
    assert cr.can_land({"tolerations": [{"operator": "Exists"}]}, group)
    assert cr.can_land({"tolerations": [{"key": "gpu", "value": "true"}]}, group)
    assert not cr.can_land({"tolerations": [{"key": "gpu", "value": "false"}]}, group)
    tolerant = {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    terms = lambda *exprs: {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(exprs)}}}  # noqa: E731
    assert cr.can_land({**tolerant, "affinity": terms({"matchExpressions": [{"key": "n", "operator": "Gt", "values": ["4"]}]})}, group)
    assert not cr.can_land({**tolerant, "affinity": terms({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]})}, group)
    either = terms({"matchExpressions": [{"key": "a", "operator": "In", "values": ["2"]}]}, {"matchExpressions": [{"key": "a", "operator": "Exists"}]})
    assert cr.can_land({**tolerant, "affinity": either}, group)
    assert not cr.can_land({**tolerant, "nodeSelector": {"a": "2"}}, group)
