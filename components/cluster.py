"""The cluster connection (stack key `cluster`): a new VPC + EKS cluster, or an existing
cluster looked up by name.

Either way the rest of the stack receives the same `ClusterOutputs`, including the
Kubernetes provider every Kubernetes object of the stack is created with. In mode existing
it only looks up and checks, and refuses a cluster that lacks what the stack needs; it must
not change anything of an existing cluster beyond adding our own StorageClass, nor install
what other components own (GPU pools, controllers), nor export stack outputs.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import catalog
from components.config import PROJECT, ClusterConfig, StackConfig, StackConfigError
from components.iam import (
    policy_document,
    pod_identity_trust_policy,
    role_with_managed_policies,
    service_trust_policy,
)
from components.naming import k8s_labels
from components.netplan import plan_subnets
from components.nodes import autoscaled_by_tag, launch_template_args, node_group_timeouts, node_role
from components.resources import child_options

ELB_ROLE_TAG = "kubernetes.io/role/elb"
INTERNAL_ELB_ROLE_TAG = "kubernetes.io/role/internal-elb"
# Karpenter finds the subnets and security groups of its nodes by this tag, valued with the
# cluster's name (karpenter-provider-aws website/content/en/v1.14/getting-started/
# getting-started-with-karpenter: "Add tags to subnets and security groups").
DISCOVERY_TAG = "karpenter.sh/discovery"
CLUSTER_ADMIN_POLICY = "arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
POOL_LABEL = "tf-serving-eks/pool"
SYSTEM_POOL = "system"
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
CNI_SERVICE_ACCOUNT = "aws-node"
POD_IDENTITY_AGENT: catalog.AddonName = "eks-pod-identity-agent"
# Add-ons nodes need before they turn Ready; the others schedule pods and so wait for nodes.
# The Pod Identity agent comes first: the add-ons below get their AWS credentials from it.
ADDONS_BEFORE_NODES: tuple[catalog.AddonName, ...] = (
    POD_IDENTITY_AGENT,
    "vpc-cni",
    "kube-proxy",
)
ADDONS_AFTER_NODES: tuple[catalog.AddonName, ...] = ("coredns", "aws-ebs-csi-driver")


# EKS Auto Mode's capabilities act as the cluster role: its AWS managed policies for compute,
# block storage, load balancing and networking beside AmazonEKSClusterPolicy (EKS user guide,
# awsdocs/amazon-eks-user-guide latest/ug/automode/auto-learn-iam.adoc, "Cluster IAM role"),
# and a trust policy with sts:TagSession, which ours always has.
AUTO_MODE_CLUSTER_POLICIES = (
    "AmazonEKSComputePolicy",
    "AmazonEKSBlockStoragePolicy",
    "AmazonEKSLoadBalancingPolicy",
    "AmazonEKSNetworkingPolicy",
)


def auto_mode_tagging_statements(cluster: str) -> list[dict[str, Any]]:
    """The managed policies let Auto Mode tag its instances with its own tags only; our
    NodeClasses add the stack's tags, which needs this (auto-learn-iam.adoc, "Custom AWS tags
    for EKS Auto resources", statement Compute), scoped to this cluster's node classes and
    pools by the tags Auto Mode puts on every launch."""
    return [
        {
            "Sid": "TagAutoModeInstancesOfThisCluster",
            "Effect": "Allow",
            "Action": ["ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateLaunchTemplate"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                "StringLike": {
                    "aws:RequestTag/eks:kubernetes-node-class-name": "*",
                    "aws:RequestTag/eks:kubernetes-node-pool-name": "*",
                },
            },
        }
    ]


def auto_mode_cluster_args(enabled: bool) -> dict[str, Any]:
    """The aws.eks.Cluster arguments that switch EKS Auto Mode on: compute, block storage and
    load balancing together (EKS refuses them apart: auto-enable-existing.adoc, "The compute,
    block storage, and load balancing capabilities must all be enabled or disabled in the same
    request"). No built-in node pools: the system node group stays a managed node group and
    each auto-mode GPU pool has its own NodePool, so `general-purpose` and `system`
    (set-builtin-node-pools.adoc: on-demand C/M/R nodes) would only be nodes nothing asked for;
    without built-in pools the compute config needs no node role (the NodeClass names it).
    Off: nothing is set, so a stack without auto-mode pools plans as before (the provider keeps
    whatever the cluster has: compute_config is Optional+Computed in terraform-provider-aws
    internal/service/eks/cluster.go)."""
    if not enabled:
        return {}
    return {
        "compute_config": aws.eks.ClusterComputeConfigArgs(enabled=True, node_pools=[]),
        "storage_config": aws.eks.ClusterStorageConfigArgs(
            block_storage=aws.eks.ClusterStorageConfigBlockStorageArgs(enabled=True)
        ),
        "kubernetes_network_config": aws.eks.ClusterKubernetesNetworkConfigArgs(
            elastic_load_balancing=aws.eks.ClusterKubernetesNetworkConfigElasticLoadBalancingArgs(enabled=True)
        ),
    }


@dataclass(frozen=True)
class AddonIdentity:
    """An add-on's own IAM role, bound to its service account by EKS Pod Identity."""

    role: str  # the role's resource name is `<cluster>-<role>-role`
    service_account: str
    managed_policies: tuple[str, ...]


# Add-ons that call AWS, each with its own role rather than the node role: with IMDS hop
# limit 1 no pod reaches the node's credentials (aws-node is hostNetwork and could, but the
# node role no longer holds AmazonEKS_CNI_Policy). EKS user guide, "Amazon VPC CNI: configure
# the plugin to use Pod Identity" and "Add-ons that support EKS Pod Identity".
ADDON_IDENTITIES: dict[catalog.AddonName, AddonIdentity] = {
    "vpc-cni": AddonIdentity("vpc-cni", CNI_SERVICE_ACCOUNT, ("AmazonEKS_CNI_Policy",)),
    "aws-ebs-csi-driver": AddonIdentity(
        "ebs-csi", EBS_CSI_SERVICE_ACCOUNT, ("service-role/AmazonEBSCSIDriverPolicy",)
    ),
}


# The StorageClass our PersistentVolumeClaims name. Mode create makes it the cluster's default
# `gp3`; on an existing cluster we add our own class beside the owner's (never touching
# theirs or their default), so the claims never depend on a class only create mode makes.
CREATE_STORAGE_CLASS = "gp3"
EXISTING_STORAGE_CLASS = f"{PROJECT}-gp3"


@dataclass(frozen=True)
class Prerequisite:
    """Something an existing cluster must bring, for the README and the future preflight.

    `checked`: `pulumi up` looks it up and refuses the stack, naming it, before anything is
    created; otherwise it is the cluster owner's word (stated in the README only)."""

    title: str
    needed_when: str
    checked: bool


# Everything the components need of a cluster they did not create. The README's
# "Using an existing cluster" section lists exactly these titles (tests/test_cluster.py).
EXISTING_CLUSTER_PREREQUISITES: tuple[Prerequisite, ...] = (
    Prerequisite("Kubernetes version", "always", True),
    Prerequisite("Deployer access", "always", False),
    Prerequisite("VPC CNI network policy", "always", True),
    Prerequisite("EKS Pod Identity agent", "any component with a Pod Identity role", True),
    Prerequisite("IAM OIDC provider", "model_store.identity: irsa", True),
    Prerequisite("EBS CSI driver", "monitoring.mode: kube-prometheus-stack", True),
    Prerequisite("Load balancer subnets", "ingress enabled", True),
    Prerequisite("Private subnets", "always", True),
    Prerequisite("Node IAM and IMDS", "always", False),
    Prerequisite("No second metrics-server or cluster-autoscaler", "autoscaling cpu, node_autoscaling", False),
    Prerequisite("Prometheus Operator", "monitoring.mode: existing-operator", False),
)


@dataclass(frozen=True)
class ExistingClusterNeeds:
    """What the rest of this stack's configuration needs from an existing cluster."""

    pod_identity: bool = True
    irsa: bool = False
    ebs_storage: bool = True
    # The scheme of the ALB (None: no ingress): its subnets must be tagged for discovery.
    load_balancer_scheme: str | None = None


def existing_cluster_needs(cfg: StackConfig) -> ExistingClusterNeeds:
    ingress = cfg.ingress if cfg.ingress and cfg.ingress.enabled else None
    return ExistingClusterNeeds(
        # Pod Identity roles: cluster-autoscaler, Karpenter, the load balancer controller and
        # external-dns, fluent-bit, and the model reader unless it uses IRSA.
        pod_identity=bool(
            (cfg.node_group_pools and cfg.node_autoscaling.enabled)
            or cfg.karpenter_pools
            or ingress
            or cfg.monitoring.logs.enabled
            or cfg.model_store.identity == "pod_identity"
        ),
        irsa=cfg.model_store.identity == "irsa",
        ebs_storage=cfg.monitoring.enabled and cfg.monitoring.mode == "kube-prometheus-stack",
        load_balancer_scheme=ingress.scheme if ingress else None,
    )


def refuse_existing(cluster: str, key: str, value: object, rule: str) -> StackConfigError:
    """An existing cluster lacks what the stack needs: the config error's shape, before
    anything is created."""
    stack = pulumi.get_stack()
    return StackConfigError(
        f"stack '{stack}': invalid configuration in Pulumi.{stack}.yaml:\n"
        f"  - {PROJECT}:{key}: existing cluster '{cluster}' {rule} (got {value})"
    )


@dataclass(frozen=True)
class ClusterOutputs:
    """What the rest of the stack needs of the cluster, in both modes."""

    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubernetes_version: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    vpc_id: pulumi.Output[str]
    vpc_cidr: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    # Where load balancers' traffic to pods comes from (ALB targets in IP mode): the public
    # subnets for an internet-facing ALB, the private ones for an internal ALB.
    public_subnet_cidrs: pulumi.Output[list[str]]
    private_subnet_cidrs: pulumi.Output[list[str]]
    node_security_group_id: pulumi.Output[str]
    provider: k8s.Provider
    # Node selector for cluster controllers; empty for an existing cluster (we don't know it).
    system_node_selector: dict[str, str] = field(default_factory=dict)
    # The private subnets by availability zone name (GPU pools get one node group per zone).
    private_subnet_ids_by_zone: dict[str, list[pulumi.Output[str]]] = field(default_factory=dict)
    # What must exist before anything that claims a PersistentVolume with the `gp3` class:
    # the EBS CSI driver (the provisioner) and the StorageClass. Empty for an existing
    # cluster, whose storage is its owner's.
    storage_ready: list[pulumi.Resource] = field(default_factory=list)
    # The role the system nodes run as (ours in mode create only).
    system_node_role_name: pulumi.Output[str] | None = None
    # The cluster's Kubernetes minor version, known at plan time: the one the stack reports
    # and every version-bound pin (cluster-autoscaler's image) is chosen by.
    version: catalog.KubernetesVersion = catalog.DEFAULT_KUBERNETES_VERSION
    # The StorageClass our claims (Prometheus, Alertmanager, Grafana) name.
    storage_class: str = CREATE_STORAGE_CLASS


def kubeconfig(cluster_name: str, endpoint: str, ca_data: str, region: str) -> str:
    """A kubeconfig that authenticates with `aws eks get-token` (no static credentials)."""
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": "aws",
            "args": [
                "eks",
                "get-token",
                "--cluster-name",
                cluster_name,
                "--region",
                region,
                "--output",
                "json",
            ],
            "interactiveMode": "Never",
        }
    }
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": cluster_name,
                    "cluster": {"server": endpoint, "certificate-authority-data": ca_data},
                }
            ],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}],
            "current-context": cluster_name,
            "users": [{"name": cluster_name, "user": user}],
        }
    )


def addon_configuration(addon: catalog.AddonName) -> str | None:
    """Add-on configuration values, as the JSON text EKS expects."""
    if addon == "vpc-cni":
        # Turns on the CNI's network policy agent, so Kubernetes NetworkPolicies are enforced.
        return json.dumps({"enableNetworkPolicy": "true"})
    return None


def oidc_provider_arn(partition: str, account_id: str, issuer_url: str) -> str:
    return f"arn:{partition}:iam::{account_id}:oidc-provider/{issuer_url.removeprefix('https://')}"


def gp3_storage_class_args(
    labels: dict[str, str], name: str = CREATE_STORAGE_CLASS, default: bool = True
) -> k8s.storage.v1.StorageClassInitArgs:
    """StorageClass: encrypted gp3 through the EBS CSI driver, bound where the pod lands."""
    return k8s.storage.v1.StorageClassInitArgs(
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=name,
            labels=labels,
            annotations={"storageclass.kubernetes.io/is-default-class": "true"} if default else None,
        ),
        provisioner="ebs.csi.aws.com",
        parameters={"type": "gp3", "encrypted": "true", "fsType": "ext4"},
        reclaim_policy="Delete",
        volume_binding_mode="WaitForFirstConsumer",
        allow_volume_expansion=True,
    )


class Cluster(pulumi.ComponentResource):
    outputs: ClusterOutputs

    def __init__(
        self,
        name: str,
        cfg: ClusterConfig,
        *,
        region: str,
        partition: str,
        account_id: str,
        aws_provider: aws.Provider,
        needs: ExistingClusterNeeds | None = None,
        karpenter: bool = False,
        auto_mode: bool = False,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("tf-serving-eks:cluster:Cluster", name, None, opts)
        # Some GPU pool's nodes come from EKS Auto Mode: the cluster is switched into it (mode
        # create only; the config refuses auto-mode pools on an existing cluster).
        self._auto_mode = auto_mode
        self._needs = needs or ExistingClusterNeeds()
        # Some GPU pool's nodes come from Karpenter: its subnets and security group are found
        # by DISCOVERY_TAG (tagged in mode create only then, so other stacks are unchanged;
        # checked in mode existing).
        self._karpenter = karpenter
        self._name = name
        self._cfg = cfg
        self._region = region
        self._partition = partition
        self._account_id = account_id
        self._aws = aws_provider
        if cfg.mode == "create":
            self.outputs = self._create()
        else:
            self.outputs = self._existing()
        self.register_outputs(
            {
                "name": self.outputs.name,
                "endpoint": self.outputs.endpoint,
                "oidc_provider_arn": self.outputs.oidc_provider_arn,
                "vpc_id": self.outputs.vpc_id,
            }
        )

    # --- mode: create -------------------------------------------------------------------

    def _create(self) -> ClusterOutputs:
        cfg, n = self._cfg, self._name
        vpc, private_subnets = self._network()

        log_group = aws.cloudwatch.LogGroup(
            f"{n}-control-plane-logs",
            name=f"/aws/eks/{cfg.name}/cluster",
            retention_in_days=cfg.log_retention_days,
            opts=child_options(self),
        )
        secrets_key = aws.kms.Key(
            f"{n}-secrets-key",
            description=f"Envelope encryption of Kubernetes Secrets in EKS cluster {cfg.name}",
            enable_key_rotation=True,
            deletion_window_in_days=cfg.kms_key_deletion_window_days,
            opts=child_options(self),
        )
        aws.kms.Alias(
            f"{n}-secrets-key-alias",
            name=f"alias/{cfg.name}-eks-secrets",
            target_key_id=secrets_key.key_id,
            opts=child_options(self),
        )
        cluster_role, cluster_role_attachments = role_with_managed_policies(
            f"{n}-control-plane-role",
            service_trust_policy("eks.amazonaws.com", ("sts:AssumeRole", "sts:TagSession")),
            ("AmazonEKSClusterPolicy", *(AUTO_MODE_CLUSTER_POLICIES if self._auto_mode else ())),
            self._partition,
            self,
            description=f"EKS control plane of {cfg.name}",
        )
        role_ready: list[pulumi.Resource] = list(cluster_role_attachments)
        if self._auto_mode:
            role_ready.append(aws.iam.RolePolicy(
                f"{n}-control-plane-auto-mode-tagging",
                role=cluster_role.name,
                policy=policy_document(auto_mode_tagging_statements(cfg.name)),
                opts=child_options(self),
            ))
        endpoint = cfg.endpoint
        cluster = aws.eks.Cluster(
            f"{n}-eks",
            name=cfg.name,
            version=cfg.kubernetes_version,
            role_arn=cluster_role.arn,
            vpc_config=aws.eks.ClusterVpcConfigArgs(
                subnet_ids=[s.id for s in private_subnets],
                endpoint_private_access=endpoint.private_access,
                endpoint_public_access=endpoint.public_access,
                public_access_cidrs=[str(c) for c in endpoint.public_access_cidrs]
                if endpoint.public_access
                else None,
            ),
            access_config=aws.eks.ClusterAccessConfigArgs(
                authentication_mode=cfg.authentication_mode,
                bootstrap_cluster_creator_admin_permissions=cfg.bootstrap_creator_admin,
            ),
            encryption_config=aws.eks.ClusterEncryptionConfigArgs(
                resources=["secrets"],
                provider=aws.eks.ClusterEncryptionConfigProviderArgs(key_arn=secrets_key.arn),
            ),
            enabled_cluster_log_types=list(cfg.log_types),
            # The managed add-ons below own vpc-cni, kube-proxy and coredns from the start.
            bootstrap_self_managed_addons=False,
            deletion_protection=cfg.deletion_protection,
            # Set explicitly: the EKS API defaults to EXTENDED, which bills extended support
            # once the version leaves standard support (EKS API reference, UpgradePolicyRequest).
            upgrade_policy=aws.eks.ClusterUpgradePolicyArgs(support_type=cfg.support_type),
            **auto_mode_cluster_args(self._auto_mode),
            opts=child_options(self, depends_on=[log_group, *role_ready]),
        )
        issuer = cluster.identities.apply(lambda ids: ids[0].oidcs[0].issuer or "")  # type: ignore[index]
        oidc = aws.iam.OpenIdConnectProvider(
            f"{n}-oidc",
            url=issuer,
            client_id_lists=["sts.amazonaws.com"],
            opts=child_options(self),
        )
        admin_access: list[pulumi.Resource] = []
        for key, principal in cfg.admin_principals.items():
            entry = aws.eks.AccessEntry(
                f"{n}-admin-{key}",
                cluster_name=cluster.name,
                principal_arn=principal,
                type="STANDARD",
                opts=child_options(self),
            )
            admin_access.append(entry)
            admin_access.append(aws.eks.AccessPolicyAssociation(
                f"{n}-admin-{key}-policy",
                cluster_name=cluster.name,
                principal_arn=principal,
                policy_arn=CLUSTER_ADMIN_POLICY.format(partition=self._partition),
                access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                opts=child_options(self, depends_on=[entry]),
            ))

        agent = self._addon(cluster, POD_IDENTITY_AGENT)
        early_addons = [agent] + [
            self._addon(cluster, a, agent=agent) for a in ADDONS_BEFORE_NODES if a != POD_IDENTITY_AGENT
        ]
        system_nodes = self._system_node_group(cluster, private_subnets, early_addons)
        late_addons = {
            addon: self._addon(cluster, addon, depends_on=[system_nodes], agent=agent)
            for addon in ADDONS_AFTER_NODES
        }

        node_security_group = cluster.vpc_config.apply(lambda v: v.cluster_security_group_id or "")
        if self._karpenter:
            # EKS creates the cluster security group (every node's): a tag resource, since
            # no resource of ours holds its tags.
            aws.ec2.Tag(
                f"{n}-node-sg-discovery-tag",
                resource_id=node_security_group,
                key=DISCOVERY_TAG,
                value=cfg.name,
                opts=child_options(self),
            )
        plan = plan_subnets(str(cfg.vpc.cidr), cfg.vpc.az_count)
        ca_data = cluster.certificate_authority.apply(lambda ca: ca.data or "")
        provider = k8s.Provider(
            f"{n}-k8s",
            kubeconfig=pulumi.Output.all(cluster.name, cluster.endpoint, ca_data).apply(
                lambda a: kubeconfig(a[0], a[1], a[2], self._region)
            ),
            # Without creator admin, the API answers `pulumi up` only once the deployer's
            # access entry and its policy association exist (EKS user guide, "Grant IAM
            # users access to Kubernetes with EKS access entries").
            opts=child_options(
                self, depends_on=[system_nodes, *([] if cfg.bootstrap_creator_admin else admin_access)]
            ),
        )
        storage_class = k8s.storage.v1.StorageClass(
            f"{n}-gp3",
            args=gp3_storage_class_args(k8s_labels("storage", "gp3")),
            opts=child_options(self, provider),
        )
        return ClusterOutputs(
            name=cluster.name,
            endpoint=cluster.endpoint,
            kubernetes_version=cluster.version,
            oidc_issuer_url=issuer,
            oidc_provider_arn=oidc.arn,
            vpc_id=vpc.id,
            vpc_cidr=vpc.cidr_block,
            private_subnet_ids=pulumi.Output.all(*[s.id for s in private_subnets]),
            public_subnet_cidrs=pulumi.Output.from_input(
                [p.cidr for p in plan if p.tier == "public"]
            ),
            private_subnet_cidrs=pulumi.Output.from_input(
                [p.cidr for p in plan if p.tier == "private"]
            ),
            node_security_group_id=node_security_group,
            provider=provider,
            system_node_selector={POOL_LABEL: SYSTEM_POOL},
            private_subnet_ids_by_zone={
                zone: [subnet.id] for zone, subnet in sorted(self._private_by_zone.items())
            },
            storage_ready=[late_addons["aws-ebs-csi-driver"], storage_class],
            system_node_role_name=self._system_node_role_name,
            version=cfg.kubernetes_version,
        )

    def _network(self) -> tuple[aws.ec2.Vpc, list[aws.ec2.Subnet]]:
        cfg, n = self._cfg, self._name
        zones = aws.get_availability_zones(
            state="available",
            filters=[
                aws.GetAvailabilityZonesFilterArgs(
                    name="opt-in-status", values=["opt-in-not-required"]
                )
            ],
            opts=pulumi.InvokeOptions(provider=self._aws),
        ).names
        if len(zones) < cfg.vpc.az_count:
            raise ValueError(
                f"cluster.vpc.az_count is {cfg.vpc.az_count} but region {self._region} "
                f"offers {len(zones)} availability zones"
            )
        zones = zones[: cfg.vpc.az_count]
        self._private_by_zone: dict[str, aws.ec2.Subnet] = {}
        vpc = aws.ec2.Vpc(
            f"{n}-vpc",
            cidr_block=str(cfg.vpc.cidr),
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": cfg.name},
            opts=child_options(self),
        )
        igw = aws.ec2.InternetGateway(
            f"{n}-igw", vpc_id=vpc.id, tags={"Name": cfg.name}, opts=child_options(self)
        )
        public_rt = aws.ec2.RouteTable(
            f"{n}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={"Name": f"{cfg.name}-public"},
            opts=child_options(self),
        )
        cluster_tag = f"kubernetes.io/cluster/{cfg.name}"
        public: list[aws.ec2.Subnet] = []
        private: list[aws.ec2.Subnet] = []
        for plan in plan_subnets(str(cfg.vpc.cidr), cfg.vpc.az_count):
            zone = zones[plan.az_index]
            role_tag = ELB_ROLE_TAG if plan.tier == "public" else INTERNAL_ELB_ROLE_TAG
            subnet = aws.ec2.Subnet(
                f"{n}-{plan.tier}-{zone}",
                vpc_id=vpc.id,
                cidr_block=plan.cidr,
                availability_zone=zone,
                map_public_ip_on_launch=False,
                tags={
                    "Name": f"{cfg.name}-{plan.tier}-{zone}",
                    role_tag: "1",
                    cluster_tag: "shared",
                    **({DISCOVERY_TAG: cfg.name} if self._karpenter and plan.tier == "private" else {}),
                },
                opts=child_options(self),
            )
            (public if plan.tier == "public" else private).append(subnet)
            if plan.tier == "private":
                self._private_by_zone[zone] = subnet
            if plan.tier == "public":
                aws.ec2.RouteTableAssociation(
                    f"{n}-public-{zone}-rta",
                    subnet_id=subnet.id,
                    route_table_id=public_rt.id,
                    opts=child_options(self),
                )

        nat_count = 1 if cfg.vpc.nat_gateways == "single" else len(zones)
        nats = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(
                f"{n}-nat-{zones[i]}-eip",
                domain="vpc",
                tags={"Name": f"{cfg.name}-nat-{zones[i]}"},
                opts=child_options(self),
            )
            nats.append(
                aws.ec2.NatGateway(
                    f"{n}-nat-{zones[i]}",
                    allocation_id=eip.id,
                    subnet_id=public[i].id,
                    tags={"Name": f"{cfg.name}-nat-{zones[i]}"},
                    opts=child_options(self, depends_on=[igw]),
                )
            )
        private_rts = []
        for i, zone in enumerate(zones):
            nat = nats[i if cfg.vpc.nat_gateways == "per_az" else 0]
            rt = aws.ec2.RouteTable(
                f"{n}-private-{zone}-rt",
                vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                tags={"Name": f"{cfg.name}-private-{zone}"},
                opts=child_options(self),
            )
            aws.ec2.RouteTableAssociation(
                f"{n}-private-{zone}-rta",
                subnet_id=private[i].id,
                route_table_id=rt.id,
                opts=child_options(self),
            )
            private_rts.append(rt)
        # Models are pulled from S3; a gateway endpoint keeps that traffic off the NAT (and its bill).
        aws.ec2.VpcEndpoint(
            f"{n}-s3-endpoint",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{self._region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts],
            tags={"Name": f"{cfg.name}-s3"},
            opts=child_options(self),
        )
        return vpc, private

    def _addon(
        self,
        cluster: aws.eks.Cluster,
        addon: catalog.AddonName,
        depends_on: list[pulumi.Resource] | None = None,
        agent: aws.eks.Addon | None = None,
    ) -> aws.eks.Addon:
        """A managed add-on; one that calls AWS gets its role and waits for the agent."""
        depends_on = list(depends_on or [])
        associations = None
        identity = ADDON_IDENTITIES.get(addon)
        if identity is not None:
            role, attachments = role_with_managed_policies(
                f"{self._name}-{identity.role}-role",
                pod_identity_trust_policy(),
                identity.managed_policies,
                self._partition,
                self,
                description=f"{addon} add-on of {self._cfg.name} (EKS Pod Identity)",
            )
            associations = [
                aws.eks.AddonPodIdentityAssociationArgs(
                    role_arn=role.arn, service_account=identity.service_account
                )
            ]
            depends_on += attachments
            if agent is not None:
                depends_on.append(agent)
        return aws.eks.Addon(
            f"{self._name}-addon-{addon}",
            cluster_name=cluster.name,
            addon_name=addon,
            addon_version=self._cfg.addon_version(addon),
            configuration_values=addon_configuration(addon),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            pod_identity_associations=associations,
            opts=child_options(self, depends_on=depends_on),
        )

    def _system_node_group(
        self,
        cluster: aws.eks.Cluster,
        subnets: list[aws.ec2.Subnet],
        depends_on: list[aws.eks.Addon],
    ) -> aws.eks.NodeGroup:
        cfg, n = self._cfg, self._name
        group = cfg.system_node_group
        role, attachments = node_role(f"{n}-system-node-role", self._partition, self)
        self._system_node_role_name = role.name
        template = aws.ec2.LaunchTemplate(
            f"{n}-system-lt",
            args=launch_template_args(group.disk_size_gib, {"Name": f"{cfg.name}-system"}),
            opts=child_options(self),
        )
        nodes = aws.eks.NodeGroup(
            f"{n}-system-nodes",
            cluster_name=cluster.name,
            node_role_arn=role.arn,
            subnet_ids=[s.id for s in subnets],
            ami_type="AL2023_x86_64_STANDARD",
            capacity_type="ON_DEMAND",
            instance_types=list(group.instance_types),
            labels={POOL_LABEL: SYSTEM_POOL},
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=group.min_size, desired_size=group.desired_size, max_size=group.max_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            launch_template=aws.eks.NodeGroupLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)
            ),
            opts=child_options(
                self,
                depends_on=[*attachments, *depends_on],
                # The cluster autoscaler owns the node count after creation.
                ignore_changes=["scalingConfig.desiredSize"],
                custom_timeouts=node_group_timeouts(group.max_size, 1),
            ),
        )
        autoscaled_by_tag(f"{n}-system-nodes", nodes, self)
        return nodes

    # --- mode: existing -----------------------------------------------------------------

    def _existing(self) -> ClusterOutputs:
        cfg, needs = self._cfg, self._needs
        invoke = pulumi.InvokeOptions(provider=self._aws)
        found = aws.eks.get_cluster(name=cfg.name, opts=invoke)
        version = self._existing_version(found.version)
        vpc_id = found.vpc_config.vpc_id
        issuer = found.identities[0].oidcs[0].issuer
        # The VPC CNI enforces our NetworkPolicies only with its network policy agent on
        # (EKS user guide, "Restrict pod network traffic with Kubernetes network policies":
        # add-on configuration `enableNetworkPolicy: "true"`); without it they are ignored.
        cni = self._existing_addon(found.name, "vpc-cni", "cluster.name", "NetworkPolicies of the serving pods")
        if json.loads(cni.configuration_values or "{}").get("enableNetworkPolicy") != "true":
            raise refuse_existing(
                found.name, "cluster.name", repr(cni.configuration_values or ""),
                "does not enforce NetworkPolicies: its vpc-cni add-on needs the configuration "
                '{"enableNetworkPolicy": "true"}',
            )
        if needs.pod_identity:
            self._existing_addon(found.name, POD_IDENTITY_AGENT, "cluster.name", "Pod Identity roles")
        if needs.ebs_storage:
            self._existing_addon(
                found.name, "aws-ebs-csi-driver", "monitoring.mode", "Prometheus, Alertmanager and Grafana volumes"
            )
        provider_arn = oidc_provider_arn(self._partition, self._account_id, issuer)
        if needs.irsa:
            # IRSA trusts an IAM OIDC provider for the cluster's issuer in this account; EKS
            # does not create it (EKS user guide, "Create an IAM OIDC provider for your cluster").
            try:
                provider_arn = aws.iam.get_open_id_connect_provider(url=issuer, opts=invoke).arn
            except Exception:
                raise refuse_existing(
                    found.name, "model_store.identity", "irsa",
                    f"has no IAM OIDC provider for its issuer {issuer} in this account: create it "
                    "(eksctl utils associate-iam-oidc-provider) or use identity pod_identity",
                ) from None
        subnet_ids = list(cfg.existing.private_subnet_ids) if cfg.existing else []
        if not subnet_ids:
            subnet_ids = self._tagged_subnets(vpc_id, INTERNAL_ELB_ROLE_TAG, invoke)
        if not subnet_ids:
            raise ValueError(
                f"cluster '{cfg.name}': no private subnets found in {vpc_id} (tag "
                f"{INTERNAL_ELB_ROLE_TAG}=1); set cluster.existing.private_subnet_ids"
            )
        by_zone: dict[str, list[pulumi.Output[str]]] = {}
        private_cidrs: list[str] = []
        untagged: list[str] = []
        for subnet_id in subnet_ids:
            subnet = aws.ec2.get_subnet(id=subnet_id, opts=invoke)
            by_zone.setdefault(subnet.availability_zone, []).append(pulumi.Output.from_input(subnet_id))
            private_cidrs.append(subnet.cidr_block)
            if self._karpenter and (subnet.tags or {}).get(DISCOVERY_TAG) != found.name:
                untagged.append(subnet_id)
        if self._karpenter:
            # We do not tag what the cluster's owners hold: Karpenter's nodes land only in
            # subnets and security groups that carry the discovery tag, so it must be there.
            group_id = found.vpc_config.cluster_security_group_id
            group = aws.ec2.get_security_group(id=group_id, opts=invoke)
            if (group.tags or {}).get(DISCOVERY_TAG) != found.name:
                untagged.append(group_id)
            if untagged:
                raise refuse_existing(
                    found.name, "gpu_pools", "provisioner: karpenter",
                    f"has private subnets or a cluster security group without the tag "
                    f"{DISCOVERY_TAG}={found.name} ({', '.join(untagged)}), by which Karpenter "
                    "finds where to launch nodes: tag them, or use provisioner managed-node-group",
                )
        vpc = aws.ec2.get_vpc(id=vpc_id, opts=invoke)
        public_cidrs = [vpc.cidr_block]
        if needs.load_balancer_scheme == "internet-facing":
            public_cidrs = self._load_balancer_subnets(found.name, vpc_id, invoke)
        elif needs.load_balancer_scheme == "internal":
            private_cidrs = self._load_balancer_subnets(found.name, vpc_id, invoke)
        provider = k8s.Provider(
            f"{self._name}-k8s",
            kubeconfig=kubeconfig(
                found.name, found.endpoint, found.certificate_authorities[0].data, self._region
            ),
            opts=child_options(self),
        )
        storage_ready: list[pulumi.Resource] = []
        if needs.ebs_storage:
            storage_ready.append(k8s.storage.v1.StorageClass(
                f"{self._name}-gp3",
                args=gp3_storage_class_args(
                    k8s_labels("storage", EXISTING_STORAGE_CLASS), name=EXISTING_STORAGE_CLASS, default=False
                ),
                opts=child_options(self, provider),
            ))
        return ClusterOutputs(
            name=pulumi.Output.from_input(found.name),
            endpoint=pulumi.Output.from_input(found.endpoint),
            kubernetes_version=pulumi.Output.from_input(version),
            oidc_issuer_url=pulumi.Output.from_input(issuer),
            oidc_provider_arn=pulumi.Output.from_input(provider_arn),
            vpc_id=pulumi.Output.from_input(vpc_id),
            vpc_cidr=pulumi.Output.from_input(vpc.cidr_block),
            private_subnet_ids=pulumi.Output.from_input(subnet_ids),
            # The subnets the ALB lands in (found by the tags the controller discovers them by).
            public_subnet_cidrs=pulumi.Output.from_input(public_cidrs),
            private_subnet_cidrs=pulumi.Output.from_input(private_cidrs),
            node_security_group_id=pulumi.Output.from_input(
                found.vpc_config.cluster_security_group_id
            ),
            provider=provider,
            private_subnet_ids_by_zone=dict(sorted(by_zone.items())),
            storage_ready=storage_ready,
            version=version,
            storage_class=EXISTING_STORAGE_CLASS,
        )

    def _existing_version(self, found: str) -> catalog.KubernetesVersion:
        """The looked-up cluster's version: the one everything version-bound uses. A version
        set in config must match it; one we have no pins for is refused."""
        cfg = self._cfg
        supported = typing.get_args(catalog.KubernetesVersion)
        if found not in supported:
            raise refuse_existing(
                cfg.name, "cluster.name", found,
                f"runs Kubernetes {found}; this program pins add-ons and cluster-autoscaler "
                f"for {', '.join(supported)} only",
            )
        if "kubernetes_version" in cfg.model_fields_set and cfg.kubernetes_version != found:
            raise refuse_existing(
                cfg.name, "cluster.kubernetes_version", cfg.kubernetes_version,
                f"runs Kubernetes {found}: set cluster.kubernetes_version to {found} or leave it "
                "out (mode existing takes the cluster's version)",
            )
        return typing.cast(catalog.KubernetesVersion, found)

    def _existing_addon(self, cluster: str, addon: str, key: str, needed_for: str) -> aws.eks.GetAddonResult:
        try:
            return aws.eks.get_addon(
                cluster_name=cluster, addon_name=addon, opts=pulumi.InvokeOptions(provider=self._aws)
            )
        except Exception:
            raise refuse_existing(
                cluster, key, addon,
                f"has no {addon} EKS add-on, which {needed_for} need: install it "
                "(README, \"Using an existing cluster\")",
            ) from None

    def _tagged_subnets(self, vpc_id: str, tag: str, invoke: pulumi.InvokeOptions) -> list[str]:
        return list(aws.ec2.get_subnets(
            filters=[
                aws.ec2.GetSubnetsFilterArgs(name="vpc-id", values=[vpc_id]),
                aws.ec2.GetSubnetsFilterArgs(name=f"tag:{tag}", values=["1"]),
            ],
            opts=invoke,
        ).ids)

    def _load_balancer_subnets(
        self, cluster: str, vpc_id: str, invoke: pulumi.InvokeOptions
    ) -> list[str]:
        """CIDRs of the subnets the load balancer controller puts the ALB in.

        The controller discovers them by tag: `kubernetes.io/role/elb=1` for internet-facing,
        `kubernetes.io/role/internal-elb=1` for internal, and an ALB needs subnets in at least
        two zones (aws-load-balancer-controller docs, "Subnet auto-discovery";
        pkg/networking/subnet_resolver.go)."""
        scheme = self._needs.load_balancer_scheme
        tag = ELB_ROLE_TAG if scheme == "internet-facing" else INTERNAL_ELB_ROLE_TAG
        subnets = [aws.ec2.get_subnet(id=i, opts=invoke) for i in self._tagged_subnets(vpc_id, tag, invoke)]
        zones = {s.availability_zone for s in subnets}
        if len(zones) < 2:
            raise refuse_existing(
                cluster, "ingress.scheme", scheme,
                f"has subnets tagged {tag}=1 in {len(zones)} zone(s) of {vpc_id}; an {scheme} "
                "ALB needs them in at least two zones",
            )
        return sorted(s.cidr_block for s in subnets)
