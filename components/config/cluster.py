"""The `cluster` key: the EKS cluster, created with its VPC or an existing one looked up.

Rules here read only the cluster section; a rule that also needs another key belongs to
the root model (components/config/stack.py).
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, model_validator

from components import catalog, validation
from components.config.base import (
    IamPrincipalArn,
    LogRetentionDays,
    Name,
    NodeGroupSizing,
    RuleError,
    Section,
    _by_env,
    environment_of,
    section,
)
from components.netplan import MAX_AZS, plan_subnets
from components.validation import ipv4_cidr, worded

# EKS CreateCluster: name 1-100 characters, ^[0-9A-Za-z][A-Za-z0-9\-_]*$.
ClusterName = Annotated[str, worded(
    r"[0-9A-Za-z][A-Za-z0-9_-]*",
    "EKS cluster names use letters, digits, '-' and '_', starting with a letter or digit",
    max_length=100,
    min_length=1,
)]

SubnetId = Annotated[str, worded(r"subnet-[0-9a-f]{8,17}", "must be a subnet ID: subnet- and 8 or 17 hex digits")]

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

    @model_validator(mode="after")
    def _production_rules(self, info: ValidationInfo) -> ClusterConfig:
        if environment_of(info) != "prod":
            return self
        if self.mode == "create":
            if self.vpc.az_count < 3:
                raise RuleError("vpc.az_count", self.vpc.az_count, "prod must span at least 3 AZs")
            if self.vpc.nat_gateways != "per_az":
                raise RuleError(
                    "vpc.nat_gateways",
                    self.vpc.nat_gateways,
                    "prod needs per_az so one AZ's outage does not cut the others' egress",
                )
            if self.system_node_group.min_size < 2:
                raise RuleError(
                    "system_node_group.min_size",
                    self.system_node_group.min_size,
                    "prod needs at least 2 system nodes",
                )
        endpoint = self.endpoint
        if endpoint.public_access and validation.opens_to_everyone(endpoint.public_access_cidrs):
            raise RuleError(
                "endpoint.public_access_cidrs",
                [str(c) for c in endpoint.public_access_cidrs],
                "prod must not open the public API endpoint to every address (0.0.0.0/0 or "
                "blocks that add up to it); list your CIDRs or set public_access: false",
            )
        if "audit" not in self.log_types:
            raise RuleError("log_types", self.log_types, "prod must keep audit logs")
        return self

    def addon_version(self, addon: catalog.AddonName) -> str:
        override = getattr(self.addons, addon.replace("-", "_"))
        return override or catalog.ADDON_VERSIONS[self.kubernetes_version][addon]
