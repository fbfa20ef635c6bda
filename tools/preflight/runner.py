"""What the preflight command does between reading the stack and printing: the AWS session
(timeouts, few retries, the stack's region), the zones the stack will use, every check module
run in parallel, and the table or JSON of their findings. It owns no check of its own and
makes only read-only calls (the zones: DescribeAvailabilityZones, and for an existing cluster
DescribeCluster and DescribeSubnets)."""

from __future__ import annotations

import importlib
import json
import textwrap
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config

from components.config import StackConfig
from tools.preflight.aws_errors import could_not_check
from tools.preflight.existing import existing_cluster_zones
from tools.preflight.model import VERDICTS, Check, Context, Finding

# Every check module, in the order their findings are listed within one verdict (placeholders
# first). Each exposes `checks(ctx) -> list[Finding]`; a module missing here is an ImportError,
# never skipped. EKS versions/add-ons and existing things join as "tools.preflight.eks",
# "tools.preflight.existing": a one-line change.
CHECK_MODULES: tuple[str, ...] = (
    "tools.preflight.offline",
    "tools.preflight.quotas",
    "tools.preflight.offerings",
    "tools.preflight.eks",
    "tools.preflight.existing",
    "tools.preflight.amis",
    "tools.preflight.snapshots",
)
STACK_FILE_MODULE = "tools.preflight.offline"


def check_functions(modules: Iterable[str] = CHECK_MODULES) -> list[tuple[str, Check]]:
    return [(name, importlib.import_module(name).checks) for name in modules]


def aws_clients(session: boto3.Session, timeout: float) -> Callable[[str], Any]:
    """A thread-safe maker of clients for the session's region, each call bounded by `timeout`
    seconds to connect and to read, retried once (botocore/config.py, Config: connect_timeout,
    read_timeout; retries total_max_attempts counts the first attempt, max_attempts does not). boto3
    sessions are not thread-safe (boto3 guide, "Multithreading"): clients are made under a lock
    and shared, which botocore clients allow."""
    config = Config(
        connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 2, "mode": "standard"}
    )
    lock = threading.Lock()
    made: dict[str, Any] = {}

    def client(service: str) -> Any:
        with lock:
            if service not in made:
                made[service] = session.client(service, config=config)
            return made[service]

    return client


def stack_zones(ctx: Context) -> tuple[list[str] | None, list[Finding]]:
    """The zones the stack's node groups will use, as the program picks them
    (components/cluster.py): mode create, the region's first `cluster.vpc.az_count` available
    zones that need no opt-in, in the API's order; mode existing, the zones of its private
    subnets (`cluster.existing.private_subnet_ids`, else those tagged internal-elb=1 in the
    cluster's VPC), None when they cannot be found."""
    assert ctx.client is not None
    cfg = ctx.config.cluster
    ec2 = ctx.client("ec2")
    if cfg.mode == "create":
        check = "availability zones"
        needs = f"{cfg.vpc.az_count} available zones without opt-in (cluster.vpc.az_count)"
        try:
            found = ec2.describe_availability_zones(
                Filters=[
                    {"Name": "state", "Values": ["available"]},
                    {"Name": "opt-in-status", "Values": ["opt-in-not-required"]},
                ]
            )["AvailabilityZones"]
        except Exception as exc:  # noqa: BLE001 - every AWS error becomes `unknown`
            return None, [could_not_check(check, needs, exc)]
        names = [z["ZoneName"] for z in found]
        if len(names) < cfg.vpc.az_count:
            return names or None, [Finding(
                check, needs, f"{ctx.region} offers {len(names)}: {', '.join(names)}", "fail",
                f"set cluster.vpc.az_count to {len(names)} or pick another aws:region",
            )]
        zones = names[: cfg.vpc.az_count]
        return zones, [Finding(check, needs, ", ".join(zones), "pass")]
    # The existing-cluster checks (tools/preflight/existing.py) find the subnets the program
    # would use and report what keeps them from being found.
    return existing_cluster_zones(ctx), []


def run_checks(ctx: Context, checks: list[tuple[str, Check]]) -> list[list[Finding]]:
    """Every check module at once; a module that raises gives one `unknown` finding (a
    denial naming the IAM action), never a pass and never a traceback."""

    def run(name: str, check: Check) -> list[Finding]:
        try:
            return check(ctx)
        except Exception as exc:  # noqa: BLE001
            return [could_not_check(name.rsplit(".", 1)[-1] + " checks", "-", exc)]

    with ThreadPoolExecutor(max_workers=max(1, len(checks)), thread_name_prefix="preflight") as pool:
        results = [pool.submit(run, name, check) for name, check in checks]
        return [future.result() for future in results]


def ordered(findings: list[Finding]) -> list[Finding]:
    """Failures first, then unknown, warn, pass; within a verdict, in check-module order."""
    return sorted(findings, key=lambda f: VERDICTS.index(f.verdict))


def exit_status(findings: list[Finding]) -> int:
    """1 when a check fails or could not run (unknown is never a silent pass), else 0."""
    return 1 if any(f.verdict in ("fail", "unknown") for f in findings) else 0


COLUMNS = ("check", "needs", "has", "verdict", "fix")
WRAP = {"check": 44, "needs": 40, "has": 40, "verdict": 7}


def table(findings: list[Finding]) -> str:
    """One table, failures first; the fix is the last column and never wrapped or cut, so a
    command in it can be copied whole."""
    rows = [dict(zip(COLUMNS, COLUMNS))] + [f.as_dict() for f in ordered(findings)]
    cells = [{c: textwrap.wrap(r[c], WRAP[c]) or [""] if c in WRAP else [r[c]] for c in COLUMNS} for r in rows]
    widths = {c: max(len(line) for cell in cells for line in cell[c]) for c in COLUMNS if c in WRAP}
    out = []
    for i, cell in enumerate(cells):
        for n in range(max(len(v) for v in cell.values())):
            parts = [(cell[c][n] if n < len(cell[c]) else "").ljust(widths[c]) for c in COLUMNS if c in WRAP]
            parts.append(cell["fix"][n] if n < len(cell["fix"]) else "")
            out.append("  ".join(parts).rstrip())
        if i == 0:
            out.append("  ".join("-" * widths[c] for c in COLUMNS if c in WRAP) + "  ---")
    return "\n".join(out)


def as_json(findings: list[Finding]) -> str:
    return json.dumps([f.as_dict() for f in ordered(findings)], indent=2)


def build_context(
    stack: str, config: StackConfig, *, offline: bool, timeout: float,
    session: boto3.Session | None = None, document: dict[str, Any] | None = None,
) -> tuple[Context, str | None]:
    """The context for `stack`, and a note when it runs offline for want of credentials."""
    ctx = Context(stack=stack, config=config, region=config.aws_region, notes={"document": document})
    if offline:
        ctx.notes["offline"] = "requested"
        return ctx, None
    session = session or boto3.Session(region_name=config.aws_region)
    if session.get_credentials() is None:
        ctx.notes["offline"] = "no credentials"
        return ctx, "no AWS credentials found: running the offline checks only (configure credentials, e.g. aws configure, for the account checks)"
    ctx.client = aws_clients(session, timeout)
    return ctx, None


def preflight(ctx: Context, modules: Iterable[str] = CHECK_MODULES) -> list[Finding]:
    """The zones first (the checks read them), then every check module in parallel; the
    zone findings are listed after the stack file's (placeholders stay first)."""
    findings: list[Finding] = []
    if ctx.notes.get("offline") == "no credentials":
        # Without --offline, account checks that could not run are not a silent pass.
        findings.append(Finding(
            "AWS account checks", "credentials for the stack's account", "not run: no AWS credentials",
            "unknown", "configure credentials (aws configure, or AWS_PROFILE), or pass --offline for the stack file checks only",
        ))
    if ctx.online:
        ctx.zones, zone_findings = stack_zones(ctx)
        findings += zone_findings
    names = list(modules)
    results = run_checks(ctx, check_functions(names))
    at = names.index(STACK_FILE_MODULE) + 1 if STACK_FILE_MODULE in names else 0
    results.insert(at, findings)
    # Modules that need the same lookup (an existing cluster, for the EKS and the
    # referenced-resource checks) report its failure alike: once is enough.
    return list(dict.fromkeys(finding for result in results for finding in result))
