"""The cold-start budget: how long, from zero GPU nodes, until a pool's first serving pod can
answer a prediction, stage by stage, with the figures of catalog.COLD_START, and the same with
each cold-start feature of the pool turned the other way.

A model, not a measurement: it shows which stage dominates and what each setting buys, so a
stack can set `serving.cold_start_target_minutes` and be warned at preview. Stages, in order:

    decide           the node autoscaler notices the pending pod (cluster-autoscaler's scan,
                     Karpenter's batching window)
    instance_launch  EC2 launches the instance (or starts a warm-pool one)
    node_ready       boot, join, NVIDIA driver and device plugin: nvidia.com/gpu allocatable
    image_pull       the serving image: its size at the pull rate (serial or parallel unpack,
                     never faster than the volume's throughput), or nearly nothing from a
                     pre-pulled Bottlerocket snapshot
    model_download   every version the pod holds, from S3 (the AWS CLI's parallel requests,
                     never faster than the volume)
    model_load       GPU runtime set-up, then the models read and restored, `load_threads` at
                     a time (longest-first onto the threads, as a pool of workers spreads them)

Warm-up requests (assets.extra) run inside model_load's window before a version is AVAILABLE:
they move the first requests' lazy initialisation off the first caller, and are not a stage
of their own here. A KEDA pre-warm (autoscaling.off_hours.prewarm_minutes) avoids the cold
start inside working hours altogether; the budget is what a start outside them costs.

It creates no resource and reads only validated config.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from components.catalog import COLD_START
from components.config import GpuPoolConfig, ModelConfig, StackConfig
from components.config.gpu_pools import GP3_BASE_THROUGHPUT_MIBPS, PARALLEL_PULL_THROUGHPUT_MIBPS

STAGES = ("decide", "instance_launch", "node_ready", "image_pull", "model_download", "model_load")


def figure(name: str) -> float:
    return COLD_START[name].value


@dataclass(frozen=True)
class Features:
    """The settings of a pool and its serving pods that change the budget."""

    provisioner: str
    parallel_pull: bool
    prepulled_snapshot: bool
    warm_pool: str | None  # None, "Stopped" or "Running"
    load_threads: int
    volume_mibps: int
    # Per model: the GiB one pod downloads and loads (each version it holds).
    model_gib: tuple[float, ...]


def model_size_gib(model: ModelConfig, default: float) -> float:
    """One version's size: on disk (disk_gib) when declared, else its GPU memory, else `default`."""
    for declared in (model.disk_gib, model.gpu_memory_gib):
        if declared is not None:
            return declared
    return default


def features_of(cfg: StackConfig, pool_name: str) -> Features:
    pool = cfg.gpu_pools[pool_name]
    serving = cfg.serving
    default_size = figure("model_default_size")
    return Features(
        provisioner=pool.provisioner,
        parallel_pull=pool.uses_parallel_pull,
        prepulled_snapshot=pool.image_pull.prepulled_snapshot_id is not None,
        warm_pool=pool.warm_pool.pool_state if pool.warm_pool.enabled else None,
        load_threads=serving.model_load_threads,
        volume_mibps=pool.volume_throughput_mibps,
        model_gib=tuple(model_size_gib(m, default_size) * m.versions_held() for m in serving.models.values()),
    )


def _makespan(seconds: list[float], workers: int) -> float:
    """When the last of `seconds` ends, longest first onto `workers` parallel workers."""
    ends = [0.0] * max(1, workers)
    for s in sorted(seconds, reverse=True):
        heapq.heapreplace(ends, ends[0] + s)
    return max(ends)


def estimate(f: Features) -> dict[str, float]:
    """Seconds per stage, from zero nodes to the first pod's first prediction."""
    decide = figure("decide_cluster_autoscaler" if f.provisioner == "managed-node-group" else "decide_karpenter")
    if f.warm_pool == "Running":
        launch, ready = figure("instance_running_warm"), figure("node_ready_warm")
    elif f.warm_pool == "Stopped":
        launch, ready = figure("instance_start_stopped"), figure("node_ready_warm")
    else:
        launch, ready = figure("instance_launch"), figure("node_ready")
    image_mib = figure("serving_image") * 1024
    if f.prepulled_snapshot:
        pull = figure("pull_prepulled")
    else:
        rate = min(figure("pull_parallel" if f.parallel_pull else "pull_serial"), f.volume_mibps)
        pull = image_mib / rate
    total_mib = sum(f.model_gib) * 1024
    s3_rate = min(figure("s3_per_request") * figure("s3_requests"), f.volume_mibps)
    download = total_mib / s3_rate
    read = min(figure("model_read"), f.volume_mibps)
    load = figure("gpu_runtime_init") + _makespan([g * 1024 / read for g in f.model_gib], f.load_threads)
    stages = dict(zip(STAGES, (decide, launch, ready, pull, download, load)))
    return {k: round(v, 1) for k, v in stages.items()}


def toggles(f: Features, pool: GpuPoolConfig) -> dict[str, Features]:
    """Each cold-start feature the pool can have, turned the other way (named for the state
    it is turned to: "parallel_pull off", "warm_pool Stopped", ...)."""
    out: dict[str, Features] = {}
    if not pool.is_bottlerocket and not pool.uses_auto_mode:
        out[f"parallel_pull {'off' if f.parallel_pull else 'on'}"] = replace(
            f,
            parallel_pull=not f.parallel_pull,
            # The throughput follows the flag unless configured (GpuPoolConfig.volume_throughput_mibps).
            volume_mibps=f.volume_mibps if pool.image_pull.volume_throughput_mibps is not None
            else (GP3_BASE_THROUGHPUT_MIBPS if f.parallel_pull else PARALLEL_PULL_THROUGHPUT_MIBPS),
        )
    if pool.is_bottlerocket and not pool.uses_auto_mode:
        out[f"prepulled_snapshot {'off' if f.prepulled_snapshot else 'on'}"] = replace(
            f, prepulled_snapshot=not f.prepulled_snapshot
        )
    if pool.has_node_groups and pool.capacity_type != "SPOT" and len(pool.instance_types) == 1:
        out["warm_pool off" if f.warm_pool else "warm_pool Stopped"] = replace(
            f, warm_pool=None if f.warm_pool else "Stopped"
        )
    if len(f.model_gib) > 1:
        if f.load_threads > 1:
            out["load_threads 1"] = replace(f, load_threads=1)
        else:
            out[f"load_threads {len(f.model_gib)}"] = replace(f, load_threads=len(f.model_gib))
    return out


def budget(cfg: StackConfig) -> dict[str, Any]:
    """Per GPU pool, the modelled cold start of the serving pods there: stages, total,
    dominant stage, the total with each feature turned the other way, and the target."""
    target = cfg.serving.cold_start_target_minutes
    pools: dict[str, Any] = {}
    for name, pool in cfg.gpu_pools.items():
        f = features_of(cfg, name)
        stages = estimate(f)
        total = round(sum(stages.values()), 1)
        pools[name] = {
            "stages_seconds": stages,
            "total_seconds": total,
            "dominant_stage": max(stages, key=lambda s: stages[s]),
            "with": {label: round(sum(estimate(g).values()), 1) for label, g in toggles(f, pool).items()},
            "over_target": target is not None and total > target * 60,
        }
    return {
        "pools": pools,
        "serving_pool": cfg.serving.gpu_pool,
        "target_minutes": target,
        "figures": "catalog.COLD_START (sources there; 'estimate' figures are not measured)",
    }


def warnings(estimates: Mapping[str, Any]) -> list[str]:
    """One line per pool whose estimate exceeds the stack's target (serving pool only: the
    one the serving pods run on)."""
    target = estimates.get("target_minutes")
    pool = estimates.get("serving_pool")
    if target is None or pool is None or pool not in estimates["pools"]:
        return []
    each = estimates["pools"][pool]
    if not each["over_target"]:
        return []
    stage = each["dominant_stage"]
    return [
        f"warning: cold start of pool '{pool}' is estimated at {each['total_seconds'] / 60:.1f} min, "
        f"over serving.cold_start_target_minutes ({target:g}); {stage} dominates "
        f"({each['stages_seconds'][stage]:.0f} s)"
    ]
