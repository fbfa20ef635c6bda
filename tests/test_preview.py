"""The offline preview command: files written, summary printed, config errors exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tools import preview
from tools.lib import stackfile


def test_preview_writes_objects_inventory_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert preview.main(["--stack", "dev", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "aws:eks/cluster:Cluster" in printed and "stack 'dev'" in printed
    inventory = yaml.safe_load((tmp_path / "inventory.yaml").read_text())
    cluster = [e for e in inventory if e["type"] == "aws:eks/cluster:Cluster"]
    assert cluster[0]["settings"]["name"] == "tfs-dev"
    node_group = [e for e in inventory if e["type"] == "aws:eks/nodeGroup:NodeGroup"]
    assert node_group[0]["ignore_changes"] == ["scalingConfig.desiredSize"]
    manifests = list((tmp_path / "k8s").rglob("*.yaml"))
    kinds = sorted(yaml.safe_load(p.read_text())["kind"] for p in manifests)
    assert kinds == [
        "ConfigMap", "ConfigMap", "ConfigMap", "DaemonSet", "Deployment", "GRPCRoute", "Gateway",
        "GatewayClass", "HTTPRoute", "HTTPRoute", "LoadBalancerConfiguration", "Namespace",
        "Namespace", "Namespace", "Namespace", "NetworkPolicy", "NetworkPolicy", "PersistentVolume",
        "PersistentVolumeClaim", "PodDisruptionBudget", "PriorityClass",
        "PrometheusRule", "ScaledObject", "Secret", "Service", "ServiceAccount",
        "ServiceMonitor", "StorageClass", "TargetGroupConfiguration",
    ]
    helm = {p.stem: yaml.safe_load(p.read_text()) for p in (tmp_path / "helm").rglob("*.yaml")}
    assert helm["gpu-device-plugin"]["chart"] == "nvidia-device-plugin"
    assert "node pools: $" in printed and "l4 (managed-node-group; g6.xlarge): $0.00 .." in printed
    outputs = yaml.safe_load((tmp_path / "outputs.yaml").read_text())
    assert outputs["cluster_name"] == "tfs-dev"


def test_preview_of_misspelled_key_exits_2_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = stackfile.stack_file("dev").read_text().replace("nat_gateways:", "nat_gatways:")
    (tmp_path / "Pulumi.broken.yaml").write_text(text)
    monkeypatch.setattr(stackfile, "ROOT", tmp_path)
    monkeypatch.setattr(preview, "stack_file", lambda s: stackfile.stack_file(s, tmp_path))
    assert preview.main(["--stack", "broken", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "stack 'broken'" in err
    assert "tf-serving-eks:cluster.vpc.nat_gatways: unknown key; did you mean 'nat_gateways'?" in err
    assert not (tmp_path / "out").exists()


def test_secure_values_are_replaced_offline() -> None:
    settings, secret_keys = stackfile.settings_from_document(
        {"config": {"tf-serving-eks:monitoring": {"grafana": {"admin_password": {"secure": "v1:abc"}}}}}
    )
    assert secret_keys == ["tf-serving-eks:monitoring"]
    assert stackfile.OFFLINE_SECRET in settings["tf-serving-eks:monitoring"]


def test_unknown_stack_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert preview.main(["--stack", "nope"]) == 2
    assert "Pulumi.nope.yaml" in capsys.readouterr().err


def test_readme_config_reference_matches_the_model() -> None:
    from tools.config_docs import BEGIN, END, table

    readme = (stackfile.ROOT / "README.md").read_text()
    documented = readme.split(BEGIN)[1].split(END)[0].strip()
    assert documented == table(), "README is stale: run `python -m tools.config_docs --write-readme`"


def test_the_summary_prices_each_pool_by_its_provisioner_and_shapes() -> None:
    from components import catalog
    from tests.support import raw_stack, render_raw

    raw = raw_stack("prod")
    serving_pool = raw["serving"]["gpu_pool"]
    for key in ("min_size", "desired_size", "max_unavailable"):
        raw["gpu_pools"][serving_pool].pop(key, None)
    raw["gpu_pools"][serving_pool]["provisioner"] = "karpenter"
    rendering = render_raw(raw, stack="prod")
    pools = rendering.outputs["node_cost_usd_per_month"]["pools"]
    month = catalog.HOURS_PER_MONTH
    for name, pool in raw["gpu_pools"].items():
        entry = pools[name]
        hourly = [catalog.GPU_INSTANCE_TYPES[t].usd_per_hour for t in pool["instance_types"]]
        provisioner = pool.get("provisioner", "managed-node-group")
        assert entry["provisioner"] == provisioner and entry["instance_types"] == pool["instance_types"]
        assert entry["node"] == {"min": round(min(hourly) * month, 2), "max": round(max(hourly) * month, 2)}
        # A Karpenter pool keeps no standing node; at most max_size nodes of its dearest type.
        low_nodes = 0 if provisioner == "karpenter" else pool["min_size"]
        assert entry["min"] == round(max(hourly) * low_nodes * month, 2)
        assert entry["max"] == round(max(hourly) * pool["max_size"] * month, 2)
    text = preview.summary_table(rendering)
    karpenter_line = next(line for line in text.splitlines() if line.strip().startswith(f"{serving_pool} ("))
    assert "karpenter" in karpenter_line and "$0.00 .." in karpenter_line
    assert all(t in karpenter_line for t in raw["gpu_pools"][serving_pool]["instance_types"])


def test_one_nodes_cost_range_spans_the_cheapest_to_the_dearest_type() -> None:
    from components import catalog

    low, high = catalog.node_cost_range(["g6.xlarge", "p5.48xlarge", "not-a-type"])
    month = catalog.HOURS_PER_MONTH
    assert low == round(catalog.GPU_INSTANCE_TYPES["g6.xlarge"].usd_per_hour * month, 2)
    assert high == round(catalog.GPU_INSTANCE_TYPES["p5.48xlarge"].usd_per_hour * month, 2)
    assert catalog.node_cost_range(["not-a-type"]) == (0.0, 0.0)
