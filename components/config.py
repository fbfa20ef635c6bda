"""The stack configuration: one pydantic model, validated once, before any resource exists.

Every key lives under the project namespace in `Pulumi.<stack>.yaml`
(`tf-serving-eks:<key>`), except the region, which is the AWS provider's own
`aws:region`. Defaults depend on `environment`: a key left out of a dev stack gets
the small, cheap value; left out of a prod stack, the highly available one.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import typing
from collections.abc import Collection, Mapping
from typing import Annotated, Any, ClassVar, Literal

import pulumi
from pydantic import (
    BaseModel,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    ConfigDict,
    Field,
    ValidationError,
    SecretStr,
    ValidationInfo,
    model_validator,
)

from pydantic_core import InitErrorDetails, ValidationError as CoreValidationError

from components import catalog, validation
from components.netplan import MAX_AZS, plan_subnets
from components.validation import checked, ipv4_cidr, worded

PROJECT = "tf-serving-eks"

Environment = Literal["dev", "staging", "prod"]
ENVIRONMENTS: tuple[Environment, ...] = ("dev", "staging", "prod")

# A DNS-1123 label, the shape of Kubernetes names and of our keyed-map keys; 40 characters
# leave room for the suffixes our object names add.
Name = Annotated[str, checked(lambda v: validation.dns1123_label(v, 40))]
# serving.name names a Service, which must be a DNS-1035 label (starts with a letter).
ServiceName = Annotated[str, checked(lambda v: validation.dns1035_label(v, 40))]
# EKS CreateCluster: name 1-100 characters, ^[0-9A-Za-z][A-Za-z0-9\-_]*$.
ClusterName = Annotated[str, worded(
    r"[0-9A-Za-z][A-Za-z0-9_-]*",
    "EKS cluster names use letters, digits, '-' and '_', starting with a letter or digit",
    max_length=100,
    min_length=1,
)]
AwsRegion = Annotated[str, worded(
    r"[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d",
    "must be an AWS region code such as eu-west-1 or us-gov-west-1",
)]
IamPrincipalArn = Annotated[str, worded(
    r"arn:aws[a-z-]*:iam::\d{12}:(role|user)/[A-Za-z0-9_+=,.@/-]+",
    "must be an IAM role or user ARN: arn:aws:iam::<12-digit account>:role/<name> (or user/)",
    max_length=600,
)]
SubnetId = Annotated[str, worded(r"subnet-[0-9a-f]{8,17}", "must be a subnet ID: subnet- and 8 or 17 hex digits")]
TagKey = Annotated[str, checked(validation.tag_key)]
TagValue = Annotated[str, checked(validation.tag_value)]
AddonVersion = Annotated[str, worded(
    r"v\d+\.\d+\.\d+-eksbuild\.\d+", "must be an EKS add-on version such as v1.19.2-eksbuild.1"
)]
LogType = Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]
ALL_LOG_TYPES: tuple[LogType, ...] = (
    "api",
    "audit",
    "authenticator",
    "controllerManager",
    "scheduler",
)
# The values CloudWatch Logs accepts for a log group's retention.
LogRetentionDays = Literal[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
]


# Framebuffer a CUDA context takes besides TF Serving's up-front allocation, in % of a GPU.
GPU_CONTEXT_HEADROOM_PERCENT = 3


class RuleError(ValueError):
    """A rule that spans fields failed; `key` is relative to the model that raised it."""

    def __init__(self, key: str, value: Any, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.value = value
        self.message = message


class Section(BaseModel):
    """Base of every config model: unknown keys rejected, values frozen after validation.

    `env_defaults` maps a field name to its default per environment; it fills keys the
    stack file leaves out, so the model's types stay exact (no Optional for "unset").
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    env_defaults: ClassVar[Mapping[str, Mapping[Environment, Any]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _fill_env_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        context = info.context or {}
        env = context.get("environment")
        if env not in ENVIRONMENTS and context.get("environment_unusable"):
            # `environment` is missing or invalid, and says so in its own error: the dev
            # defaults keep every env-defaulted key from adding a "Field required" of its own.
            env = "dev"
        if not cls.env_defaults or env not in ENVIRONMENTS or not isinstance(data, dict):
            return data
        filled = dict(data)
        for key, per_env in cls.env_defaults.items():
            filled.setdefault(key, per_env[env])
        return filled


def _off_means_absent(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """`{enabled: false}` turns an optional section off with that one key: the section reads
    as absent. Keys given beside it are still checked (an unknown or ill-typed key is an
    error), but the keys only an enabled section needs are not required."""
    if not (isinstance(value, dict) and value.get("enabled") is False):
        return handler(value)
    try:
        handler(value)
    except ValidationError as exc:
        kept: list[InitErrorDetails] = []
        for err in exc.errors(include_url=False):
            if err["type"] == "missing":
                continue
            detail: InitErrorDetails = {"type": err["type"], "loc": err["loc"], "input": err["input"]}
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
            kept.append(detail)
        if kept:
            raise CoreValidationError.from_exception_data(exc.title, kept) from None
    return None


# An optional section with an `enabled` switch: `{enabled: false}` alone means "off" (None).
SwitchedOffIsAbsent = WrapValidator(_off_means_absent)


def section(description: str) -> Any:
    """A nested section that may be left out: validated from `{}` so env defaults apply."""
    return Field(default_factory=dict, validate_default=True, description=description)


def _by_env(dev: Any, prod: Any, staging: Any | None = None) -> dict[Environment, Any]:
    return {"dev": dev, "staging": prod if staging is None else staging, "prod": prod}


class VpcConfig(Section):
    env_defaults = {"nat_gateways": _by_env("single", "per_az")}

    cidr: Annotated[ipaddress.IPv4Network, ipv4_cidr(16, 28, "AWS VPCs")] = Field(
        ipaddress.IPv4Network("10.0.0.0/16"),
        description="IPv4 CIDR of the new VPC, /16 to /20. Pods take IPs from it (VPC CNI).",
    )
    az_count: int = Field(
        3,
        ge=1,
        le=MAX_AZS,
        description="Availability zones to spread subnets over (EKS needs at least 2; prod 3).",
    )
    nat_gateways: Literal["single", "per_az"] = Field(
        description="One shared NAT gateway (cheap, dev) or one per AZ (no cross-AZ "
        "dependency, prod). Default: single in dev, per_az otherwise.",
    )

    @model_validator(mode="after")
    def _subnets_fit(self) -> VpcConfig:
        if self.az_count < 2:
            raise RuleError("az_count", self.az_count, "EKS needs subnets in at least 2 AZs")
        try:
            plan_subnets(str(self.cidr), self.az_count)
        except ValueError as exc:
            raise RuleError("cidr", str(self.cidr), str(exc)) from None
        return self


EKS_PUBLIC_ACCESS_CIDRS_MAX = 40


class EndpointConfig(Section):
    public_access: bool = Field(True, description="Expose the Kubernetes API endpoint publicly.")
    private_access: bool = Field(
        True, description="Reach the Kubernetes API endpoint from inside the VPC (nodes use it)."
    )
    public_access_cidrs: list[Annotated[ipaddress.IPv4Network, ipv4_cidr(0, 32, "EKS public access CIDRs")]] = Field(
        default_factory=lambda: [ipaddress.IPv4Network("0.0.0.0/0")],
        description="Source CIDRs allowed to reach the public endpoint. Prod must narrow it.",
    )

    @model_validator(mode="after")
    def _reachable(self) -> EndpointConfig:
        if not (self.public_access or self.private_access):
            raise RuleError(
                "public_access", False, "public_access and private_access cannot both be false"
            )
        if not self.public_access_cidrs and self.public_access:
            raise RuleError(
                "public_access_cidrs", [], "must list at least one CIDR while public_access is true"
            )
        # EKS user guide, "Cluster API server endpoint": public access CIDR blocks cannot hold
        # reserved addresses, and the public endpoint only ever sees callers' public
        # addresses; Service Quotas: 40 public endpoint access CIDR ranges per cluster.
        if len(self.public_access_cidrs) > EKS_PUBLIC_ACCESS_CIDRS_MAX:
            raise RuleError(
                "public_access_cidrs",
                f"{len(self.public_access_cidrs)} CIDRs",
                f"EKS takes at most {EKS_PUBLIC_ACCESS_CIDRS_MAX} public access CIDR blocks",
            )
        for i, cidr in enumerate(self.public_access_cidrs):
            if not validation.is_public_block(cidr):
                raise RuleError(
                    f"public_access_cidrs.{i}",
                    str(cidr),
                    "holds only private or reserved addresses; the public endpoint sees callers' "
                    "public addresses only (reach it from the VPC through private_access)",
                )
        return self


class NodeGroupSizing(Section):
    min_size: int = Field(ge=0, le=100, description="Fewest nodes.")
    desired_size: int = Field(
        ge=0, le=100, description="Nodes at creation; later left to the autoscaler."
    )
    max_size: int = Field(ge=1, le=100, description="Most nodes.")

    @model_validator(mode="after")
    def _ordered(self) -> NodeGroupSizing:
        if self.min_size > self.max_size:
            raise RuleError(
                "min_size", self.min_size, f"must be <= max_size ({self.max_size})"
            )
        if not self.min_size <= self.desired_size <= self.max_size:
            raise RuleError(
                "desired_size",
                self.desired_size,
                f"must lie between min_size ({self.min_size}) and max_size ({self.max_size})",
            )
        return self


class SystemNodeGroupConfig(NodeGroupSizing):
    env_defaults = {
        "instance_types": _by_env(["t3.large"], ["m7i.large"]),
        "min_size": _by_env(1, 2),
        "desired_size": _by_env(2, 3),
        "max_size": _by_env(3, 6),
    }

    instance_types: list[
        Annotated[str, worded(r"[a-z][a-z0-9-]*\.[0-9]*[a-z0-9]+", "must be an EC2 instance type such as m7i.large")]
    ] = Field(min_length=1, description="On-demand instance types for controllers.")
    disk_size_gib: int = Field(50, ge=20, le=1000, description="gp3 root volume size.")


class AddonsConfig(Section):
    """EKS managed add-on versions; unset means the version pinned in catalog.py."""

    vpc_cni: AddonVersion | None = Field(None, description="vpc-cni add-on version.")
    coredns: AddonVersion | None = Field(None, description="coredns add-on version.")
    kube_proxy: AddonVersion | None = Field(None, description="kube-proxy add-on version.")
    eks_pod_identity_agent: AddonVersion | None = Field(
        None, description="eks-pod-identity-agent add-on version."
    )
    aws_ebs_csi_driver: AddonVersion | None = Field(
        None, description="aws-ebs-csi-driver add-on version."
    )


class ExistingClusterConfig(Section):
    private_subnet_ids: list[SubnetId] = Field(
        default_factory=list,
        description="Private subnets for node groups. Empty: the cluster VPC's subnets tagged "
        "kubernetes.io/role/internal-elb=1.",
    )


class ClusterConfig(Section):
    env_defaults = {
        "log_types": _by_env(["api", "audit", "authenticator"], list(ALL_LOG_TYPES)),
        "log_retention_days": _by_env(7, 90),
        "kms_key_deletion_window_days": _by_env(7, 30),
        "deletion_protection": _by_env(False, True),
    }

    mode: Literal["create", "existing"] = Field(
        "create",
        description="create: a new VPC and EKS cluster. existing: use the cluster `name`, "
        "changing nothing of it.",
    )
    name: ClusterName = Field(description="EKS cluster name (created, or looked up).")
    kubernetes_version: catalog.KubernetesVersion = Field(
        catalog.DEFAULT_KUBERNETES_VERSION,
        description="Kubernetes minor version of the control plane and nodes.",
    )
    authentication_mode: Literal["API", "API_AND_CONFIG_MAP"] = Field(
        "API", description="How IAM principals are mapped: EKS access entries (API) only, "
        "or also the aws-auth ConfigMap."
    )
    bootstrap_creator_admin: bool = Field(
        True,
        description="Give the IAM identity that runs `pulumi up` cluster-admin. Do not also list "
        "that identity in admin_principals.",
    )
    admin_principals: dict[Name, IamPrincipalArn] = Field(
        default_factory=dict,
        description="Cluster admins: IAM role/user ARNs keyed by a stable name; each gets an "
        "access entry with AmazonEKSClusterAdminPolicy.",
    )
    endpoint: EndpointConfig = section("Kubernetes API endpoint access.")
    log_types: list[LogType] = Field(description="Control-plane log types sent to CloudWatch.")
    log_retention_days: LogRetentionDays = Field(
        description="Retention of the control-plane log group."
    )
    kms_key_deletion_window_days: int = Field(
        ge=7, le=30, description="Waiting period before the Secrets KMS key is deleted."
    )
    deletion_protection: bool = Field(
        description="Refuse to delete the EKS cluster until this is turned off (mode create)."
    )
    support_type: Literal["STANDARD", "EXTENDED"] = Field(
        "STANDARD",
        description="EKS version support once standard support of `kubernetes_version` ends "
        "(mode create). STANDARD: EKS upgrades the control plane to the next version. EXTENDED: "
        "the version stays for up to 12 more months, billed at the extended-support "
        "per-cluster-hour price (USD 0.60 instead of 0.10).",
    )
    vpc: VpcConfig = section("The new VPC (mode create).")
    system_node_group: SystemNodeGroupConfig = section("On-demand nodes for cluster controllers (mode create)."
    )
    addons: AddonsConfig = section("EKS managed add-on version overrides.")
    existing: ExistingClusterConfig | None = Field(
        None, description="Settings for mode existing only."
    )

    @model_validator(mode="after")
    def _mode_specific(self) -> ClusterConfig:
        if self.mode == "create" and self.existing is not None:
            raise RuleError("existing", "...", "only allowed with mode: existing")
        if len(set(self.log_types)) != len(self.log_types):
            raise RuleError("log_types", self.log_types, "lists a log type twice")
        return self

    def addon_version(self, addon: catalog.AddonName) -> str:
        override = getattr(self.addons, addon.replace("-", "_"))
        return override or catalog.ADDON_VERSIONS[self.kubernetes_version][addon]


Duration = Annotated[str, worded(
    r"[1-9][0-9]*(s|m|h)", "must be a whole number of seconds, minutes or hours, e.g. 30s, 10m or 1h"
)]
LabelValue = Annotated[str, checked(validation.label_value)]
QualifiedName = Annotated[str, checked(validation.qualified_name)]


class TaintConfig(Section):
    key: QualifiedName = Field("nvidia.com/gpu", description="Taint key on every GPU node.")
    value: LabelValue = Field("true", description="Taint value.")
    effect: Literal["NoSchedule", "NoExecute", "PreferNoSchedule"] = Field(
        "NoSchedule", description="Taint effect; NoSchedule keeps non-GPU pods off GPU nodes."
    )


# A pool's per-zone node groups are named `gpu-<pool>-<zone>-nodes` plus the 8 characters
# Pulumi's auto-naming appends; EKS node group names are at most 63 characters and zone
# names run to 15 (ap-southeast-2a), so pool names stay at 24.
PoolName = Annotated[str, checked(lambda v: validation.dns1123_label(v, 24))]


def strict_zone_spread(environment: str) -> bool:
    """Whether the serving pods' zone spread is strict (DoNotSchedule): prod only."""
    return environment == "prod"


def zone_share(total: int, zone_count: int) -> list[int]:
    """`total` nodes split over `zone_count` per-zone node groups, in zone-name order: each
    gets total // zone_count and the first total % zone_count zones one more."""
    base, extra = divmod(total, zone_count)
    return [base + (1 if i < extra else 0) for i in range(zone_count)]


class GpuPoolConfig(NodeGroupSizing):
    """One GPU pool: an EKS managed node group per availability zone of the private subnets,
    all alike (CA's --balance-similar-node-groups keeps them level). Keyed by name in
    `gpu_pools`; min/desired/max are the pool's totals, split over its zones (zone_share)."""

    env_defaults = {
        "capacity_type": _by_env("SPOT", "ON_DEMAND"),
        # One node group per AZ (3 by default): max_size must give each zone at least one
        # node, and prod's strict spread wants the same standing nodes in every zone.
        "min_size": _by_env(0, 3),
        "desired_size": _by_env(0, 3),
        "max_size": _by_env(3, 6),
    }

    instance_types: list[str] = Field(
        min_length=1,
        description="GPU instance types from the catalogue (components/catalog.py); all of one "
        "pool must have the same vCPUs, memory, GPU model and GPU count.",
    )
    ami_type: catalog.AmiType = Field(
        "AL2023_x86_64_NVIDIA", description="EKS-optimized NVIDIA AMI: AL2023 or Bottlerocket."
    )
    capacity_type: Literal["SPOT", "ON_DEMAND"] = Field(
        description="SPOT (cheap, may be reclaimed) or ON_DEMAND."
    )
    disk_size_gib: int = Field(
        100,
        ge=50,
        le=2000,
        description="Encrypted gp3 volume for images and models (serving GPU images are ~6 GB).",
    )
    max_unavailable: int = Field(
        1, ge=1, le=100, description="Nodes replaced at once during a node group update."
    )
    taint: TaintConfig = section("Taint that keeps non-GPU pods off these nodes.")
    time_slicing_replicas: int = Field(
        1,
        ge=1,
        le=16,
        description="NVIDIA time-slicing: pods that share one GPU (1 = no sharing; for dev only; "
        "AL2023 pools only).",
    )

    @model_validator(mode="after")
    def _known_gpu_types(self) -> GpuPoolConfig:
        for i, name in enumerate(self.instance_types):
            found = catalog.instance_type(name)
            if found is None or not found.is_gpu:
                what = "not a GPU instance type" if found else "not in the GPU catalogue"
                raise RuleError(
                    f"instance_types.{i}",
                    name,
                    f"{what}; known GPU types: {', '.join(sorted(catalog.GPU_INSTANCE_TYPES))}",
                )
        if len(set(self.instance_types)) != len(self.instance_types):
            raise RuleError("instance_types", self.instance_types, "lists a type twice")
        return self

    @model_validator(mode="after")
    def _time_slicing_reaches_the_plugin(self) -> GpuPoolConfig:
        # Bottlerocket's NVIDIA variants run their own device plugin, configured only through
        # its settings (settings.kubelet-device-plugins.nvidia.*, bottlerocket.dev "kubelet
        # device plugins"); the chart's time-slicing config never reaches it.
        if self.is_bottlerocket and self.time_slicing_replicas > 1:
            raise RuleError(
                "time_slicing_replicas",
                self.time_slicing_replicas,
                "time-slicing is configured through the NVIDIA device plugin chart, which does "
                "not run on Bottlerocket (its NVIDIA variants bring their own plugin); use "
                "ami_type AL2023_x86_64_NVIDIA for a time-sliced pool, or 1",
            )
        return self

    @property
    def is_bottlerocket(self) -> bool:
        return self.ami_type.startswith("BOTTLEROCKET")

    @property
    def instances(self) -> list[catalog.InstanceType]:
        return [catalog.GPU_INSTANCE_TYPES[n] for n in self.instance_types]

    @property
    def gpus_per_node(self) -> int:
        """`nvidia.com/gpu` a node of this pool advertises (time-slicing multiplies it)."""
        return self.instances[0].gpus * self.time_slicing_replicas

    @property
    def gpu_model(self) -> str:
        return str(self.instances[0].gpu_model)


def node_shape(instance: catalog.InstanceType) -> tuple[int, int, int, str | None]:
    """What cluster-autoscaler plans a node with: vCPUs, memory, GPU count and model."""
    return (instance.vcpus, instance.memory_gib, instance.gpus, instance.gpu_model)


def describe_shape(instance: catalog.InstanceType) -> str:
    return (
        f"{instance.name} ({instance.vcpus} vCPU, {instance.memory_gib} GiB, "
        f"{instance.gpus}x {instance.gpu_model})"
    )


def pool_zone_problems(
    pools: Mapping[str, GpuPoolConfig],
    zone_count: int,
    strict_pool: str | None,
    strict_replicas: int,
    pod_gpus: int,
) -> list[RuleError]:
    """Why pools cannot be split over `zone_count` per-zone node groups (keys under gpu_pools).

    `strict_pool` is the pool the serving pods spread over with DoNotSchedule (None when
    the spread is soft); `strict_replicas` pods of `pod_gpus` GPUs each must fit it then.
    """
    problems: list[RuleError] = []
    for name, pool in pools.items():
        if pool.max_size < zone_count:
            # EKS: a node group's scalingConfig.maxSize is at least 1 (CreateNodegroup API).
            problems.append(
                RuleError(
                    f"gpu_pools.{name}.max_size",
                    pool.max_size,
                    f"pool '{name}' has one node group in each of the {zone_count} zones of the "
                    f"private subnets and each needs max_size >= 1: use at least {zone_count}",
                )
            )
            continue
        if name != strict_pool:
            continue
        for key in ("min_size", "desired_size"):
            value = getattr(pool, key)
            if value % zone_count:
                problems.append(
                    RuleError(
                        f"gpu_pools.{name}.{key}",
                        value,
                        f"serving pods spread strictly over zones (DoNotSchedule) on pool "
                        f"'{name}', so its {zone_count} zones must get the same number of "
                        f"nodes: use a multiple of {zone_count}",
                    )
                )
        pods_per_node = pool.gpus_per_node // pod_gpus
        if pods_per_node == 0:
            continue  # the pod does not fit a node at all: _serving_fits_its_pool says so
        per_zone = [n * pods_per_node for n in zone_share(pool.max_size, zone_count)]
        # maxSkew 1: no zone may hold more than one pod above the emptiest zone.
        reachable = sum(min(p, min(per_zone) + 1) for p in per_zone)
        if strict_replicas > reachable:
            problems.append(
                RuleError(
                    f"gpu_pools.{name}.max_size",
                    pool.max_size,
                    f"{strict_replicas} serving pods spread over {zone_count} zones with max "
                    f"skew 1 need more nodes than pool '{name}' has at max_size "
                    f"{pool.max_size} (per zone {'/'.join(map(str, zone_share(pool.max_size, zone_count)))}, "
                    f"room for {reachable} pods); raise max_size",
                )
            )
    return problems


class NodeAutoscalingConfig(Section):
    """cluster-autoscaler: adds nodes for pending pods, removes idle ones (down to zero)."""

    env_defaults = {
        "scale_down_unneeded_time": _by_env("5m", "15m"),
        "scale_down_delay_after_add": _by_env("5m", "10m"),
    }

    enabled: bool = Field(True, description="Install cluster-autoscaler.")
    expander: Literal["least-waste", "random", "most-pods", "priority"] = Field(
        "least-waste", description="How to choose among node groups that could take a pod."
    )
    scale_down_unneeded_time: Duration = Field(
        description="How long a node must be idle before it is removed (dev: quickly to zero)."
    )
    scale_down_delay_after_add: Duration = Field(
        description="Pause after a scale-up before scale-down is considered again."
    )
    max_node_provision_time: Duration = Field(
        "15m", description="Give up on a node that has not joined after this long."
    )


BucketName = Annotated[str, checked(validation.bucket_name)]
S3Prefix = Annotated[str, worded(
    r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*",
    "must be '/'-separated parts of letters, digits, '_', '.' and '-', each starting with a "
    "letter or digit (no leading, trailing or double '/')",
    max_length=200,
)]


class ModelStoreConfig(Section):
    """The versioned, encrypted S3 model repository and who may read and write it."""

    env_defaults = {
        "noncurrent_version_expiration_days": _by_env(7, 90),
        "protect": _by_env(False, True),
        "access_logging": _by_env(False, True),
    }

    bucket_name: BucketName | None = Field(
        None,
        description="S3 bucket name. Unset: `<cluster.name>-models-<account id>` (S3 names are "
        "global, so the account keeps it unique).",
    )
    prefix: S3Prefix = Field(
        "models", description="Key prefix; models live at <prefix>/<model>/<version>/."
    )
    noncurrent_version_expiration_days: int = Field(
        ge=1, le=3650, description="Days an overwritten or deleted object version is kept."
    )
    protect: bool = Field(
        description="Protect the bucket and its KMS key: `pulumi destroy` fails and never "
        "deletes them."
    )
    access_logging: bool = Field(description="Write S3 server access logs to a log bucket.")
    identity: Literal["pod_identity", "irsa"] = Field(
        "pod_identity",
        description="How serving pods get the read-only role: EKS Pod Identity or IRSA.",
    )
    publisher_principals: list[IamPrincipalArn] = Field(
        default_factory=list,
        description="IAM principals (e.g. CI roles) allowed to assume the publisher role.",
    )


CpuQuantity = Annotated[str, checked(validation.cpu_quantity)]
MemoryQuantity = Annotated[str, checked(validation.memory_quantity)]


cpu_milli = catalog.cpu_milli
memory_mib = catalog.memory_mib


class CanaryConfig(Section):
    """A new version served by a second Deployment and given a share of the traffic."""

    version: int = Field(ge=1, description="The canary version (newer than every served one).")
    weight: int = Field(
        10, ge=0, le=100, description="Percent of the model's traffic sent to the canary pods."
    )


CANARY_LABEL = "canary"


class ModelConfig(Section):
    """One model TF Serving serves, keyed by its name in `serving.models`."""

    version_policy: Literal["latest", "specific"] = Field(
        "latest", description="Serve the newest `latest_count` versions, or exactly `versions`."
    )
    latest_count: int = Field(1, ge=1, le=10, description="Versions served with policy latest.")
    versions: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list, description="Versions served with policy specific."
    )
    labels: dict[Name, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="Version labels (e.g. stable: 3, previous: 2); policy specific only, each "
        "label on a served version. `canary` is set from `canary`.",
    )
    canary: CanaryConfig | None = Field(
        None, description="Canary rollout of a new version (policy specific only)."
    )

    @model_validator(mode="after")
    def _policy_consistent(self) -> ModelConfig:
        if self.version_policy == "specific":
            if not self.versions:
                raise RuleError("versions", [], "policy specific needs at least one version")
            if len(set(self.versions)) != len(self.versions):
                raise RuleError("versions", self.versions, "lists a version twice")
            if self.canary is not None:
                if self.canary.version <= max(self.versions):
                    raise RuleError(
                        "canary.version",
                        self.canary.version,
                        f"must be newer than the served versions {sorted(self.versions)} (TF "
                        "Serving answers unversioned requests with the newest loaded version)",
                    )
            if CANARY_LABEL in self.labels:
                raise RuleError(
                    f"labels.{CANARY_LABEL}", self.labels[CANARY_LABEL], "is set from `canary`; remove it"
                )
            for label, version in self.labels.items():
                if version not in self.versions:
                    raise RuleError(
                        f"labels.{label}",
                        version,
                        f"points at a version that is not served ({self.versions})",
                    )
        else:
            if self.versions:
                raise RuleError("versions", self.versions, "only with version_policy: specific")
            if self.canary is not None:
                raise RuleError("canary", self.canary.version, "needs version_policy: specific")
            if self.labels:
                raise RuleError(
                    "labels",
                    dict(self.labels),
                    "labels need version_policy: specific (TF Serving labels only loaded "
                    "versions, and `latest` changes them under the label)",
                )
        return self


class BatchingConfig(Section):
    """TF Serving's server-side batching (its batching guide's starting point for GPUs)."""

    enabled: bool = Field(True, description="Batch requests on the server (GPU throughput).")
    max_batch_size: int = Field(32, ge=1, le=4096, description="Largest batch.")
    batch_timeout_micros: int = Field(
        1000, ge=0, le=1_000_000, description="Longest a request waits for a batch to fill."
    )
    max_enqueued_batches: int = Field(
        100, ge=1, le=100_000, description="Queue bound; beyond it requests fail fast."
    )
    num_batch_threads: int | None = Field(
        None, ge=1, le=256, description="Threads running batches. Unset: the pod's CPU count."
    )


class ImageCacheConfig(Section):
    """An ECR pull-through cache of Docker Hub for the serving image."""

    env_defaults = {"enabled": _by_env(False, True)}

    enabled: bool = Field(
        description="Pull tensorflow/serving through an ECR pull-through cache in this account "
        "and region, so GPU scale-ups don't depend on Docker Hub or its pull limits."
    )
    # ECR CreatePullThroughCacheRule: 2-30 characters, lower-case path segments.
    repository_prefix: Annotated[str, worded(
        r"(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*",
        "must be '/'-separated parts of lower-case letters and digits, joined inside a part by "
        "single '.', '_' or '-'",
        min_length=2,
        max_length=30,
    )] | None = Field(
        None,
        description="ECR repository prefix of the cache (one rule per prefix per account and "
        "region). Unset: `<stack>/docker-hub`, so stacks sharing an account and region never "
        "claim the same rule.",
    )
    docker_hub_username: Annotated[str, worded(r"[a-z0-9]{4,30}", "Docker Hub user names are 4 to 30 lower-case letters and digits")] | None = Field(
        None,
        description="Docker Hub user whose access token (secret `docker_hub_access_token`) the "
        "cache uses: ECR's Docker Hub rules need credentials.",
    )


SERVING_NAME_MAX = 58 - len("-canary-") - 10 - 1


class ServingConfig(Section):
    """The TF Serving workload."""

    env_defaults = {
        "replicas": _by_env(1, 2),
        "cpu": _by_env("2", "4"),
        "memory": _by_env("8Gi", "16Gi"),
        "pin_image_digests": _by_env(False, True),
    }
    # CPU serving runs on the system nodes (t3.large in dev, m7i.large otherwise: 2 vCPU,
    # 8 GiB), where the GPU-sized defaults above would never schedule; two pods of these
    # fit one beside the daemons, so the default autoscaling range fits the default group.
    cpu_serving_defaults: ClassVar[Mapping[str, str]] = {"cpu": "750m", "memory": "3Gi"}

    @model_validator(mode="before")
    @classmethod
    def _fill_cpu_serving_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("gpu_pool") is None:
            return {**cls.cpu_serving_defaults, **data}
        return data

    namespace: Name = Field("tf-serving", description="Namespace of the serving workload.")
    name: ServiceName = Field("tf-serving", description="Name of the Deployment, Service and friends.")
    image_version: Annotated[str, worded(r"2\.[0-9]+\.[0-9]+", "must be a tensorflow/serving 2.x release such as 2.19.1")] = Field(
        "2.19.1",
        description="tensorflow/serving release; `-gpu` is appended on GPU pools.",
    )
    pin_image_digests: bool = Field(
        description="Run images by digest (from components/image-digests.json, else resolved "
        "from the registry at deploy time), not by tag alone."
    )
    gpu_pool: Name | None = Field(
        None, description="GPU pool (key of gpu_pools) to run on. Unset: CPU serving."
    )
    gpus: int = Field(1, ge=1, le=8, description="GPUs per pod (on a GPU pool).")
    cpu: CpuQuantity = Field(
        description="CPU request (and limit) per pod, in cores or millicores (500m). Default on a "
        "GPU pool: 2 in dev, 4 otherwise; CPU serving: 750m."
    )
    memory: MemoryQuantity = Field(
        description="Memory request and limit per pod, in bytes with a unit (8Gi). Default on a "
        "GPU pool: 8Gi in dev, 16Gi otherwise; CPU serving: 3Gi."
    )
    replicas: int = Field(ge=1, le=100, description="Pods, when no autoscaler owns the count.")
    gpu_memory_fraction: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of each GPU's memory TF Serving may allocate (per process).",
    )
    file_system_poll_seconds: int = Field(
        15, ge=1, le=3600, description="How often model folders are scanned for new versions."
    )
    startup_timeout_seconds: int = Field(
        900, ge=60, le=3600, description="Time a pod may take to load its models before it is restarted."
    )
    termination_grace_seconds: int = Field(
        60, ge=10, le=600, description="Time to drain in-flight requests on shutdown."
    )
    enable_warmup: bool = Field(
        True, description="Replay assets.extra/tf_serving_warmup_requests before serving."
    )
    batching: BatchingConfig = section("Server-side batching.")
    image_cache: ImageCacheConfig = section("ECR pull-through cache for the serving image.")
    promotion_source: Annotated[str, worded(
        r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+",
        "must be a Pulumi stack reference org/project/stack (letters, digits, '_', '.', '-')",
    )] | None = Field(
        None,
        description="Stack promoted from (`org/project/stack`): its exported model versions "
        "are shown beside this stack's (output promotion_candidates).",
    )
    models: dict[Name, ModelConfig] = Field(
        min_length=1, description="Models to serve, keyed by model name."
    )

    @model_validator(mode="after")
    def _pod_names_whole(self) -> ServingConfig:
        # Queries pick the stable or the canary pods by pod name (tf_serving.pod_name_regex);
        # Kubernetes cuts a generated name's base to 58 characters, and the canary pods' base
        # is `<name>-canary-<hash of up to 10>-` (apiserver/pkg/storage/names/generate.go).
        if len(self.name) > SERVING_NAME_MAX:
            raise RuleError(
                "name",
                self.name,
                f"must be at most {SERVING_NAME_MAX} characters, so the canary pods' names "
                "(<name>-canary-<10>-<5>) are not cut short by Kubernetes",
            )
        return self

    @property
    def cpu_milli(self) -> int:
        return cpu_milli(self.cpu)

    @property
    def memory_mib(self) -> int:
        return memory_mib(self.memory)

    @property
    def pod_requests(self) -> catalog.Requests:
        """What one serving pod asks the scheduler for: TF Serving plus the model-sync init
        container and the model-sync sidecar (tf_serving.pod_spec)."""
        sync = catalog.requests_of(catalog.MODEL_SYNC_RESOURCES)
        return catalog.pod_requests(
            [catalog.Requests(self.cpu_milli, self.memory_mib)], [(sync, False), (sync, True)]
        )

    @property
    def canary_pods(self) -> int:
        """Pods of the canary Deployment (one, when any model has a canary)."""
        return 1 if any(m.canary is not None for m in self.models.values()) else 0


DnsName = Annotated[str, checked(validation.host_name)]
HostedZoneId = Annotated[str, worded(r"Z[A-Z0-9]{4,31}", "must be a Route53 hosted zone ID: Z and upper-case letters or digits")]
AcmCertificateArn = Annotated[str, worded(
    r"arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}",
    "must be an ACM certificate ARN: arn:aws:acm:<region>:<account>:certificate/<id>",
)]
HeaderName = Annotated[str, checked(validation.api_key_header)]


class AccessConfig(Section):
    """Who may call the endpoints: a WAF web ACL in front of the load balancer."""

    public: bool = Field(
        False,
        description="Open to any source with neither allowlist nor API key. Prod refuses to be "
        "open unless this is set explicitly.",
    )
    # AWS WAF IPSet: "AWS WAF supports all IPv4 and IPv6 CIDR ranges except for /0"; the
    # ALB is IPv4 (ip_address_type ipv4), so the set is IPV4. At most 10,000 addresses.
    allowed_cidrs: list[Annotated[ipaddress.IPv4Network, ipv4_cidr(1, 32, "AWS WAF IP sets (every prefix but /0)")]] = Field(
        default_factory=list,
        max_length=10_000,
        description="Source CIDRs allowed to call (WAF IP set), IPv4, /1 to /32.",
    )
    require_api_key: bool = Field(
        False,
        description="Require the API key header; the key is the secret `ingress_api_key` "
        "(`pulumi config set --secret tf-serving-eks:ingress_api_key ...`).",
    )
    api_key_header: HeaderName = Field("x-api-key", description="Header (gRPC metadata) holding the key.")
    rate_limit: int = Field(
        2000,
        ge=10,
        le=2_000_000_000,
        description="Requests per client IP per `rate_limit_window_seconds` before WAF blocks it.",
    )
    rate_limit_window_seconds: Literal[60, 120, 300, 600] = Field(
        300, description="Window of the rate limit."
    )

    @model_validator(mode="after")
    def _open_or_closed(self) -> AccessConfig:
        if self.public and (self.allowed_cidrs or self.require_api_key):
            raise RuleError(
                "public", True, "public: true means no allowlist and no API key; remove one side"
            )
        return self


class IngressConfig(Section):
    """REST and gRPC endpoints: Gateway API on an ALB, TLS with ACM, DNS, WAF."""

    enabled: bool = Field(
        True,
        description="Expose the model server outside the cluster. `enabled: false` alone turns "
        "the ingress off; the block's other keys are then optional.",
    )
    scheme: Literal["internet-facing", "internal"] = Field(
        "internet-facing", description="Load balancer on the internet or inside the VPC only."
    )
    domain: DnsName = Field(description="Route53 hosted zone name the host names live in.")
    hosted_zone_id: HostedZoneId = Field(description="Route53 hosted zone ID of `domain`.")
    rest_host: DnsName = Field(description="Host name of the REST endpoint.")
    grpc_host: DnsName = Field(description="Host name of the gRPC endpoint.")
    certificate_arn: AcmCertificateArn | None = Field(
        None,
        description="Bring your own ACM certificate (covering both hosts). Unset: the stack "
        "creates one and validates it through DNS in the hosted zone.",
    )
    tls_policy: Literal[
        "ELBSecurityPolicy-TLS13-1-2-2021-06",
        "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
        "ELBSecurityPolicy-TLS13-1-3-2021-06",
    ] = Field("ELBSecurityPolicy-TLS13-1-2-2021-06", description="ALB TLS policy (TLS 1.2+).")
    idle_timeout_seconds: int = Field(
        120, ge=30, le=4000, description="ALB idle timeout: longest silent request (inference)."
    )
    access: AccessConfig = section("Access control.")

    @model_validator(mode="after")
    def _hosts_in_zone(self) -> IngressConfig:
        for key in ("rest_host", "grpc_host"):
            host = getattr(self, key)
            if not host.endswith(f".{self.domain}"):
                raise RuleError(key, host, f"must be a name under domain {self.domain}")
        if self.rest_host == self.grpc_host:
            raise RuleError("grpc_host", self.grpc_host, "must differ from rest_host")
        if self.certificate_arn is None and len(self.rest_host) > validation.ACM_COMMON_NAME_MAX:
            raise RuleError(
                "rest_host",
                self.rest_host,
                f"becomes the common name of the ACM certificate the stack requests, which is "
                f"at most {validation.ACM_COMMON_NAME_MAX} characters ({len(self.rest_host)} given)",
            )
        return self


RetentionPeriod = Annotated[str, worded(r"[1-9][0-9]*(h|d|w|y)", "must be a whole number of hours, days, weeks or years, e.g. 15d")]
Severity = Literal["critical", "warning"]
SEVERITIES: tuple[Severity, ...] = ("critical", "warning")


class AlertThresholds(Section):
    """Where the alert rules fire."""

    error_ratio: float = Field(
        0.05, gt=0, lt=1, description="Share of requests failing server-side (5 min) that alerts."
    )
    latency_p99_ms: int = Field(
        500, ge=1, le=600_000, description="p99 request latency SLO per model, in milliseconds."
    )
    queueing_p99_ms: int = Field(
        50, ge=1, le=600_000, description="p99 batching queueing latency that alerts (ms)."
    )
    gpu_utilisation_percent: int = Field(
        90, ge=1, le=100, description="Average GPU utilisation over 15 min that counts as saturated."
    )
    gpu_memory_percent: int = Field(
        95, ge=1, le=100, description="GPU framebuffer use that counts as nearly full."
    )
    restarts_per_hour: int = Field(
        3, ge=1, le=1000, description="Container restarts in an hour that alert."
    )


class AlertReceiverConfig(Section):
    """Where alerts go; the URL or key is `alerting_secrets.<receiver name>` (a secret)."""

    type: Literal["slack", "webhook", "pagerduty"] = Field(
        description="slack (incoming webhook URL), webhook (generic URL) or pagerduty (routing key)."
    )
    severities: list[Severity] = Field(
        default_factory=lambda: list(SEVERITIES),
        min_length=1,
        description="Alert severities routed here.",
    )
    slack_channel: Annotated[str, worded(r"#[a-z0-9_-]{1,80}", "must be a Slack channel: # and 1 to 80 lower-case letters, digits, '_' or '-'")] | None = Field(
        None, description="Slack channel (type slack)."
    )


MetricKind = Literal[
    "cpu",
    "requests_per_second",
    "latency_p95",
    "latency_p99",
    "batch_queueing_p99",
    "gpu_utilisation",
]
DEFAULT_SCALING_METRICS: dict[MetricKind, float] = {"requests_per_second": 20.0}
CronSchedule = Annotated[str, checked(validation.cron_schedule)]


class ScalingPolicy(Section):
    stabilisation_seconds: int = Field(ge=0, le=3600, description="Look-back window before acting.")
    percent: int = Field(ge=1, le=1000, description="Most replicas to add/remove per period, in %.")
    pods: int = Field(ge=1, le=100, description="Most replicas to add/remove per period.")
    period_seconds: int = Field(15, ge=1, le=1800, description="Length of a period.")


class OffHoursConfig(Section):
    """KEDA cron window: replicas kept up during working hours only (dev GPU cost)."""

    start: CronSchedule = Field("0 8 * * 1-5", description="Cron: when the working window opens.")
    end: CronSchedule = Field("0 19 * * 1-5", description="Cron: when it closes.")
    timezone: Annotated[str, checked(validation.iana_time_zone)] = Field(
        "UTC", description="IANA time zone of start and end (e.g. Europe/Berlin)."
    )
    replicas: int = Field(1, ge=1, le=100, description="Replicas during the window.")

    @model_validator(mode="after")
    def _distinct(self) -> OffHoursConfig:
        # KEDA cron scaler Validate: "start and end can not have exactly same time input".
        if self.start == self.end:
            raise RuleError("end", self.end, "must differ from start (KEDA refuses equal schedules)")
        return self


class AutoscalingConfig(Section):
    """Pods follow load (HPA on custom metrics, or KEDA); GPU nodes follow pods."""

    env_defaults = {
        "min_replicas": _by_env(1, 2),
        "max_replicas": _by_env(2, 8),
        "scale_up": _by_env(
            {"stabilisation_seconds": 0, "percent": 100, "pods": 2, "period_seconds": 30},
            {"stabilisation_seconds": 0, "percent": 100, "pods": 4, "period_seconds": 30},
        ),
        "scale_down": _by_env(
            {"stabilisation_seconds": 120, "percent": 100, "pods": 2, "period_seconds": 60},
            {"stabilisation_seconds": 600, "percent": 25, "pods": 1, "period_seconds": 120},
        ),
    }

    enabled: bool = Field(True, description="Autoscale the serving Deployment.")
    engine: Literal["hpa", "keda"] = Field(
        "hpa", description="HorizontalPodAutoscaler with prometheus-adapter, or KEDA."
    )
    min_replicas: int = Field(ge=0, le=100, description="Fewest replicas (0 only with KEDA).")
    max_replicas: int = Field(ge=1, le=100, description="Most replicas.")
    metrics: dict[MetricKind, Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: dict(DEFAULT_SCALING_METRICS),
        min_length=1,
        description="Target per pod, by metric: cpu (% of request), requests_per_second, "
        "latency_p95 / latency_p99 / batch_queueing_p99 (ms), gpu_utilisation (%).",
    )
    scale_up: ScalingPolicy = Field(description="How fast replicas are added.")
    scale_down: ScalingPolicy = Field(description="How fast replicas are removed.")
    prometheus_url: Annotated[str, worded(r"https?://\S+", "must be an http:// or https:// URL without spaces")] | None = Field(
        None,
        description="Prometheus for custom metrics. Unset: the stack's kube-prometheus-stack.",
    )
    off_hours: OffHoursConfig | None = Field(
        None, description="KEDA only: keep replicas up in a cron window, scale down outside it."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise RuleError("min_replicas", self.min_replicas, f"must be <= max_replicas ({self.max_replicas})")
        if self.min_replicas == 0 and self.engine != "keda":
            raise RuleError("min_replicas", 0, "scaling to zero needs engine: keda")
        if self.off_hours is not None and self.engine != "keda":
            raise RuleError("off_hours", "...", "off-hours schedules need engine: keda")
        if "cpu" in self.metrics and self.metrics["cpu"] > 100:
            raise RuleError("metrics.cpu", self.metrics["cpu"], "is a percentage of the CPU request (1-100)")
        if "gpu_utilisation" in self.metrics and self.metrics["gpu_utilisation"] > 100:
            raise RuleError(
                "metrics.gpu_utilisation", self.metrics["gpu_utilisation"], "is a percentage (1-100)"
            )
        return self


class LogsConfig(Section):
    """Container logs to CloudWatch Logs through Fluent Bit."""

    env_defaults = {"enabled": _by_env(False, True), "retention_days": _by_env(7, 90)}

    enabled: bool = Field(description="Ship every container's logs to CloudWatch Logs.")
    retention_days: LogRetentionDays = Field(description="Retention of the container log group.")


class MonitoringConfig(Section):
    env_defaults = {
        "retention": _by_env("3d", "15d"),
        "storage_gib": _by_env(20, 100),
        "replicas": _by_env(1, 2),
    }

    enabled: bool = Field(True, description="Metrics, alerts and dashboards for the stack.")
    mode: Literal["kube-prometheus-stack", "existing-operator"] = Field(
        "kube-prometheus-stack",
        description="Install kube-prometheus-stack, or only create our ServiceMonitors, rules and "
        "dashboard for a Prometheus Operator already in the cluster.",
    )
    namespace: Name = Field("monitoring", description="Namespace Prometheus runs in.")
    retention: RetentionPeriod = Field(description="How long Prometheus keeps metrics.")
    storage_gib: int = Field(ge=5, le=16_000, description="Prometheus volume (gp3) per replica.")
    replicas: int = Field(ge=1, le=5, description="Prometheus and Alertmanager replicas.")
    rule_labels: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        description="Extra labels on our ServiceMonitors and rules, for an existing Prometheus's "
        "selectors (mode existing-operator).",
    )
    thresholds: AlertThresholds = section("Alert thresholds.")
    logs: LogsConfig = section("Container logs (Fluent Bit to CloudWatch Logs).")
    runbook_base_url: Annotated[str, worded(r"\S+#[a-z0-9-]+", "must be a URL or path without spaces ending in #<anchor> (lower-case letters, digits, '-')")] = Field(
        "README.md#runbook",
        description="Alerts link to `<this>-<alert name in lower case>`: point it at your copy "
        "of the README's runbook.",
    )
    receivers: dict[Name, AlertReceiverConfig] = Field(
        default_factory=dict, description="Alertmanager receivers keyed by name."
    )


# The ALB quota "rules per load balancer" (default 100, not counting default rules; Elastic
# Load Balancing, "Quotas for your Application Load Balancers"). The ingress routes take per
# served model 4 listener rules (its paths and its 3 call verbs), 8 more per canaried model
# (its canary label and canary version), 6 for the public gRPC methods (12 with a canary: the
# header rules) and one HTTP-to-HTTPS redirect per host name. components/ingress_tls.py builds
# them; tests/test_ingress_tls.py checks this count against the rendered routes.
ALB_RULES_PER_LOAD_BALANCER = 100


def alb_listener_rules(models: Mapping[str, ModelConfig]) -> int:
    canaries = sum(m.canary is not None for m in models.values())
    return 4 * len(models) + 8 * canaries + 6 * (2 if canaries else 1) + 2


class StackConfig(Section):
    """The whole stack. Rules that need the environment live here."""

    environment: Environment = Field(
        description="dev, staging or prod: picks defaults and the production rules."
    )
    aws_region: AwsRegion = Field(
        alias="aws:region", description="AWS region (the AWS provider's own key)."
    )
    tags: dict[TagKey, TagValue] = Field(
        default_factory=dict, description="Extra tags on every AWS resource."
    )
    cluster: ClusterConfig = Field(description="The EKS cluster, created or existing.")
    gpu_pools: dict[PoolName, GpuPoolConfig] = Field(
        default_factory=dict, description="GPU node pools keyed by a stable name (24 characters at most)."
    )
    node_autoscaling: NodeAutoscalingConfig = section("Node autoscaling (cluster-autoscaler).")
    model_store: ModelStoreConfig = section("S3 model repository.")
    serving: ServingConfig = Field(description="The TF Serving workload.")
    autoscaling: AutoscalingConfig = section("Pod autoscaling of the serving Deployment.")
    ingress: Annotated[IngressConfig | None, SwitchedOffIsAbsent] = Field(
        None,
        description="External REST and gRPC endpoints. Unset, or `{enabled: false}`: in-cluster only.",
    )
    ingress_api_key: SecretStr | None = Field(
        None, description="API key for access.require_api_key; set it with --secret."
    )
    grafana_admin_password: SecretStr | None = Field(
        None, description="Grafana admin password (--secret). Unset: a random one is generated."
    )
    alerting_secrets: dict[Name, SecretStr] = Field(
        default_factory=dict,
        description="Per receiver: Slack/webhook URL or PagerDuty routing key (--secret --path).",
    )
    docker_hub_access_token: SecretStr | None = Field(
        None, description="Docker Hub access token for serving.image_cache (--secret)."
    )
    monitoring: MonitoringConfig = section("Monitoring.")

    @model_validator(mode="after")
    def _api_key_is_secret(self, info: ValidationInfo) -> StackConfig:
        access = self.ingress.access if self.ingress else None
        if access and access.require_api_key and self.ingress_api_key is None:
            raise RuleError(
                "ingress_api_key",
                None,
                "access.require_api_key needs it: pulumi config set --secret "
                "tf-serving-eks:ingress_api_key <key>",
            )
        cache = self.serving.image_cache
        if cache.enabled and cache.docker_hub_username is None:
            raise RuleError(
                "serving.image_cache.docker_hub_username",
                None,
                "an ECR pull-through cache of Docker Hub needs Docker Hub credentials: set the "
                "user here and its access token with pulumi config set --secret "
                "tf-serving-eks:docker_hub_access_token <token> (or set enabled: false)",
            )
        if cache.enabled and self.docker_hub_access_token is None:
            raise RuleError(
                "docker_hub_access_token",
                None,
                "serving.image_cache needs it: pulumi config set --secret "
                "tf-serving-eks:docker_hub_access_token <token>",
            )
        secret_keys = (info.context or {}).get("secret_keys")
        if secret_keys is not None:
            present = {
                "ingress_api_key": self.ingress_api_key is not None,
                "grafana_admin_password": self.grafana_admin_password is not None,
                "alerting_secrets": bool(self.alerting_secrets),
                "docker_hub_access_token": self.docker_hub_access_token is not None,
            }
            for key, is_set in present.items():
                if is_set and f"{PROJECT}:{key}" not in secret_keys:
                    raise RuleError(
                        key,
                        "(hidden)",
                        "is in the stack file in clear; set it with `pulumi config set --secret`",
                    )
        if self.ingress_api_key is not None and len(self.ingress_api_key.get_secret_value()) < 20:
            raise RuleError("ingress_api_key", "(hidden)", "must be at least 20 characters")
        return self

    @model_validator(mode="after")
    def _routes_fit_the_load_balancer(self) -> StackConfig:
        if self.ingress is None or not self.ingress.enabled:
            return self
        rules = alb_listener_rules(self.serving.models)
        if rules > ALB_RULES_PER_LOAD_BALANCER:
            raise RuleError(
                "serving.models",
                f"{len(self.serving.models)} models",
                f"the ingress would need {rules} ALB listener rules; an ALB takes "
                f"{ALB_RULES_PER_LOAD_BALANCER} (4 per model, 8 more per canary): serve fewer "
                "models or canaries behind this ingress",
            )
        return self

    @model_validator(mode="after")
    def _autoscaling_has_metrics_source(self) -> StackConfig:
        scaling = self.autoscaling
        custom = set(scaling.metrics) - {"cpu"}
        local_prometheus = self.monitoring.enabled and self.monitoring.mode == "kube-prometheus-stack"
        if scaling.enabled and custom and scaling.prometheus_url is None and not local_prometheus:
            raise RuleError(
                "autoscaling.prometheus_url",
                None,
                f"metrics {sorted(custom)} come from Prometheus: enable monitoring "
                "(kube-prometheus-stack) or give its URL",
            )
        if scaling.enabled and "gpu_utilisation" in scaling.metrics and self.serving.gpu_pool is None:
            raise RuleError("autoscaling.metrics.gpu_utilisation", "...", "needs serving.gpu_pool")
        return self

    @model_validator(mode="after")
    def _receivers_have_secrets(self) -> StackConfig:
        for name, receiver in self.monitoring.receivers.items():
            if name not in self.alerting_secrets:
                raise RuleError(
                    f"monitoring.receivers.{name}",
                    receiver.type,
                    f"needs its URL or key: pulumi config set --secret --path "
                    f"'tf-serving-eks:alerting_secrets.{name}' <value>",
                )
            if receiver.type == "slack" and receiver.slack_channel is None:
                raise RuleError(f"monitoring.receivers.{name}.slack_channel", None, "slack needs a channel")
        return self

    @model_validator(mode="after")
    def _pools_have_one_shape(self) -> StackConfig:
        # cluster-autoscaler builds every node of a group as the group's first instance type
        # (cloudprovider/aws/README.md: "only the first instance type found will be used"),
        # so a larger second type would be planned as the first and a smaller one over-promised.
        for name, pool in self.gpu_pools.items():
            first = pool.instances[0]
            for other in pool.instances[1:]:
                if node_shape(other) != node_shape(first):
                    raise RuleError(
                        f"gpu_pools.{name}.instance_types",
                        pool.instance_types,
                        f"pool '{name}' mixes node shapes: {describe_shape(first)} and "
                        f"{describe_shape(other)}; cluster-autoscaler plans the whole pool as its "
                        "first type, so all types of a pool need the same vCPUs, memory, GPU model "
                        "and count (make a pool per shape)",
                    )
        return self

    def zone_problems(self, zone_count: int) -> list[RuleError]:
        """Why the pools cannot be split over `zone_count` zones (one node group each)."""
        strict = strict_zone_spread(self.environment) and self.serving.gpu_pool is not None
        return pool_zone_problems(
            self.gpu_pools,
            zone_count,
            strict_pool=self.serving.gpu_pool if strict else None,
            strict_replicas=(
                self.autoscaling.max_replicas if self.autoscaling.enabled else self.serving.replicas
            ),
            pod_gpus=self.serving.gpus,
        )

    def node_daemons(self, gpu_node: bool) -> dict[str, catalog.Requests]:
        """The per-node daemons on a system node or a GPU node of this stack, by name."""
        return catalog.daemon_requests(
            gpu_node=gpu_node, logs=self.monitoring.logs.enabled, node_exporter=self.monitoring.enabled
        )

    @model_validator(mode="after")
    def _cpu_serving_fits_the_system_nodes(self) -> StackConfig:
        # Without a GPU pool the serving pods have no node selector and no toleration: in a
        # cluster we create they can land only on the system node group (GPU nodes are
        # tainted). An existing cluster's nodes are its owner's and unknown here.
        serving = self.serving
        if serving.gpu_pool is not None or self.cluster.mode != "create":
            return self
        group = self.cluster.system_node_group
        pod = serving.pod_requests
        daemons = self.node_daemons(gpu_node=False)
        most = self.autoscaling.max_replicas if self.autoscaling.enabled else serving.replicas
        for name in group.instance_types:
            instance = catalog.instance_type(name)
            if instance is None or name not in catalog.ENI_LIMITS:
                continue  # not in the catalogue: its capacity is not known here
            room = catalog.room_for_pods(instance, daemons)
            if not pod.fits(room):
                raise RuleError(
                    "serving",
                    {"cpu": serving.cpu, "memory": serving.memory},
                    f"CPU serving runs on the system nodes: the serving pod needs "
                    f"{catalog.describe_requests(pod)} (tf-serving plus its model-sync containers), "
                    f"{name} system nodes have {catalog.describe_room(room)} allocatable after EKS "
                    f"reservations and the per-node daemons ({', '.join(sorted(daemons))}); lower "
                    "serving.cpu / serving.memory, pick larger "
                    "cluster.system_node_group.instance_types, or set serving.gpu_pool",
                )
            capacity = catalog.pods_that_fit(pod, room) * group.max_size
            if most + serving.canary_pods > capacity:
                raise RuleError(
                    "cluster.system_node_group.max_size",
                    group.max_size,
                    f"{most} serving pod(s) plus {serving.canary_pods} canary do not fit "
                    f"{group.max_size} {name} system nodes ({capacity} serving pods at most, "
                    "before the cluster's controllers); raise max_size or use larger instance types",
                )
        return self

    @model_validator(mode="after")
    def _serving_fits_its_pool(self) -> StackConfig:
        serving = self.serving
        if serving.gpu_pool is None:
            return self
        pool = self.gpu_pools.get(serving.gpu_pool)
        if pool is None:
            raise RuleError(
                "serving.gpu_pool",
                serving.gpu_pool,
                f"no such pool; gpu_pools has: {', '.join(sorted(self.gpu_pools)) or 'none'}",
            )
        pod = serving.pod_requests
        daemons = self.node_daemons(gpu_node=True)
        most = self.autoscaling.max_replicas if self.autoscaling.enabled else serving.replicas
        for instance in pool.instances:
            room = catalog.room_for_pods(instance, daemons)
            shown = {"gpus": serving.gpus, "cpu": serving.cpu, "memory": serving.memory}
            advertised = instance.gpus * pool.time_slicing_replicas
            if serving.gpus > advertised:
                raise RuleError(
                    "serving",
                    shown,
                    f"a pod does not fit pool '{serving.gpu_pool}': asks {serving.gpus} GPU(s) but "
                    f"{instance.name} offers {advertised}",
                )
            if not pod.fits(room):
                raise RuleError(
                    "serving",
                    shown,
                    f"a pod does not fit pool '{serving.gpu_pool}': the serving pod needs "
                    f"{catalog.describe_requests(pod)} (tf-serving plus its model-sync containers), "
                    f"{instance.name} nodes have {catalog.describe_room(room)} allocatable after "
                    f"EKS reservations and the per-node daemons ({', '.join(sorted(daemons))})",
                )
            by_gpu = pool.gpus_per_node // serving.gpus
            fitting = catalog.pods_that_fit(pod, room)
            if pool.time_slicing_replicas > 1 and fitting < by_gpu:
                raise RuleError(
                    "serving",
                    shown,
                    f"pool '{serving.gpu_pool}' shares each GPU between {pool.time_slicing_replicas} "
                    f"pods, so {by_gpu} serving pods land on each {instance.name} node and need "
                    f"{catalog.describe_requests(pod.times(by_gpu))}; the node has "
                    f"{catalog.describe_room(room)} allocatable after EKS reservations and the "
                    f"per-node daemons (room for {fitting}): lower serving.cpu / serving.memory "
                    "or time_slicing_replicas",
                )
            per_node = min(by_gpu, fitting)
            capacity = per_node * pool.max_size
            if most + serving.canary_pods > capacity and by_gpu > fitting:
                key = "autoscaling.max_replicas" if self.autoscaling.enabled else "serving.replicas"
                raise RuleError(
                    key,
                    most,
                    f"{most} serving pod(s) plus {serving.canary_pods} canary need more room than "
                    f"pool '{serving.gpu_pool}' has at max_size {pool.max_size}: CPU and memory "
                    f"let {per_node} pod(s) onto each {instance.name} node; raise "
                    f"gpu_pools.{serving.gpu_pool}.max_size",
                )
        scaling = self.autoscaling
        # The canary Deployment's pod runs on the same pool beside the stable ones.
        gpus_needed = serving.gpus * (most + serving.canary_pods)
        gpus_at_max = pool.gpus_per_node * pool.max_size
        if gpus_needed > gpus_at_max:
            canary = " (with the canary pod)" if serving.canary_pods else ""
            raise RuleError(
                "autoscaling.max_replicas" if scaling.enabled else "serving.replicas",
                most,
                f"needs {gpus_needed} GPU(s){canary} but pool '{serving.gpu_pool}' holds {gpus_at_max} at "
                f"max_size {pool.max_size}; raise gpu_pools.{serving.gpu_pool}.max_size",
            )
        if scaling.enabled:
            gpus_at_min = pool.gpus_per_node * pool.min_size
            if pool.min_size > 0 and serving.gpus * scaling.min_replicas > gpus_at_min:
                raise RuleError(
                    "autoscaling.min_replicas",
                    scaling.min_replicas,
                    f"needs {serving.gpus * scaling.min_replicas} GPU(s) but pool "
                    f"'{serving.gpu_pool}' holds {gpus_at_min} at min_size {pool.min_size}; "
                    "raise min_size, or set it to 0 to scale the pool from zero",
                )
        shared = pool.time_slicing_replicas
        if serving.gpu_memory_fraction * shared > 1.0 + 1e-9:
            raise RuleError(
                "serving.gpu_memory_fraction",
                serving.gpu_memory_fraction,
                f"pool '{serving.gpu_pool}' shares each GPU between {shared} pods; the fraction "
                f"must be at most {1 / shared:.2f}",
            )
        # TF Serving's BFC allocator takes per_process_gpu_memory_fraction of each GPU up front,
        # so framebuffer use sits at fraction x pods per GPU plus the CUDA context (a few %)
        # on a healthy node: GPUMemoryNearlyFull must start above that, or it always fires.
        allocated = serving.gpu_memory_fraction * shared * 100
        limit = self.monitoring.thresholds.gpu_memory_percent
        if self.monitoring.enabled and limit < allocated + GPU_CONTEXT_HEADROOM_PERCENT:
            raise RuleError(
                "monitoring.thresholds.gpu_memory_percent",
                limit,
                f"TF Serving allocates {allocated:.0f}% of each GPU up front (serving.gpu_memory_fraction "
                f"x {shared} pod(s) per GPU); the alert must start at "
                f"{allocated + GPU_CONTEXT_HEADROOM_PERCENT:.0f}% or above, else it fires on a healthy node",
            )
        return self

    @model_validator(mode="after")
    def _production_rules(self) -> StackConfig:
        if self.environment != "prod":
            return self
        access = self.ingress.access if self.ingress else None
        if access and not (access.public or access.allowed_cidrs or access.require_api_key):
            raise RuleError(
                "ingress.access",
                {"allowed_cidrs": [], "require_api_key": False},
                "prod endpoints need an allowlist or an API key; set public: true to open "
                "them deliberately",
            )
        if self.monitoring.enabled and not self.monitoring.receivers:
            raise RuleError(
                "monitoring.receivers",
                {},
                "prod needs at least one alert receiver (slack, webhook or pagerduty)",
            )
        if self.autoscaling.enabled and self.autoscaling.min_replicas < 2:
            raise RuleError(
                "autoscaling.min_replicas",
                self.autoscaling.min_replicas,
                "prod needs at least 2 replicas (no scale to zero)",
            )
        if not self.autoscaling.enabled and self.serving.replicas < 2:
            raise RuleError(
                "serving.replicas", self.serving.replicas, "prod needs at least 2 replicas"
            )
        for name, pool in self.gpu_pools.items():
            if pool.time_slicing_replicas > 1:
                raise RuleError(
                    f"gpu_pools.{name}.time_slicing_replicas",
                    pool.time_slicing_replicas,
                    "time-slicing gives no memory isolation between pods; not allowed in prod",
                )
        cluster = self.cluster
        if cluster.mode == "create":
            if cluster.vpc.az_count < 3:
                raise RuleError(
                    "cluster.vpc.az_count", cluster.vpc.az_count, "prod must span at least 3 AZs"
                )
            if cluster.vpc.nat_gateways != "per_az":
                raise RuleError(
                    "cluster.vpc.nat_gateways",
                    cluster.vpc.nat_gateways,
                    "prod needs per_az so one AZ's outage does not cut the others' egress",
                )
            if cluster.system_node_group.min_size < 2:
                raise RuleError(
                    "cluster.system_node_group.min_size",
                    cluster.system_node_group.min_size,
                    "prod needs at least 2 system nodes",
                )
        endpoint = cluster.endpoint
        if endpoint.public_access and validation.opens_to_everyone(endpoint.public_access_cidrs):
            raise RuleError(
                "cluster.endpoint.public_access_cidrs",
                [str(c) for c in endpoint.public_access_cidrs],
                "prod must not open the public API endpoint to every address (0.0.0.0/0 or "
                "blocks that add up to it); list your CIDRs or set public_access: false",
            )
        if access and access.allowed_cidrs and validation.opens_to_everyone(access.allowed_cidrs):
            raise RuleError(
                "ingress.access.allowed_cidrs",
                [str(c) for c in access.allowed_cidrs],
                "covers every public address, so it is no allowlist; in prod set public: true "
                "(and drop allowed_cidrs) to open the endpoints deliberately",
            )
        if "audit" not in cluster.log_types:
            raise RuleError("cluster.log_types", cluster.log_types, "prod must keep audit logs")
        return self

    @model_validator(mode="after")
    def _names_the_cluster_and_aws_accept(self) -> StackConfig:
        # Namespaces we create: Kubernetes' own are not ours to create or delete, and two
        # components of ours creating one namespace collide.
        others = {"nvidia": "the NVIDIA device plugin (gpu_pools)", "keda": "KEDA (autoscaling.engine keda)"}
        creates_monitoring = self.monitoring.enabled and self.monitoring.mode == "kube-prometheus-stack"
        created = [("serving.namespace", self.serving.namespace)]
        if creates_monitoring:
            created.append(("monitoring.namespace", self.monitoring.namespace))
        for key, namespace in created:
            reserved = validation.reserved_namespace(namespace)
            if reserved:
                raise RuleError(key, namespace, f"the stack creates this namespace, but {reserved}")
            if namespace in others:
                raise RuleError(key, namespace, f"is the namespace of {others[namespace]}; pick another")
        if creates_monitoring and self.serving.namespace == self.monitoring.namespace:
            raise RuleError(
                "monitoring.namespace",
                self.monitoring.namespace,
                "must differ from serving.namespace: the stack creates each, with its own "
                "pod security level",
            )
        # Base tags (components/naming.py base_tags) plus these, at most 50 per resource.
        base = {"project", "stack", "environment", "managed-by"}
        room = validation.MAX_TAGS_PER_RESOURCE - len(base)
        if len(set(self.tags) - base) > room:
            raise RuleError(
                "tags",
                f"{len(self.tags)} tags",
                f"AWS takes 50 tags per resource and the stack sets {len(base)} itself: at most {room}",
            )
        overridden = sorted(base & set(self.tags))
        if overridden:
            raise RuleError(
                f"tags.{overridden[0]}",
                self.tags[overridden[0]],
                "is one of the tags the stack sets itself (project, stack, environment, managed-by)",
            )
        if self.model_store.bucket_name is None:
            # The derived name (components/model_layout.py) must obey S3's rules too.
            from components.model_layout import model_bucket_name

            derived = model_bucket_name(self, "123456789012")
            try:
                validation.bucket_name(derived)
            except ValueError as exc:
                raise RuleError(
                    "model_store.bucket_name",
                    None,
                    f"unset, so the bucket is named after cluster.name ({derived.replace('123456789012', '<account id>')}), "
                    f"but {exc}; set model_store.bucket_name",
                ) from None
        return self

    @model_validator(mode="after")
    def _pools_divide_over_zones(self) -> StackConfig:
        # A new VPC has private subnets in az_count zones; an existing cluster's zones are
        # known only once its subnets are looked up (checked then, see check_pool_zones).
        if self.cluster.mode == "create":
            problems = self.zone_problems(self.cluster.vpc.az_count)
            if problems:
                raise problems[0]
        return self


class StackConfigError(pulumi.RunError):
    """An invalid stack file: one message naming the stack, each key, value and what is allowed.

    A RunError, so `pulumi up` prints the message alone and no traceback (pulumi SDK
    `errors.py`: RunError "results in a clean exit")."""


def _allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str] | None:
    """The keys a model accepts at `loc` (for 'unknown key' messages), if it is a model."""
    current: Any = model
    map_key_next = False
    for part in loc:
        if map_key_next:
            # The user's key in a keyed map (a model or pool name): its value is `current`.
            map_key_next = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (f for n, f in current.model_fields.items() if part in (n, f.alias)), None
        )
        if field is None:
            return None
        map_key_next = typing.get_origin(field.annotation) is dict
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return None


def _model_in(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _dotted(parts: tuple[str | int, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def format_errors(
    stack: str, source: str, exc: ValidationError, named_elsewhere: Collection[str] = ()
) -> str:
    lines = [f"stack '{stack}': invalid configuration in {source}:"]
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if loc and loc[0] in named_elsewhere:
            continue  # that key has its error already
        rule = (err.get("ctx") or {}).get("error")
        if isinstance(rule, RuleError):
            if not loc and rule.key.split(".")[0] in named_elsewhere:
                continue
            key = _dotted(loc + tuple(rule.key.split(".")))
            message, value = rule.message, rule.value
        elif isinstance(rule, ValueError):
            # A field rule of components/validation.py: its words, without pydantic's prefix.
            key, value, message = _dotted(loc), err["input"], str(rule)
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_keys(StackConfig, loc[:-1]) or []
            near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            key, value = _dotted(loc), err["input"]
            message = f"unknown key; {hint}allowed keys: {', '.join(sorted(allowed))}"
        else:
            key, value, message = _dotted(loc), err["input"], err["msg"]
        shown = "" if err["type"] == "missing" else f" (got {_show(value)})"
        full_key = key if key.startswith("aws:") else f"{PROJECT}:{key}"
        lines.append(f"  - {full_key}: {message}{shown}")
    return "\n".join(lines)


def check_pool_zones(cfg: StackConfig, stack: str, zones: Collection[str], source: str | None = None) -> None:
    """Refuse pools that cannot be split over `zones` (an existing cluster's subnet zones),
    with the same message shape as a config error, before any GPU resource is created."""
    problems = cfg.zone_problems(len(zones))
    if problems:
        lines = [f"stack '{stack}': invalid configuration in {source or f'Pulumi.{stack}.yaml'}:"]
        lines += [
            f"  - {PROJECT}:{p.key}: {p.message} (zones {', '.join(sorted(zones))}) (got {_show(p.value)})"
            for p in problems
        ]
        raise StackConfigError("\n".join(lines))


def parse_stack_config(
    raw: Mapping[str, Any],
    stack: str,
    source: str | None = None,
    secret_keys: Collection[str] | None = None,
    named_elsewhere: Collection[str] = (),
) -> StackConfig:
    """Validate a stack's config (keys without the project prefix; `aws:region` as is).

    `secret_keys` are the Pulumi config keys that were set as secrets, when known: secret
    settings found outside it are refused. `named_elsewhere` are top-level keys whose error
    is already reported (written without namespace or under another project's, or secret
    where no secret belongs): no second error for them.
    """
    source = source or f"Pulumi.{stack}.yaml"
    env = raw.get("environment")
    context = {
        "environment": env if env in ENVIRONMENTS else None,
        "environment_unusable": env not in ENVIRONMENTS,
        "secret_keys": set(secret_keys) if secret_keys is not None else None,
    }
    try:
        return StackConfig.model_validate(dict(raw), context=context)
    except ValidationError as exc:
        raise StackConfigError(format_errors(stack, source, exc, named_elsewhere)) from None


# Config namespaces besides the project's: the providers the program uses (their own keys,
# e.g. `aws:region`, `aws:profile`) and Pulumi's.
PROVIDER_NAMESPACES = ("aws", "kubernetes", "random", "pulumi")


def _holds_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_holds_secret(arg) for arg in typing.get_args(annotation))


def secret_settings() -> set[str]:
    """The top-level keys whose values are secrets (set with `pulumi config set --secret`)."""
    return {
        field.alias or name
        for name, field in StackConfig.model_fields.items()
        if _holds_secret(field.annotation)
    }


def settings_problems(
    values: Mapping[str, str], secret_keys: Collection[str] | None
) -> tuple[list[str], set[str]]:
    """Error lines for keys Pulumi hands the program but the model never sees (no namespace,
    another project's) and for secrets where none belongs; and the model keys they stand for
    (so those get no second error, e.g. "Field required")."""
    lines: list[str] = []
    meant: set[str] = set()
    fields = {f.alias or n for n, f in StackConfig.model_fields.items()}
    secrets = secret_settings()
    for key in values:
        namespace, sep, name = key.partition(":")
        if not sep:
            guess = key if key in fields else None
            lines.append(
                f"  - {key}: has no namespace; project keys are written "
                f"`{PROJECT}:{guess or '<key>'}`"
            )
            if guess:
                meant.add(guess)
        elif namespace != PROJECT and namespace not in PROVIDER_NAMESPACES:
            near = difflib.get_close_matches(name, sorted(fields), n=1)
            hint = f"; did you mean `{PROJECT}:{near[0]}`?" if near else ""
            lines.append(
                f"  - {key}: namespace '{namespace}' is not this project ({PROJECT}) nor a "
                f"provider it configures ({', '.join(PROVIDER_NAMESPACES)}){hint}"
            )
            if name in fields:
                meant.add(name)
    for key in sorted(secret_keys or ()):
        namespace, _, name = key.partition(":")
        if (namespace == PROJECT and name not in secrets) or key == "aws:region":
            meant.add(name if namespace == PROJECT else key)
            lines.append(
                f"  - {key}: is set as a secret (`secure:`) but is not one; set it in clear "
                f"(pulumi config set {key} <value>). Secret keys: {', '.join(sorted(secrets))}"
            )
    return lines, meant


def parse_pulumi_settings(
    values: Mapping[str, str],
    stack: str,
    source: str | None = None,
    secret_keys: Collection[str] | None = None,
) -> StackConfig:
    """Pulumi's flat settings validated as a StackConfig: every key Pulumi would hand the
    program is accounted for, and all problems come in one StackConfigError."""
    source = source or f"Pulumi.{stack}.yaml"
    problems, meant = settings_problems(values, secret_keys)
    try:
        cfg = parse_stack_config(
            config_from_pulumi_settings(values), stack, source, secret_keys, named_elsewhere=meant
        )
    except StackConfigError as exc:
        if not problems:
            raise
        lines = str(exc).splitlines()
        raise StackConfigError("\n".join([lines[0], *problems, *lines[1:]])) from None
    if problems:
        raise StackConfigError(
            "\n".join([f"stack '{stack}': invalid configuration in {source}:", *problems])
        )
    return cfg


def config_from_pulumi_settings(values: Mapping[str, str]) -> dict[str, Any]:
    """Turn Pulumi's flat `namespace:key -> string` config into the model's raw dict.

    Structured values arrive as JSON text; plain strings stay strings. Keys of other
    namespaces are ignored, except `aws:region`.
    """
    raw: dict[str, Any] = {}
    prefix = f"{PROJECT}:"
    for key, text in values.items():
        if key == "aws:region":
            raw[key] = text
        elif key.startswith(prefix):
            try:
                raw[key[len(prefix):]] = json.loads(text)
            except (TypeError, json.JSONDecodeError):
                raw[key[len(prefix):]] = text
    return raw


def load_stack_config() -> StackConfig:
    """Read and validate the running stack's config (`pulumi up` or the offline preview)."""
    from pulumi.runtime import config as runtime_config

    values: dict[str, str] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret_keys |= {k for k in values if runtime_config.is_config_secret(k)}
    return parse_pulumi_settings(values, pulumi.get_stack(), secret_keys=secret_keys)
