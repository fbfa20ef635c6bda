"""What every rule our monitoring loads does, proved with the real promtool on the rule file
each stack renders: every alert fires on its failure with the labels its annotations use, after
exactly its `for` (silent a minute before), and stays silent on a healthy stack and on one
scaled to zero on purpose; every recording rule gives the expected value on known input; every
prometheus-adapter query, filled in as the adapter fills it, gives one value per serving pod in
the unit of the HPA's target, and every KEDA query one value in the unit of its threshold.

Input series carry the names and labels the exporters emit:
- TF Serving (tensorflow/serving tensorflow_serving/util/prometheus_exporter.cc: `/` in a
  metric name becomes `:`, histograms are `_bucket{le}` / `_sum` / `_count`, label names
  kept): `:tensorflow:serving:request_count{model_name, status}` (servables/tensorflow/util.cc,
  status is `error::Code_Name`, e.g. OK, UNAVAILABLE), `:tensorflow:serving:request_latency`
  `{model_name, API, entrypoint}` in microseconds with buckets 10 * 1.8^i (util.cc),
  `:tensorflow:serving:batching_session:queuing_latency{thread_pool_name}` with buckets
  100 * 1.2^i (batching/batching_session.cc), and tensorflow/cc/saved_model/loader.cc
  `:tensorflow:cc:saved_model:load_attempt_count{model_path, status="success"|"fail"}`; the
  scrape adds namespace, pod, job, instance.
- DCGM exporter (chart dcgm-exporter 4.8.2, templates/metrics-configmap.yaml):
  `DCGM_FI_DEV_GPU_UTIL` (%), `DCGM_FI_DEV_FB_USED` / `DCGM_FI_DEV_FB_FREE` (MiB), labels gpu,
  UUID, device, modelName, Hostname; the pod owning the GPU as namespace / pod / container,
  which the ServiceMonitor (honorLabels: false) turns into exported_namespace / exported_pod /
  exported_container beside the exporter pod's own.
- kube-state-metrics v2.20.0 (internal/store/*.go): `kube_*` with the labels named in
  components/monitoring.py.
"""

from __future__ import annotations

import copy
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from components.autoscaling import CUSTOM_METRICS
from components.monitoring import LOAD_FAILURES
from components.config import AlertThresholds
from tests.support import parse, raw_stack, render_raw
from tests.support.promtool_tests import (
    MINUTES,
    alert_test,
    bucket_quantile,
    counter,
    expr_test,
    gauge,
    group,
    rule_file,
    run,
    series,
    steps,
)
from tests.test_alert_rules import STACKS, raw_for, rendering
from tools.lib.mock_engine import Rendering

Labels = dict[str, str]

# TF Serving's histogram bucket bounds (microseconds), as its exporter prints them
# (absl::StrCat of a double: six significant digits).
REQUEST_BOUNDS = [float(f"{10 * 1.8 ** i:.6g}") for i in range(33)]
QUEUEING_BOUNDS = [float(f"{100 * 1.2 ** i:.6g}") for i in range(52)]
# The batch threads' pool as tensorflow_serving/model_servers/server.cc names it (a
# batching_parameters_file may name another; our rules do not read the label).
THREAD_POOL = "model_server_batch_threads"
L4_FRAMEBUFFER_MIB = 23034
KSM = {"job": "kube-state-metrics", "instance": "10.0.2.9:8080"}
POD_HASH = "7d9f8b6c4"
POD_SUFFIXES = ("x2v5q", "k8m2p")


# --- the stack as rendered ---


@dataclass(frozen=True)
class Hpa:
    """The HorizontalPodAutoscaler kube-state-metrics reports for the serving Deployment."""

    name: str
    low: int
    high: int


@dataclass(frozen=True)
class Stack:
    name: str
    namespace: str
    deployment: str
    models: tuple[str, ...]
    thresholds: AlertThresholds
    spec: dict[str, Any]
    hpa: Hpa
    gpu_exporter_namespace: str

    @property
    def alerts(self) -> dict[str, dict[str, Any]]:
        return {r["alert"]: r for g in self.spec["groups"] for r in g["rules"] if "alert" in r}

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        return {r["record"]: r for g in self.spec["groups"] for r in g["rules"] if "record" in r}

    @property
    def pods(self) -> list[str]:
        return [f"{self.deployment}-{POD_HASH}-{s}" for s in POD_SUFFIXES]

    def node(self, pod: str) -> str:
        return f"ip-10-0-1-{self.pods.index(pod) + 10}.eu-west-1.compute.internal"


def at_limits() -> dict[str, Any]:
    """dev with every measured threshold at the largest value the config allows: each alert
    must still be able to fire (a threshold beyond what the exporter can report never is).
    restarts_per_hour keeps its default: restarts have no ceiling to reach."""
    raw = raw_stack("dev")
    limits: dict[str, Any] = {}
    for key, field in AlertThresholds.model_fields.items():
        if key == "restarts_per_hour":
            continue
        le = [m.le for m in field.metadata if hasattr(m, "le")]
        lt = [m.lt for m in field.metadata if hasattr(m, "lt")]
        limits[key] = le[0] if le else lt[0] - 0.01
    raw["monitoring"]["thresholds"] = limits
    return raw


# The stacks test_alert_rules judges, and one with the thresholds at their limits.
EXTRA_STACKS: dict[str, Callable[[], dict[str, Any]]] = {"thresholds-at-limits": at_limits}
RULE_STACKS = [*STACKS, *EXTRA_STACKS]
_extra: dict[str, Rendering] = {}


def raw_of(name: str) -> dict[str, Any]:
    return EXTRA_STACKS[name]() if name in EXTRA_STACKS else raw_for(name)


def rendered(name: str) -> Rendering:
    if name not in EXTRA_STACKS:
        return rendering(name)
    if name not in _extra:
        _extra[name] = render_raw(raw_of(name), name)
    return _extra[name]


def _objects(stack: str, kind: str) -> list[dict[str, Any]]:
    return [m for m in rendered(stack).k8s_objects() if m["kind"] == kind]


def stack_of(name: str) -> Stack:
    cfg = parse(raw_of(name), name)
    (rule,) = _objects(name, "PrometheusRule")
    deployment = next(
        d for d in _objects(name, "Deployment")
        if d["metadata"]["name"] == cfg.serving.name and d["metadata"]["namespace"] == cfg.serving.namespace
    )
    hpas, scaled = _objects(name, "HorizontalPodAutoscaler"), _objects(name, "ScaledObject")
    if hpas:
        (h,) = hpas
        hpa = Hpa(h["metadata"]["name"], h["spec"]["minReplicas"], h["spec"]["maxReplicas"])
    else:
        # KEDA makes the HPA `keda-hpa-<ScaledObject>` (KEDA v2.20.2 controllers/keda/hpa.go getHPAName), with
        # minReplicas the ScaledObject's minReplicaCount, or 1 when that is 0 (apis/keda/v1alpha1
        # scaledobject_types.go GetHPAMinReplicas, defaultHPAMinReplicas = 1): KEDA itself takes the Deployment to zero.
        (so,) = scaled
        hpa = Hpa(f"keda-hpa-{so['metadata']['name']}", max(1, so["spec"]["minReplicaCount"]), so["spec"]["maxReplicaCount"])
    dcgm = [x.inputs["namespace"] for x in rendered(name).of_type("kubernetes:helm.sh/v3:Release") if x.inputs["chart"] == "dcgm-exporter"]
    return Stack(
        name=name,
        namespace=deployment["metadata"]["namespace"],
        deployment=deployment["metadata"]["name"],
        models=tuple(sorted(cfg.serving.models)),
        thresholds=cfg.monitoring.thresholds,
        spec=rule["spec"],
        hpa=hpa,
        gpu_exporter_namespace=dcgm[0] if dcgm else "kube-system",
    )


# --- what each exporter emits, per pod ---


def tfs_labels(s: Stack, pod: str) -> Labels:
    """The target labels the ServiceMonitor's scrape adds to TF Serving's series."""
    i = s.pods.index(pod) if pod in s.pods else 9
    return {"namespace": s.namespace, "pod": pod, "job": s.deployment, "service": s.deployment,
            "container": "tf-serving", "endpoint": "http", "instance": f"10.0.1.{i + 20}:8501"}


def requests(s: Stack, pod: str, model: str, per_status: Mapping[str, float]) -> list[dict[str, str]]:
    """request_count by status, each a counter rising at the given requests per second."""
    return [
        series(":tensorflow:serving:request_count", {**tfs_labels(s, pod), "model_name": model, "status": status}, counter(rate))
        for status, rate in per_status.items()
    ]


def histogram(
    name: str, labels: Labels, bounds: list[float], cumulative: Mapping[float, float]
) -> list[dict[str, str]]:
    """A TF Serving histogram's `_bucket` counters: `cumulative` maps bucket bounds (a subset of
    the exporter's, which PromQL reads the same) to observations per second at or below."""
    out = []
    for bound in [*sorted(b for b in cumulative if b != math.inf), math.inf]:
        assert bound == math.inf or bound in bounds, bound
        rate = cumulative.get(bound, max(cumulative.values()))
        le = "+Inf" if bound == math.inf else f"{bound:.6g}"
        out.append(series(f"{name}_bucket", {**labels, "le": le}, counter(rate)))
    return out


def all_at(bounds: list[float], below_us: float | None = None, above_us: float | None = None) -> tuple[float, float]:
    """The bucket (lower, upper] just below `below_us` (every observation under it) or just
    above `above_us` (every observation over it; upper may be +Inf)."""
    if below_us is not None:
        upper = max(b for b in bounds if b < below_us)
        return max([0.0, *(b for b in bounds if b < upper)]), upper
    assert above_us is not None
    # Above the highest bound, observations land in +Inf, which histogram_quantile reads as
    # the highest finite bound: a threshold at or above that can never be crossed.
    higher = [b for b in bounds if b >= above_us]
    assert higher, f"{above_us} us is beyond the exporter's histogram (up to {bounds[-1]} us): never crossed"
    return higher[0], ([*higher[1:], math.inf])[0]


def latency(s: Stack, pod: str, model: str, bucket: tuple[float, float], rate: float) -> list[dict[str, str]]:
    lower, upper = bucket
    labels = {**tfs_labels(s, pod), "model_name": model, "API": "predict", "entrypoint": "REST"}
    cumulative = {upper: rate, **({lower: 0.0} if lower else {})}
    return histogram(":tensorflow:serving:request_latency", labels, REQUEST_BOUNDS, cumulative)


def queueing(s: Stack, pod: str, bucket: tuple[float, float], rate: float) -> list[dict[str, str]]:
    lower, upper = bucket
    labels = {**tfs_labels(s, pod), "thread_pool_name": THREAD_POOL}
    cumulative = {upper: rate, **({lower: 0.0} if lower else {})}
    return histogram(":tensorflow:serving:batching_session:queuing_latency", labels, QUEUEING_BOUNDS, cumulative)


def loads(s: Stack, pod: str, model: str, status: str, values: str) -> dict[str, str]:
    path = f"/models/{model}/1"
    return series(":tensorflow:cc:saved_model:load_attempt_count", {**tfs_labels(s, pod), "model_path": path, "status": status}, values)


def gpu_labels(s: Stack, pod: str) -> Labels:
    i = s.pods.index(pod) if pod in s.pods else 9
    return {
        "gpu": "0", "UUID": f"GPU-5f1e2d3c-0000-4000-8000-00000000000{i}", "device": "nvidia0",
        "modelName": "NVIDIA L4", "Hostname": s.node(pod) if pod in s.pods else "ip-10-0-1-99.eu-west-1.compute.internal",
        "DCGM_FI_DRIVER_VERSION": "570.133.20",
        "exported_namespace": s.namespace, "exported_pod": pod, "exported_container": "tf-serving",
        "namespace": s.gpu_exporter_namespace, "pod": f"dcgm-exporter-{POD_SUFFIXES[i % 2]}",
        "container": "exporter", "job": "dcgm-exporter", "instance": f"10.0.1.{i + 40}:9400",
    }


def gpu(s: Stack, pod: str, util: float, used_mib: float) -> list[dict[str, str]]:
    labels = gpu_labels(s, pod)
    return [
        series("DCGM_FI_DEV_GPU_UTIL", labels, gauge(util)),
        series("DCGM_FI_DEV_FB_USED", labels, gauge(used_mib)),
        series("DCGM_FI_DEV_FB_FREE", labels, gauge(L4_FRAMEBUFFER_MIB - used_mib)),
    ]


def pod_ready(s: Stack, pod: str, ready: bool) -> list[dict[str, str]]:
    labels = {**KSM, "namespace": s.namespace, "pod": pod, "uid": f"uid-{pod}"}
    return [series("kube_pod_status_ready", {**labels, "condition": c}, gauge(v))
            for c, v in (("true", int(ready)), ("false", int(not ready)), ("unknown", 0))]


def restarts(s: Stack, pod: str, values: str) -> dict[str, str]:
    labels = {**KSM, "namespace": s.namespace, "pod": pod, "uid": f"uid-{pod}", "container": "tf-serving"}
    return series("kube_pod_container_status_restarts_total", labels, values)


def deployment(s: Stack, wanted: int, available: int) -> list[dict[str, str]]:
    labels = {**KSM, "namespace": s.namespace, "deployment": s.deployment}
    return [series("kube_deployment_spec_replicas", labels, gauge(wanted)),
            series("kube_deployment_status_replicas_available", labels, gauge(available))]


def hpa(s: Stack, current: int) -> list[dict[str, str]]:
    labels = {**KSM, "namespace": s.namespace, "horizontalpodautoscaler": s.hpa.name}
    return [series("kube_horizontalpodautoscaler_spec_min_replicas", labels, gauge(s.hpa.low)),
            series("kube_horizontalpodautoscaler_spec_max_replicas", labels, gauge(s.hpa.high)),
            series("kube_horizontalpodautoscaler_status_current_replicas", labels, gauge(current)),
            series("kube_horizontalpodautoscaler_status_desired_replicas", labels, gauge(current))]


def node_condition_labels(node: str, status: str) -> Labels:
    return {**KSM, "node": node, "condition": "Ready", "status": status}


def node(node_name: str, ready: bool, gpus: int) -> list[dict[str, str]]:
    out = [series("kube_node_status_condition", node_condition_labels(node_name, st), gauge(v))
           for st, v in (("true", int(ready)), ("false", int(not ready)), ("unknown", 0))]
    if gpus:
        out.append(series("kube_node_status_capacity", {**KSM, "node": node_name, "resource": "nvidia_com_gpu", "unit": "integer"}, gauge(gpus)))
    return out


SYSTEM_NODE = "ip-10-0-0-5.eu-west-1.compute.internal"


# --- a healthy stack, and its failures ---


def healthy_request_mix(t: AlertThresholds) -> dict[str, float]:
    """Per pod and model: 10 requests/s OK, 5/s refused as the caller's fault (never an
    error of ours), and server errors at half the alerting ratio."""
    ok, client = 10.0, 5.0
    server = (ok + client) * (t.error_ratio / 2) / (1 - t.error_ratio / 2)
    return {"OK": ok, "INVALID_ARGUMENT": client, "UNAVAILABLE": server}


Parts = dict[str, list[dict[str, str]]]


def healthy(s: Stack) -> Parts:
    """Every exporter's series of a stack doing well, by part (a failure replaces one part)."""
    t = s.thresholds
    fast = all_at(REQUEST_BOUNDS, below_us=t.latency_p99_ms * 1000 / 2)
    quick = all_at(QUEUEING_BOUNDS, below_us=t.queueing_p99_ms * 1000 / 2)
    assert t.gpu_utilisation_percent < 100 and t.gpu_memory_percent < 100, "an alert at 100 % can never fire"
    parts: Parts = {
        "deployment": deployment(s, 2, 2),
        "ready": [x for p in s.pods for x in pod_ready(s, p, True)],
        "requests": [x for p in s.pods for m in s.models for x in requests(s, p, m, healthy_request_mix(t))],
        "latency": [x for p in s.pods for m in s.models for x in latency(s, p, m, fast, 15)],
        "queueing": [x for p in s.pods for x in queueing(s, p, quick, 30)],
        "loads": [loads(s, p, m, "success", gauge(1)) for p in s.pods for m in s.models],
        "gpu": [x for p in s.pods for x in gpu(s, p, t.gpu_utilisation_percent / 2, L4_FRAMEBUFFER_MIB * t.gpu_memory_percent / 200)],
        "restarts": [restarts(s, p, gauge(0)) for p in s.pods],
        "hpa": hpa(s, s.hpa.low),
        "nodes": [x for p in s.pods for x in node(s.node(p), True, 1)] + node(SYSTEM_NODE, True, 0),
    }
    return parts


def scaled_to_zero(s: Stack) -> list[dict[str, str]]:
    """Scaled to zero on purpose: the Deployment wants none, no serving pod, no GPU node
    (cluster-autoscaler removed them); only kube-state-metrics' series and the system node."""
    return [*deployment(s, 0, 0), *hpa(s, 0), *node(SYSTEM_NODE, True, 0)]


def flat(parts: Parts) -> list[dict[str, str]]:
    return [x for part in parts.values() for x in part]


@dataclass(frozen=True)
class Failure:
    """One failure: the parts of the healthy series it replaces, the minute its expression
    first holds, and the label sets it must fire with (severity added from the rule)."""

    description: str
    replace: Callable[[Stack], Parts]
    holds_from: float
    firing: Callable[[Stack], list[Labels]]
    # Minutes after which it must be silent again (alerts on a window, without `for`).
    resolved_by: float | None = None
    # Only the replaced series, sampled every this many seconds (default: the healthy stack's
    # series with the replaced ones, every STEP_SECONDS).
    alone_every: int | None = None


def _down(s: Stack) -> Parts:
    return {"deployment": deployment(s, 2, 0), "ready": [x for p in s.pods for x in pod_ready(s, p, False)]}


def _not_ready(s: Stack) -> Parts:
    return {"deployment": deployment(s, 2, 1),
            "ready": [*pod_ready(s, s.pods[0], True), *pod_ready(s, s.pods[1], False)]}


LOAD_FAILED_AT = 30


def _load_failed(s: Stack) -> Parts:
    """A new version that cannot load on one pod: the `fail` cell appears at the first attempt
    (value 1) and TF Serving retries it 5 times a minute apart (model_servers/main.cc:
    max_num_load_retries 5, load_retry_interval_micros 1 minute)."""
    attempts = [(0, None), *((LOAD_FAILED_AT + i, float(i + 1)) for i in range(6))]
    failed = loads(s, s.pods[1], s.models[0], "fail", steps(attempts))
    return {"loads": [*healthy(s)["loads"], failed]}


def _errors(s: Stack) -> Parts:
    t = s.thresholds
    ok, client = 10.0, 5.0
    # Halfway between the threshold and every request failing.
    failing = (1 + t.error_ratio) / 2
    server = (ok + client) * failing / (1 - failing)
    mix = {"OK": ok, "INVALID_ARGUMENT": client, "UNAVAILABLE": server}
    return {"requests": [x for p in s.pods for m in s.models for x in requests(s, p, m, mix if m == s.models[0] else healthy_request_mix(t))]}


def _slow(s: Stack) -> Parts:
    fast = all_at(REQUEST_BOUNDS, below_us=s.thresholds.latency_p99_ms * 1000 / 2)
    slow = all_at(REQUEST_BOUNDS, above_us=s.thresholds.latency_p99_ms * 1000)
    return {"latency": [x for p in s.pods for m in s.models for x in latency(s, p, m, slow if m == s.models[0] else fast, 15)]}


def _queueing(s: Stack) -> Parts:
    slow = all_at(QUEUEING_BOUNDS, above_us=s.thresholds.queueing_p99_ms * 1000)
    return {"queueing": [x for p in s.pods for x in queueing(s, p, slow, 30)]}


def _gpu(s: Stack, util: float, used_ratio: float) -> Parts:
    t = s.thresholds
    normal = gpu(s, s.pods[0], t.gpu_utilisation_percent / 2, L4_FRAMEBUFFER_MIB * t.gpu_memory_percent / 200)
    return {"gpu": [*normal, *gpu(s, s.pods[1], util, round(L4_FRAMEBUFFER_MIB * used_ratio))]}


def _saturated(s: Stack) -> Parts:
    t = s.thresholds
    return _gpu(s, 100, t.gpu_memory_percent / 200)


def _memory(s: Stack) -> Parts:
    t = s.thresholds
    return _gpu(s, t.gpu_utilisation_percent / 2, (1 + t.gpu_memory_percent / 100) / 2)


# Scrapes of kube-state-metrics that do not fall on whole minutes, as in a real Prometheus:
# increase() then extrapolates to the window's edges.
UNALIGNED_STEP = 14
OLD_RESTART = 2


def _restarting(s: Stack) -> Parts:
    """One restart long ago, then one every 5 minutes from minute 60: the hour holds exactly
    the threshold's count just before restart number threshold + 1, and one more just after."""
    n = s.thresholds.restarts_per_hour
    assert 60 + 5 * n + 1 <= MINUTES and 5 * n > OLD_RESTART + 1, "the case needs the restarts within the test's span"
    counts = [(0, 0.0), (OLD_RESTART, 1.0), *((60 + 5 * i, float(2 + i)) for i in range(n + 1))]
    return {"restarts": [restarts(s, s.pods[0], steps([(0, 0)], UNALIGNED_STEP)),
                         restarts(s, s.pods[1], steps(counts, UNALIGNED_STEP))]}


def _at_max(s: Stack) -> Parts:
    return {"hpa": hpa(s, s.hpa.high)}


def _gpu_node_lost(s: Stack) -> Parts:
    return {"nodes": [*node(s.node(s.pods[0]), True, 1), *node(s.node(s.pods[1]), False, 1), *node(SYSTEM_NODE, True, 0)],
            "deployment": deployment(s, 2, 1)}


def _gpu_labels_without_name(s: Stack) -> Labels:
    return gpu_labels(s, s.pods[1])


FAILURES: dict[str, Failure] = {
    "TFServingDown": Failure(
        "no replica available while two are wanted", _down, 0,
        lambda s: [{"namespace": s.namespace, "deployment": s.deployment}]),
    "TFServingModelNotAvailable": Failure(
        "one pod never gets its models AVAILABLE", _not_ready, 0,
        lambda s: [{"namespace": s.namespace, "deployment": s.deployment}]),
    "TFServingModelLoadFailed": Failure(
        "a model version fails to load on one pod", _load_failed, LOAD_FAILED_AT,
        lambda s: [{"namespace": s.namespace, "pod": s.pods[1], "model_path": f"/models/{s.models[0]}/1"}],
        resolved_by=LOAD_FAILED_AT + 5 + 15 + 2),
    "TFServingHighErrorRatio": Failure(
        "one model fails most requests server-side", _errors, 1,
        lambda s: [{"namespace": s.namespace, "model_name": s.models[0]}]),
    "TFServingLatencySLO": Failure(
        "one model answers slower than its SLO", _slow, 1,
        lambda s: [{"namespace": s.namespace, "model_name": s.models[0]}]),
    "TFServingBatchQueueing": Failure(
        "requests wait for a batch longer than allowed", _queueing, 1,
        lambda s: [{"namespace": s.namespace}]),
    "GPUSaturated": Failure(
        "one GPU at 100 %", _saturated, 0,
        lambda s: [{"Hostname": s.node(s.pods[1]), "gpu": "0"}]),
    "GPUMemoryNearlyFull": Failure(
        "one GPU's framebuffer nearly full", _memory, 0,
        lambda s: [_gpu_labels_without_name(s)]),
    "TFServingPodsRestarting": Failure(
        "one pod restarting every 5 minutes", _restarting, 0,
        lambda s: [{"namespace": s.namespace, "pod": s.pods[1]}], alone_every=UNALIGNED_STEP),
    "TFServingAutoscalerAtMax": Failure(
        "the autoscaler at its maximum", _at_max, 0,
        lambda s: [{"namespace": s.namespace, "horizontalpodautoscaler": s.hpa.name}]),
    "GPUNodeNotReady": Failure(
        "a GPU node NotReady while serving wants replicas", _gpu_node_lost, 0,
        lambda s: [node_condition_labels(s.node(s.pods[1]), "true")]),
}


def _minutes(duration: str | None) -> int:
    if not duration:
        return 0
    return int(duration[:-1]) * {"s": 0, "m": 1, "h": 60}[duration[-1]]


def annotation_labels(rule: Mapping[str, Any]) -> set[str]:
    text = " ".join(str(v) for v in rule.get("annotations", {}).values())
    return set(re.findall(r"\$labels\.([A-Za-z_][A-Za-z0-9_]*)", text))


def alert_checks(s: Stack, name: str, rule: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Silent a minute before the failure has lasted `for`, firing from then on with its
    labels (and silent again once a windowed alert's window has passed)."""
    failure = FAILURES[name]
    firing = [{**labels, **rule["labels"]} for labels in failure.firing(s)]
    if name == "TFServingAutoscalerAtMax" and s.hpa.low == s.hpa.high:
        # A fixed-size autoscaler is always at its maximum, by configuration: never pinned.
        firing = []
    if name == "TFServingPodsRestarting":
        # Silent with exactly the threshold's restarts in the hour, firing with one more.
        last = 60 + 5 * s.thresholds.restarts_per_hour
        checks = [alert_test(name, last - 1), alert_test(name, last + 1, firing)]
    else:
        fires_at = failure.holds_from + _minutes(rule.get("for"))
        checks = [alert_test(name, fires_at - 1), alert_test(name, fires_at, firing)]
    if failure.resolved_by is not None:
        checks.append(alert_test(name, failure.resolved_by))
    return checks


def alert_groups(s: Stack) -> list[dict[str, Any]]:
    """The healthy and scaled-to-zero stacks (every alert silent), then the failures, as few
    test groups as keep them apart: failures that replace different series share a group
    (promtool's cost is per group and evaluation step), each check naming its own alert."""
    alerts = s.alerts
    # Past every `for` (15m) and `avg_over_time` window (15m) together.
    quiet_times = [5, 20, 45]
    groups = [
        group("healthy: every alert silent", flat(healthy(s)), [alert_test(a, t) for a in alerts for t in quiet_times]),
        group("scaled to zero on purpose: every alert silent", scaled_to_zero(s), [alert_test(a, t) for a in alerts for t in quiet_times]),
    ]
    shared: list[tuple[list[str], Parts]] = []
    for name, rule in alerts.items():
        failure = FAILURES[name]
        parts = failure.replace(s)
        if failure.alone_every:
            groups.append(group(f"{name}: {failure.description}", flat(parts), alert_checks(s, name, rule), step_seconds=failure.alone_every))
            continue
        for names, merged in shared:
            if all(merged.get(k, v) == v for k, v in parts.items()):
                names.append(name)
                merged.update(parts)
                break
        else:
            shared.append(([name], dict(parts)))
    for names, merged in shared:
        title = "; ".join(f"{n}: {FAILURES[n].description}" for n in names)
        checks = [c for n in names for c in alert_checks(s, n, alerts[n])]
        groups.append(group(title, flat({**healthy(s), **merged}), checks))
    return groups


@pytest.fixture(scope="module", params=RULE_STACKS)
def stack(request: pytest.FixtureRequest) -> Stack:
    return stack_of(request.param)


# --- recording rules: known input, known output ---

# Per pod: requests per second by status (integers, so every rate is exact), and cumulative
# observations per second of the latency and queueing histograms at chosen bucket bounds.
RECORD_REQUESTS = [
    {"OK": 10.0, "INVALID_ARGUMENT": 4.0, "UNAVAILABLE": 1.0, "INTERNAL": 1.0},
    {"OK": 20.0, "INVALID_ARGUMENT": 4.0, "UNAVAILABLE": 1.0, "DEADLINE_EXCEEDED": 1.0},
]
SERVER_ERROR_STATUSES = {"UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"}
B, Q = REQUEST_BOUNDS, QUEUEING_BOUNDS
RECORD_LATENCY = [{B[10]: 4.0, B[11]: 12.0, B[12]: 16.0}, {B[10]: 0.0, B[11]: 8.0, B[12]: 16.0, math.inf: 20.0}]
RECORD_QUEUEING = [{Q[20]: 10.0, Q[21]: 20.0}, {Q[20]: 0.0, Q[21]: 10.0, Q[22]: 20.0}]
RECORD_FB_USED = [5759.0, 11517.0]
# Past the longest window (5m); a later time only costs promtool evaluations.
RECORD_AT = 10


def _cumulative(buckets: Mapping[float, float]) -> dict[float, float]:
    return {**buckets, math.inf: buckets.get(math.inf, max(buckets.values()))}


def recording_input(s: Stack) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for pod, mix, lat, queue, used in zip(s.pods, RECORD_REQUESTS, RECORD_LATENCY, RECORD_QUEUEING, RECORD_FB_USED):
        for model in s.models:
            out += requests(s, pod, model, mix)
            labels = {**tfs_labels(s, pod), "model_name": model, "API": "predict", "entrypoint": "REST"}
            out += histogram(":tensorflow:serving:request_latency", labels, REQUEST_BOUNDS, lat)
        out += histogram(":tensorflow:serving:batching_session:queuing_latency", {**tfs_labels(s, pod), "thread_pool_name": THREAD_POOL}, QUEUEING_BOUNDS, queue)
        out += gpu(s, pod, 50, used)
    return out


def quantiles(by: Iterable[Labels], buckets: Iterable[Mapping[float, float]], q: float) -> list[tuple[Labels, float]]:
    """histogram_quantile(q, sum by (<labels>) (...)) / 1e6 over the given per-series buckets."""
    summed: dict[tuple[tuple[str, str], ...], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, bucket in zip(by, buckets):
        for bound, count in _cumulative(bucket).items():
            summed[tuple(sorted(labels.items()))][bound] += count
    return [(dict(k), bucket_quantile(q, sorted(v.items())) / 1e6) for k, v in summed.items()]


def recording_expectations(s: Stack) -> dict[str, list[tuple[Labels, float]]]:
    ns = s.namespace
    per_model = {m: sum(sum(mix.values()) for mix in RECORD_REQUESTS) for m in s.models}
    errors = {m: sum(v for mix in RECORD_REQUESTS for k, v in mix.items() if k in SERVER_ERROR_STATUSES) for m in s.models}
    pods_models = [(p, m) for p in s.pods for m in s.models]
    lat_of = {p: lat for p, lat in zip(s.pods, RECORD_LATENCY)}
    out: dict[str, list[tuple[Labels, float]]] = {
        "tfserving:requests:rate1m": [({"namespace": ns, "model_name": m}, per_model[m]) for m in s.models],
        "tfserving:pod_requests:rate1m": [({"namespace": ns, "pod": p}, len(s.models) * sum(mix.values())) for p, mix in zip(s.pods, RECORD_REQUESTS)],
        "tfserving:errors:ratio_rate5m": [({"namespace": ns, "model_name": m}, errors[m] / per_model[m]) for m in s.models],
        "tfserving:batch_queueing_seconds:p99": quantiles([{"namespace": ns}] * 2, RECORD_QUEUEING, 0.99),
        "tfserving:pod_batch_queueing_seconds:p99": quantiles([{"namespace": ns, "pod": p} for p in s.pods], RECORD_QUEUEING, 0.99),
        "tfserving:gpu_memory_used:ratio": [(gpu_labels(s, p), used / L4_FRAMEBUFFER_MIB) for p, used in zip(s.pods, RECORD_FB_USED)],
    }
    for q in ("50", "95", "99"):
        out[f"tfserving:request_latency_seconds:p{q}"] = quantiles(
            [{"namespace": ns, "model_name": m} for _, m in pods_models], [lat_of[p] for p, _ in pods_models], float(f"0.{q}"))
        out[f"tfserving:pod_request_latency_seconds:p{q}"] = quantiles(
            [{"namespace": ns, "pod": p} for p, _ in pods_models], [lat_of[p] for p, _ in pods_models], float(f"0.{q}"))
    return out


def recording_group(s: Stack) -> dict[str, Any]:
    expected = recording_expectations(s)
    assert set(expected) == set(s.records), "recording rules without an expected output (or the other way round)"
    return group(
        "recording rules on known input", recording_input(s),
        exprs=[expr_test(name, RECORD_AT, samples, name=name) for name, samples in expected.items()],
    )


# --- the autoscalers' queries: prometheus-adapter's as the adapter fills them, KEDA's ---

# Beside the stacks above (prod's HPA reads three metrics, dev's KEDA one), each engine with
# every custom metric, so every definition in CUSTOM_METRICS is evaluated.
EVERY_METRIC = {"requests_per_second": 20, "latency_p95": 150, "latency_p99": 250, "batch_queueing_p99": 40, "gpu_utilisation": 70}
_every: dict[str, Rendering] = {}


def every_metric(engine: str) -> Rendering:
    if engine not in _every:
        raw = raw_stack("prod")
        raw["autoscaling"] = {"engine": engine, "min_replicas": 2, "max_replicas": 6, "metrics": dict(EVERY_METRIC)}
        _every[engine] = render_raw(raw, f"{engine}-every-metric")
    return _every[engine]


def autoscaling_rendering(case: str) -> Rendering:
    return every_metric(case.split("-")[0]) if case.endswith("-every-metric") else rendered(case)


# Past the queries' windows (2m).
QUERY_AT = 5


def quantity_value(q: str) -> float:
    """A Kubernetes quantity as the HPA reads it (only the forms `quantity()` writes)."""
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def metric_kind(name: str) -> str:
    return next(kind for kind, m in CUSTOM_METRICS.items() if m.name == name)


def kind_of_trigger(name: str) -> str:
    return next(kind for kind in CUSTOM_METRICS if kind.replace("_", "-") == name)


def loaded(kind: str, target: float) -> float:
    """The load a pod is put under for `kind`: twice the target (utilisation: halfway to 100 %)."""
    return (100 + target) / 2 if kind == "gpu_utilisation" else 2 * target


def pod_series(s: Stack, kind: str, pod: str, value: float) -> list[dict[str, str]]:
    """The exporter's series that make `kind` read `value` for `pod` (seconds for latencies),
    with the histogram's observations all in the bucket just above it."""
    if kind == "requests_per_second":
        # Every status counts as load: the caller's mistakes are requests too.
        return requests(s, pod, s.models[0], {"OK": value - 1, "INVALID_ARGUMENT": 1})
    if kind in ("latency_p95", "latency_p99"):
        return latency(s, pod, s.models[0], all_at(REQUEST_BOUNDS, above_us=value * 1e6), 15)
    if kind == "batch_queueing_p99":
        return queueing(s, pod, all_at(QUEUEING_BOUNDS, above_us=value * 1e6), 30)
    assert kind == "gpu_utilisation", kind
    return gpu(s, pod, value, 1000)


def expected_value(kind: str, value: float) -> float:
    """What PromQL computes from `pod_series(kind, pod, value)` for one pod."""
    if kind in ("latency_p95", "latency_p99", "batch_queueing_p99"):
        bounds = REQUEST_BOUNDS if kind != "batch_queueing_p99" else QUEUEING_BOUNDS
        lower, upper = all_at(bounds, above_us=value * 1e6)
        q = 0.95 if kind == "latency_p95" else 0.99
        return bucket_quantile(q, [(lower, 0.0), (upper, 1.0), (math.inf, 1.0)]) / 1e6
    return value


def others(s: Stack) -> list[str]:
    """Pods in the namespace that are not the Deployment's: its canary's, and another
    Deployment's whose name starts with ours."""
    return [f"{s.deployment}-canary-{POD_HASH}-x2v5q", f"{s.deployment}-batch-{POD_HASH}-x2v5q"]


def adapter_groups(case: str) -> list[dict[str, Any]]:
    r = autoscaling_rendering(case)
    s = stack_of_rendering(case, r)
    releases = [x.inputs for x in r.of_type("kubernetes:helm.sh/v3:Release") if x.inputs["chart"] == "prometheus-adapter"]
    if not releases:
        return []
    (hpa_obj,) = [m for m in r.k8s_objects() if m["kind"] == "HorizontalPodAutoscaler"]
    targets = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa_obj["spec"]["metrics"] if m["type"] == "Pods"}
    groups = []
    for rule in releases[0]["values"]["rules"]["custom"]:
        name = rule["name"]["as"]
        kind = metric_kind(name)
        target = targets[name]
        assert target["type"] == "AverageValue", name
        goal = quantity_value(target["averageValue"])
        by_resource = {v["resource"]: label for label, v in rule["resources"]["overrides"].items()}
        ns_label, pod_label = by_resource["namespace"], by_resource["pod"]
        # prometheus-adapter pkg/naming/metrics_query.go Build: Series is the series name the
        # seriesQuery found, LabelMatchers the namespace (LabelEq) then the pods' names
        # (LabelMatches `a|b`, pkg/client/helpers.go), GroupBy the pod's label.
        query = (
            rule["metricsQuery"]
            .replace("<<.Series>>", rule["seriesQuery"].split("{", 1)[0])
            .replace("<<.LabelMatchers>>", f'{ns_label}="{s.namespace}",{pod_label}=~"{"|".join(s.pods)}"')
            .replace("<<.GroupBy>>", pod_label)
        )
        loads_ = {pod: loaded(kind, goal) * (1 + i) for i, pod in enumerate(s.pods)}
        series_in = [x for pod, v in loads_.items() for x in pod_series(s, kind, pod, v)]
        series_in += [x for pod in others(s) for x in pod_series(s, kind, pod, loaded(kind, goal) * 3)]
        expected = [({pod_label: pod}, expected_value(kind, v)) for pod, v in loads_.items()]
        for _, value in expected:
            # Same unit as the target: the HPA sees the load it was put under, not 10^3 or 10^-6 of it.
            assert 1 < value / goal < 10, (name, value, goal)
        groups.append(group(f"adapter {name}", series_in, exprs=[expr_test(query, QUERY_AT, expected)]))
    return groups


def keda_groups(case: str) -> list[dict[str, Any]]:
    r = autoscaling_rendering(case)
    s = stack_of_rendering(case, r)
    groups = []
    for so in (m for m in r.k8s_objects() if m["kind"] == "ScaledObject"):
        for trigger in (t for t in so["spec"]["triggers"] if t["type"] == "prometheus"):
            kind = kind_of_trigger(trigger["name"])
            threshold = float(trigger["metadata"]["threshold"])
            per_pod = loaded(kind, threshold)
            series_in = [x for pod in s.pods for x in pod_series(s, kind, pod, per_pod)]
            series_in += [x for pod in others(s) for x in pod_series(s, kind, pod, per_pod * 3)]
            one_pod = expected_value(kind, per_pod)
            if trigger["metricType"] == "AverageValue":
                # KEDA serves the query's value as an External metric; with an AverageValue
                # target the HPA divides it by the current replicas (kubernetes
                # pkg/controller/podautoscaler/replica_calculator.go
                # GetExternalPerPodMetricReplicas), so the threshold is per pod.
                value = one_pod * len(s.pods)
                assert 1 < value / len(s.pods) / threshold < 10, trigger
            else:
                value = one_pod
                assert 1 < value / threshold < 10, trigger
            groups.append(group(f"keda {trigger['name']}", series_in, exprs=[expr_test(trigger["metadata"]["query"], QUERY_AT, [({}, value)])]))
    return groups


def stack_of_rendering(case: str, r: Rendering) -> Stack:
    if case in RULE_STACKS:
        return stack_of(case)
    (so_or_hpa,) = [m for m in r.k8s_objects() if m["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    (dep,) = [m for m in r.k8s_objects() if m["kind"] == "Deployment" and m["metadata"]["name"] == so_or_hpa["spec"]["scaleTargetRef"]["name"]]
    cfg = parse(raw_stack("prod"), case)
    return Stack(case, dep["metadata"]["namespace"], dep["metadata"]["name"], tuple(sorted(cfg.serving.models)),
                 cfg.monitoring.thresholds, {"groups": []}, Hpa("", 0, 0), "nvidia")


def custom_metrics(case: str) -> list[str]:
    raw = raw_of(case) if case in RULE_STACKS else raw_stack("prod")
    return list(EVERY_METRIC) if case.endswith("-every-metric") else [k for k in parse(raw).autoscaling.metrics if k != "cpu"]


# --- the proofs ---


def test_every_rule_and_query_has_a_case(stack: Stack) -> None:
    """A new alert, recording rule or autoscaler metric without a case here fails this test;
    every label an alert's annotations read is one its failure case expects it to carry."""
    assert set(stack.alerts) == set(FAILURES), "alerts without a failure case (or cases without an alert)"
    for name, rule in stack.alerts.items():
        expected = set().union(*map(set, FAILURES[name].firing(stack)))
        assert annotation_labels(rule) <= expected, (name, annotation_labels(rule) - expected)
        assert set(rule["labels"]) == {"severity"}, name
    assert set(recording_expectations(stack)) == set(stack.records)
    assert len(adapter_groups(stack.name) + keda_groups(stack.name)) == len(custom_metrics(stack.name))


def test_rules_do_what_they_say(stack: Stack, tmp_path: Path) -> None:
    """One promtool run per stack, on the rule file it renders: the alert cases, the
    recording rules on known input, and its autoscaler's queries."""
    groups = [*alert_groups(stack), recording_group(stack), *adapter_groups(stack.name), *keda_groups(stack.name)]
    done = run(tmp_path, rule_file(stack.spec), groups)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("engine", ["hpa", "keda"])
def test_every_custom_metric_reads_each_pod_in_the_targets_unit(engine: str, tmp_path: Path) -> None:
    """prometheus-adapter: one value per serving pod (none for the canary's or a neighbour's
    pods), in the unit of the HPA's target; KEDA: one value for the Deployment, in the unit
    of the trigger's threshold; for every metric CUSTOM_METRICS defines."""
    case = f"{engine}-every-metric"
    groups = adapter_groups(case) + keda_groups(case)
    assert len(groups) == len(custom_metrics(case)) == len(CUSTOM_METRICS)
    done = run(tmp_path, {"groups": []}, groups)
    assert done.returncode == 0, done.stdout + done.stderr


# --- each checker can fail ---


def _failed(done: Any) -> str:
    assert done.returncode != 0, done.stdout
    return str(done.stdout + done.stderr)


def test_each_check_catches_a_wrong_rule_or_expectation(tmp_path: Path) -> None:
    s = stack_of("dev")
    rules = rule_file(s.spec)
    # The failure cases only (the healthy ones expect silence, which a wrong label cannot break).
    alerts = alert_groups(s)[2:]

    def cases_of(*names: str) -> list[dict[str, Any]]:
        return [g for g in alerts if any(f"{n}:" in g["name"] for n in names)]

    # A wrong label on every firing expectation: every alert's case reports it.
    wrong = copy.deepcopy(alerts)
    for g in wrong:
        for test in g["alert_rule_test"]:
            for exp in test["exp_alerts"]:
                exp["exp_labels"]["severity"] = "page"
    (tmp_path / "labels").mkdir()
    text = _failed(run(tmp_path / "labels", rules, wrong))
    for name in s.alerts:
        assert f"alertname: {name}," in text, name

    # `for` a minute shorter or longer: the alert fires a minute early, resp. late.
    for shift, folder in ((-1, "early"), (1, "late")):
        moved = copy.deepcopy(rules)
        for g in moved["groups"]:
            for rule in g["rules"]:
                if rule.get("for"):
                    rule["for"] = f"{_minutes(rule['for']) + shift}m"
        (tmp_path / folder).mkdir()
        text = _failed(run(tmp_path / folder, moved, cases_of(*(a for a, r in s.alerts.items() if r.get("for")))))
        for name, rule in s.alerts.items():
            if rule.get("for"):
                assert f"alertname: {name}," in text, (folder, name)

    # The rules before these tests: a first failed load (a new `fail` series) was invisible
    # to increase(), and exactly `restarts_per_hour` restarts read as more than that.
    old = copy.deepcopy(rules)
    for g in old["groups"]:
        for rule in g["rules"]:
            if rule.get("alert") == "TFServingModelLoadFailed":
                rule["expr"] = f"sum by (namespace, pod, model_path) (increase({LOAD_FAILURES}[15m])) > 0"
            if rule.get("alert") == "TFServingPodsRestarting":
                rule["expr"] = rule["expr"].replace("round(", "(", 1)
    (tmp_path / "old").mkdir()
    text = _failed(run(tmp_path / "old", old, cases_of("TFServingModelLoadFailed", "TFServingPodsRestarting")))
    assert "alertname: TFServingModelLoadFailed," in text and "alertname: TFServingPodsRestarting," in text

    # Every alert also firing with no input at all: the healthy and scaled-to-zero cases
    # report each one.
    always = copy.deepcopy(rules)
    for g in always["groups"]:
        for rule in g["rules"]:
            if "alert" in rule:
                rule["expr"] = f"({rule['expr']}) or on () vector(1)"
                rule.pop("for", None)
    (tmp_path / "always").mkdir()
    text = _failed(run(tmp_path / "always", always, alert_groups(s)[:2]))
    for name in s.alerts:
        assert text.count(f"alertname: {name},") >= 2, name

    # A recording rule's expected value off by one part in a million.
    recorded = recording_group(s)
    for test in recorded["promql_expr_test"]:
        for sample in test["exp_samples"]:
            sample["value"] *= 1.000001
    (tmp_path / "records").mkdir()
    text = _failed(run(tmp_path / "records", rules, [recorded]))
    for name in s.records:
        assert f'expr: "{name}"' in text, name


def test_autoscaler_checks_catch_a_unit_mismatch(tmp_path: Path) -> None:
    """Expecting milliseconds (or per-mille) where the query gives seconds (or units) fails
    every adapter and KEDA check."""
    groups = adapter_groups("hpa-every-metric") + keda_groups("keda-every-metric")
    for g in groups:
        for test in g["promql_expr_test"]:
            for sample in test["exp_samples"]:
                sample["value"] *= 1000
    text = _failed(run(tmp_path, {"groups": []}, groups))
    assert text.count("expr: ") == len(groups), text


def test_the_largest_thresholds_allowed_can_still_be_crossed(tmp_path: Path) -> None:
    """At the config's upper limits, the measured alerts fire on the most the exporters can
    report (every batch waiting past the queueing histogram's top bucket, a GPU at 100 % with
    its framebuffer full); at the limits the config had before (600 s, 100 %, 100 %) the same
    input leaves them silent."""
    s = stack_of("thresholds-at-limits")
    rules = rule_file(s.spec)
    top = all_at(QUEUEING_BOUNDS, above_us=QUEUEING_BOUNDS[-1])
    worst = {**healthy(s), "queueing": [x for p in s.pods for x in queueing(s, p, top, 30)], **_gpu(s, 100, 1.0)}
    names = ["TFServingBatchQueueing", "GPUSaturated", "GPUMemoryNearlyFull"]
    checks = [c for n in names for c in alert_checks(s, n, s.alerts[n])]
    (tmp_path / "now").mkdir()
    done = run(tmp_path / "now", rules, [group("the most the exporters report", flat(worst), checks)])
    assert done.returncode == 0, done.stdout + done.stderr

    t = s.thresholds
    before = {
        "TFServingBatchQueueing": (f"> {t.queueing_p99_ms / 1000}", f"> {600_000 / 1000}"),
        "GPUSaturated": (f"> {t.gpu_utilisation_percent}", "> 100"),
        "GPUMemoryNearlyFull": (f"> {t.gpu_memory_percent / 100}", f"> {100 / 100}"),
    }
    old = copy.deepcopy(rules)
    for g in old["groups"]:
        for rule in g["rules"]:
            if rule.get("alert") in before:
                now, then = before[rule["alert"]]
                assert rule["expr"].endswith(now), rule["expr"]
                rule["expr"] = rule["expr"][: -len(now)] + then
    (tmp_path / "before").mkdir()
    text = _failed(run(tmp_path / "before", old, [group("the most the exporters report", flat(worst), checks)]))
    for name in names:
        assert f"alertname: {name}," in text, name
