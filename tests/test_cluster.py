"""Cluster component, both modes, asserted on the inputs each resource was registered with."""

from __future__ import annotations

import json

import pytest

from components import catalog
from components.cluster import kubeconfig
from tests.support import raw_stack, render_raw
from tools.mock_engine import EXISTING_SUBNETS, EXISTING_VPC_ID, Rendering

EKS = "aws:eks/cluster:Cluster"
ADDON = "aws:eks/addon:Addon"
SUBNET = "aws:ec2/subnet:Subnet"
NAT = "aws:ec2/natGateway:NatGateway"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"


def test_vpc_spans_three_azs_with_tagged_public_and_private_subnets(dev: Rendering) -> None:
    subnets = dev.of_type(SUBNET)
    assert len(subnets) == 6
    public = [s for s in subnets if s.inputs["tags"].get("kubernetes.io/role/elb") == "1"]
    private = [s for s in subnets if s.inputs["tags"].get("kubernetes.io/role/internal-elb") == "1"]
    assert len(public) == len(private) == 3
    assert {s.inputs["availabilityZone"] for s in private} == {"us-east-1a", "us-east-1b", "us-east-1c"}
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)
    assert dev.one("aws:ec2/vpc:Vpc").inputs["cidrBlock"] == "10.20.0.0/16"


def test_dev_has_one_nat_and_prod_one_per_az(dev: Rendering, prod: Rendering) -> None:
    assert len(dev.of_type(NAT)) == 1
    assert len(prod.of_type(NAT)) == 3
    prod_private_rts = [r for r in prod.of_type("aws:ec2/routeTable:RouteTable") if "private" in r.name]
    nat_ids = {r.inputs["routes"][0]["natGatewayId"] for r in prod_private_rts}
    assert len(nat_ids) == 3, "each prod AZ routes through its own NAT gateway"


def test_control_plane_settings_follow_config(prod: Rendering) -> None:
    eks = prod.one(EKS).inputs
    assert eks["name"] == "tfs-prod"
    assert eks["version"] == "1.36"
    assert eks["accessConfig"] == {
        "authenticationMode": "API",
        "bootstrapClusterCreatorAdminPermissions": False,
    }
    assert eks["encryptionConfig"]["resources"] == ["secrets"]
    key_arn = eks["encryptionConfig"]["provider"]["keyArn"]
    assert key_arn.startswith("arn:aws:kms:")
    assert prod.one("aws:kms/key:Key", "cluster-secrets-key").inputs["enableKeyRotation"] is True
    assert eks["enabledClusterLogTypes"] == ["api", "audit", "authenticator", "controllerManager", "scheduler"]
    vpc = eks["vpcConfig"]
    assert vpc["endpointPublicAccess"] is True and vpc["endpointPrivateAccess"] is True
    assert vpc["publicAccessCidrs"] == ["203.0.113.0/24"]
    assert eks["deletionProtection"] is True
    assert eks["bootstrapSelfManagedAddons"] is False
    log_group = prod.one("aws:cloudwatch/logGroup:LogGroup", "cluster-control-plane-logs")
    assert log_group.inputs == {"name": "/aws/eks/tfs-prod/cluster", "retentionInDays": 90, "skipDestroy": False} or (
        log_group.inputs["name"] == "/aws/eks/tfs-prod/cluster" and log_group.inputs["retentionInDays"] == 90
    )
    assert log_group.urn in prod.one(EKS).depends_on


def test_admin_principals_get_access_entries_with_cluster_admin(prod: Rendering) -> None:
    entries = {e.inputs["principalArn"] for e in prod.of_type("aws:eks/accessEntry:AccessEntry")}
    assert entries == {
        "arn:aws:iam::123456789012:role/PlatformAdmins",
        "arn:aws:iam::123456789012:role/ci-deployer",
    }
    policies = prod.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert len(policies) == 2
    for policy in policies:
        assert policy.inputs["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        assert policy.inputs["accessScope"] == {"type": "cluster"}
    names = {e.name for e in prod.of_type("aws:eks/accessEntry:AccessEntry")}
    assert names == {"cluster-admin-platform-admins", "cluster-admin-ci-deployer"}, "keyed by name, not index"


def test_oidc_provider_trusts_the_cluster_issuer(dev: Rendering) -> None:
    oidc = dev.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider").inputs
    assert oidc["url"].startswith("https://oidc.eks.us-east-1.amazonaws.com/id/")
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"]
    assert dev.outputs["oidc_provider_arn"].endswith(oidc["url"].removeprefix("https://"))


def test_addons_are_pinned_and_network_policy_is_enforced(dev: Rendering) -> None:
    addons = {a.inputs["addonName"]: a for a in dev.of_type(ADDON)}
    assert set(addons) == {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "aws-ebs-csi-driver"}
    for name, addon in addons.items():
        assert addon.inputs["addonVersion"] == catalog.ADDON_VERSIONS["1.36"][name]  # type: ignore[index]
    assert json.loads(addons["vpc-cni"].inputs["configurationValues"]) == {"enableNetworkPolicy": "true"}
    ebs = addons["aws-ebs-csi-driver"].inputs["podIdentityAssociations"]
    assert ebs[0]["serviceAccount"] == "ebs-csi-controller-sa"
    ebs_role = dev.one("aws:iam/role:Role", "cluster-ebs-csi-role")
    trust = json.loads(ebs_role.inputs["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(trust["Statement"][0]["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    attached = {
        a.inputs["policyArn"]
        for a in dev.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.name.startswith("cluster-ebs-csi-role")
    }
    assert attached == {"arn:aws:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"}


def test_addon_order_cni_before_nodes_and_coredns_after(dev: Rendering) -> None:
    addons = {a.inputs["addonName"]: a for a in dev.of_type(ADDON)}
    nodes = dev.one(NODE_GROUP, "cluster-system-nodes")
    for early in ("vpc-cni", "kube-proxy", "eks-pod-identity-agent"):
        assert addons[early].urn in nodes.depends_on
    for late in ("coredns", "aws-ebs-csi-driver"):
        assert nodes.urn in addons[late].depends_on


def test_addon_version_override_wins() -> None:
    raw = raw_stack("dev")
    raw["cluster"]["addons"] = {"coredns": "v1.14.6-eksbuild.4"}
    rendering = render_raw(raw)
    versions = {a.inputs["addonName"]: a.inputs["addonVersion"] for a in rendering.of_type(ADDON)}
    assert versions["coredns"] == "v1.14.6-eksbuild.4"
    assert versions["kube-proxy"] == catalog.ADDON_VERSIONS["1.36"]["kube-proxy"]


def test_system_node_group_is_on_demand_and_autoscaler_owned(prod: Rendering) -> None:
    group = prod.one(NODE_GROUP, "cluster-system-nodes")
    assert group.inputs["capacityType"] == "ON_DEMAND"
    assert group.inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert group.inputs["instanceTypes"] == ["m7i.large", "m6i.large"]
    assert group.inputs["scalingConfig"] == {"minSize": 3, "desiredSize": 3, "maxSize": 6}
    assert group.ignore_changes == ["scalingConfig.desiredSize"]
    template = prod.one("aws:ec2/launchTemplate:LaunchTemplate", "cluster-system-lt").inputs
    assert template["metadataOptions"]["httpTokens"] == "required"
    ebs = template["blockDeviceMappings"][0]["ebs"]
    assert (ebs["volumeType"], ebs["encrypted"], ebs["volumeSize"]) == ("gp3", "true", 80)
    node_policies = {
        a.inputs["policyArn"].split("/")[-1]
        for a in prod.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        if a.name.startswith("cluster-system-node-role")
    }
    assert node_policies == {
        "AmazonEKSWorkerNodePolicy",
        "AmazonEKS_CNI_Policy",
        "AmazonEC2ContainerRegistryPullOnly",
        "AmazonSSMManagedInstanceCore",
    }


def test_kubernetes_provider_uses_exec_credentials(dev: Rendering) -> None:
    provider = dev.one("pulumi:providers:kubernetes")
    config = json.loads(provider.inputs["kubeconfig"])
    user = config["users"][0]["user"]
    assert "token" not in user
    assert user["exec"]["command"] == "aws"
    assert user["exec"]["args"][:4] == ["eks", "get-token", "--cluster-name", "tfs-dev"]
    assert "--region" in user["exec"]["args"] and "us-east-1" in user["exec"]["args"]
    assert config["clusters"][0]["cluster"]["server"] == dev.outputs["cluster_endpoint"]
    storage_class = dev.one("kubernetes:storage.k8s.io/v1:StorageClass")
    assert storage_class.provider.startswith(provider.urn)


def test_every_aws_resource_uses_the_tagged_provider(dev: Rendering) -> None:
    aws_provider = dev.one("pulumi:providers:aws")
    tags = json.loads(aws_provider.inputs["defaultTags"])["tags"]
    assert tags == {
        "project": "tf-serving-eks",
        "stack": "dev",
        "environment": "dev",
        "managed-by": "pulumi",
        "cost-center": "ml-platform",
    }
    aws_resources = [r for r in dev.resources if r.custom and r.type.startswith("aws:")]
    assert aws_resources
    assert all(r.provider.startswith(aws_provider.urn) for r in aws_resources)


def test_children_are_parented_and_named_after_the_component(dev: Rendering) -> None:
    component = dev.one("tf-serving-eks:cluster:Cluster")
    children = [r for r in dev.resources if r.component == "cluster" and r is not component]
    assert children
    for child in children:
        assert child.name.startswith("cluster-"), child.name
        assert child.urn.split("::")[2].startswith("tf-serving-eks:cluster:Cluster$")


def existing_rendering() -> Rendering:
    raw = raw_stack("dev")
    raw["cluster"] = {"mode": "existing", "name": "shared-gpu"}
    return render_raw(raw)


def test_existing_mode_creates_nothing_of_the_cluster() -> None:
    rendering = existing_rendering()
    created = [r.type for r in rendering.resources if r.custom and r.component == "cluster"]
    assert created == ["pulumi:providers:kubernetes"]
    tokens = [token for token, _ in rendering.invokes]
    assert "aws:eks/getCluster:getCluster" in tokens
    assert ("aws:eks/getCluster:getCluster", {"name": "shared-gpu"}) in rendering.invokes


def test_existing_mode_outputs_come_from_the_lookup() -> None:
    rendering = existing_rendering()
    outputs = rendering.outputs
    assert outputs["cluster_name"] == "shared-gpu"
    assert outputs["vpc_id"] == EXISTING_VPC_ID
    assert outputs["private_subnet_ids"] == EXISTING_SUBNETS
    assert outputs["oidc_provider_arn"] == (
        "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXISTING"
    )
    kube = json.loads(rendering.one("pulumi:providers:kubernetes").inputs["kubeconfig"])
    assert kube["clusters"][0]["cluster"]["server"] == outputs["cluster_endpoint"]
    subnet_lookup = [args for token, args in rendering.invokes if token == "aws:ec2/getSubnets:getSubnets"]
    filters = {f["name"]: f["values"] for f in subnet_lookup[0]["filters"]}
    assert filters == {"vpc-id": [EXISTING_VPC_ID], "tag:kubernetes.io/role/internal-elb": ["1"]}


def test_existing_mode_takes_subnets_from_config_without_lookup() -> None:
    raw = raw_stack("dev")
    raw["cluster"] = {
        "mode": "existing",
        "name": "shared-gpu",
        "existing": {"private_subnet_ids": ["subnet-0123456789abcdef0"]},
    }
    rendering = render_raw(raw)
    assert rendering.outputs["private_subnet_ids"] == ["subnet-0123456789abcdef0"]
    assert not [t for t, _ in rendering.invokes if t == "aws:ec2/getSubnets:getSubnets"]


def test_invalid_config_registers_nothing() -> None:
    raw = raw_stack("dev")
    raw["cluster"]["vpc"]["cidr"] = "not-a-cidr"
    from components.config import StackConfigError

    rendering_resources: list[object] = []
    with pytest.raises(StackConfigError, match="cluster.vpc.cidr"):
        from tools.mock_engine import render
        from tests.support import settings_for

        rendering_resources.append(render("test", settings_for(raw)))
    assert rendering_resources == []


def test_kubeconfig_is_valid_json_with_one_context() -> None:
    config = json.loads(kubeconfig("c", "https://e", "Q0E=", "eu-west-1"))
    assert config["current-context"] == "c"
    assert config["users"][0]["user"]["exec"]["apiVersion"] == "client.authentication.k8s.io/v1beta1"


# --- version support policy --------------------------------------------------------------
# The EKS API defaults a new cluster's upgradePolicy.supportType to EXTENDED, which bills the
# extended-support price once the version leaves standard support (EKS API reference,
# UpgradePolicyRequest). So the program always sends a support type, STANDARD unless chosen.


def test_every_created_cluster_states_its_support_type(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    for eks in rendered_stack(stack_name).of_type(EKS):
        assert eks.inputs.get("upgradePolicy") == {"supportType": "STANDARD"}, eks.name


@pytest.mark.parametrize("support_type", ["STANDARD", "EXTENDED"])
def test_support_type_follows_config(support_type: str) -> None:
    raw = raw_stack("prod")
    raw["cluster"]["support_type"] = support_type
    assert render_raw(raw).one(EKS).inputs["upgradePolicy"] == {"supportType": support_type}


def test_unknown_support_type_is_refused_with_its_key() -> None:
    from components.config import StackConfigError
    from tests.support import parse

    raw = raw_stack("dev")
    raw["cluster"]["support_type"] = "extended"
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    message = str(info.value)
    assert "cluster.support_type" in message and "extended" in message
    assert "STANDARD" in message and "EXTENDED" in message
