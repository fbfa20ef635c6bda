"""Preflight (`python -m tools.preflight`): each check against moto (EC2 zones, offerings,
instances, addresses; EKS; STS) and botocore's Stubber for Service Quotas, whose values moto
does not hold, with responses validated against the botocore service model. Each case
asserts the verdict and the fix; the command itself runs as a person runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from botocore.stub import Stubber
from moto import mock_aws

from components.config import StackConfig
from tests.support import parse, raw_stack
from tests.support.aws import fake_credentials, no_deployed_stack  # noqa: F401 (autouse)
from tools.lib.stackfile import ROOT, parse_document, stack_file
from tools.preflight import existing, offline, quotas, runner
from components.cluster import INTERNAL_ELB_ROLE_TAG
from tools.preflight.aws_errors import policy_actions
from tools.preflight.model import Context, Finding

ACCOUNT = "123456789012"  # moto's account
DENIED = "denied"
SERVICE_QUOTAS = botocore.session.get_session().get_service_model("service-quotas")
QuotaAnswer = float | str | tuple[str, float]


def quota_response(code: str, value: float, region: str) -> dict[str, Any]:
    """A GetServiceQuota / GetAWSDefaultServiceQuota answer with the members the botocore
    model defines for the Quota shape (ServiceQuota), nothing invented."""
    shape = SERVICE_QUOTAS.operation_model("GetServiceQuota").output_shape.members["Quota"]
    quota = {
        "ServiceCode": "ec2" if code not in (quotas.EKS_CLUSTERS, quotas.EKS_NODE_GROUPS) else "eks",
        "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
        "QuotaArn": f"arn:aws:servicequotas:{region}:{ACCOUNT}:ec2/{code}",
        "QuotaCode": code,
        "QuotaName": code,
        "Value": value,
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
    }
    assert set(quota) <= set(shape.members)
    return {"Quota": quota}


class StubbedQuotas:
    """A service-quotas client whose every call is answered through a fresh Stubber (the
    checks call it from several threads, and a Stubber answers in order): `answers` maps a
    quota code to its value, DENIED, or ("default", value) for a quota never applied in the
    account (NoSuchResourceException, then AWS's default)."""

    def __init__(self, session: boto3.Session, answers: dict[str, QuotaAnswer]) -> None:
        self.session, self.answers = session, answers

    def _call(self, operation: str, **params: Any) -> Any:
        client = self.session.client("service-quotas")
        code = params["QuotaCode"]
        answer = self.answers.get(code, 1000.0)
        with Stubber(client) as stub:
            if answer == DENIED:
                stub.add_client_error(
                    operation, "AccessDeniedException", "User is not authorized to call this operation",
                    http_status_code=400, expected_params=params,
                )
            elif isinstance(answer, tuple) and operation == "get_service_quota":
                stub.add_client_error(operation, "NoSuchResourceException", "no applied value", 400, expected_params=params)
            else:
                value = answer[1] if isinstance(answer, tuple) else float(answer)
                stub.add_response(operation, quota_response(code, value, client.meta.region_name), params)
            return getattr(client, operation)(**params)

    def get_service_quota(self, **params: Any) -> Any:
        return self._call("get_service_quota", **params)

    def get_aws_default_service_quota(self, **params: Any) -> Any:
        return self._call("get_aws_default_service_quota", **params)


Calls = list[tuple[str, str]]


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def context(
    cfg: StackConfig, answers: dict[str, QuotaAnswer] | None = None, calls: Calls | None = None,
    zones: list[str] | None = None, overrides: dict[str, Callable[[boto3.Session], Any]] | None = None,
) -> Context:
    """A Context on moto (inside `aws`) whose Service Quotas answer `answers`; every API
    call any client makes is recorded in `calls` as (IAM prefix, operation)."""
    session = boto3.Session(region_name=cfg.aws_region)
    recorded = calls if calls is not None else []

    def record(model: Any, **_: Any) -> None:
        recorded.append((model.service_model.signing_name, model.name))

    # before-parameter-build fires for every call, the stubbed ones too (a Stubber answers in
    # before-call.*.*, whose more specific handlers would run before a plain before-call one).
    session.events.register("before-parameter-build", record)
    made = runner.aws_clients(session, timeout=5)
    stubbed = StubbedQuotas(session, answers or {})

    special = {name: make(session) for name, make in (overrides or {}).items()}

    def client(service: str) -> Any:
        if service in special:
            return special[service]
        return stubbed if service == "service-quotas" else made(service)

    return Context(stack="test", config=cfg, region=cfg.aws_region, client=client, zones=zones)


def by_check(findings: list[Finding], fragment: str) -> Finding:
    found = [f for f in findings if fragment in f.check]
    assert len(found) == 1, (fragment, findings)
    return found[0]


def dev() -> StackConfig:
    return parse(raw_stack("dev"))


def prod(**pools: Any) -> StackConfig:
    raw = raw_stack("prod")
    if pools:
        raw["gpu_pools"] = {k: v for k, v in {**raw["gpu_pools"], **pools}.items() if v is not None}
    return parse(raw)


# --- vCPU quotas ---------------------------------------------------------------------------


def test_a_quota_of_zero_fails_with_the_exact_increase_command(aws: None) -> None:
    # dev: pool l4, g6.xlarge (4 vCPUs) SPOT, max 3 -> 12 vCPUs of G and VT spot.
    findings = quotas.checks(context(dev(), {"L-3819A6DF": 0.0}))
    spot = by_check(findings, "L-3819A6DF")
    assert spot.verdict == "fail"
    assert spot.needs.startswith("12 vCPUs")
    assert spot.fix == (
        "aws service-quotas request-service-quota-increase --service-code ec2 "
        "--quota-code L-3819A6DF --desired-value 12 --region us-east-1"
    )
    # The same stack with room passes: the check can tell the two apart.
    assert by_check(quotas.checks(context(dev(), {"L-3819A6DF": 12.0})), "L-3819A6DF").verdict == "pass"


def test_two_pools_sharing_a_bucket_are_added_up(aws: None) -> None:
    # prod: a10g g5.2xlarge (8) x 9 = 72 and l4 g6.2xlarge (8) x 4 = 32, both on-demand G.
    short = by_check(quotas.checks(context(prod(), {"L-DB2E81BA": 100.0})), "L-DB2E81BA")
    assert short.verdict == "fail"
    assert "104 vCPUs" in short.needs and "gpu_pools.a10g 72" in short.needs and "gpu_pools.l4 32" in short.needs
    assert "--quota-code L-DB2E81BA --desired-value 104 --region us-west-2" in short.fix
    # Either pool alone fits the same quota.
    alone = by_check(quotas.checks(context(prod(l4=None), {"L-DB2E81BA": 100.0})), "L-DB2E81BA")
    assert alone.verdict == "pass", alone


def test_running_instances_count_but_the_stacks_own_nodes_do_not(aws: None) -> None:
    ec2 = boto3.client("ec2", region_name="us-west-2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g5.2xlarge")
    ec2.run_instances(
        ImageId=image, MinCount=2, MaxCount=2, InstanceType="g6.2xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "eks:cluster-name", "Value": "tfs-prod"}]}],
    )
    finding = by_check(quotas.checks(context(prod(), {"L-DB2E81BA": 110.0})), "L-DB2E81BA")
    assert finding.verdict == "fail" and "8 in use" in finding.has
    assert "--desired-value 112 " in finding.fix


def test_an_unapplied_quota_falls_back_to_the_aws_default(aws: None) -> None:
    findings = quotas.checks(context(dev(), {"L-1216C47A": ("default", 5.0)}))
    system = by_check(findings, "L-1216C47A")  # t3.large (2) x 3 = 6 > 5
    assert system.verdict == "fail" and "quota 5 vCPUs" in system.has
    assert "--desired-value 6 " in system.fix


def test_a_denied_get_service_quota_is_unknown_and_names_the_action(aws: None) -> None:
    findings = quotas.checks(context(dev(), {"L-3819A6DF": DENIED}))
    denied = by_check(findings, "L-3819A6DF")
    assert denied.verdict == "unknown"
    assert "servicequotas:GetServiceQuota" in denied.has and "servicequotas:GetServiceQuota" in denied.fix
    assert runner.exit_status(findings) == 1


def test_eks_and_eip_quotas_count_what_the_stack_adds(aws: None) -> None:
    eks = boto3.client("eks", region_name="us-west-2")
    for i in range(2):
        eks.create_cluster(name=f"other-{i}", roleArn=f"arn:aws:iam::{ACCOUNT}:role/eks", resourcesVpcConfig={})
    ec2 = boto3.client("ec2", region_name="us-west-2")
    ec2.allocate_address(Domain="vpc")
    # prod: per_az NAT gateways in 3 zones; 2 pools x 3 zones + the system group.
    findings = quotas.checks(context(prod(), {"L-1194D53C": 2.0, "L-6D54EA21": 7.0, "L-0263D0A3": 3.0}, zones=["a", "b", "c"]))
    clusters = by_check(findings, "L-1194D53C")
    assert clusters.verdict == "fail" and "2 in use" in clusters.has
    assert "--service-code eks --quota-code L-1194D53C --desired-value 3 " in clusters.fix
    assert by_check(findings, "L-6D54EA21").verdict == "pass"  # 7 of 7
    eips = by_check(findings, "L-0263D0A3")
    assert eips.verdict == "fail" and eips.needs.startswith("3 EIPs")
    assert "--desired-value 4 " in eips.fix


def test_instance_families_land_in_their_quota_buckets() -> None:
    assert quotas.bucket_of("g6.xlarge", "SPOT") == quotas.G_AND_VT["SPOT"]
    assert quotas.bucket_of("vt1.3xlarge", "ON_DEMAND") == quotas.G_AND_VT["ON_DEMAND"]
    assert quotas.bucket_of("p5.48xlarge", "SPOT") == quotas.P["SPOT"]
    assert quotas.bucket_of("m7i.large", "ON_DEMAND") == quotas.STANDARD["ON_DEMAND"]
    # inf/dl/trn start with standard letters but have quotas of their own.
    assert quotas.bucket_of("inf2.xlarge", "ON_DEMAND") is None
    assert quotas.bucket_of("dl1.24xlarge", "ON_DEMAND") is None


def test_the_stubbed_quota_answers_are_validated_against_the_service_model() -> None:
    client = boto3.client("service-quotas", region_name="us-east-1")
    response = quota_response("L-DB2E81BA", 1.0, "us-east-1")
    response["Quota"]["CurrentValue"] = 1.0  # no such member in the model
    with Stubber(client) as stub, pytest.raises(ParamValidationError):
        stub.add_response("get_service_quota", response)


# --- zones and offerings -------------------------------------------------------------------


def existing_dev(subnets: list[str]) -> StackConfig:
    raw = raw_stack("dev")
    raw["cluster"] = {
        "mode": "existing", "name": "shared-gpu", "endpoint": raw["cluster"]["endpoint"],
        "existing": {"private_subnet_ids": subnets},
    }
    return parse(raw)


def subnets_in(zones: list[str]) -> list[str]:
    """Subnets in `zones`, and the existing cluster `shared-gpu` (moto's EKS) in their VPC."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=z)["Subnet"]["SubnetId"]
        for i, z in enumerate(zones)
    ]
    eks = boto3.client("eks", region_name="us-east-1")
    if "shared-gpu" in eks.list_clusters()["clusters"]:
        eks.delete_cluster(name="shared-gpu")
    eks.create_cluster(
        name="shared-gpu", roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig={"subnetIds": subnets}
    )
    return subnets


def test_a_type_offered_in_two_of_three_zones_fails_naming_the_zones_that_offer_it(aws: None) -> None:
    # moto's offerings (from EC2's own data) have no g6.xlarge in us-east-1e.
    ctx = context(existing_dev(subnets_in(["us-east-1a", "us-east-1b", "us-east-1e"])))
    findings = runner.preflight(ctx, ["tools.preflight.offerings"])
    assert ctx.zones == ["us-east-1a", "us-east-1b", "us-east-1e"]
    pool = by_check(findings, "gpu_pools.l4")
    assert pool.verdict == "fail"
    assert pool.has == "g6.xlarge not offered in us-east-1e"
    assert "g6.xlarge is offered in us-east-1a, us-east-1b: change gpu_pools.l4.instance_types" in pool.fix
    assert "cluster.existing.private_subnet_ids" in pool.fix
    ctx = context(existing_dev(subnets_in(["us-east-1a", "us-east-1b", "us-east-1c"])))
    assert by_check(runner.preflight(ctx, ["tools.preflight.offerings"]), "gpu_pools.l4").verdict == "pass"


def test_mode_create_uses_the_first_az_count_zones(aws: None) -> None:
    ctx = context(dev())
    zones, findings = runner.stack_zones(ctx)
    assert zones == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert [f.verdict for f in findings] == ["pass"]


def test_mode_existing_finds_the_tagged_private_subnets_of_the_clusters_vpc(aws: None) -> None:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    for i, zone in enumerate(["us-east-1a", "us-east-1b", "us-east-1c"]):
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{i}.0/24", AvailabilityZone=zone)["Subnet"]["SubnetId"]
        if zone != "us-east-1c":  # untagged: not the cluster's private subnets
            ec2.create_tags(Resources=[subnet], Tags=[{"Key": INTERNAL_ELB_ROLE_TAG, "Value": "1"}])

    def eks(session: boto3.Session) -> Any:
        # moto's DescribeCluster leaves out resourcesVpcConfig.vpcId, which EKS always returns.
        client = session.client("eks")
        stub = Stubber(client)
        stub.add_response("describe_cluster", {"cluster": {"name": "shared-gpu", "resourcesVpcConfig": {"vpcId": vpc}}}, {"name": "shared-gpu"})
        stub.activate()
        return client

    # What keeps the subnets from being found is the existing-cluster checks' to report.
    zones, findings = runner.stack_zones(context(existing_dev([]), overrides={"eks": eks}))
    assert zones == ["us-east-1a", "us-east-1b"] and findings == []


def test_a_check_that_is_denied_is_unknown_naming_the_action() -> None:
    def denied(ctx: Context) -> list[Finding]:
        raise ClientError(
            {"Error": {"Code": "UnauthorizedOperation", "Message": "You are not authorized to perform this operation."}},
            "DescribeInstanceTypeOfferings",
        )

    cfg = dev()
    [[finding]] = runner.run_checks(Context("dev", cfg, cfg.aws_region), [("tools.preflight.offerings", denied)])
    assert finding.verdict == "unknown"
    assert "ec2:DescribeInstanceTypeOfferings" in finding.has and "ec2:DescribeInstanceTypeOfferings" in finding.fix


def test_every_client_has_the_timeouts_and_few_retries() -> None:
    client = runner.aws_clients(boto3.Session(region_name="us-east-1"), 3.5)("ec2")
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (3.5, 3.5)
    assert client.meta.config.retries["total_max_attempts"] == 2


def test_unknown_zones_make_offerings_unknown_not_pass(aws: None) -> None:
    findings = runner.preflight(context(existing_dev([])), ["tools.preflight.offerings"])
    assert {f.verdict for f in findings} == {"unknown"}, findings  # no cluster shared-gpu in moto


# --- the stack file ------------------------------------------------------------------------


def test_a_placeholder_account_id_is_reported_first_with_the_keys_to_change() -> None:
    cfg = prod()
    findings = runner.ordered(offline.checks(Context("prod", cfg, cfg.aws_region)))
    first = findings[0]
    assert first.check == f"placeholder: account ID {offline.PLACEHOLDER_ACCOUNT}" and first.verdict == "fail"
    for key in ("cluster.admin_principals.platform-admins", "cluster.admin_principals.ci-deployer",
                "model_store.publisher_principals.0"):
        assert key in first.fix
    raw = raw_stack("prod")
    raw["cluster"]["admin_principals"] = {"admins": "arn:aws:iam::111122223333:role/Admins"}
    raw["model_store"]["publisher_principals"] = ["arn:aws:iam::111122223333:role/ci"]
    real = parse(raw)
    assert not [f for f in offline.checks(Context("prod", real, real.aws_region)) if "account ID" in f.check]


def test_secret_placeholders_are_read_from_the_file() -> None:
    document = parse_document(stack_file("prod").read_text(), "Pulumi.prod.yaml", "prod")
    found = by_check(offline.placeholders(prod(), document), "secret")
    assert "tf-serving-eks:alerting_secrets.oncall" in found.fix and "tf-serving-eks:docker_hub_access_token" in found.fix


def test_a_certificate_from_another_region_fails() -> None:
    raw = raw_stack("dev")
    raw["ingress"]["certificate_arn"] = f"arn:aws:acm:eu-west-1:{ACCOUNT}:certificate/{'0' * 8}-0000-0000-0000-{'0' * 12}"
    cfg = parse(raw)
    assert by_check(offline.certificate_region(cfg), "region").verdict == "fail"
    raw["ingress"]["certificate_arn"] = raw["ingress"]["certificate_arn"].replace("eu-west-1", "us-east-1")
    assert by_check(offline.certificate_region(parse(raw)), "region").verdict == "pass"


def test_a_deployer_outside_admin_principals_fails(aws: None) -> None:
    # moto's caller is arn:aws:sts::123456789012:user/moto, in none of prod's admin roles.
    findings = existing.checks(context(prod()))
    deployer = by_check(findings, "deployer is a cluster admin")
    assert deployer.verdict == "fail" and "bootstrap_creator_admin" in deployer.fix
    raw = raw_stack("prod")
    raw["cluster"]["admin_principals"] = {"me": f"arn:aws:iam::{ACCOUNT}:user/moto"}
    assert by_check(existing.checks(context(parse(raw))), "deployer is a cluster admin").verdict == "pass"
    assert existing._same_principal(
        f"arn:aws:iam::{ACCOUNT}:role/PlatformAdmins", f"arn:aws:iam::{ACCOUNT}:role/team/PlatformAdmins"
    )
    assert not existing._same_principal(
        f"arn:aws:iam::{ACCOUNT}:role/PlatformAdmins", "arn:aws:iam::111122223333:role/PlatformAdmins"
    )
    assert existing._role_of(f"arn:aws:sts::{ACCOUNT}:assumed-role/Admins/s1") == f"arn:aws:iam::{ACCOUNT}:role/Admins"


# --- read-only, and every call in the policy ------------------------------------------------


@pytest.mark.parametrize(
    "cfg", [dev, prod, lambda: existing_dev(subnets_in(["us-east-1a", "us-east-1b", "us-east-1c"]))],
    ids=["dev", "prod", "existing"],
)
def test_every_call_is_read_only_and_in_the_policy(aws: None, cfg: Callable[[], StackConfig]) -> None:
    calls: Calls = []
    ctx = context(cfg(), {"L-DB2E81BA": 0.0}, calls)  # existing: subnets_in makes the cluster
    findings = runner.preflight(ctx)
    actions = {f"{prefix}:{operation}" for prefix, operation in calls}
    # The recorder sees stubbed and moto calls alike: had it missed some, this would fail.
    assert {"servicequotas:GetServiceQuota", "ec2:DescribeInstanceTypeOfferings", "sts:GetCallerIdentity"} <= actions
    assert actions - set(policy_actions()) == set(), "calls missing from tools/preflight/policy.json"
    assert all(op.startswith(("Describe", "Get", "List")) for _, op in calls), calls
    assert findings
    # What several checks need (the caller, the existing cluster's private subnets) is
    # looked up once.
    assert calls.count(("sts", "GetCallerIdentity")) == 1, calls
    if ctx.config.cluster.mode == "existing":
        assert ctx.zones == ["us-east-1a", "us-east-1b", "us-east-1c"]
        # The private subnets once (they give the zones and the subnet checks), the load
        # balancer subnets once, and moto's DescribeCluster, which leaves out the VPC ID,
        # costs one more lookup (of a cluster subnet's VPC) for each of the two.
        assert calls.count(("ec2", "DescribeSubnets")) == 4, calls


def test_the_policy_holds_read_only_actions_only() -> None:
    assert all(a.split(":")[1].startswith(("Describe", "Get", "List")) for a in policy_actions())
    assert len(set(policy_actions())) == len(policy_actions())


# --- the command --------------------------------------------------------------------------


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "tools.preflight", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
        env={**base, "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
             "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **env},
    )


def test_without_credentials_it_says_so_runs_offline_and_does_not_pass() -> None:
    done = run("--stack", "dev")
    assert "Traceback" not in done.stderr, done.stderr
    assert "no AWS credentials found" in done.stderr
    assert done.returncode == 1
    assert "AWS account checks" in done.stdout and "placeholder" in done.stdout


def test_json_is_a_list_of_findings_failures_first() -> None:
    done = run("--stack", "prod", "--offline", "--json")
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)
    assert findings and all(set(f) == {"check", "needs", "has", "verdict", "fix"} for f in findings)
    assert findings[0]["check"].startswith("placeholder: account ID")
    order = [f["verdict"] for f in findings]
    assert order == sorted(order, key=["fail", "unknown", "warn", "pass"].index)


def test_an_unreachable_endpoint_is_unknown_without_a_traceback() -> None:
    done = run(
        "--stack", "dev", "--timeout", "2", "--json", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_MAX_ATTEMPTS="1",
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1
    verdicts = {f["check"]: f["verdict"] for f in json.loads(done.stdout)}
    assert verdicts["availability zones"] == "unknown" and verdicts["AWS account"] == "unknown"
    assert "pass" not in verdicts.values()


def test_exit_status_is_0_only_when_nothing_fails_or_is_unknown() -> None:
    def f(verdict: Any) -> Finding:
        return Finding("c", "n", "h", verdict)

    assert runner.exit_status([f("pass"), f("warn")]) == 0
    assert runner.exit_status([f("pass"), f("unknown")]) == 1
    assert runner.exit_status([f("fail")]) == 1


def test_every_check_module_is_imported_none_skipped() -> None:
    assert [name for name, _ in runner.check_functions()] == list(runner.CHECK_MODULES)
    with pytest.raises(ModuleNotFoundError):
        runner.check_functions(["tools.preflight.no_such_checks"])


def test_the_readme_shows_the_policy_and_the_dev_output_as_they_are() -> None:
    from tools.preflight import readme

    text = readme.README.read_text()
    shown = text.split(readme.BEGIN, 1)[1].split(readme.END, 1)[0].strip()
    assert shown == readme.section(), "README Preflight section is stale: run `python -m tools.preflight.readme --write-readme`"
    assert json.loads(shown.split("```json", 1)[1].split("```", 1)[0]) == json.loads(readme.POLICY_PATH.read_text())


def test_a_lookup_two_modules_need_fails_once_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    lost = Finding("EKS cluster shared-gpu", "cluster shared-gpu", "could not check: eks:DescribeCluster was denied", "unknown", "allow it")

    def first(ctx: Context) -> list[Finding]:
        return [lost]

    def second(ctx: Context) -> list[Finding]:
        return [lost, Finding("other", "-", "-", "pass")]

    cfg = dev()
    ctx = Context("dev", cfg, cfg.aws_region)
    names = ["tools.preflight.eks", "tools.preflight.existing"]
    monkeypatch.setattr(runner, "check_functions", lambda modules: list(zip(names, (first, second))))
    findings = runner.preflight(ctx, names)
    assert [f.check for f in findings] == ["EKS cluster shared-gpu", "other"]
