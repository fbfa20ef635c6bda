"""Preflight checks of the things a stack refers to but does not create: the account the
caller is signed in to against the accounts the stack file's ARNs name, the caller among
the cluster admins when the creator gets no access of its own, the ingress's
hosted zone, the admin and publisher principals, and in mode existing the cluster with what
components/cluster.py needs of it (version, add-ons, IAM OIDC provider, private and load
balancer subnets). It also exports the zones of an existing cluster's private subnets for
the command. It only reads (STS, IAM, Route 53, EKS, EC2 Describe/Get/List calls); it must
not create or change anything, nor check quotas, offerings or EKS versions (their modules do).
"""

from __future__ import annotations

import json
import re
from typing import Any

from components import catalog
from components.cluster import (
    ELB_ROLE_TAG,
    INTERNAL_ELB_ROLE_TAG,
    POD_IDENTITY_AGENT,
    existing_cluster_needs,
    oidc_provider_arn,
)
from components.config import StackConfig
from tools.preflight.aws_errors import CouldNotCheck, guarded
from tools.preflight.model import Context, Finding

_CLUSTER_NOTE = "existing.cluster"
_CALLER_NOTE = "existing.caller"
_SUBNETS_NOTE = "existing.private_subnets"
# Any ARN with an account field (arn:partition:service:region:account:resource).
_ARN_ACCOUNT = re.compile(r"^arn:(aws[a-z-]*):[a-z0-9-]+:[a-z0-9-]*:(\d{12}):")
_IAM_PRINCIPAL = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):(role|user)/(?:[^ ]*/)?([^/]+)$")


def checks(ctx: Context) -> list[Finding]:
    if not ctx.online:
        return []
    findings: list[Finding] = []
    try:
        identity = caller(ctx)
    except CouldNotCheck as exc:
        findings.append(exc.finding)
        account = None
    else:
        account = identity["Account"]
        findings.append(account_finding(ctx.config, account))
        findings += deployer_findings(ctx.config, identity["Arn"])
    for group in (hosted_zone_findings, lambda c: principal_findings(c, account), cluster_findings):
        try:
            findings += group(ctx)
        except CouldNotCheck as exc:
            findings.append(exc.finding)
    return findings


def _client(ctx: Context, service: str) -> Any:
    assert ctx.client is not None
    return ctx.client(service)


def caller(ctx: Context) -> dict[str, Any]:
    """sts:GetCallerIdentity, once per run (it needs no permission, but can still fail)."""
    if _CALLER_NOTE not in ctx.notes:
        sts = _client(ctx, "sts")
        ctx.notes[_CALLER_NOTE] = guarded(
            "AWS account", "credentials for the stack's account", "sts:GetCallerIdentity", sts.get_caller_identity
        )
    return dict(ctx.notes[_CALLER_NOTE])


def _partition(ctx: Context) -> str:
    match = re.match(r"^arn:([^:]+):", str(caller(ctx).get("Arn", "")))
    return match.group(1) if match else "aws"


# --- identity ----------------------------------------------------------------------------

def stack_arns(value: Any, key: str = "") -> list[tuple[str, str]]:
    """(dotted key, ARN) for every ARN with an account ID anywhere in the config."""
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in stack_arns(v, f"{key}.{k}" if key else str(k))]
    if isinstance(value, (list, tuple)):
        return [found for i, v in enumerate(value) for found in stack_arns(v, f"{key}.{i}")]
    if isinstance(value, str) and _ARN_ACCOUNT.match(value):
        return [(key, value)]
    return []


def account_finding(cfg: StackConfig, account: str) -> Finding:
    arns = stack_arns(cfg.model_dump(mode="python"))
    others: dict[str, list[str]] = {}
    for key, arn in arns:
        match = _ARN_ACCOUNT.match(arn)
        assert match is not None
        if match.group(2) != account:
            others.setdefault(match.group(2), []).append(key)
    needs = "the account the stack file's ARNs name"
    if not others:
        has = f"signed in to {account}" + (f"; every ARN in the stack file ({len(arns)}) names it" if arns else "")
        return Finding("AWS account", needs, has, "pass")
    named = "; ".join(f"account {a} in {', '.join(keys)}" for a, keys in sorted(others.items()))
    return Finding(
        "AWS account", needs, f"you are signed in to account {account}; the stack file names {named}", "fail",
        f"sign in to the stack's account (AWS_PROFILE), or change those keys to ARNs of account {account}",
    )


def _role_of(caller_arn: str) -> str:
    """The IAM ARN an STS caller ARN stands for: an assumed-role session is its role."""
    found = re.fullmatch(r"arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/.+", caller_arn)
    return f"arn:{found[1]}:iam::{found[2]}:role/{found[3]}" if found else caller_arn


_PRINCIPAL = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):(role|user)/(?:.*/)?([^/]+)")


def _same_principal(caller_arn: str, principal: str) -> bool:
    """Whether a caller is a listed principal: an STS session ARN drops the role's path, so
    roles (and users) match by account, kind and name."""
    a, b = _PRINCIPAL.fullmatch(caller_arn), _PRINCIPAL.fullmatch(principal)
    return caller_arn == principal or (a is not None and b is not None and a.groups() == b.groups())


def deployer_findings(cfg: StackConfig, caller_arn: str) -> list[Finding]:
    """Who runs the deploy: with `bootstrap_creator_admin: false` (mode create) only the
    `admin_principals` get cluster access (README, "Deploying for real"), so a caller outside
    them creates the cluster and then cannot create anything in it."""
    if cfg.cluster.mode != "create" or cfg.cluster.bootstrap_creator_admin:
        return []
    role = _role_of(caller_arn)
    in_list = any(_same_principal(role, a) for a in cfg.cluster.admin_principals.values())
    return [Finding(
        "deployer is a cluster admin", "the caller among cluster.admin_principals (bootstrap_creator_admin: false)",
        f"caller {role}", "pass" if in_list else "fail",
        "" if in_list else "add the caller's role to cluster.admin_principals, or set cluster.bootstrap_creator_admin: true",
    )]


# --- hosted zone --------------------------------------------------------------------------

def hosted_zone_findings(ctx: Context) -> list[Finding]:
    ingress = ctx.config.ingress
    if ingress is None or not ingress.enabled:
        return []
    route53 = _client(ctx, "route53")
    zone_id, domain = ingress.hosted_zone_id, ingress.domain.lower().rstrip(".")
    check = f"Route 53 hosted zone {zone_id}"
    needs = f"a hosted zone holding {domain} (ingress.hosted_zone_id)"
    found = guarded(check, needs, "route53:GetHostedZone", lambda: route53.get_hosted_zone(Id=zone_id),
                    missing=("NoSuchHostedZone",))
    if found is None:
        zones = _zones_named(ctx, check, needs, domain)
        fix = (
            f"set ingress.hosted_zone_id to {' or '.join(zones)} (the zone named {domain} in this account)"
            if zones
            else f"create the hosted zone {domain} (aws route53 create-hosted-zone --name {domain} "
            f"--caller-reference $(date +%s)) or correct ingress.hosted_zone_id"
        )
        return [Finding(check, needs, f"ingress.hosted_zone_id {zone_id}: no such hosted zone in this account", "fail", fix)]
    zone = found["HostedZone"]
    zone_name = str(zone["Name"]).lower().rstrip(".")
    if domain != zone_name and not domain.endswith(f".{zone_name}"):
        zones = _zones_named(ctx, check, needs, domain)
        fix = f"set ingress.domain to {zone_name} or a name under it"
        if zones:
            fix += f", or ingress.hosted_zone_id to {' or '.join(zones)} (the zone named {domain})"
        return [Finding(check, needs, f"zone {zone_id} is {zone_name}; ingress.domain {domain} is outside it", "fail", fix)]
    if zone.get("Config", {}).get("PrivateZone") and ingress.scheme == "internet-facing":
        # A private zone answers only inside its associated VPCs (Route 53 developer guide,
        # "Working with private hosted zones"): internet clients could not resolve the hosts.
        return [Finding(
            check, needs, f"zone {zone_name} is private; the ALB is internet-facing", "warn",
            "use the public hosted zone of the domain in ingress.hosted_zone_id, or ingress.scheme: internal",
        )]
    return [Finding(check, needs, f"zone {zone_name} holds {domain}", "pass")]


def _zones_named(ctx: Context, check: str, needs: str, domain: str) -> list[str]:
    route53 = _client(ctx, "route53")
    listed = guarded(check, needs, "route53:ListHostedZonesByName",
                     lambda: route53.list_hosted_zones_by_name(DNSName=domain, MaxItems="10")) or {}
    return [
        str(z["Id"]).removeprefix("/hostedzone/")
        for z in listed.get("HostedZones", [])
        if str(z["Name"]).lower().rstrip(".") == domain
    ]


# --- principals ---------------------------------------------------------------------------

def principals(cfg: StackConfig) -> list[tuple[str, str]]:
    """(dotted key, ARN) of the IAM principals the stack grants access to."""
    found: list[tuple[str, str]] = []
    if cfg.cluster.mode == "create":  # access entries are made in mode create only (README)
        found += [(f"cluster.admin_principals.{name}", arn) for name, arn in cfg.cluster.admin_principals.items()]
    found += [(f"model_store.publisher_principals.{i}", arn) for i, arn in enumerate(cfg.model_store.publisher_principals)]
    return found


def principal_findings(ctx: Context, account: str | None) -> list[Finding]:
    iam = None
    findings = []
    for key, arn in principals(ctx.config):
        check = f"IAM principal {key}"
        needs = f"{arn} exists"
        match = _IAM_PRINCIPAL.match(arn)
        if match is None:
            continue  # the config model accepts only role/user ARNs
        principal_account, kind, name = match.groups()
        if account is None:
            continue  # the caller's account is unknown: reported once as unknown already
        if principal_account != account:
            findings.append(Finding(
                check, needs, f"{key} is in account {principal_account}; you are signed in to account {account}",
                "fail", f"sign in to account {principal_account}, or set {key} to a {kind} of account {account}",
            ))
            continue
        iam = iam or _client(ctx, "iam")
        try:
            if kind == "role":
                got = guarded(check, needs, "iam:GetRole", lambda: iam.get_role(RoleName=name), missing=("NoSuchEntity",))
            else:
                got = guarded(check, needs, "iam:GetUser", lambda: iam.get_user(UserName=name), missing=("NoSuchEntity",))
        except CouldNotCheck as exc:
            findings.append(exc.finding)
            continue
        if got is None:
            findings.append(Finding(
                check, needs, f"no IAM {kind} named {name} in account {account}", "fail",
                f"create the {kind} {name}, or correct {key}: {arn}",
            ))
            continue
        real = got["Role" if kind == "role" else "User"]["Arn"]
        if real != arn:
            findings.append(Finding(check, needs, f"the {kind} {name} is {real}", "fail", f"set {key} to {real}"))
            continue
        findings.append(Finding(check, needs, f"{kind} {name} exists", "pass"))
    return findings


# --- mode existing ------------------------------------------------------------------------

def existing_cluster(ctx: Context) -> dict[str, Any] | None:
    """eks:DescribeCluster of cluster.name, once per run; None when there is no such cluster."""
    if _CLUSTER_NOTE not in ctx.notes:
        eks = _client(ctx, "eks")
        name = ctx.config.cluster.name
        found = guarded(f"EKS cluster {name}", f"cluster {name} in {ctx.region}", "eks:DescribeCluster",
                        lambda: eks.describe_cluster(name=name), missing=("ResourceNotFoundException",))
        ctx.notes[_CLUSTER_NOTE] = found["cluster"] if found else None
    cluster = ctx.notes[_CLUSTER_NOTE]
    return dict(cluster) if cluster else None


def _vpc_id(ctx: Context, cluster: dict[str, Any], check: str, needs: str) -> str | None:
    vpc_config = cluster.get("resourcesVpcConfig", {})
    if vpc_config.get("vpcId"):
        return str(vpc_config["vpcId"])
    # EKS always names the VPC (DescribeCluster VpcConfigResponse.vpcId); emulators that
    # leave it out still list the cluster's subnets, which live in that VPC.
    subnet_ids = vpc_config.get("subnetIds") or []
    if not subnet_ids:
        return None
    ec2 = _client(ctx, "ec2")
    got = guarded(check, needs, "ec2:DescribeSubnets", lambda: ec2.describe_subnets(SubnetIds=subnet_ids[:1])) or {}
    subnets = got.get("Subnets", [])
    return str(subnets[0]["VpcId"]) if subnets else None


def _tagged_subnets(ctx: Context, vpc_id: str, tag: str, check: str, needs: str) -> list[dict[str, Any]]:
    ec2 = _client(ctx, "ec2")
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": f"tag:{tag}", "Values": ["1"]}]
    return guarded(check, needs, "ec2:DescribeSubnets", lambda: [
        s for page in ec2.get_paginator("describe_subnets").paginate(Filters=filters) for s in page["Subnets"]
    ]) or []


def _private_subnets(ctx: Context, cluster: dict[str, Any]) -> tuple[list[dict[str, Any]], Finding | None]:
    """The private subnets the program would use (components/cluster.py _existing), or the
    failure that keeps it from finding them; looked up once per run (the command's zones and
    the subnet checks both need them), a failed lookup raised again to each caller."""
    if _SUBNETS_NOTE not in ctx.notes:
        try:
            ctx.notes[_SUBNETS_NOTE] = _look_up_private_subnets(ctx, cluster)
        except CouldNotCheck as exc:
            ctx.notes[_SUBNETS_NOTE] = exc
    found = ctx.notes[_SUBNETS_NOTE]
    if isinstance(found, CouldNotCheck):
        raise found
    subnets, problem = found
    return list(subnets), problem


def _look_up_private_subnets(ctx: Context, cluster: dict[str, Any]) -> tuple[list[dict[str, Any]], Finding | None]:
    check, needs = "Existing cluster: private subnets", "private subnets for the node groups"
    listed = list(ctx.config.cluster.existing.private_subnet_ids) if ctx.config.cluster.existing else []
    vpc_id = _vpc_id(ctx, cluster, check, needs)
    if listed:
        ec2 = _client(ctx, "ec2")
        got = guarded(check, needs, "ec2:DescribeSubnets", lambda: ec2.describe_subnets(SubnetIds=listed),
                      missing=("InvalidSubnetID.NotFound",))
        if got is None:
            return [], Finding(
                check, needs, f"cluster.existing.private_subnet_ids {', '.join(listed)}: not all exist", "fail",
                "correct cluster.existing.private_subnet_ids (aws ec2 describe-subnets --subnet-ids ...)",
            )
        subnets = got["Subnets"]
        outside = [s["SubnetId"] for s in subnets if vpc_id and s["VpcId"] != vpc_id]
        if outside:
            return [], Finding(
                check, needs, f"cluster.existing.private_subnet_ids {', '.join(outside)} are not in the cluster's VPC {vpc_id}",
                "fail", f"list subnets of {vpc_id} in cluster.existing.private_subnet_ids",
            )
        return subnets, None
    if vpc_id is None:
        return [], Finding(check, needs, "the cluster names no VPC", "unknown", "set cluster.existing.private_subnet_ids")
    subnets = _tagged_subnets(ctx, vpc_id, INTERNAL_ELB_ROLE_TAG, check, needs)
    if not subnets:
        return [], Finding(
            check, needs, f"no subnet of {vpc_id} is tagged {INTERNAL_ELB_ROLE_TAG}=1", "fail",
            f"tag the cluster's private subnets {INTERNAL_ELB_ROLE_TAG}=1, or list them in cluster.existing.private_subnet_ids",
        )
    return subnets, None


def existing_cluster_zones(ctx: Context) -> list[str] | None:
    """The zones of the private subnets an existing cluster's node groups would use; None
    when not known (offline, mode create, no cluster or subnets, a call that failed)."""
    if not ctx.online or ctx.config.cluster.mode != "existing":
        return None
    try:
        cluster = existing_cluster(ctx)
        if cluster is None:
            return None
        subnets, problem = _private_subnets(ctx, cluster)
    except CouldNotCheck:
        return None
    if problem is not None or not subnets:
        return None
    return sorted({str(s["AvailabilityZone"]) for s in subnets})


def cluster_findings(ctx: Context) -> list[Finding]:
    cfg = ctx.config
    if cfg.cluster.mode != "existing":
        return []
    name = cfg.cluster.name
    cluster = existing_cluster(ctx)
    if cluster is None:
        return [Finding(
            f"EKS cluster {name}", f"cluster {name} in {ctx.region} (cluster.name)",
            f"no cluster named {name} in {ctx.region}", "fail",
            f"correct cluster.name or aws:region (aws eks list-clusters --region {ctx.region}), or use cluster.mode: create",
        )]
    findings = [Finding(f"EKS cluster {name}", f"cluster {name} in {ctx.region}", f"found, Kubernetes {cluster['version']}", "pass")]
    findings.append(_version_finding(cfg, cluster))
    needs = existing_cluster_needs(cfg)
    addons = [("vpc-cni", "cluster.name", "NetworkPolicies of the serving pods")]
    if needs.pod_identity:
        addons.append((POD_IDENTITY_AGENT, "cluster.name", "Pod Identity roles"))
    if needs.ebs_storage:
        addons.append(("aws-ebs-csi-driver", "monitoring.mode", "Prometheus, Alertmanager and Grafana volumes"))
    for addon, key, needed_for in addons:
        try:
            findings.append(_addon_finding(ctx, name, addon, key, needed_for))
        except CouldNotCheck as exc:
            findings.append(exc.finding)
    if needs.irsa:
        try:
            findings.append(_oidc_finding(ctx, cluster))
        except CouldNotCheck as exc:
            findings.append(exc.finding)
    try:
        findings.append(_zones_finding(ctx, cluster))
    except CouldNotCheck as exc:
        findings.append(exc.finding)
    if needs.load_balancer_scheme:
        try:
            findings.append(_load_balancer_finding(ctx, cluster, needs.load_balancer_scheme))
        except CouldNotCheck as exc:
            findings.append(exc.finding)
    return findings


def _version_finding(cfg: StackConfig, cluster: dict[str, Any]) -> Finding:
    found = str(cluster["version"])
    check, needs = "Existing cluster: Kubernetes version", "a version components/catalog.py pins"
    pinned = sorted(catalog.ADDON_VERSIONS)
    if found not in pinned:
        return Finding(check, needs, f"cluster runs {found}", "fail",
                       f"upgrade the cluster to one of {', '.join(pinned)}")
    if "kubernetes_version" in cfg.cluster.model_fields_set and cfg.cluster.kubernetes_version != found:
        return Finding(check, f"cluster.kubernetes_version {cfg.cluster.kubernetes_version}", f"cluster runs {found}",
                       "fail", f"set cluster.kubernetes_version to {found} or leave it out")
    return Finding(check, needs, f"cluster runs {found}", "pass")


def _addon_finding(ctx: Context, cluster: str, addon: str, key: str, needed_for: str) -> Finding:
    check = f"Existing cluster: {addon} add-on"
    needs = f"{addon} installed, for {needed_for}"
    eks = _client(ctx, "eks")
    got = guarded(check, needs, "eks:DescribeAddon", lambda: eks.describe_addon(clusterName=cluster, addonName=addon),
                  missing=("ResourceNotFoundException",))
    if got is None:
        return Finding(check, needs, f"cluster {cluster} has no {addon} add-on ({key})", "fail",
                       f"aws eks create-addon --cluster-name {cluster} --addon-name {addon} (README, \"Using an existing cluster\")")
    found = got["addon"]
    if addon == "vpc-cni":
        # The CNI enforces NetworkPolicies only with its policy agent on (EKS user guide,
        # "Restrict pod network traffic with Kubernetes network policies").
        values = found.get("configurationValues") or "{}"
        try:
            on = json.loads(values).get("enableNetworkPolicy") == "true"
        except (ValueError, AttributeError):
            on = False
        if not on:
            return Finding(check, needs, f"vpc-cni {found.get('addonVersion', '')} without network policy enforcement",
                           "fail", f"aws eks update-addon --cluster-name {cluster} --addon-name vpc-cni "
                           "--configuration-values '{\"enableNetworkPolicy\": \"true\"}'")
    return Finding(check, needs, f"{addon} {found.get('addonVersion', '')} {found.get('status', '')}".strip(), "pass")


def _oidc_finding(ctx: Context, cluster: dict[str, Any]) -> Finding:
    issuer = str(cluster.get("identity", {}).get("oidc", {}).get("issuer", ""))
    check, needs = "Existing cluster: IAM OIDC provider", f"an IAM OIDC provider for {issuer} (model_store.identity: irsa)"
    arn = oidc_provider_arn(_partition(ctx), caller(ctx)["Account"], issuer)
    iam = _client(ctx, "iam")
    got = guarded(check, needs, "iam:GetOpenIDConnectProvider",
                  lambda: iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn), missing=("NoSuchEntity",))
    if got is None:
        return Finding(check, needs, f"no provider {arn}", "fail",
                       f"eksctl utils associate-iam-oidc-provider --cluster {cluster['name']} --approve, "
                       "or set model_store.identity: pod_identity")
    return Finding(check, needs, f"{arn} exists", "pass")


def _zones_finding(ctx: Context, cluster: dict[str, Any]) -> Finding:
    subnets, problem = _private_subnets(ctx, cluster)
    if problem is not None:
        return problem
    zones = sorted({str(s["AvailabilityZone"]) for s in subnets})
    check = "Existing cluster: private subnets"
    needs = "private subnets in enough zones for the GPU pools (one node group per zone)"
    has = f"{len(subnets)} subnets in {len(zones)} zones ({', '.join(zones)})"
    problems = ctx.config.zone_problems(len(zones))
    if problems:
        # The same rule `pulumi up` applies once it has looked the subnets up
        # (components/config/loading.py check_pool_zones).
        return Finding(check, needs, has, "fail", "; ".join(f"{p.key}: {p.message}" for p in problems)
                       + f"; or tag private subnets in more zones {INTERNAL_ELB_ROLE_TAG}=1")
    return Finding(check, needs, has, "pass")


def _load_balancer_finding(ctx: Context, cluster: dict[str, Any], scheme: str) -> Finding:
    tag = ELB_ROLE_TAG if scheme == "internet-facing" else INTERNAL_ELB_ROLE_TAG
    check = "Existing cluster: load balancer subnets"
    needs = f"subnets tagged {tag}=1 in at least 2 zones (ingress.scheme {scheme})"
    vpc_id = _vpc_id(ctx, cluster, check, needs)
    if vpc_id is None:
        return Finding(check, needs, "the cluster names no VPC", "unknown", "")
    # An ALB needs subnets in at least two zones (aws-load-balancer-controller docs, "Subnet
    # auto-discovery"), as components/cluster.py _load_balancer_subnets refuses.
    zones = sorted({str(s["AvailabilityZone"]) for s in _tagged_subnets(ctx, vpc_id, tag, check, needs)})
    has = f"{len(zones)} zones ({', '.join(zones) or 'none'}) in {vpc_id}"
    if len(zones) < 2:
        return Finding(check, needs, has, "fail", f"tag subnets of {vpc_id} in at least two zones {tag}=1")
    return Finding(check, needs, has, "pass")
