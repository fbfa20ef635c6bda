"""Cold start: what a new GPU node is told, read as the node and AWS read it, and what KEDA
does with the pre-warm schedule.

- User data is parsed as nodeadm parses it (amazon-eks-ami nodeadm/internal/configprovider/
  mime.go, ParseMaybeMultipart): base64 decoded, read as a mail message; if its Content-Type
  is `multipart/*` its parts are split on the `boundary` parameter, and only parts whose
  media type is `application/node.eks.aws` are NodeConfigs (YAML, merged in order). Python's
  `email` package reads MIME as Go's net/mail + mime/multipart do (and as cloud-init does).
- Each NodeConfig is checked against NODECONFIG_SCHEMA, written here from nodeadm's own CRD
  (amazon-eks-ami nodeadm/crds/node.eks.aws_nodeconfigs.yaml, commit 81fec2e8) and its API
  doc (nodeadm/doc/api.md: Feature enum InstanceIdNodeName, FastImagePull).
- KEDA's cron scaler is active while the next end comes no later than the next start
  (kedacore/keda pkg/scalers/cron_scaler.go, IsActive; next fire times are robfig/cron's
  `Next`, strictly after now); a ScaledObject's replicas are the largest its triggers ask.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import email
import email.message
import email.policy
import functools
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import jsonschema
import pytest
import yaml
from moto import mock_aws

from components import catalog
from components.config import StackConfigError
from components.node_bootstrap import FAST_IMAGE_PULL, NODECONFIG_MEDIA_TYPE, mime_user_data
from tests.support import conformance, parse, raw_stack, render_raw
from tools.lib.mock_engine import Rendering
from tools.preflight import runner, snapshots
from tools.preflight.model import Context

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
SNAPSHOT = "snap-0123456789abcdef0"

_STRINGS = {"type": "array", "items": {"type": "string"}}
NODECONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "node.eks.aws/v1alpha1"},
        "kind": {"const": "NodeConfig"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cluster": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        k: {"type": "boolean" if k == "enableOutpost" else "string"}
                        for k in ("apiServerEndpoint", "certificateAuthority", "cidr", "enableOutpost", "id", "name")
                    },
                },
                "containerd": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"baseRuntimeSpec": {"type": "object"}, "config": {"type": "string"}},
                },
                "featureGates": {
                    "type": "object",
                    "propertyNames": {"enum": ["InstanceIdNodeName", "FastImagePull"]},
                    "additionalProperties": {"type": "boolean"},
                },
                "instance": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "environment": {"type": "object"},
                        "localStorage": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "disabledMounts": {"type": "array", "items": {"enum": ["Containerd", "PodLogs", "SOCI"]}},
                                "mountPath": {"type": "string"},
                                "strategy": {"enum": ["RAID0", "RAID10", "Mount"]},
                            },
                        },
                        "network": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"domains": _STRINGS, "nameservers": _STRINGS},
                        },
                    },
                },
                "kubelet": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"config": {"type": "object"}, "flags": _STRINGS, "maxPodsExpression": {"type": "string"}},
                },
            },
        },
    },
}


class NotMultipart(ValueError):
    pass


def node_configs(user_data: str) -> list[dict[str, Any]]:
    """The NodeConfigs nodeadm finds in MIME user data (parts of other media types skipped)."""
    message = email.message_from_string(user_data, policy=email.policy.compat32)
    if not message.get_content_maintype() == "multipart" or message.get_param("boundary") is None:
        raise NotMultipart(message.get_content_type())
    parts = message.get_payload()
    if isinstance(parts, str):
        return []  # no delimiter matched the boundary: no part (nodeadm: no NodeConfig found)
    found: list[dict[str, Any]] = []
    for part in parts:
        assert isinstance(part, email.message.Message)
        if part.get_content_type() == NODECONFIG_MEDIA_TYPE:
            body = part.get_payload()
            assert isinstance(body, str)
            found.extend(d for d in yaml.safe_load_all(body) if d is not None)
    return found


def merged_feature_gates(configs: list[dict[str, Any]]) -> dict[str, bool]:
    """nodeadm's merge (internal/api/merge.go, mergo WithOverride) as far as feature gates go:
    later parts override earlier ones key by key."""
    gates: dict[str, bool] = {}
    for config in configs:
        gates.update(config.get("spec", {}).get("featureGates", {}))
    return gates


def schema_errors(config: dict[str, Any]) -> list[str]:
    return [e.message for e in jsonschema.Draft202012Validator(NODECONFIG_SCHEMA).iter_errors(config)]


# What EKS adds to a managed node group's user data for the node to join (eksctl docs, "Node
# bootstrapping", example NodeConfig), and Karpenter its own (bootstrap/nodeadm.go).
JOINING_CONFIG = {
    "apiVersion": "node.eks.aws/v1alpha1",
    "kind": "NodeConfig",
    "spec": {
        "cluster": {"name": "tfs", "apiServerEndpoint": "https://x.eks.amazonaws.com", "certificateAuthority": "Q0E=", "cidr": "172.20.0.0/16"},
        "kubelet": {"flags": ["--node-labels=a=b"]},
    },
}


@functools.cache
def rendering(stack: str, variant: str = "") -> Rendering:
    raw = raw_stack(stack)
    if variant == "karpenter":
        pool = raw["serving"]["gpu_pool"]
        for key in ("min_size", "desired_size", "max_unavailable"):
            raw["gpu_pools"][pool].pop(key, None)
        raw["gpu_pools"][pool]["provisioner"] = "karpenter"
    if variant == "snapshot":
        raw["gpu_pools"]["l4"]["image_pull"] = {"prepulled_snapshot_id": SNAPSHOT}
    if variant == "karpenter-snapshot":
        raw["gpu_pools"]["l4"].update(
            {"provisioner": "karpenter", "image_pull": {"prepulled_snapshot_id": SNAPSHOT}, "min_size": 0, "desired_size": 0}
        )
    if variant == "warm":
        raw["gpu_pools"]["a10g"]["warm_pool"] = {"enabled": True, "min_size": 2}
    return render_raw(raw, stack=f"{stack}-{variant}" if variant else stack)


def launch_template(r: Rendering, pool: str) -> dict[str, Any]:
    return r.one(LAUNCH_TEMPLATE, f"gpu-{pool}-lt").inputs


def node_class(r: Rendering) -> dict[str, Any]:
    [found] = [m for m in r.k8s_objects() if m["kind"] == "EC2NodeClass"]
    return found


# --- AL2023: parallel pull through nodeadm ---------------------------------------------


@pytest.mark.parametrize("stack, pool", [("dev", "l4"), ("prod", "a10g")])
def test_al2023_launch_template_turns_on_parallel_pull_as_nodeadm_reads_it(stack: str, pool: str) -> None:
    user_data = base64.b64decode(launch_template(rendering(stack), pool)["userData"]).decode()
    ours = node_configs(user_data)
    assert ours and all(schema_errors(c) == [] for c in ours)
    # EKS appends its joining NodeConfig to ours; the merged result keeps our gate.
    assert merged_feature_gates([*ours, JOINING_CONFIG]) == {FAST_IMAGE_PULL: True}
    # Nothing of the cluster's own bootstrap is ours to say (the instance store's set-up is
    # the node's, on pools with instance_store: raid0).
    assert all(set(c["spec"]) <= {"featureGates", "instance"} for c in ours)


def test_karpenter_node_class_user_data_merges_after_karpenters_own() -> None:
    spec = node_class(rendering("dev", "karpenter"))["spec"]
    text = spec["userData"]
    # Karpenter keeps a custom user data's parts when it starts with MIME-Version: (nodeadm.go
    # parseUserData); a bare YAML document would become one part too, but ours is MIME.
    assert text.lstrip().startswith("MIME-Version:")
    ours = node_configs(text)
    assert [schema_errors(c) for c in ours] == [[]]
    # Karpenter's NodeConfig comes first, ours after.
    assert merged_feature_gates([JOINING_CONFIG, *ours]) == {FAST_IMAGE_PULL: True}
    assert conformance.validate_object(node_class(rendering("dev", "karpenter")), "1.36") == []


def test_parallel_pull_volume_is_fast_enough_for_it() -> None:
    # nodeadm doc/examples.md: at least 600 MiB/s of root volume throughput with FastImagePull.
    ebs = launch_template(rendering("prod"), "a10g")["blockDeviceMappings"][0]["ebs"]
    assert ebs["throughput"] >= 600 and ebs["throughput"] <= ebs["iops"] * 0.25


def test_bottlerocket_nodes_get_no_user_data_of_ours() -> None:
    # Bottlerocket reads TOML settings, not nodeadm's NodeConfig: EKS's own stays alone.
    lt = launch_template(rendering("prod"), "l4")
    assert lt.get("userData") is None
    assert lt["blockDeviceMappings"][0]["ebs"]["throughput"] == 125


def test_turning_parallel_pull_off_removes_the_user_data() -> None:
    raw = raw_stack("dev")
    raw["gpu_pools"]["l4"]["image_pull"] = {"parallel": False}
    lt = launch_template(render_raw(raw, stack="dev-no-parallel"), "l4")
    # dev's pool keeps its instance store set up, and nothing else.
    ours = node_configs(base64.b64decode(lt["userData"]).decode())
    assert merged_feature_gates([*ours, JOINING_CONFIG]) == {}
    assert [c["spec"] for c in ours] == [{"instance": {"localStorage": {"strategy": "RAID0"}}}]
    assert lt["blockDeviceMappings"][0]["ebs"]["throughput"] == 125
    raw["gpu_pools"]["l4"]["instance_store"] = "none"
    raw["serving"].pop("model_cache")
    lt = launch_template(render_raw(raw, stack="dev-no-parallel-no-raid"), "l4")
    assert lt.get("userData") is None


def test_the_checkers_fail_on_bad_user_data() -> None:
    good: dict[str, Any] = {
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {"featureGates": {FAST_IMAGE_PULL: True}},
    }
    typo = copy.deepcopy(good)
    typo["spec"]["featureGates"] = {"FastImagePul": True}
    assert schema_errors(typo)
    misplaced = copy.deepcopy(good)
    misplaced["spec"]["featureGate"] = misplaced["spec"].pop("featureGates")
    assert schema_errors(misplaced)
    assert schema_errors({**good, "apiVersion": "node.eks.aws/v1"})
    # A part of another media type is not a NodeConfig: nodeadm skips it.
    wrong_type = mime_user_data([good]).replace(NODECONFIG_MEDIA_TYPE, "text/x-shellscript")
    assert node_configs(wrong_type) == []
    # A boundary that does not match the parts' delimiters: no part is found.
    wrong_boundary = mime_user_data([good]).replace('boundary="', 'boundary="X', 1)
    assert merged_feature_gates(node_configs(wrong_boundary)) == {}
    with pytest.raises(NotMultipart):
        node_configs(yaml.safe_dump(good))


# --- Bottlerocket: a data volume with the images already on it ------------------------


def test_bottlerocket_data_volume_starts_from_the_prepulled_snapshot() -> None:
    mappings = launch_template(rendering("prod", "snapshot"), "l4")["blockDeviceMappings"]
    assert [(m["deviceName"], m["ebs"]["snapshotId"]) for m in mappings] == [("/dev/xvdb", SNAPSHOT)]
    assert mappings[0]["ebs"]["volumeSize"] == 150  # at least the snapshot's size: EC2's rule
    # The AL2023 pool of the same stack is untouched.
    assert "snapshotId" not in launch_template(rendering("prod", "snapshot"), "a10g")["blockDeviceMappings"][0]["ebs"]


def test_karpenter_bottlerocket_data_volume_starts_from_the_snapshot() -> None:
    r = rendering("prod", "karpenter-snapshot")
    classes = [m for m in r.k8s_objects() if m["kind"] == "EC2NodeClass"]
    [l4] = classes
    volumes = {b["deviceName"]: b["ebs"] for b in l4["spec"]["blockDeviceMappings"]}
    assert volumes["/dev/xvdb"]["snapshotID"] == SNAPSHOT and "snapshotID" not in volumes["/dev/xvda"]
    assert "userData" not in l4["spec"]
    assert conformance.validate_object(l4, "1.36") == []


# --- Warm pools ------------------------------------------------------------------------


def test_warm_pool_on_each_zones_group_within_its_max() -> None:
    r = rendering("prod", "warm")
    groups = {g.name: g.inputs for g in r.of_type(NODE_GROUP) if g.inputs["labels"].get("tf-serving-eks/pool") == "a10g"}
    assert len(groups) == 3
    warm = [g["warmPoolConfig"] for g in groups.values()]
    # min_size 2 over three zones, first zones first; never more prepared than the group's max.
    assert sorted(w["minSize"] for w in warm) == [0, 1, 1]
    assert all(w["maxGroupPreparedCapacity"] == g["scalingConfig"]["maxSize"] for w, g in zip(warm, groups.values()))
    assert {w["poolState"] for w in warm} == {"STOPPED"} and not any(w["reuseOnScaleIn"] for w in warm)
    others = [g.inputs for g in r.of_type(NODE_GROUP) if g.inputs["labels"].get("tf-serving-eks/pool") == "l4"]
    assert others and all("warmPoolConfig" not in g for g in others)


def test_no_warm_pool_by_default() -> None:
    for stack in ("dev", "prod"):
        assert all("warmPoolConfig" not in g.inputs for g in rendering(stack).of_type(NODE_GROUP)), stack


# --- Refusals ----------------------------------------------------------------------------

BAD: list[tuple[str, str, str, dict[str, Any], str, str]] = [
    ("parallel on Bottlerocket", "prod", "l4", {"image_pull": {"parallel": True}}, "image_pull.parallel", "only AL2023"),
    ("snapshot on AL2023", "prod", "a10g", {"image_pull": {"prepulled_snapshot_id": SNAPSHOT}}, "image_pull.prepulled_snapshot_id", "Bottlerocket"),
    ("bad snapshot id", "prod", "l4", {"image_pull": {"prepulled_snapshot_id": "ami-0123456789abcdef0"}}, "image_pull.prepulled_snapshot_id", "snap- and 8 or 17"),
    ("throughput beyond IOPS", "prod", "a10g", {"image_pull": {"volume_throughput_mibps": 1000}}, "image_pull.volume_throughput_mibps", "at least 4000"),
    ("throughput beyond gp3", "prod", "a10g", {"image_pull": {"volume_throughput_mibps": 1200, "volume_iops": 16000}}, "image_pull.volume_throughput_mibps", "1000"),
    ("warm pool on Spot", "dev", "l4", {"warm_pool": {"enabled": True}}, "warm_pool.enabled", "Spot"),
    ("warm pool with two types", "prod", "a10g", {"instance_types": ["g5.2xlarge", "g6.2xlarge"], "warm_pool": {"enabled": True}}, "warm_pool.enabled", "mixed-instances"),
    ("warm pool on Karpenter", "prod", "l4", {"provisioner": "karpenter", "min_size": 0, "desired_size": 0, "warm_pool": {"enabled": True}}, "warm_pool.enabled", "Karpenter"),
    ("hibernated GPU", "prod", "a10g", {"warm_pool": {"enabled": True, "pool_state": "Hibernated"}}, "warm_pool.pool_state", "no GPU instance family"),
    ("hibernated Bottlerocket", "prod", "l4", {"warm_pool": {"enabled": True, "pool_state": "Hibernated"}}, "warm_pool.pool_state", "Bottlerocket"),
    ("reuse on Bottlerocket", "prod", "l4", {"warm_pool": {"enabled": True, "reuse_on_scale_in": True}}, "warm_pool.reuse_on_scale_in", "Bottlerocket"),
    ("warm beyond max", "prod", "a10g", {"warm_pool": {"enabled": True, "min_size": 10}}, "warm_pool.min_size", "max_size (9)"),
    ("unknown state", "prod", "a10g", {"warm_pool": {"enabled": True, "pool_state": "Frozen"}}, "warm_pool.pool_state", "'Stopped'"),
]


@pytest.mark.parametrize("stack, pool, change, key, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_cold_start_settings_are_refused_with_the_rule(stack: str, pool: str, change: dict[str, Any], key: str, fragment: str) -> None:
    raw = raw_stack(stack)
    raw["gpu_pools"][pool].update(change)
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    assert f"tf-serving-eks:gpu_pools.{pool}.{key}:" in str(info.value) and fragment in str(info.value), str(info.value)


def test_a_small_node_would_silently_lose_parallel_pull(monkeypatch: pytest.MonkeyPatch) -> None:
    # nodeadm ignores FastImagePull below 4 vCPUs or 7 GiB (containerd/config.go). Every
    # catalogued GPU type clears that floor today; a smaller one (a made-up 2-vCPU T4) would be
    # refused, not left to pull serially.
    assert all(t.vcpus >= 4 and t.memory_gib >= 7 for t in catalog.GPU_INSTANCE_TYPES.values())
    small = dataclasses.replace(catalog.GPU_INSTANCE_TYPES["g4dn.xlarge"], name="g4dn.small", vcpus=2, memory_gib=8)
    monkeypatch.setitem(catalog.GPU_INSTANCE_TYPES, small.name, small)
    monkeypatch.setitem(catalog.ENI_LIMITS, small.name, catalog.ENI_LIMITS["g4dn.xlarge"])
    raw = raw_stack("dev")
    raw["gpu_pools"]["l4"].update({"instance_types": [small.name], "time_slicing_replicas": 1})
    raw["gpu_pools"]["l4"].pop("instance_store")  # the made-up type has no instance store
    raw["serving"].pop("model_cache")
    raw["serving"]["gpu_memory_fraction"] = 0.9
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    assert "gpu_pools.l4.instance_types.0:" in str(info.value) and "nodeadm ignores parallel pull" in str(info.value)
    raw["gpu_pools"]["l4"]["image_pull"] = {"parallel": False}
    assert not parse(raw).gpu_pools["l4"].uses_parallel_pull


# --- KEDA pre-warm, with KEDA's cron semantics ------------------------------------------


def _field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        if item == "*":
            values |= set(range(low, high + 1))
        elif "-" in item:
            a, b = item.split("-")
            values |= set(range(int(a), int(b) + 1))
        else:
            values.add(int(item))
    return values


def next_fire(spec: str, after: datetime) -> datetime:
    """robfig/cron's Next for the plain schedules we render (numbers, ranges, lists, *):
    the first whole minute strictly after `after` whose fields all match (day of month is *
    in ours, so robfig's day-of-month/day-of-week OR rule does not arise)."""
    minute, hour, dom, month, dow = spec.split()
    assert dom == "*" and month == "*", spec
    minutes, hours, days = _field(minute, 0, 59), _field(hour, 0, 23), _field(dow, 0, 6)
    t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(60 * 24 * 8):
        if t.minute in minutes and t.hour in hours and (t.isoweekday() % 7) in days:
            return t
        t += timedelta(minutes=1)
    raise AssertionError(f"{spec} never fires")


def keda_replicas(triggers: list[dict[str, Any]], now: datetime) -> int:
    """What the cron triggers ask for at `now`: the largest desiredReplicas of the active ones."""
    asked = [0]
    for t in triggers:
        if t["type"] != "cron":
            continue
        meta = t["metadata"]
        local = now.astimezone(ZoneInfo(meta["timezone"]))
        nxt_start, nxt_end = next_fire(meta["start"], local), next_fire(meta["end"], local)
        active = not (nxt_start < nxt_end) and local <= nxt_end
        if active:
            asked.append(int(meta["desiredReplicas"]))
    return max(asked)


def scaled_object_triggers(r: Rendering) -> list[dict[str, Any]]:
    [found] = [m for m in r.k8s_objects() if m["kind"] == "ScaledObject"]
    return list(found["spec"]["triggers"])


def up_minutes(triggers: list[dict[str, Any]], day: datetime) -> list[str]:
    """The local minutes of `day` at which the cron triggers hold at least one replica."""
    zone = ZoneInfo(triggers[-1]["metadata"]["timezone"])
    start = day.replace(tzinfo=zone)
    held = [start + timedelta(minutes=m) for m in range(24 * 60) if keda_replicas(triggers, start + timedelta(minutes=m))]
    return [f"{t:%H:%M}" for t in (held[0], held[-1])] if held else []


def test_dev_replicas_come_up_fifteen_minutes_before_working_hours() -> None:
    triggers = scaled_object_triggers(rendering("dev"))
    # Monday 2027-01-11 in Europe/London: up from 07:45 (pre-warm) to 18:59, none on Saturday.
    assert up_minutes(triggers, datetime(2027, 1, 11)) == ["07:45", "18:59"]
    held = [m for m in range(7 * 60 + 45, 19 * 60)]
    monday = datetime(2027, 1, 11, tzinfo=ZoneInfo("Europe/London"))
    assert all(keda_replicas(triggers, monday + timedelta(minutes=m)) == 1 for m in held)
    assert up_minutes(triggers, datetime(2027, 1, 16)) == []
    # Without the pre-warm trigger the first user of the day would meet a cold start at 07:45.
    working_only = [t for t in triggers if t.get("name") != "pre-warm"]
    assert keda_replicas(working_only, monday + timedelta(minutes=7 * 60 + 45)) == 0


def test_a_gap_between_pre_warm_and_the_window_would_show() -> None:
    triggers = copy.deepcopy(scaled_object_triggers(rendering("dev")))
    for t in triggers:
        if t.get("name") == "pre-warm":
            t["metadata"]["end"] = "55 7 * * 1-5"
    monday = datetime(2027, 1, 11, 7, 57, tzinfo=ZoneInfo("Europe/London"))
    assert keda_replicas(triggers, monday) == 0


def test_lead_time_is_configurable_and_refused_where_it_cannot_apply() -> None:
    raw = raw_stack("dev")
    raw["autoscaling"]["off_hours"]["prewarm_minutes"] = 90
    triggers = scaled_object_triggers(render_raw(raw, stack="dev-prewarm-90"))
    assert up_minutes(triggers, datetime(2027, 1, 11)) == ["06:30", "18:59"]
    raw["autoscaling"]["off_hours"]["prewarm_minutes"] = 0
    assert [t["name"] for t in scaled_object_triggers(render_raw(raw, stack="dev-prewarm-0")) if t["type"] == "cron"] == ["working-hours"]
    for start, lead, fragment in (("0 0 * * 1-5", 15, "day before"), ("0,30 8 * * 1-5", 15, "one fixed minute and hour")):
        raw = raw_stack("dev")
        raw["autoscaling"]["off_hours"].update({"start": start, "prewarm_minutes": lead})
        with pytest.raises(StackConfigError) as info:
            parse(raw)
        assert "tf-serving-eks:autoscaling.off_hours.prewarm_minutes:" in str(info.value) and fragment in str(info.value)


def test_the_default_lead_leaves_a_start_it_cannot_move_alone() -> None:
    # A start of several times, or at midnight, keeps its own time unless a lead is written.
    for start in ("0,30 8 * * 1-5", "0 0 * * 1-5", "*/15 * * * *"):
        raw = raw_stack("dev")
        raw["autoscaling"]["off_hours"]["start"] = start
        off_hours = parse(raw).autoscaling.off_hours
        assert off_hours is not None and off_hours.prewarm_minutes == 0, start
    raw = raw_stack("dev")
    raw["autoscaling"]["off_hours"]["start"] = "30 6 * * 1-5"
    off_hours = parse(raw).autoscaling.off_hours
    assert off_hours is not None and off_hours.prewarm_minutes == 15


# --- Preflight: the snapshot exists, is complete and fits --------------------------------


def _snapshot(ec2: Any, size: int) -> str:
    volume = ec2.create_volume(AvailabilityZone="us-west-2a", Size=size, VolumeType="gp3")
    return str(ec2.create_snapshot(VolumeId=volume["VolumeId"])["SnapshotId"])


def _preflight(snapshot_id: str, disk_size_gib: int = 150) -> list[Any]:
    raw = raw_stack("prod")
    raw["gpu_pools"]["l4"].update({"image_pull": {"prepulled_snapshot_id": snapshot_id}, "disk_size_gib": disk_size_gib})
    cfg = parse(raw)
    client = runner.aws_clients(boto3.Session(region_name=cfg.aws_region), timeout=5)
    return snapshots.checks(Context(stack="test", config=cfg, region=cfg.aws_region, client=client))


def test_preflight_passes_a_snapshot_that_fits_and_fails_one_that_does_not() -> None:
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-west-2")
        fits, too_big = _snapshot(ec2, 100), _snapshot(ec2, 200)
        [ok] = _preflight(fits)
        assert ok.verdict == "pass" and ok.has == "completed, 100 GiB", ok
        [big] = _preflight(too_big)
        assert big.verdict == "fail" and "disk_size_gib to at least 200" in big.fix, big
        [exact] = _preflight(too_big, disk_size_gib=200)
        assert exact.verdict == "pass"
        [missing] = _preflight("snap-0123456789abcdef0")
        assert missing.verdict == "fail" and "no snapshot snap-0123456789abcdef0 visible in us-west-2" in missing.has
        # No snapshot configured: nothing to check, and no call made.
        assert snapshots.checks(Context(stack="t", config=parse(raw_stack("prod")), region="us-west-2", client=None)) == []


def test_preflight_snapshot_check_is_in_the_command_and_its_policy() -> None:
    assert "tools.preflight.snapshots" in runner.CHECK_MODULES
    policy = (runner.__file__.rsplit("/", 1)[0] + "/policy.json")
    with open(policy) as f:
        assert "ec2:DescribeSnapshots" in f.read()
