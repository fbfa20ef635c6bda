"""The cold-start budget (components/cold_start.py): each stage follows the setting that
drives it, the figures and the stack file, the features are turned exactly the way they say,
the preview shows it and warns over the target, and the README's table is the one the model
gives."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from components import cold_start
from components.catalog import COLD_START
from tests.support import parse, raw_stack
from tools import cold_start_docs, preview

Raw = dict[str, Any]
MIB_PER_GIB = 1024


def features(**changes: Any) -> cold_start.Features:
    base = cold_start.Features(
        provisioner="managed-node-group", parallel_pull=False, prepulled_snapshot=False, warm_pool=None,
        load_threads=1, volume_mibps=1000, model_gib=(2.0,),
    )
    return replace(base, **changes)


def value(name: str) -> float:
    return COLD_START[name].value


def test_every_figure_says_where_it_comes_from() -> None:
    for name, fig in COLD_START.items():
        assert fig.source.strip() and fig.unit, name
        assert fig.value > 0, name


def test_image_pull_is_the_image_at_the_pull_rate_bounded_by_the_volume() -> None:
    image_mib = value("serving_image") * MIB_PER_GIB
    assert cold_start.estimate(features())["image_pull"] == pytest.approx(image_mib / value("pull_serial"), abs=0.1)
    parallel = cold_start.estimate(features(parallel_pull=True))["image_pull"]
    assert parallel == pytest.approx(image_mib / value("pull_parallel"), abs=0.1)
    # A volume slower than the parallel pull caps it.
    slow = cold_start.estimate(features(parallel_pull=True, volume_mibps=125))["image_pull"]
    assert slow == pytest.approx(image_mib / 125, abs=0.1) and slow > parallel
    assert cold_start.estimate(features(prepulled_snapshot=True))["image_pull"] == value("pull_prepulled")


def test_a_warm_pool_replaces_the_launch_and_boot() -> None:
    cold = cold_start.estimate(features())
    stopped = cold_start.estimate(features(warm_pool="Stopped"))
    running = cold_start.estimate(features(warm_pool="Running"))
    assert (cold["instance_launch"], cold["node_ready"]) == (value("instance_launch"), value("node_ready"))
    assert (stopped["instance_launch"], stopped["node_ready"]) == (value("instance_start_stopped"), value("node_ready_warm"))
    assert running["instance_launch"] == value("instance_running_warm")
    assert sum(running.values()) < sum(stopped.values()) < sum(cold.values())


def test_models_load_on_the_load_threads_longest_first() -> None:
    read = min(value("model_read"), 1000)
    init = value("gpu_runtime_init")
    sizes = (4.0, 3.0, 2.0, 1.0)
    one = cold_start.estimate(features(model_gib=sizes, load_threads=1))["model_load"]
    two = cold_start.estimate(features(model_gib=sizes, load_threads=2))["model_load"]
    many = cold_start.estimate(features(model_gib=sizes, load_threads=8))["model_load"]
    assert one == pytest.approx(init + sum(sizes) * MIB_PER_GIB / read, abs=0.1)
    # Longest first onto two threads: {4, 1} and {3, 2}: both end at 5 GiB.
    assert two == pytest.approx(init + 5 * MIB_PER_GIB / read, abs=0.1)
    assert many == pytest.approx(init + 4 * MIB_PER_GIB / read, abs=0.1)


def test_the_download_is_every_held_version_at_the_clis_parallel_rate() -> None:
    rate = min(value("s3_per_request") * value("s3_requests"), 300)
    got = cold_start.estimate(features(model_gib=(3.0, 1.5), volume_mibps=300))["model_download"]
    assert got == pytest.approx(4.5 * MIB_PER_GIB / rate, abs=0.1)


def test_the_decision_is_the_node_autoscalers() -> None:
    assert cold_start.estimate(features())["decide"] == value("decide_cluster_autoscaler")
    for provisioner in ("karpenter", "auto-mode"):
        assert cold_start.estimate(features(provisioner=provisioner))["decide"] == value("decide_karpenter")


def test_the_stack_files_models_and_pools_reach_the_budget() -> None:
    raw = raw_stack("dev")
    models = raw["serving"]["models"]
    first = next(iter(models))
    models[first]["gpu_memory_gib"] = 2.0
    second = list(models)[1]
    # On disk a version may be larger than its share of GPU memory: the disk size counts.
    models[second].update(gpu_memory_gib=1.0, disk_gib=3.0)
    cfg = parse(raw, "dev")
    pool = cfg.serving.gpu_pool
    assert pool is not None
    f = cold_start.features_of(cfg, pool)
    held = {name: m.versions_held() for name, m in cfg.serving.models.items()}
    assert f.model_gib[0] == 2.0 * held[first]
    assert f.model_gib[1] == 3.0 * held[second]
    default = value("model_default_size")
    sizes = [
        m.disk_gib if m.disk_gib is not None else m.gpu_memory_gib if m.gpu_memory_gib is not None else default
        for m in cfg.serving.models.values()
    ]
    assert f.model_gib == tuple(size * held[n] for size, n in zip(sizes, held))
    assert f.parallel_pull == cfg.gpu_pools[pool].uses_parallel_pull
    assert f.volume_mibps == cfg.gpu_pools[pool].volume_throughput_mibps
    assert f.load_threads == cfg.serving.model_load_threads


def test_each_toggle_turns_its_feature_and_nothing_else() -> None:
    cfg = parse(raw_stack("prod"), "prod")
    for name, pool in cfg.gpu_pools.items():
        f = cold_start.features_of(cfg, name)
        for label, g in cold_start.toggles(f, pool).items():
            changed = {k for k in f.__dataclass_fields__ if getattr(f, k) != getattr(g, k)}
            feature = label.split()[0]
            allowed = {"parallel_pull": {"parallel_pull", "volume_mibps"}, "prepulled_snapshot": {"prepulled_snapshot"},
                       "warm_pool": {"warm_pool"}, "load_threads": {"load_threads"}}[feature]
            assert changed and changed <= allowed, (name, label, changed)
    # A Bottlerocket pool has no parallel pull to turn; a Spot pool no warm pool.
    dev = parse(raw_stack("dev"), "dev")
    for name, pool in dev.gpu_pools.items():
        labels = cold_start.toggles(cold_start.features_of(dev, name), pool)
        assert not any(k.startswith("warm_pool") for k in labels) or pool.capacity_type != "SPOT"


@pytest.mark.parametrize(("minutes", "warned"), [(1, True), (60, False)])
def test_the_preview_warns_over_the_target_naming_the_dominant_stage(
    minutes: float, warned: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    document = yaml.safe_load(Path("Pulumi.dev.yaml").read_text())
    document["config"]["tf-serving-eks:serving"]["cold_start_target_minutes"] = minutes
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(document))
    assert preview.main(["--stack", "dev", "--stack-file", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "cold start from zero nodes to the first prediction" in out
    cfg = parse(raw_stack("dev"), "dev")
    budget = cold_start.budget(cfg)["pools"][cfg.serving.gpu_pool or ""]
    line = (
        f"warning: cold start of pool '{cfg.serving.gpu_pool}' is estimated at {budget['total_seconds'] / 60:.1f} min, "
        f"over serving.cold_start_target_minutes ({minutes:g}); {budget['dominant_stage']} dominates"
    )
    assert (line in out) == warned, out


def test_the_readme_table_is_the_models() -> None:
    text = Path("README.md").read_text()
    documented = text.split(cold_start_docs.BEGIN, 1)[1].split(cold_start_docs.END, 1)[0].strip()
    assert documented == cold_start_docs.tables(), "run `python -m tools.cold_start_docs --write-readme`"
