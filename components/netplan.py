"""Subnet layout of a new VPC: a pure function, shared by config validation and the Cluster.

It must not import the Pulumi SDK or create resources: config validation runs it offline.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

MAX_AZS = 6
# Pods take their IPs from the private subnets (VPC CNI), so those get the big blocks:
# the VPC is cut in eight; the first `az_count` eighths are private subnets and the last
# eighth is cut in eight again for the public subnets, which only hold load balancers and NATs.
_SPLIT_BITS = 3


@dataclass(frozen=True)
class SubnetPlan:
    tier: Literal["private", "public"]
    az_index: int
    cidr: str


def plan_subnets(vpc_cidr: str, az_count: int) -> list[SubnetPlan]:
    """Return one private and one public subnet per AZ, deterministic for a given input."""
    if not 1 <= az_count <= MAX_AZS:
        raise ValueError(f"az_count must be between 1 and {MAX_AZS}, got {az_count}")
    network = ipaddress.IPv4Network(vpc_cidr)
    if network.prefixlen > 20:
        raise ValueError(f"a /{network.prefixlen} VPC is too small; use /16 to /20")
    eighths = list(network.subnets(prefixlen_diff=_SPLIT_BITS))
    public_blocks = list(eighths[-1].subnets(prefixlen_diff=_SPLIT_BITS))
    plan = [SubnetPlan("private", i, str(eighths[i])) for i in range(az_count)]
    plan += [SubnetPlan("public", i, str(public_blocks[i])) for i in range(az_count)]
    return plan
