"""Preflight checks of the quotas a stack consumes: EC2 vCPU quotas per instance-family
bucket and capacity type (every pool at max size, summed over the pools sharing a bucket,
plus what already runs there), EKS clusters per region and node groups per cluster, and
the Elastic IPs its NAT gateways take. Read-only: Service Quotas Get* and EC2/EKS
Describe*/List* only; it never requests an increase, it prints the command that does."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from botocore.exceptions import ClientError

from components import catalog
from tools.preflight.aws_errors import could_not_check, error_code
from tools.preflight.model import Context, Finding

Capacity = Literal["ON_DEMAND", "SPOT"]


@dataclass(frozen=True)
class Bucket:
    """One EC2 vCPU quota: a group of instance families for one capacity type."""

    code: str
    name: str


# EC2 vCPU quotas (service code ec2) by instance family prefix and capacity type. Codes as
# the Service Quotas console and API name them (`aws service-quotas list-service-quotas
# --service-code ec2`), also listed in brennerm/aws-quota-checker aws_quota/check/ec2.py:
# L-1216C47A Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances,
# L-34B43A08 All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests,
# L-DB2E81BA Running On-Demand G and VT instances, L-3819A6DF All G and VT Spot Instance
# Requests, L-417A185B Running On-Demand P instances, L-7212CCBC All P Spot Instance Requests.
STANDARD = {"ON_DEMAND": Bucket("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
            "SPOT": Bucket("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests")}
G_AND_VT = {"ON_DEMAND": Bucket("L-DB2E81BA", "Running On-Demand G and VT instances"),
            "SPOT": Bucket("L-3819A6DF", "All G and VT Spot Instance Requests")}
P = {"ON_DEMAND": Bucket("L-417A185B", "Running On-Demand P instances"),
     "SPOT": Bucket("L-7212CCBC", "All P Spot Instance Requests")}
# Families with buckets of their own that start with a standard letter (Inf, DL, Trn, HPC,
# High Memory u-): never put into the standard bucket by their first letter.
_OTHER_BUCKETS = ("inf", "dl", "trn", "hpc", "u-", "f", "x")
_STANDARD_LETTERS = "acdhimrtz"

# EKS quotas (service code eks; brennerm/aws-quota-checker aws_quota/check/eks.py):
# L-1194D53C Clusters (per region), L-6D54EA21 Managed node groups per cluster.
EKS_CLUSTERS = "L-1194D53C"
EKS_NODE_GROUPS = "L-6D54EA21"
# EC2-VPC Elastic IPs per region (service code ec2; aws_quota/check/ec2.py ElasticIpCountCheck).
EC2_EIPS = "L-0263D0A3"


def bucket_of(instance_type: str, capacity: Capacity) -> Bucket | None:
    """The vCPU quota an instance type counts against (None: a bucket this check lacks)."""
    family = instance_type.split(".", 1)[0]
    if family.startswith("vt") or family.startswith("g"):
        return G_AND_VT[capacity]
    if family.startswith("p"):
        return P[capacity]
    if family.startswith(_OTHER_BUCKETS):
        return None
    if family[:1] in _STANDARD_LETTERS:
        return STANDARD[capacity]
    return None


@dataclass
class Demand:
    """What a stack asks of one bucket: vCPUs at max size, by pool."""

    bucket: Bucket
    capacity: Capacity
    by_pool: dict[str, int] = field(default_factory=dict)

    @property
    def vcpus(self) -> int:
        return sum(self.by_pool.values())


def _vcpus(ctx: Context, instance_type: str, cache: dict[str, int]) -> int:
    if instance_type not in cache:
        known = catalog.instance_type(instance_type)
        if known is not None:
            cache[instance_type] = known.vcpus
        else:
            assert ctx.client is not None
            found = ctx.client("ec2").describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
            cache[instance_type] = int(found[0]["VCpuInfo"]["DefaultVCpus"])
    return cache[instance_type]


def demands(ctx: Context, vcpus: Callable[[str], int]) -> tuple[list[Demand], list[Finding]]:
    """vCPUs each bucket needs with every pool at max size (a pool of several types counted
    at its largest), and a finding for each type no bucket here covers."""
    cfg = ctx.config
    pools: list[tuple[str, list[str], Capacity, int]] = [
        (f"gpu_pools.{name}", pool.instance_types, pool.capacity_type, pool.max_size)
        for name, pool in cfg.gpu_pools.items()
    ]
    if cfg.cluster.mode == "create":
        # The system node group is on-demand (components/cluster.py, capacity type unset:
        # EKS CreateNodegroup defaults to ON_DEMAND).
        system = cfg.cluster.system_node_group
        pools.append(("cluster.system_node_group", system.instance_types, "ON_DEMAND", system.max_size))
    by_bucket: dict[str, Demand] = {}
    unknown: list[Finding] = []
    for key, types, capacity, max_size in pools:
        buckets = {t: bucket_of(t, capacity) for t in types}
        lacking = [t for t, b in buckets.items() if b is None]
        if lacking:
            unknown.append(Finding(
                f"vCPU quota for {key}", f"{', '.join(lacking)} at max size {max_size}",
                "could not check: no quota bucket known for this family", "unknown",
                "check its vCPU quota in the Service Quotas console (EC2)",
            ))
            continue
        for bucket in {b for b in buckets.values() if b is not None}:
            largest = max(vcpus(t) for t, b in buckets.items() if b == bucket)
            demand = by_bucket.setdefault(bucket.code, Demand(bucket, capacity))
            demand.by_pool[key] = largest * max_size
    return list(by_bucket.values()), unknown


def applied_quota(ctx: Context, service: str, code: str) -> float:
    """The account's quota: the applied value, else AWS's default (Service Quotas answers
    NoSuchResourceException for a quota never changed in this account)."""
    assert ctx.client is not None
    client = ctx.client("service-quotas")
    try:
        return float(client.get_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"])
    except ClientError as exc:
        if error_code(exc) != "NoSuchResourceException":
            raise
    return float(client.get_aws_default_service_quota(ServiceCode=service, QuotaCode=code)["Quota"]["Value"])


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    return [item for page in client.get_paginator(operation).paginate(**kwargs) for item in page[key]]


def vcpus_in_use(ctx: Context, vcpus: Callable[[str], int]) -> dict[str, int]:
    """vCPUs of pending and running instances per bucket code, leaving out this stack's own
    nodes (EKS tags managed node group instances `eks:cluster-name`), so a re-run after a
    deploy does not count them twice."""
    assert ctx.client is not None
    reservations = _pages(
        ctx.client("ec2"), "describe_instances", "Reservations",
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}],
    )
    used: dict[str, int] = {}
    for reservation in reservations:
        for instance in reservation["Instances"]:
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            if tags.get("eks:cluster-name") == ctx.config.cluster.name:
                continue
            capacity: Capacity = "SPOT" if instance.get("InstanceLifecycle") == "spot" else "ON_DEMAND"
            bucket = bucket_of(instance["InstanceType"], capacity)
            if bucket is not None:
                used[bucket.code] = used.get(bucket.code, 0) + vcpus(instance["InstanceType"])
    return used


def increase_command(service: str, code: str, value: int, region: str) -> str:
    return (
        f"aws service-quotas request-service-quota-increase --service-code {service} "
        f"--quota-code {code} --desired-value {value} --region {region}"
    )


def _vcpu_finding(ctx: Context, demand: Demand, used: dict[str, int] | Exception) -> Finding:
    bucket = demand.bucket
    check = f"vCPU quota: {bucket.name} ({bucket.code})"
    pools = ", ".join(f"{k} {v}" for k, v in sorted(demand.by_pool.items()))
    needs = f"{demand.vcpus} vCPUs at max size ({pools})"
    try:
        quota = applied_quota(ctx, "ec2", bucket.code)
    except Exception as exc:  # noqa: BLE001 - every AWS error becomes `unknown`
        return could_not_check(check, needs, exc)
    in_use = 0 if isinstance(used, Exception) else used.get(bucket.code, 0)
    usage = "usage unknown" if isinstance(used, Exception) else f"{in_use} in use by other instances"
    has = f"quota {quota:g} vCPUs, {usage}"
    total = demand.vcpus + in_use
    if total > quota:
        return Finding(check, needs, has, "fail", increase_command("ec2", bucket.code, math.ceil(total), ctx.region))
    if isinstance(used, Exception):
        # The quota covers the stack alone; what else runs there could not be read.
        reason = could_not_check(check, needs, used).has.removeprefix("could not check: ")
        return Finding(check, needs, f"{has} ({reason})", "warn", "allow ec2:DescribeInstances to count current usage")
    return Finding(check, needs, has, "pass")


def _count_finding(
    ctx: Context, check: str, service: str, code: str, needed: int, in_use: int, what: str
) -> Finding:
    needs = f"{needed} {what}"
    try:
        quota = applied_quota(ctx, service, code)
    except Exception as exc:  # noqa: BLE001
        return could_not_check(check, needs, exc)
    has = f"quota {quota:g}, {in_use} in use"
    if needed + in_use <= quota:
        return Finding(check, needs, has, "pass")
    return Finding(check, needs, has, "fail", increase_command(service, code, needed + in_use, ctx.region))


def eks_clusters(ctx: Context) -> Finding:
    check = f"EKS clusters per region ({EKS_CLUSTERS})"
    if ctx.config.cluster.mode == "existing":
        return Finding(check, "0 new clusters (mode existing)", "not needed", "pass")
    assert ctx.client is not None
    try:
        clusters = _pages(ctx.client("eks"), "list_clusters", "clusters")
    except Exception as exc:  # noqa: BLE001
        return could_not_check(check, "1 new cluster", exc)
    name = ctx.config.cluster.name
    mine = name in clusters
    return _count_finding(ctx, check, "eks", EKS_CLUSTERS, 0 if mine else 1, len(clusters),
                          "new cluster" + (f" ({name} exists already)" if mine else ""))


def _zone_count(ctx: Context) -> int:
    return len(ctx.zones) if ctx.zones else ctx.config.cluster.vpc.az_count


def eks_node_groups(ctx: Context) -> Finding:
    """Node groups the stack makes in its cluster: one per pool and zone
    (components/gpu_pools.py), plus the system group in mode create."""
    cfg = ctx.config
    check = f"EKS managed node groups per cluster ({EKS_NODE_GROUPS})"
    needed = len(cfg.gpu_pools) * _zone_count(ctx) + (1 if cfg.cluster.mode == "create" else 0)
    in_use = 0
    if cfg.cluster.mode == "existing":
        assert ctx.client is not None
        try:
            groups = _pages(ctx.client("eks"), "list_nodegroups", "nodegroups", clusterName=cfg.cluster.name)
        except Exception as exc:  # noqa: BLE001
            return could_not_check(check, f"{needed} node groups", exc)
        # Ours are named gpu-<pool>-<zone>-nodes-<suffix> (components/gpu_pools.py).
        ours = tuple(f"gpu-{pool}-" for pool in cfg.gpu_pools)
        in_use = sum(1 for g in groups if not g.startswith(ours))
    return _count_finding(ctx, check, "eks", EKS_NODE_GROUPS, needed, in_use, "node groups")


def elastic_ips(ctx: Context) -> Finding:
    """One EIP per NAT gateway (components/cluster.py): 1 for `single`, one per zone for
    `per_az`; none in mode existing."""
    cfg = ctx.config
    check = f"EC2-VPC Elastic IPs ({EC2_EIPS})"
    if cfg.cluster.mode == "existing":
        return Finding(check, "0 (mode existing: no NAT gateways)", "not needed", "pass")
    needed = 1 if cfg.cluster.vpc.nat_gateways == "single" else cfg.cluster.vpc.az_count
    assert ctx.client is not None
    try:
        addresses = ctx.client("ec2").describe_addresses()["Addresses"]
    except Exception as exc:  # noqa: BLE001
        return could_not_check(check, f"{needed} EIPs for NAT gateways", exc)
    # Ours carry Name=<cluster>-nat-<zone> (components/cluster.py): not counted twice.
    mine = f"{cfg.cluster.name}-nat-"
    in_use = sum(
        1 for a in addresses
        if not any(t["Key"] == "Name" and t["Value"].startswith(mine) for t in a.get("Tags", []))
    )
    return _count_finding(ctx, check, "ec2", EC2_EIPS, needed, in_use, f"EIPs for NAT gateways ({cfg.cluster.vpc.nat_gateways})")


def checks(ctx: Context) -> list[Finding]:
    if not ctx.online:
        return []
    cache: dict[str, int] = {}

    def vcpus(t: str) -> int:
        return _vcpus(ctx, t, cache)

    try:
        wanted, findings = demands(ctx, vcpus)
    except Exception as exc:  # noqa: BLE001 - describe-instance-types for a type outside the catalogue
        return [could_not_check("vCPU quotas", "vCPUs of every node group at max size", exc)]
    used: dict[str, int] | Exception
    try:
        used = vcpus_in_use(ctx, vcpus)
    except Exception as exc:  # noqa: BLE001 - usage is a bonus: the quota is still compared
        used = exc
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="preflight-quota") as pool:
        futures = [pool.submit(_vcpu_finding, ctx, d, used) for d in wanted]
        futures += [pool.submit(f, ctx) for f in (eks_clusters, eks_node_groups, elastic_ips)]
        findings += [f.result() for f in futures]
    return findings
