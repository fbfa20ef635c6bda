"""Preflight's EKS checks (tools/preflight/eks.py), its checks of what the stack refers to
(tools/preflight/existing.py) and of the Karpenter pools' pinned AMIs (tools/preflight/amis.py):
moto for what it emulates (EKS clusters, IAM, Route 53, STS, EC2 subnets), and for what it does
not (eks DescribeClusterVersions, DescribeAddonVersions, DescribeAddon; ssm GetParameter of
AWS's public parameters) answers validated against botocore's own service model, as Stubber
does."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.validate import validate_parameters
from moto import mock_aws
from moto.route53.models import HostedZoneIdentifier
from moto.utilities.id_generator import moto_id_manager

from components import catalog
from components.cluster import ELB_ROLE_TAG, INTERNAL_ELB_ROLE_TAG
from components.config import StackConfig
from tests.support import parse, raw_stack
from tests.support.aws import fake_credentials, no_deployed_stack  # noqa: F401 (autouse)
from tools.lib.stackfile import load_stack_file
from tools.preflight import amis, eks, existing
from tools.preflight.aws_errors import CouldNotCheck, guarded
from tools.preflight.model import Context, Finding

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account: the one the caller is signed in to
FAR = datetime.now(timezone.utc) + timedelta(days=400)

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def denied(params: dict[str, Any]) -> dict[str, Any]:
    return {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}


class Account:
    """Clients for the checks: moto behind them, `answers` for the operations moto does not
    emulate (each answer validated against the operation's output shape, as Stubber validates
    its responses), and every operation called recorded."""

    def __init__(self, answers: dict[str, Answer] | None = None) -> None:
        self.answers = answers or {}
        self.called: list[str] = []

    def client(self, service: str) -> Any:
        client = boto3.client(service, region_name=REGION)
        client.meta.events.register("before-parameter-build", self._keep_params)
        client.meta.events.register("before-call", self._record_and_answer)
        return client

    @staticmethod
    def _keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["preflight_test_params"] = dict(params)

    def _record_and_answer(self, model: Any, context: dict[str, Any], **_: Any) -> Any:
        self.called.append(model.name)
        answer = self.answers.get(model.name)
        if answer is None:
            return None  # moto answers
        response = answer(context["preflight_test_params"])
        if "Error" in response:
            return AWSResponse("https://stub", 400, {}, None), response
        validate_parameters(response, model.output_shape)
        return AWSResponse("https://stub", 200, {}, None), response

    def context(self, config: StackConfig, stack: str = "test") -> Context:
        return Context(stack=stack, config=config, region=REGION, client=self.client)


@pytest.fixture(autouse=True)
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def one(findings: list[Finding], check: str) -> Finding:
    found = [f for f in findings if f.check == check]
    assert len(found) == 1, f"{check}: {[f.check for f in findings]}"
    return found[0]


# --- EKS versions and add-on builds ----------------------------------------------------

def cluster_versions(status: str = "STANDARD_SUPPORT", standard_end: datetime = FAR, offered: tuple[str, ...] = ("1.34", "1.35", "1.36")) -> Answer:
    def answer(params: dict[str, Any]) -> dict[str, Any]:
        wanted = params.get("clusterVersions") or list(offered)
        return {"clusterVersions": [
            {
                "clusterVersion": v,
                "clusterType": "eks",
                "defaultVersion": v == offered[-1],
                "releaseDate": standard_end - timedelta(days=420),
                "endOfStandardSupportDate": standard_end,
                "endOfExtendedSupportDate": standard_end + timedelta(days=365),
                "status": status.lower().replace("_", "-"),
                "versionStatus": status,
            }
            for v in wanted if v in offered
        ]}
    return answer


def addon_versions(builds: dict[str, list[tuple[str, str, bool]]] | None = None) -> Answer:
    """Per add-on, its builds as (version, Kubernetes version, default); add-ons not named
    offer exactly our pins for every version."""
    def answer(params: dict[str, Any]) -> dict[str, Any]:
        name, version = params["addonName"], params["kubernetesVersion"]
        listed = (builds or {}).get(name) or [
            (pins[name], k8s, True) for k8s, pins in catalog.ADDON_VERSIONS.items()
        ]
        return {"addons": [{
            "addonName": name,
            "type": "networking",
            "owner": "aws",
            "publisher": "eks",
            "addonVersions": [
                {
                    "addonVersion": build,
                    "architecture": ["amd64", "arm64"],
                    "compatibilities": [{"clusterVersion": k8s, "platformVersions": ["*"], "defaultVersion": default}],
                    "requiresConfiguration": False,
                }
                for build, k8s, default in listed if k8s == version
            ],
        }]}
    return answer


def dev() -> StackConfig:
    return load_stack_file("dev")


def with_version(version: str) -> StackConfig:
    raw = raw_stack("dev")
    raw["cluster"]["kubernetes_version"] = version
    return parse(raw)


def test_missing_addon_build_fails_listing_the_builds_that_exist() -> None:
    pin = catalog.ADDON_VERSIONS["1.36"]["vpc-cni"]
    account = Account({
        "DescribeClusterVersions": cluster_versions(),
        "DescribeAddonVersions": addon_versions({"vpc-cni": [
            ("v1.20.0-eksbuild.1", "1.36", False),
            ("v1.23.1-eksbuild.2", "1.36", True),
            ("v1.23.1-eksbuild.10", "1.36", False),
            ("v1.99.0-eksbuild.1", "1.35", False),  # another version's build: not listed
        ]}),
    })
    findings = eks.checks(account.context(dev(), "dev"))
    cni = one(findings, "EKS add-on vpc-cni build")
    assert cni.verdict == "fail"
    assert f"{pin} not offered for 1.36" in cni.has
    # Newest first (eksbuild.10 after eksbuild.2 numerically), the default marked.
    assert cni.has.endswith("builds for 1.36: v1.23.1-eksbuild.10, v1.23.1-eksbuild.2 (default), v1.20.0-eksbuild.1")
    assert "cluster.addons.vpc_cni: v1.23.1-eksbuild.2 in Pulumi.dev.yaml" in cni.fix
    assert 'ADDON_VERSIONS["1.36"]["vpc-cni"] in components/catalog.py' in cni.fix
    others = [f for f in findings if f.check.startswith("EKS add-on") and f is not cni]
    assert {f.check for f in others} == {
        f"EKS add-on {a} build" for a in ("eks-pod-identity-agent", "kube-proxy", "coredns", "aws-ebs-csi-driver")
    }
    assert all(f.verdict == "pass" for f in others), others


def test_an_overridden_addon_pin_is_fixed_in_the_stack_file_only() -> None:
    raw = raw_stack("dev")
    raw["cluster"]["addons"] = {"coredns": "v1.0.0-eksbuild.1"}
    account = Account({"DescribeClusterVersions": cluster_versions(), "DescribeAddonVersions": addon_versions()})
    coredns = one(eks.checks(account.context(parse(raw), "dev")), "EKS add-on coredns build")
    assert coredns.verdict == "fail"
    assert coredns.fix == f"set cluster.addons.coredns: {catalog.ADDON_VERSIONS['1.36']['coredns']} in Pulumi.dev.yaml"


def test_version_in_extended_support_warns_with_its_dates() -> None:
    ended = datetime(2026, 12, 2, tzinfo=timezone.utc)
    account = Account({
        "DescribeClusterVersions": cluster_versions("EXTENDED_SUPPORT", standard_end=ended),
        "DescribeAddonVersions": addon_versions(),
    })
    finding = one(eks.checks(account.context(with_version("1.34"))), "EKS Kubernetes version 1.34")
    assert finding.verdict == "warn"
    assert "standard support ended 2026-12-02; extended support ends 2027-12-02" in finding.has
    assert finding.fix == "upgrade: set cluster.kubernetes_version to 1.36"


def test_standard_support_warns_only_within_90_days_of_its_end() -> None:
    soon = datetime.now(timezone.utc) + timedelta(days=30)
    account = Account({"DescribeClusterVersions": cluster_versions(standard_end=soon), "DescribeAddonVersions": addon_versions()})
    finding = one(eks.checks(account.context(dev())), "EKS Kubernetes version 1.36")
    assert finding.verdict == "warn"
    assert f"standard support ends {soon.date().isoformat()}" in finding.has
    assert "EKS then upgrades the control plane" in finding.has

    account.answers["DescribeClusterVersions"] = cluster_versions(standard_end=FAR)
    finding = one(eks.checks(account.context(dev())), "EKS Kubernetes version 1.36")
    assert finding.verdict == "pass"
    assert finding.has == (
        f"standard support until {FAR.date().isoformat()}, extended support until "
        f"{(FAR + timedelta(days=365)).date().isoformat()}"
    )


def test_version_not_offered_fails_naming_the_versions_that_are() -> None:
    account = Account({
        "DescribeClusterVersions": cluster_versions(offered=("1.35", "1.36", "1.37")),
        "DescribeAddonVersions": addon_versions(),
    })
    finding = one(eks.checks(account.context(with_version("1.34"))), "EKS Kubernetes version 1.34")
    assert finding.verdict == "fail"
    assert finding.has == "not offered; offered here: 1.35, 1.36, 1.37"
    assert finding.fix == "set cluster.kubernetes_version to 1.35 or 1.36 (offered here and pinned in components/catalog.py)"


def test_unsupported_version_fails() -> None:
    account = Account({"DescribeClusterVersions": cluster_versions("UNSUPPORTED"), "DescribeAddonVersions": addon_versions()})
    assert one(eks.checks(account.context(dev())), "EKS Kubernetes version 1.36").verdict == "fail"


def test_denied_addon_lookup_is_unknown_naming_the_action() -> None:
    builds = addon_versions()
    account = Account({
        "DescribeClusterVersions": cluster_versions(),
        "DescribeAddonVersions": lambda p: denied(p) if p["addonName"] == "coredns" else builds(p),
    })
    findings = eks.checks(account.context(dev()))
    coredns = one(findings, "EKS add-on coredns build")
    assert coredns.verdict == "unknown"
    assert coredns.has.startswith("could not check")
    assert "eks:DescribeAddonVersions" in coredns.fix
    assert one(findings, "EKS add-on vpc-cni build").verdict == "pass"


def test_offline_checks_nothing() -> None:
    ctx = Context(stack="dev", config=dev(), region=REGION, client=None)
    assert eks.checks(ctx) == [] and existing.checks(ctx) == []


# --- hosted zones, principals, identity -------------------------------------------------

def hosted_zone(name: str, zone_id: str, private: bool = False) -> None:
    """A Route 53 zone with the ID the config names (moto makes IDs without the Z prefix)."""
    for spelled in (name, f"{name}."):
        moto_id_manager.set_custom_id(HostedZoneIdentifier(ACCOUNT, spelled, None), zone_id)
    try:
        extra: dict[str, Any] = {"VPC": {"VPCRegion": REGION, "VPCId": "vpc-12345678"}, "HostedZoneConfig": {"PrivateZone": True}} if private else {}
        boto3.client("route53").create_hosted_zone(Name=name, CallerReference=zone_id, **extra)
    finally:
        for spelled in (name, f"{name}."):
            moto_id_manager.unset_custom_id(HostedZoneIdentifier(ACCOUNT, spelled, None))


ZONE_CHECK = "Route 53 hosted zone Z0EXAMPLE0DEV000000001"


def test_missing_hosted_zone_fails_naming_the_key_and_the_zone_of_the_domain() -> None:
    findings = existing.checks(Account().context(dev()))
    zone = one(findings, ZONE_CHECK)
    assert zone.verdict == "fail"
    assert "ingress.hosted_zone_id Z0EXAMPLE0DEV000000001: no such hosted zone" in zone.has
    assert "aws route53 create-hosted-zone --name example.com" in zone.fix

    hosted_zone("example.com", "Z0OTHER0ID0000000001")
    zone = one(existing.checks(Account().context(dev())), ZONE_CHECK)
    assert zone.verdict == "fail"
    assert zone.fix == "set ingress.hosted_zone_id to Z0OTHER0ID0000000001 (the zone named example.com in this account)"


def test_domain_outside_its_zone_fails_naming_the_domain() -> None:
    hosted_zone("example.org", "Z0EXAMPLE0DEV000000001")
    zone = one(existing.checks(Account().context(dev())), ZONE_CHECK)
    assert zone.verdict == "fail"
    assert zone.has == "zone Z0EXAMPLE0DEV000000001 is example.org; ingress.domain example.com is outside it"
    assert zone.fix.startswith("set ingress.domain to example.org")


def test_domain_in_its_zone_passes() -> None:
    hosted_zone("example.com", "Z0EXAMPLE0DEV000000001")
    assert one(existing.checks(Account().context(dev())), ZONE_CHECK).verdict == "pass"


def test_private_zone_for_an_internet_facing_alb_warns() -> None:
    hosted_zone("example.com", "Z0EXAMPLE0DEV000000001", private=True)
    zone = one(existing.checks(Account().context(dev())), ZONE_CHECK)
    assert zone.verdict == "warn"
    assert "ingress.scheme: internal" in zone.fix


def prod() -> StackConfig:
    return load_stack_file("prod")


def test_missing_principal_fails_naming_the_key_and_value() -> None:
    boto3.client("iam").create_role(RoleName="ci-deployer", AssumeRolePolicyDocument="{}")
    findings = existing.checks(Account().context(prod(), "prod"))
    admins = one(findings, "IAM principal cluster.admin_principals.platform-admins")
    assert admins.verdict == "fail"
    assert admins.has == f"no IAM role named PlatformAdmins in account {ACCOUNT}"
    assert admins.fix == f"create the role PlatformAdmins, or correct cluster.admin_principals.platform-admins: arn:aws:iam::{ACCOUNT}:role/PlatformAdmins"
    assert one(findings, "IAM principal cluster.admin_principals.ci-deployer").verdict == "pass"
    assert one(findings, "IAM principal model_store.publisher_principals.0").verdict == "pass"


def test_principal_in_another_account_fails_and_the_identity_check_names_the_key() -> None:
    raw = raw_stack("prod")
    other = "arn:aws:iam::210987654321:role/ci-deployer"
    raw["model_store"]["publisher_principals"] = [other]
    findings = existing.checks(Account().context(parse(raw, "prod"), "prod"))
    publisher = one(findings, "IAM principal model_store.publisher_principals.0")
    assert publisher.verdict == "fail"
    assert publisher.has == f"model_store.publisher_principals.0 is in account 210987654321; you are signed in to account {ACCOUNT}"
    assert "set model_store.publisher_principals.0 to a role of account 123456789012" in publisher.fix
    identity = one(findings, "AWS account")
    assert identity.verdict == "fail"
    assert identity.has == (
        f"you are signed in to account {ACCOUNT}; the stack file names account 210987654321 in "
        "model_store.publisher_principals.0"
    )


def test_identity_passes_when_every_arn_names_the_callers_account() -> None:
    identity = one(existing.checks(Account().context(prod(), "prod")), "AWS account")
    assert identity.verdict == "pass"
    assert identity.has == f"signed in to {ACCOUNT}; every ARN in the stack file (3) names it"


def test_denied_get_role_is_unknown_naming_the_action() -> None:
    account = Account({"GetRole": lambda p: {"Error": {"Code": "AccessDenied", "Message": "no"}}})
    findings = existing.checks(account.context(prod(), "prod"))
    admins = one(findings, "IAM principal cluster.admin_principals.platform-admins")
    assert admins.verdict == "unknown"
    assert admins.has == "could not check: iam:GetRole was denied"
    assert "allow iam:GetRole" in admins.fix


# --- mode existing -------------------------------------------------------------------------

CLUSTER = "shared-gpu"


def existing_raw(base: str = "prod", **cluster: Any) -> dict[str, Any]:
    raw = raw_stack(base)
    raw["cluster"] = {"mode": "existing", "name": CLUSTER, "endpoint": raw["cluster"]["endpoint"], **cluster}
    return raw


def existing_cluster(zones: tuple[str, ...] = ("us-east-1a", "us-east-1b", "us-east-1c"), version: str = "1.36") -> dict[str, Any]:
    """A VPC with one private subnet per zone tagged for internal load balancers, public ones
    tagged for internet-facing ones, and an EKS cluster in it."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.50.0.0/16")["Vpc"]["VpcId"]
    private: list[str] = []
    public: list[str] = []
    for i, zone in enumerate(zones):
        for tier, tag, ids in (("private", INTERNAL_ELB_ROLE_TAG, private), ("public", ELB_ROLE_TAG, public)):
            subnet = ec2.create_subnet(
                VpcId=vpc, CidrBlock=f"10.50.{i * 2 + (tier == 'public')}.0/24", AvailabilityZone=zone,
                TagSpecifications=[{"ResourceType": "subnet", "Tags": [{"Key": tag, "Value": "1"}]}],
            )["Subnet"]["SubnetId"]
            ids.append(subnet)
    # An untagged subnet in a fourth zone: not one the program would use.
    ec2.create_subnet(VpcId=vpc, CidrBlock="10.50.100.0/24", AvailabilityZone="us-east-1d")
    role = boto3.client("iam").create_role(RoleName="eks-cluster", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    boto3.client("eks", region_name=REGION).create_cluster(
        name=CLUSTER, version=version, roleArn=role, resourcesVpcConfig={"subnetIds": private + public}
    )
    return {"vpc": vpc, "private": private, "public": public}


def installed(*missing: str, cni_config: str = '{"enableNetworkPolicy": "true"}') -> Answer:
    def answer(params: dict[str, Any]) -> dict[str, Any]:
        name = params["addonName"]
        if name in missing:
            return {"Error": {"Code": "ResourceNotFoundException", "Message": f"No addon: {name} found in cluster: {CLUSTER}"}}
        addon = {"addonName": name, "clusterName": CLUSTER, "status": "ACTIVE", "addonVersion": "v1.3.10-eksbuild.3"}
        if name == "vpc-cni":
            addon["configurationValues"] = cni_config
        return {"addon": addon}
    return answer


def test_existing_cluster_without_the_pod_identity_agent_fails() -> None:
    existing_cluster()
    account = Account({"DescribeAddon": installed("eks-pod-identity-agent")})
    findings = existing.checks(account.context(parse(existing_raw(), "prod"), "prod"))
    agent = one(findings, "Existing cluster: eks-pod-identity-agent add-on")
    assert agent.verdict == "fail"
    assert agent.has == f"cluster {CLUSTER} has no eks-pod-identity-agent add-on (cluster.name)"
    assert agent.fix.startswith(f"aws eks create-addon --cluster-name {CLUSTER} --addon-name eks-pod-identity-agent")
    passed = {f.check for f in findings if f.verdict == "pass"}
    assert {
        f"EKS cluster {CLUSTER}", "Existing cluster: Kubernetes version", "Existing cluster: vpc-cni add-on",
        "Existing cluster: aws-ebs-csi-driver add-on", "Existing cluster: private subnets",
        "Existing cluster: load balancer subnets",
    } <= passed


def test_existing_cluster_without_network_policy_enforcement_fails() -> None:
    existing_cluster()
    account = Account({"DescribeAddon": installed(cni_config="")})
    cni = one(existing.checks(account.context(parse(existing_raw(), "prod"), "prod")), "Existing cluster: vpc-cni add-on")
    assert cni.verdict == "fail"
    assert "enableNetworkPolicy" in cni.fix


def test_too_few_tagged_private_subnet_zones_fail_naming_the_pool_keys() -> None:
    existing_cluster(zones=("us-east-1a", "us-east-1b"))
    ctx = Account({"DescribeAddon": installed()}).context(parse(existing_raw(), "prod"), "prod")
    subnets = one(existing.checks(ctx), "Existing cluster: private subnets")
    assert subnets.verdict == "fail"
    assert subnets.has == "2 subnets in 2 zones (us-east-1a, us-east-1b)"
    # prod spreads serving pods strictly: 3 standing nodes cannot split evenly over 2 zones.
    pool = next(iter(ctx.config.gpu_pools))
    assert f"gpu_pools.{pool}.min_size" in subnets.fix
    assert existing.existing_cluster_zones(ctx) == ["us-east-1a", "us-east-1b"]


def test_no_tagged_private_subnet_fails() -> None:
    found = existing_cluster()
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.delete_tags(Resources=found["private"], Tags=[{"Key": INTERNAL_ELB_ROLE_TAG}])
    ctx = Account({"DescribeAddon": installed()}).context(parse(existing_raw(), "prod"), "prod")
    subnets = one(existing.checks(ctx), "Existing cluster: private subnets")
    assert subnets.verdict == "fail"
    assert subnets.has == f"no subnet of {found['vpc']} is tagged {INTERNAL_ELB_ROLE_TAG}=1"
    assert existing.existing_cluster_zones(ctx) is None


def test_listed_private_subnets_are_the_zones_used() -> None:
    found = existing_cluster()
    raw = existing_raw("dev", existing={"private_subnet_ids": found["private"][:1]})
    ctx = Account({"DescribeAddon": installed()}).context(parse(raw), "dev")
    assert existing.existing_cluster_zones(ctx) == ["us-east-1a"]
    assert one(existing.checks(ctx), "Existing cluster: private subnets").verdict == "pass"


def test_missing_cluster_and_version_mismatch_fail() -> None:
    findings = existing.checks(Account().context(parse(existing_raw(), "prod"), "prod"))
    missing = one(findings, f"EKS cluster {CLUSTER}")
    assert missing.verdict == "fail" and "correct cluster.name" in missing.fix
    existing_cluster(version="1.36")
    raw = existing_raw(kubernetes_version="1.35")
    findings = existing.checks(Account({"DescribeAddon": installed()}).context(parse(raw, "prod"), "prod"))
    version = one(findings, "Existing cluster: Kubernetes version")
    assert version.verdict == "fail"
    assert version.fix == "set cluster.kubernetes_version to 1.36 or leave it out"


def test_irsa_needs_the_clusters_oidc_provider() -> None:
    existing_cluster()
    raw = existing_raw()
    raw["model_store"] = {**raw["model_store"], "identity": "irsa"}
    account = Account({"DescribeAddon": installed()})
    oidc = one(existing.checks(account.context(parse(raw, "prod"), "prod")), "Existing cluster: IAM OIDC provider")
    assert oidc.verdict == "fail"
    assert "eksctl utils associate-iam-oidc-provider" in oidc.fix
    issuer = boto3.client("eks", region_name=REGION).describe_cluster(name=CLUSTER)["cluster"]["identity"]["oidc"]["issuer"]
    boto3.client("iam").create_open_id_connect_provider(Url=issuer, ThumbprintList=["a" * 40], ClientIDList=["sts.amazonaws.com"])
    oidc = one(existing.checks(Account({"DescribeAddon": installed()}).context(parse(raw, "prod"), "prod")),
               "Existing cluster: IAM OIDC provider")
    assert oidc.verdict == "pass"


def test_existing_cluster_version_is_checked_for_support() -> None:
    existing_cluster(version="1.35")
    account = Account({"DescribeClusterVersions": cluster_versions("EXTENDED_SUPPORT")})
    findings = eks.checks(account.context(parse(existing_raw(), "prod"), "prod"))
    assert [f.check for f in findings] == ["EKS Kubernetes version 1.35"]  # no add-on of ours
    assert findings[0].verdict == "warn"


# --- read-only ---------------------------------------------------------------------------

READ_ONLY = ("Describe", "Get", "List")


def assert_read_only(called: list[str]) -> None:
    writes = sorted({name for name in called if not name.startswith(READ_ONLY)})
    assert not writes, f"preflight called {writes}"


def test_every_call_is_read_only() -> None:
    existing_cluster()
    hosted_zone("example.com", "Z0EXAMPLE0PROD00000001")
    answers = {"DescribeAddon": installed(), "DescribeClusterVersions": cluster_versions(), "DescribeAddonVersions": addon_versions()}
    account = Account(answers)
    raw = existing_raw()
    raw["model_store"] = {**raw["model_store"], "identity": "irsa"}
    for config, stack in ((parse(raw, "prod"), "prod"), (prod(), "prod"), (dev(), "dev")):
        for module in (eks, existing):
            module.checks(account.context(copy.deepcopy(config), stack))
    assert {"DescribeClusterVersions", "DescribeAddonVersions", "DescribeAddon", "DescribeCluster", "GetRole",
            "GetHostedZone", "GetCallerIdentity", "DescribeSubnets", "GetOpenIDConnectProvider"} <= set(account.called)
    assert_read_only(account.called)


def test_the_read_only_check_catches_a_write() -> None:
    account = Account()
    account.client("iam").create_role(RoleName="x", AssumeRolePolicyDocument="{}")
    with pytest.raises(AssertionError, match="CreateRole"):
        assert_read_only(account.called)


def test_other_failures_are_unknown_too_never_a_pass() -> None:
    def timeout() -> None:
        raise ReadTimeoutError(endpoint_url="https://eks.us-east-1.amazonaws.com")

    def throttled() -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "DescribeAddonVersions")

    for call in (timeout, throttled):
        with pytest.raises(CouldNotCheck) as caught:
            guarded("c", "n", "eks:DescribeAddonVersions", call)
        assert caught.value.finding.verdict == "unknown"
        assert caught.value.finding.has.startswith("could not check: eks:DescribeAddonVersions failed")
    # A code the caller expects (the thing does not exist) is an answer, not a failure.
    def missing() -> None:
        raise ClientError({"Error": {"Code": "NoSuchEntity", "Message": "no"}}, "GetRole")

    assert guarded("c", "n", "iam:GetRole", missing, missing=("NoSuchEntity",)) is None


def test_denied_cluster_versions_is_unknown() -> None:
    account = Account({"DescribeClusterVersions": denied, "DescribeAddonVersions": addon_versions()})
    finding = one(eks.checks(account.context(dev())), "EKS Kubernetes version 1.36")
    assert finding.verdict == "unknown"
    assert "allow eks:DescribeClusterVersions" in finding.fix


# --- the AMI a Karpenter pool pins --------------------------------------------------------------

def karpenter_dev(ami_type: str = "AL2023_x86_64_NVIDIA") -> StackConfig:
    raw = raw_stack("dev")
    pool = raw["serving"]["gpu_pool"]
    for key in ("min_size", "desired_size", "max_unavailable"):
        raw["gpu_pools"][pool].pop(key, None)
    raw["gpu_pools"][pool].update(provisioner="karpenter", ami_type=ami_type)
    if ami_type.startswith("BOTTLEROCKET"):
        # Refused on Bottlerocket: time slicing, nodeadm's instance store, the node cache.
        raw["gpu_pools"][pool].pop("time_slicing_replicas", None)
        raw["gpu_pools"][pool].pop("instance_store", None)
        raw["serving"].pop("model_cache", None)
    return parse(raw, "dev")


def published(*names: str) -> Answer:
    """ssm GetParameter answering for `names` only, ParameterNotFound otherwise (SSM API)."""
    def answer(params: dict[str, Any]) -> dict[str, Any]:
        if params["Name"] not in names:
            return {"Error": {"Code": "ParameterNotFound", "Message": ""}}
        return {"Parameter": {"Name": params["Name"], "Type": "String", "Value": "ami-0123456789abcdef0", "Version": 1}}
    return answer


def test_the_ssm_paths_are_the_ones_karpenter_reads() -> None:
    # karpenter-provider-aws v1.14.1 pkg/providers/amifamily: al2023.go resolvePath, and
    # bottlerocket.go (the leading v trimmed).
    assert amis.ssm_parameter("al2023@v20260520", "1.35") == (
        "/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/x86_64/nvidia/"
        "amazon-eks-node-al2023-x86_64-nvidia-1.35-v20260520/image_id"
    )
    assert amis.ssm_parameter("bottlerocket@v1.46.0", "1.35") == "/aws/service/bottlerocket/aws-k8s-1.35-nvidia/x86_64/1.46.0/image_id"


@pytest.mark.parametrize("ami_type", ["AL2023_x86_64_NVIDIA", "BOTTLEROCKET_x86_64_NVIDIA"])
def test_a_pinned_ami_that_is_published_passes_and_a_missing_one_fails(ami_type: str) -> None:
    cfg = karpenter_dev(ami_type)
    [pool] = cfg.karpenter_pools
    name = amis.ssm_parameter(catalog.KARPENTER_AMI_ALIASES[cfg.gpu_pools[pool].ami_type], cfg.cluster.kubernetes_version)
    account = Account({"GetParameter": published(name)})
    [finding] = amis.checks(account.context(cfg, "dev"))
    assert finding.verdict == "pass" and "ami-0123456789abcdef0" in finding.has
    assert account.called == ["GetParameter"]
    [missing] = amis.checks(Account({"GetParameter": published()}).context(cfg, "dev"))
    assert missing.verdict == "fail" and "catalog.KARPENTER_AMI_ALIASES" in missing.fix
    assert "get-parameters-by-path" in missing.fix


def test_a_denied_ami_lookup_is_unknown_and_names_the_action() -> None:
    [finding] = amis.checks(Account({"GetParameter": denied}).context(karpenter_dev(), "dev"))
    assert finding.verdict == "unknown" and "ssm:GetParameter" in finding.has


def test_no_karpenter_pool_no_ami_lookup() -> None:
    account = Account()
    assert amis.checks(account.context(dev(), "dev")) == [] and account.called == []
