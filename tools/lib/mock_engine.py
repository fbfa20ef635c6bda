"""Run the real Pulumi program under the SDK's mock engine and record what it registers.

One harness for the tests and the offline preview: no cloud account, no Pulumi CLI, no
network. Mocks answer with plausible computed values (ARNs, endpoints, IDs) so wiring can
be followed end to end; they prove wiring, not what AWS would accept.

It owns the mocks and the record of registrations; it must not judge a rendering beyond what
the engine itself refuses (two resources with one URN): the tests and the preview do that.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.stack import run_pulumi_func

from components import images
from components.config import PROJECT
from tools.lib.stackfile import open_envelopes

ACCOUNT_ID = "123456789012"
# Fixture of an existing cluster, returned for `aws.eks.get_cluster` (mode: existing).
EXISTING_VPC_ID = "vpc-0a1b2c3d4e5f60718"
EXISTING_SUBNETS = ["subnet-0aaa1111bbbb2222c", "subnet-0ddd3333eeee4444f", "subnet-0abc5555def6666a"]
# Its public subnets (tagged kubernetes.io/role/elb=1), in zones a, b, c like the private ones.
EXISTING_PUBLIC_SUBNETS = ["subnet-0fff7777aaaa8888b", "subnet-0eee9999cccc0000d", "subnet-0bbb1212dddd3434e"]
EXISTING_VERSION = "1.35"
# The existing cluster's EKS add-ons and their configuration values, for `aws.eks.get_addon`;
# tests change these (monkeypatch) to model a cluster that lacks one.
EXISTING_ADDONS: dict[str, str] = {
    "vpc-cni": '{"enableNetworkPolicy": "true"}',
    "eks-pod-identity-agent": "",
    "aws-ebs-csi-driver": "",
    "coredns": "",
    "kube-proxy": "",
}
# Whether the account has an IAM OIDC provider for the existing cluster's issuer.
EXISTING_OIDC_PROVIDER = True
# Tags of the existing cluster's subnets and security groups, by ID (none unless a test sets them).
EXISTING_RESOURCE_TAGS: dict[str, dict[str, str]] = {}




def existing_subnet_zone(region: str, subnet_id: str) -> str:
    """The zone the mock places an existing subnet in: the fixture's in zones a, b, c; any
    other ID in one of those three, fixed by its hash."""
    for fixture in (EXISTING_SUBNETS, EXISTING_PUBLIC_SUBNETS):
        if subnet_id in fixture:
            return region + "abc"[fixture.index(subnet_id)]
    return region + "abc"[int(_short_hash(subnet_id), 16) % 3]


@dataclass
class Registered:
    """One resource as the program registered it."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    custom: bool
    parent: str
    provider: str
    protect: bool
    retain_on_delete: bool
    ignore_changes: list[str]
    depends_on: list[str]
    # Top-level inputs that held a Pulumi secret (their values above are unwrapped).
    secret_inputs: set[str] = field(default_factory=set)
    # What the mocks answered: inputs plus computed values (IDs, ARNs ...).
    outputs: dict[str, Any] = field(default_factory=dict)
    # Read from outside the stack (a StackReference, a `get`), not created by it.
    read: bool = False
    # How long Pulumi waits for each operation, where the program says (create/update/delete).
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    # The program's `aliases` option as the engine receives it: {"urn": ...} or a spec
    # {"name", "type", "stack", "project", "parentUrn" | "noParent"} (unset fields omitted).
    aliases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def component(self) -> str:
        """The top-level component this resource belongs to ('stack' if none)."""
        chain = self.urn.split("::")[2].split("$")
        for token in chain:
            if token.startswith(f"{PROJECT}:"):
                return token.split(":")[1]
        return "stack"

    @property
    def is_k8s_object(self) -> bool:
        return (
            self.custom
            and self.type.startswith("kubernetes:")
            and not self.type.startswith("kubernetes:helm.sh/")
        )

    def manifest(self) -> dict[str, Any]:
        """The Kubernetes object as it would be applied (typed inputs are the object)."""
        return {k: v for k, v in self.inputs.items() if k not in ("__defaults",)}


@dataclass
class Rendering:
    stack: str
    resources: list[Registered] = field(default_factory=list)
    invokes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    def of_type(self, type_token: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name: str | None = None) -> Registered:
        found = [r for r in self.of_type(type_token) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_token} {name or ''}, found {len(found)}")
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)

    def k8s_objects(self) -> list[dict[str, Any]]:
        return [r.manifest() for r in self.resources if r.is_k8s_object]


def _normalise(value: Any) -> Any:
    """Protobuf carries every number as a double; give integral ones back as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG_VALUE = "1b47061264138c4ac30d75fd1eb44270"


def _unwrap_secrets(value: Any) -> tuple[Any, bool]:
    """Replace Pulumi's secret envelopes by their values; say whether there was one."""
    return open_envelopes(value, lambda m: (m.get(SECRET_SIG_KEY) == SECRET_SIG_VALUE, m.get("value")))


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:17]


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers registrations and invokes with computed values shaped like AWS's."""

    def __init__(
        self,
        region: str,
        rendering: Rendering,
        stack_references: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.region = region
        self.rendering = rendering
        # Outputs of other stacks, by fully qualified name, for pulumi.StackReference.
        self.stack_references = dict(stack_references or {})

    def _arn(self, service: str, kind: str, name: str, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:aws:{service}:{region}:{ACCOUNT_ID}:{kind}/{name}"

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = _normalise(args.inputs)
        state: dict[str, Any] = dict(inputs)
        name, token = args.name, args.typ
        rid = f"{name}-{_short_hash(token + name)[:8]}"
        computed: dict[str, Callable[[], dict[str, Any]]] = {
            "aws:eks/cluster:Cluster": lambda: {
                "arn": self._arn("eks", "cluster", inputs.get("name", name)),
                "endpoint": f"https://{_short_hash(name).upper()}.gr7.{self.region}.eks.amazonaws.com",
                "certificateAuthority": {"data": base64.b64encode(b"mock-ca").decode()},
                "identities": [
                    {
                        "oidcs": [
                            {
                                "issuer": f"https://oidc.eks.{self.region}.amazonaws.com/id/"
                                f"{_short_hash(name).upper()}"
                            }
                        ]
                    }
                ],
                "vpcConfig": {
                    **inputs.get("vpcConfig", {}),
                    "clusterSecurityGroupId": f"sg-{_short_hash(name)}",
                    "vpcId": "vpc-mock",
                },
                "version": inputs.get("version", "1.35"),
            },
            "aws:iam/role:Role": lambda: {
                "name": f"{name}-{_short_hash(name)[:7]}",
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{name}-{_short_hash(name)[:7]}",
            },
            # Auto-named like a role; its ID is its URL (pulumi-aws sqs.Queue).
            "aws:sqs/queue:Queue": lambda: {
                "name": f"{name}-{_short_hash(name)[:7]}",
                "arn": f"arn:aws:sqs:{self.region}:{ACCOUNT_ID}:{name}-{_short_hash(name)[:7]}",
                "url": f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT_ID}/{name}-{_short_hash(name)[:7]}",
            },
            "aws:eks/accessEntry:AccessEntry": lambda: {"accessEntryArn": self._arn("eks", "access-entry", name)},
            "aws:cloudwatch/eventRule:EventRule": lambda: {
                "name": f"{name}-{_short_hash(name)[:7]}",
                "arn": self._arn("events", "rule", f"{name}-{_short_hash(name)[:7]}"),
            },
            "aws:iam/policy:Policy": lambda: {
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:policy/{name}-{_short_hash(name)[:7]}"
            },
            "aws:iam/openIdConnectProvider:OpenIdConnectProvider": lambda: {
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/"
                + str(inputs.get("url", "")).removeprefix("https://")
            },
            "aws:kms/key:Key": lambda: {
                "keyId": rid,
                "arn": self._arn("kms", "key", _short_hash(name)),
            },
            "aws:ec2/vpc:Vpc": lambda: {"id": f"vpc-{_short_hash(name)}"},
            "aws:ec2/subnet:Subnet": lambda: {"id": f"subnet-{_short_hash(name)}"},
            "aws:eks/nodeGroup:NodeGroup": lambda: {
                "nodeGroupName": f"{name}-{_short_hash(name)[:8]}",
                "resources": [
                    {"autoscalingGroups": [{"name": f"eks-{name}-{_short_hash(name)[:8]}"}]}
                ],
            },
            "aws:ec2/launchTemplate:LaunchTemplate": lambda: {
                "id": f"lt-{_short_hash(name)}",
                "latestVersion": 1,
            },
            "aws:s3/bucketV2:BucketV2": lambda: {
                "bucket": inputs.get("bucket", rid),
                "arn": f"arn:aws:s3:::{inputs.get('bucket', rid)}",
            },
            "aws:acm/certificate:Certificate": lambda: {
                "arn": self._arn("acm", "certificate", "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"),
                "domainValidationOptions": [
                    {
                        "domainName": domain,
                        "resourceRecordName": f"_{_short_hash(domain)}.{domain}.",
                        "resourceRecordType": "CNAME",
                        "resourceRecordValue": f"_{_short_hash(domain + 'v')}.acm-validations.aws.",
                    }
                    for domain in [inputs.get("domainName"), *inputs.get("subjectAlternativeNames", [])]
                ],
            },
            "aws:acm/certificateValidation:CertificateValidation": lambda: {
                "certificateArn": inputs.get("certificateArn")
            },
            "random:index/randomPassword:RandomPassword": lambda: {
                "result": f"mock-{_short_hash(name)}",
                "bcryptHash": "mock",
            },
            "aws:route53/record:Record": lambda: {"fqdn": str(inputs.get("name", "")).rstrip(".")},
            "aws:s3/bucket:Bucket": lambda: {
                "id": inputs.get("bucket", rid),
                "bucket": inputs.get("bucket", rid),
                "arn": f"arn:aws:s3:::{inputs.get('bucket', rid)}",
            },
        }
        if token == "pulumi:pulumi:StackReference":
            referenced = inputs.get("name", name)
            return referenced, {"name": referenced, "outputs": dict(self.stack_references.get(referenced, {})), "secretOutputNames": []}
        state.update(computed.get(token, lambda: {})())
        state.setdefault("arn", self._arn(token.split(":")[1].split("/")[0], token.split(":")[-1].lower(), name))
        return state.get("id", rid), state

    def call(self, args: pulumi.runtime.MockCallArgs) -> Any:
        token = args.token
        call_args = _normalise(dict(args.args))
        self.rendering.invokes.append((token, call_args))
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{self.region}{s}" for s in "abcdef"]
            return {"names": names, "zoneIds": [f"use1-az{i}" for i in range(1, 7)], "id": self.region}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT_ID,
                "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/preview",
                "userId": "AIDAPREVIEW",
                "id": ACCOUNT_ID,
            }
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if token == "aws:eks/getCluster:getCluster":
            cluster = call_args["name"]
            return {
                "name": cluster,
                "id": cluster,
                "arn": self._arn("eks", "cluster", cluster),
                "endpoint": f"https://{_short_hash(cluster).upper()}.gr7.{self.region}.eks.amazonaws.com",
                "version": EXISTING_VERSION,
                "certificateAuthorities": [{"data": base64.b64encode(b"mock-ca").decode()}],
                "identities": [
                    {"oidcs": [{"issuer": f"https://oidc.eks.{self.region}.amazonaws.com/id/EXISTING"}]}
                ],
                "vpcConfig": {
                    "vpcId": EXISTING_VPC_ID,
                    "subnetIds": EXISTING_SUBNETS,
                    "clusterSecurityGroupId": "sg-0existing0cluster0",
                    "securityGroupIds": [],
                    "endpointPrivateAccess": True,
                    "endpointPublicAccess": True,
                    "publicAccessCidrs": ["0.0.0.0/0"],
                },
            }
        if token == "aws:eks/getAddon:getAddon":
            addon = call_args["addonName"]
            if addon not in EXISTING_ADDONS:
                # A failed read, as the provider reports one (the invoke raises in the program).
                return {}, [("addonName", f"reading EKS Add-On ({call_args['clusterName']},{addon}): couldn't find resource")]
            return {
                "addonName": addon,
                "clusterName": call_args["clusterName"],
                "addonVersion": "v1.0.0-eksbuild.1",
                "configurationValues": EXISTING_ADDONS[addon],
                "arn": self._arn("eks", "addon", f"{call_args['clusterName']}/{addon}"),
                "id": f"{call_args['clusterName']}:{addon}",
            }
        if token == "aws:iam/getOpenIdConnectProvider:getOpenIdConnectProvider":
            url = str(call_args.get("url", "")).removeprefix("https://")
            if not EXISTING_OIDC_PROVIDER:
                return {}, [("url", f"reading IAM OIDC Provider ({url}): couldn't find resource")]
            arn = f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{url}"
            return {"arn": arn, "id": arn, "url": url, "clientIdLists": ["sts.amazonaws.com"]}
        if token == "aws:ec2/getSubnet:getSubnet":
            subnet_id = call_args["id"]
            index = (EXISTING_SUBNETS + EXISTING_PUBLIC_SUBNETS).index(subnet_id) if subnet_id in (
                EXISTING_SUBNETS + EXISTING_PUBLIC_SUBNETS) else int(_short_hash(subnet_id), 16) % 200
            return {
                "id": subnet_id,
                "cidrBlock": f"10.42.{index * 16}.0/20",
                "availabilityZone": existing_subnet_zone(self.region, subnet_id),
                "vpcId": EXISTING_VPC_ID,
                "arn": self._arn("ec2", "subnet", subnet_id),
                "tags": dict(EXISTING_RESOURCE_TAGS.get(subnet_id, {})),
            }
        if token == "aws:ec2/getSecurityGroup:getSecurityGroup":
            group_id = call_args["id"]
            return {
                "id": group_id,
                "vpcId": EXISTING_VPC_ID,
                "arn": self._arn("ec2", "security-group", group_id),
                "tags": dict(EXISTING_RESOURCE_TAGS.get(group_id, {})),
            }
        if token == "aws:ec2/getSubnets:getSubnets":
            tags = {f["name"] for f in call_args.get("filters", [])}
            public = "tag:kubernetes.io/role/elb" in tags
            return {"ids": EXISTING_PUBLIC_SUBNETS if public else EXISTING_SUBNETS, "id": self.region}
        if token == "aws:ec2/getVpc:getVpc":
            return {"id": call_args.get("id"), "cidrBlock": "10.42.0.0/16", "arn": "arn"}
        raise NotImplementedError(f"the mock engine has no answer for invoke {token}")


def _aliases(request: Any) -> list[dict[str, Any]]:
    """A registration's aliases (pulumi/proto alias.proto: a URN or a spec), as plain dicts."""
    found: list[dict[str, Any]] = [{"urn": u} for u in getattr(request, "aliasURNs", [])]
    for alias in getattr(request, "aliases", []):
        if alias.WhichOneof("alias") == "urn":
            found.append({"urn": alias.urn})
            continue
        spec = alias.spec
        entry: dict[str, Any] = {k: getattr(spec, k) for k in ("name", "type", "stack", "project") if getattr(spec, k)}
        parent = spec.WhichOneof("parent")
        if parent == "parentUrn":
            entry["parentUrn"] = spec.parentUrn
        elif parent == "noParent" and spec.noParent:
            entry["noParent"] = True
        found.append(entry)
    return found


def _timeouts(request: Any) -> dict[str, str]:
    """A registration's custom timeouts (reads have none)."""
    t = getattr(request, "customTimeouts", None)
    return {k: getattr(t, k) for k in ("create", "update", "delete") if t is not None and getattr(t, k)}


class DuplicateUrnError(RuntimeError):
    """Two resources of one program share a URN; the real engine stops the update there."""


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Records the resource options (parent, protect, ignoreChanges ...) mocks don't see."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.rendering = mocks.rendering
        self.seen_urns: set[str] = set()
        self.duplicate_urns: list[str] = []

    def _claim(self, urn: str) -> None:
        # The engine refuses a second registration of a URN in one deployment (pulumi/pulumi
        # pkg/resource/deploy/step_generator.go: "Duplicate resource URN '...'; try giving it
        # a unique name"), after the resources before it have been created. Recorded here and
        # raised by `render` once the program has run: an exception raised inside the monitor
        # stays in the SDK's global state and would resurface in the next rendering.
        if urn in self.seen_urns:
            self.duplicate_urns.append(urn)
        self.seen_urns.add(urn)

    def _record(self, request: Any, urn: str, properties: Any, read: bool) -> None:
        inputs: dict[str, Any] = {}
        secret_inputs: set[str] = set()
        for key, value in pulumi.runtime.rpc.deserialize_properties(properties).items():
            inputs[key], secret = _unwrap_secrets(value)
            if secret:
                secret_inputs.add(key)
        state = self.resources[urn].state if urn in self.resources else {}
        self.rendering.resources.append(
            Registered(
                type=request.type,
                name=request.name,
                urn=urn,
                inputs=_normalise(inputs),
                secret_inputs=secret_inputs,
                outputs=_unwrap_secrets(state)[0],
                custom=read or bool(request.custom),
                parent=request.parent,
                provider=request.provider,
                protect=not read and bool(request.protect),
                retain_on_delete=not read and bool(request.retainOnDelete),
                ignore_changes=[] if read else list(request.ignoreChanges),
                depends_on=list(request.dependencies),
                read=read,
                custom_timeouts=_timeouts(request),
                aliases=[] if read else _aliases(request),
            )
        )

    def ReadResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        """Reads (`get` of existing resources, StackReferences) are recorded like creations."""
        self._claim(self.make_urn(request.parent, request.type, request.name))
        response = super().ReadResource(request)
        self._record(request, response.urn, request.properties, read=True)
        return response

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (gRPC method name)
        if request.type != "pulumi:pulumi:Stack":
            self._claim(self.make_urn(request.parent, request.type, request.name))
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self._record(request, response.urn, request.object, read=False)
        return response


def render(
    stack: str,
    settings: Mapping[str, str],
    secret_keys: list[str] | None = None,
    program: Callable[[], Mapping[str, Any]] | None = None,
    stack_references: Mapping[str, Mapping[str, Any]] | None = None,
) -> Rendering:
    """Run `program` (default: the real one) for `stack` with Pulumi config `settings`."""
    if program is None:
        from components.stack import program as real_program

        program = real_program
    rendering = Rendering(stack=stack)
    region = settings.get("aws:region", "us-east-1")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_all_config(dict(settings), secret_keys or [])
    mocks = RecordingMocks(region, rendering, stack_references)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)

    def run() -> None:
        outputs = program()
        pulumi.Output.all(**dict(outputs)).apply(rendering.outputs.update)

    # No registry offline: an unrecorded digest is answered like any other mock value.
    previous = images.set_resolver(mock_digest)
    try:
        # The loop is left open: the SDK keeps references to it in module state until exit.
        loop.run_until_complete(run_pulumi_func(run))
    finally:
        images.set_resolver(previous)
    if monitor.duplicate_urns:
        raise DuplicateUrnError(
            "Duplicate resource URN " + ", ".join(f"'{u}'" for u in monitor.duplicate_urns)
            + "; try giving it a unique name"
        )
    return rendering


def mock_digest(image: images.Image) -> str:
    """A stand-in digest for an image whose digest is not recorded (offline: no registry)."""
    return "sha256:" + hashlib.sha256(f"mock-digest:{image.name}".encode()).hexdigest()
