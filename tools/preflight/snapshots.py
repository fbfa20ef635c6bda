"""Preflight check of each Bottlerocket pool's pre-pulled data snapshot
(`gpu_pools.<pool>.image_pull.prepulled_snapshot_id`): that the account and region can see it
(EC2 DescribeSnapshots), that it is `completed` (a pending snapshot cannot be restored yet),
and that it fits the pool's data volume (EC2: a volume created from a snapshot is at least
the snapshot's size, so a larger snapshot fails every node launch). Read-only; it must not
build or copy snapshots (README, Cold start, says how)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from tools.preflight.aws_errors import could_not_check, error_code
from tools.preflight.model import Context, Finding


def checks(ctx: Context) -> list[Finding]:
    wanted = {
        name: pool.image_pull.prepulled_snapshot_id
        for name, pool in ctx.config.gpu_pools.items()
        if pool.image_pull.prepulled_snapshot_id is not None
    }
    if not wanted or not ctx.online:
        return []
    assert ctx.client is not None
    ec2 = ctx.client("ec2")
    findings = []
    for name, snapshot_id in sorted(wanted.items()):
        pool = ctx.config.gpu_pools[name]
        key = f"gpu_pools.{name}.image_pull.prepulled_snapshot_id"
        check = f"pre-pulled snapshot: {key}"
        needs = f"{snapshot_id} completed, at most {pool.disk_size_gib} GiB (disk_size_gib)"
        try:
            [snapshot] = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        except ClientError as exc:
            if error_code(exc) in ("InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"):
                findings.append(Finding(
                    check, needs, f"no snapshot {snapshot_id} visible in {ctx.region}", "fail",
                    f"build it in {ctx.region} (README, Cold start), copy it there, or share it with this account; then set {key}",
                ))
                continue
            findings.append(could_not_check(check, needs, exc, "ec2:DescribeSnapshots"))
            continue
        except Exception as exc:  # noqa: BLE001 - every AWS error becomes `unknown`
            findings.append(could_not_check(check, needs, exc, "ec2:DescribeSnapshots"))
            continue
        size, state = int(snapshot["VolumeSize"]), snapshot["State"]
        has = f"{state}, {size} GiB"
        if size > pool.disk_size_gib:
            findings.append(Finding(
                check, needs, has, "fail",
                f"set gpu_pools.{name}.disk_size_gib to at least {size} (a volume is never smaller than its snapshot)",
            ))
        elif state != "completed":
            findings.append(Finding(
                check, needs, has, "fail" if state == "error" else "warn",
                "wait until the snapshot is completed" if state == "pending" else "rebuild the snapshot (README, Cold start)",
            ))
        else:
            findings.append(Finding(check, needs, has, "pass"))
    return findings
