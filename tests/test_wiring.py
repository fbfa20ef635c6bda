"""One fact, one source: what one component assumes about another follows the owner when
the owner's renameable values change (namespaces, names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from components.config import StackConfigError
from tests.support.external_tools import chart_dir, helm_template
from tests.support import parse, raw_stack, render_raw
from tools.lib.mock_engine import Rendering

RELEASE = "kubernetes:helm.sh/v3:Release"


def custom(engine: str) -> dict[str, Any]:
    raw = raw_stack("prod")
    raw["serving"]["name"] = "ml"
    raw["serving"]["namespace"] = "inference"
    raw["monitoring"]["namespace"] = "observability"
    raw["autoscaling"] = {
        "engine": engine, "min_replicas": 2, "max_replicas": 6, "metrics": {"requests_per_second": 20},
    }
    return raw


def prometheus_urls(r: Rendering) -> list[str]:
    """Every Prometheus address the autoscaler is given."""
    urls = [
        t["metadata"]["serverAddress"]
        for m in r.k8s_objects() if m["kind"] == "ScaledObject"
        for t in m["spec"]["triggers"] if t["type"] == "prometheus"
    ]
    for release in r.of_type(RELEASE):
        if release.inputs["chart"] == "prometheus-adapter":
            p = release.inputs["values"]["prometheus"]
            urls.append(f"{p['url']}:{p['port']}")
    return urls


@pytest.mark.parametrize("engine", ["keda", "hpa"])
def test_autoscaler_reaches_the_prometheus_the_stack_renders(engine: str, tmp_path: Path) -> None:
    """Each URL names `<service>.<namespace>.svc:<port>` of a Service that kube-prometheus-stack
    renders (helm template of the pinned chart, with our values, release name and namespace)
    exposing that port: it follows monitoring.namespace."""
    r = render_raw(custom(engine), f"wiring-{engine}")
    stack = next(x for x in r.of_type(RELEASE) if x.inputs["chart"] == "kube-prometheus-stack")
    i = stack.inputs
    services = {
        (o["metadata"]["name"], o["metadata"].get("namespace", i["namespace"])): {p["port"] for p in o["spec"]["ports"]}
        for o in helm_template(
            i["name"], chart_dir(i["chart"], i["version"]), i["namespace"], i["values"],
            str(r.outputs["kubernetes_version"]), tmp_path,
        )
        if o["kind"] == "Service"
    }
    urls = prometheus_urls(r)
    assert urls
    for url in urls:
        parts = urlsplit(url)
        assert parts.hostname and parts.hostname.endswith(".svc"), url
        name, namespace = parts.hostname.removesuffix(".svc").split(".")
        assert namespace == "observability", url
        assert parts.port in services.get((name, namespace), set()), (url, sorted(services))


def test_serving_name_keeps_pod_names_whole() -> None:
    """Kubernetes cuts a generated pod name's base to 58 characters
    (apiserver/pkg/storage/names/generate.go): `<name>-canary-<10>-` must fit."""
    raw = raw_stack("prod")
    raw["serving"]["name"] = "a" * 39
    assert parse(raw).serving.name == "a" * 39
    raw["serving"]["name"] = "a" * 40
    with pytest.raises(StackConfigError, match="serving.name") as info:
        parse(raw)
    assert "at most 39 characters" in str(info.value)
