"""Preflight check that every node group's instance types are offered in every zone the stack
puts that group in (EC2 DescribeInstanceTypeOfferings by availability zone). Each GPU pool
has one node group per zone (components/gpu_pools.py), so a type missing in one zone fails
that zone's group. Read-only, and it reads the zones from the context only: it must not work
out which zones the stack uses."""

from __future__ import annotations

from tools.preflight.aws_errors import could_not_check
from tools.preflight.model import Context, Finding


def offered_zones(ctx: Context, types: list[str], zones: list[str]) -> dict[str, set[str]]:
    """For each instance type, the zones (of `zones`) that offer it."""
    assert ctx.client is not None
    paginator = ctx.client("ec2").get_paginator("describe_instance_type_offerings")
    offered: dict[str, set[str]] = {t: set() for t in types}
    for page in paginator.paginate(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": types}, {"Name": "location", "Values": zones}],
    ):
        for offering in page["InstanceTypeOfferings"]:
            if offering["Location"] in zones:
                offered.setdefault(offering["InstanceType"], set()).add(offering["Location"])
    return offered


def _groups(ctx: Context) -> list[tuple[str, list[str]]]:
    cfg = ctx.config
    groups = [(f"gpu_pools.{name}", list(pool.instance_types)) for name, pool in cfg.gpu_pools.items()]
    if cfg.cluster.mode == "create":
        groups.append(("cluster.system_node_group", list(cfg.cluster.system_node_group.instance_types)))
    return groups


def _fix(ctx: Context, key: str, instance_type: str, where: list[str]) -> str:
    if ctx.config.cluster.mode == "existing":
        zones_fix = "cluster.existing.private_subnet_ids (subnets in those zones only)"
    else:
        zones_fix = "aws:region or cluster.vpc.az_count (the stack takes the region's first zones in name order)"
    offered = ", ".join(where) if where else "none of the stack's zones"
    return f"{instance_type} is offered in {offered}: change {key}.instance_types, or {zones_fix}"


def checks(ctx: Context) -> list[Finding]:
    if not ctx.online:
        return []
    groups = _groups(ctx)
    if not ctx.zones:
        return [Finding(
            f"instance types offered: {key}", f"{', '.join(types)} in every zone of the stack",
            "could not check: the stack's zones are unknown", "unknown",
            "see the zones finding above",
        ) for key, types in groups]
    zones = sorted(ctx.zones)
    types = sorted({t for _, ts in groups for t in ts})
    try:
        offered = offered_zones(ctx, types, zones)
    except Exception as exc:  # noqa: BLE001 - every AWS error becomes `unknown`
        return [could_not_check(f"instance types offered: {key}", f"{', '.join(ts)} in {', '.join(zones)}", exc) for key, ts in groups]
    findings = []
    for key, group_types in groups:
        check = f"instance types offered: {key}"
        needs = f"{', '.join(group_types)} in {', '.join(zones)}"
        missing = {t: [z for z in zones if z not in offered.get(t, set())] for t in group_types}
        short = {t: m for t, m in missing.items() if m}
        if not short:
            findings.append(Finding(check, needs, f"offered in all {len(zones)} zones", "pass"))
            continue
        has = "; ".join(f"{t} not offered in {', '.join(m)}" for t, m in short.items())
        fixes = "; ".join(_fix(ctx, key, t, sorted(offered.get(t, set()))) for t in short)
        findings.append(Finding(check, needs, has, "fail", fixes))
    return findings
