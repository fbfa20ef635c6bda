"""Cluster component, both modes, asserted on the inputs each resource was registered with."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from components import catalog
from components.cluster import kubeconfig
from tests.support import NODE_ROLE_POLICIES, node_role_policies, raw_stack, render_raw
from tools.lib.mock_engine import EXISTING_SUBNETS, EXISTING_VPC_ID, Registered, Rendering

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
        assert addon.inputs["addonVersion"] == catalog.ADDON_VERSIONS["1.36"][name]
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
    assert node_role_policies(prod, "cluster-system-nodes") == NODE_ROLE_POLICIES


def test_node_role_policy_check_sees_an_extra_policy_and_follows_the_groups_role(dev: Rendering) -> None:
    # The check can fail: a CNI policy back on the node role, or a group that runs as
    # another role than the one its attachments are named after.
    attach = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
    group = dev.one(NODE_GROUP, "cluster-system-nodes")
    node_role = group.inputs["nodeRoleArn"].split("/")[-1]
    assert node_role_policies(dev, "cluster-system-nodes") == NODE_ROLE_POLICIES
    template = next(a for a in dev.of_type(attach) if a.inputs["role"] == node_role)
    extra = replace(
        template,
        name="extra",
        urn=template.urn + "-extra",
        inputs={**template.inputs, "policyArn": "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"},
    )
    widened = replace(dev, resources=[*dev.resources, extra])
    assert node_role_policies(widened, "cluster-system-nodes") == {*NODE_ROLE_POLICIES, "AmazonEKS_CNI_Policy"}
    other_role = next(a.inputs["role"] for a in dev.of_type(attach) if a.inputs["role"] != node_role)
    moved = replace(group, inputs={**group.inputs, "nodeRoleArn": f"arn:aws:iam::123456789012:role/{other_role}"})
    elsewhere = replace(dev, resources=[moved if res is group else res for res in dev.resources])
    assert node_role_policies(elsewhere, "cluster-system-nodes") != NODE_ROLE_POLICIES


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
    # Only the provider, and our own StorageClass for the monitoring volumes.
    assert sorted(created) == ["kubernetes:storage.k8s.io/v1:StorageClass", "pulumi:providers:kubernetes"]
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
    # The private subnets are not looked up (the ALB's, tagged kubernetes.io/role/elb, are).
    assert not [
        a for t, a in rendering.invokes
        if t == "aws:ec2/getSubnets:getSubnets"
        and any(f["name"] == "tag:kubernetes.io/role/internal-elb" for f in a["filters"])
    ]


def test_invalid_config_registers_nothing() -> None:
    raw = raw_stack("dev")
    raw["cluster"]["vpc"]["cidr"] = "not-a-cidr"
    from components.config import StackConfigError

    rendering_resources: list[object] = []
    with pytest.raises(StackConfigError, match="cluster.vpc.cidr"):
        from tools.lib.mock_engine import render
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


# --- no pod depends on the instance metadata service (IMDS) ------------------------------
# With IMDSv2 and a PUT response hop limit of 1, the token answer cannot cross into a pod's
# network namespace: only the node and hostNetwork pods reach IMDS (EC2 user guide,
# "Instance metadata options: hop limit"; EKS Best Practices Guide, Security, "Restrict access
# to the instance profile assigned to the worker node"). So no pod can use the node role,
# and every pod that calls AWS must be given what it would have read from IMDS: its region
# (and VPC), and credentials of its own through EKS Pod Identity or IRSA.

LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
PIA = "aws:eks/podIdentityAssociation:PodIdentityAssociation"
RELEASE = "kubernetes:helm.sh/v3:Release"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


def generated_stacks() -> list[tuple[str, Rendering]]:
    """The repo stacks and variants that change who calls AWS and how."""
    from tests.conftest import rendered_stack
    from tools.lib.stackfile import list_stacks

    out = [(s, rendered_stack(s)) for s in list_stacks()]
    irsa = raw_stack("prod")
    irsa["model_store"]["identity"] = "irsa"
    out.append(("prod, model_store.identity irsa", render_raw(irsa)))
    return out


@pytest.fixture(scope="module")
def stacks() -> list[tuple[str, Rendering]]:
    return generated_stacks()


def test_every_node_group_keeps_imds_from_pods(stacks: list[tuple[str, Rendering]]) -> None:
    for label, r in stacks:
        templates = {t.outputs.get("id"): t for t in r.of_type(LAUNCH_TEMPLATE)}
        groups = r.of_type(NODE_GROUP)
        assert groups, label
        for group in groups:
            # A managed node group without a launch template of ours gets EKS's default
            # template, whose hop limit is 2 (EKS user guide, "Launch templates").
            template = templates.get((group.inputs.get("launchTemplate") or {}).get("id"))
            assert template is not None, f"{label}: node group {group.name} has no launch template of ours"
            assert template.inputs["metadataOptions"] == {
                "httpEndpoint": "enabled",
                "httpTokens": "required",
                "httpPutResponseHopLimit": 1,
            }, f"{label}: {template.name}"


def test_node_roles_hold_no_pod_permissions_and_the_cni_has_its_own_role(
    stacks: list[tuple[str, Rendering]],
) -> None:
    for label, r in stacks:
        roles = {role.outputs["name"]: role for role in r.of_type("aws:iam/role:Role")}
        attachments = r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        node_role_names = {g.inputs["nodeRoleArn"].split("/")[-1] for g in r.of_type(NODE_GROUP)}
        for attachment in attachments:
            if attachment.inputs["role"] in node_role_names:
                assert not attachment.inputs["policyArn"].endswith("/AmazonEKS_CNI_Policy"), (
                    f"{label}: node role {attachment.inputs['role']} still carries the CNI policy"
                )
        addons = {a.inputs["addonName"]: a for a in r.of_type(ADDON)}
        [cni_binding] = addons["vpc-cni"].inputs["podIdentityAssociations"]
        assert cni_binding["serviceAccount"] == "aws-node"
        cni_role = next(role for role in roles.values() if role.outputs["arn"] == cni_binding["roleArn"])
        trust = json.loads(cni_role.inputs["assumeRolePolicy"])["Statement"][0]
        assert trust["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        assert {
            a.inputs["policyArn"] for a in attachments if a.inputs["role"] == cni_role.outputs["name"]
        } == {"arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"}


def test_addons_with_a_pod_identity_wait_for_the_agent_and_their_policies(dev: Rendering) -> None:
    from tests.support import dependencies

    addons = {a.inputs["addonName"]: a for a in dev.of_type(ADDON)}
    roles = {role.outputs["arn"]: role for role in dev.of_type("aws:iam/role:Role")}
    for name, addon in addons.items():
        for binding in addon.inputs.get("podIdentityAssociations") or []:
            waits_for = dependencies(dev, addon.urn)
            # The agent hands out the credentials; without it the add-on's pods get none.
            assert addons["eks-pod-identity-agent"].urn in waits_for, name
            role = roles[binding["roleArn"]]
            policies = [
                a for a in dev.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a.inputs["role"] == role.outputs["name"]
            ]
            assert policies and all(p.urn in waits_for for p in policies), name


# Every chart we install is classified: either its pods call AWS, and then the values that
# replace IMDS are named (the chart template that consumes each is cited), or they don't.
CHART_AWS_SETTINGS: dict[str, tuple[tuple[str, ...], ...]] = {
    # templates/deployment.yaml: --aws-region / --aws-vpc-id, else the controller asks IMDS.
    "aws-load-balancer-controller": (("region",), ("vpcId",)),
    # templates/deployment.yaml: AWS_REGION from awsRegion.
    "cluster-autoscaler": (("awsRegion",),),
    # templates/deployment.yaml: `env` verbatim; the AWS SDK reads AWS_DEFAULT_REGION.
    "external-dns": (("env", "AWS_DEFAULT_REGION"),),
    # templates/configmap.yaml: `region` of the cloudwatch_logs output.
    "aws-for-fluent-bit": (("cloudWatchLogs", "region"),),
}
CHART_SERVICE_ACCOUNT: dict[str, tuple[str, ...]] = {
    "aws-load-balancer-controller": ("serviceAccount", "name"),
    "cluster-autoscaler": ("rbac", "serviceAccount", "name"),
    "external-dns": ("serviceAccount", "name"),
    "aws-for-fluent-bit": ("serviceAccount", "name"),
}
# Their pods call no AWS API (KEDA only through scalers we don't use: its AWS IRSA stays off).
CHARTS_WITHOUT_AWS = {
    "nvidia-device-plugin", "dcgm-exporter", "metrics-server", "prometheus-adapter", "keda",
    "kube-prometheus-stack",
}
# EKS add-ons: those that call AWS have an entry in cluster.ADDON_IDENTITIES; the agent is
# hostNetwork and uses the node role by design (eks-auth:AssumeRoleForPodIdentity);
# the EBS CSI controller takes its region from its node's topology labels when IMDS is out
# of reach (aws-ebs-csi-driver docs/install.md, "Kubernetes Metadata").
ADDONS_WITHOUT_AWS = {"coredns", "kube-proxy", "eks-pod-identity-agent"}


def value_at(values: dict, path: tuple[str, ...]) -> object:
    current: object = values
    for part in path:
        if isinstance(current, list):  # a list of {name, value} (env)
            current = next((e.get("value") for e in current if e.get("name") == part), None)
        elif isinstance(current, dict):
            current = current.get(part)
        else:
            return None
    return current


def has_own_identity(r: Rendering, namespace: str, service_account: str, annotations: dict | None) -> bool:
    bound = {(p.inputs["namespace"], p.inputs["serviceAccount"]) for p in r.of_type(PIA)}
    return (namespace, service_account) in bound or bool((annotations or {}).get(IRSA_ANNOTATION))


def test_every_aws_caller_gets_region_and_credentials_without_imds(stacks: list[tuple[str, Rendering]]) -> None:
    from components.cluster import ADDON_IDENTITIES

    for label, r in stacks:
        # Helm charts.
        for release in r.of_type(RELEASE):
            chart, values = release.inputs["chart"], release.inputs.get("values") or {}
            assert chart in CHART_AWS_SETTINGS or chart in CHARTS_WITHOUT_AWS, (
                f"{label}: chart {chart} is not classified: does it call AWS?"
            )
            if chart == "keda":
                assert not value_at(values, ("podIdentity", "aws", "irsa", "enabled")), label
            if chart not in CHART_AWS_SETTINGS:
                continue
            for path in CHART_AWS_SETTINGS[chart]:
                assert value_at(values, path), f"{label}: {chart} needs {'.'.join(path)} (no IMDS)"
            assert not values.get("hostNetwork"), f"{label}: {chart} on the host network would use the node role"
            account = value_at(values, CHART_SERVICE_ACCOUNT[chart])
            annotations = value_at(values, (*CHART_SERVICE_ACCOUNT[chart][:-1], "annotations"))
            assert isinstance(account, str) and has_own_identity(
                r, release.inputs["namespace"], account, annotations if isinstance(annotations, dict) else None
            ), f"{label}: {chart} has no Pod Identity association or IRSA role"
        # EKS add-ons.
        for addon in r.of_type(ADDON):
            name = addon.inputs["addonName"]
            assert name in ADDON_IDENTITIES or name in ADDONS_WITHOUT_AWS, f"{label}: add-on {name} not classified"
            if name in ADDON_IDENTITIES:
                bindings = addon.inputs.get("podIdentityAssociations") or []
                assert [b["serviceAccount"] for b in bindings] == [ADDON_IDENTITIES[name].service_account]
        # Our own pods: any container running the AWS CLI.
        accounts = {
            (m["metadata"].get("namespace"), m["metadata"]["name"]): m["metadata"].get("annotations")
            for m in r.k8s_objects() if m["kind"] == "ServiceAccount"
        }
        callers = 0
        for m in r.k8s_objects():
            pod = (m.get("spec", {}).get("template") or {}).get("spec")
            if not pod:
                continue
            for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
                if "/aws-cli" not in c["image"] or c.get("command") == ["/bin/sleep", "infinity"]:
                    continue  # the node cache's folder-maker only sleeps (components/model_cache.py)
                callers += 1
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                assert env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"), f"{label}: {c['name']} has no region"
                assert not pod.get("hostNetwork"), label
                namespace, account = m["metadata"]["namespace"], pod["serviceAccountName"]
                assert has_own_identity(r, namespace, account, accounts.get((namespace, account))), (
                    f"{label}: {c['name']} of {m['metadata']['name']} has no identity of its own"
                )
        assert callers, f"{label}: the model sync containers were not found"


# --- explicit ordering ---------------------------------------------------------------------


def ordering_stacks() -> list[tuple[str, Rendering]]:
    """The repo stacks and variants that change what must wait for what."""
    out = generated_stacks()
    no_creator_admin = raw_stack("dev")
    no_creator_admin["cluster"]["bootstrap_creator_admin"] = False
    no_creator_admin["cluster"]["admin_principals"] = {"deployer": "arn:aws:iam::123456789012:role/deployer"}
    out.append(("dev, bootstrap_creator_admin false", render_raw(no_creator_admin)))
    return out


@pytest.fixture(scope="module")
def ordered_stacks() -> list[tuple[str, Rendering]]:
    return ordering_stacks()


def test_the_kubernetes_provider_waits_for_the_deployers_access(ordered_stacks: list[tuple[str, Rendering]]) -> None:
    """Without creator admin, every Kubernetes call of `pulumi up` is refused until the
    deployer's access entry and its access policy association exist (EKS user guide,
    "Grant IAM users access to Kubernetes with EKS access entries")."""
    from tests.support import dependencies

    checked = 0
    for label, r in ordered_stacks:
        eks = r.one(EKS).inputs
        if eks["accessConfig"]["bootstrapClusterCreatorAdminPermissions"]:
            continue
        provider = r.one("pulumi:providers:kubernetes")
        waits_for = dependencies(r, provider.urn)
        access = [
            *r.of_type("aws:eks/accessEntry:AccessEntry"),
            *r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation"),
        ]
        assert access, label
        missing = [a.name for a in access if a.urn not in waits_for]
        assert not missing, f"{label}: the Kubernetes provider does not wait for {missing}"
        checked += 1
    assert checked >= 2


def claimed_storage_classes(value: object) -> set[str]:
    """Every `storageClassName` a chart's values or an object claims volumes with."""
    if isinstance(value, dict):
        found = {str(value["storageClassName"])} if value.get("storageClassName") else set()
        return found.union(*(claimed_storage_classes(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(claimed_storage_classes(v) for v in value))
    return set()


def test_whatever_claims_volumes_waits_for_the_ebs_driver_and_its_class(
    ordered_stacks: list[tuple[str, Rendering]],
) -> None:
    """A claim made before its provisioner or class exists stays Pending (and a Helm
    release waiting on it times out): the EBS CSI add-on and the StorageClass come first."""
    from tests.support import dependencies

    for label, r in ordered_stacks:
        ebs = next(a for a in r.of_type(ADDON) if a.inputs["addonName"] == "aws-ebs-csi-driver")
        classes = {c.inputs["metadata"]["name"]: c for c in r.of_type("kubernetes:storage.k8s.io/v1:StorageClass")}
        claimants = [
            x for x in r.resources
            if x.type == RELEASE or x.type.startswith(("kubernetes:apps/", "kubernetes:core/v1:PersistentVolumeClaim"))
        ]
        claims = 0
        for x in claimants:
            for name in claimed_storage_classes(x.inputs.get("values") if x.type == RELEASE else x.inputs):
                claims += 1
                assert name in classes, f"{label}: {x.name} claims volumes of class {name}, which is not created"
                waits_for = dependencies(r, x.urn)
                assert ebs.urn in waits_for, f"{label}: {x.name} does not wait for the EBS CSI add-on"
                assert classes[name].urn in waits_for, f"{label}: {x.name} does not wait for StorageClass {name}"
        assert claims, f"{label}: no volume claims found (the monitoring stack claims some)"


def test_an_existing_cluster_brings_its_own_storage_and_access() -> None:
    """Mode existing creates no add-on or access entry, and no default StorageClass (only our
    own class beside the owner's: tests/test_existing_cluster.py)."""
    rendering = existing_rendering()
    provider = rendering.one("pulumi:providers:kubernetes")
    assert provider.depends_on == []
    assert not rendering.of_type(ADDON) and not rendering.of_type("aws:eks/accessEntry:AccessEntry")
    for c in rendering.of_type("kubernetes:storage.k8s.io/v1:StorageClass"):
        assert not (c.inputs["metadata"].get("annotations") or {}), c.inputs["metadata"]


def test_workload_pods_start_after_their_aws_identity_exists(ordered_stacks: list[tuple[str, Rendering]]) -> None:
    """EKS injects Pod Identity or IRSA credentials when a pod is created: every workload
    waits for the association (or the IRSA role) of its service account and the role's
    policies, or its first pods run without credentials (and the model sync fails)."""
    from tests.support import dependencies

    for label, r in [*ordered_stacks, ("existing cluster", existing_rendering())]:
        roles = {role.outputs["arn"]: role for role in r.of_type("aws:iam/role:Role")}
        accounts = {
            (m.inputs["metadata"].get("namespace"), m.inputs["metadata"]["name"]): m
            for m in r.of_type("kubernetes:core/v1:ServiceAccount")
        }
        workloads = [x for x in r.resources if x.type.startswith("kubernetes:apps/v1:")]
        with_identity = 0
        for workload in workloads:
            pod = workload.inputs["spec"]["template"]["spec"]
            namespace = workload.inputs["metadata"]["namespace"]
            account = pod.get("serviceAccountName", "default")
            bound: list[Registered] = [
                p for p in r.of_type(PIA)
                if (p.inputs["namespace"], p.inputs["serviceAccount"]) == (namespace, account)
            ]
            role_arns = [p.inputs["roleArn"] for p in bound]
            sa = accounts.get((namespace, account))
            irsa = ((sa.inputs["metadata"].get("annotations") or {}) if sa else {}).get(IRSA_ANNOTATION)
            if irsa:
                role_arns.append(irsa)
            needed = list(bound)
            for arn in role_arns:
                role = roles[arn]
                needed.append(role)
                needed += [
                    p for p in r.resources
                    if p.type in ("aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                    and role.urn in p.depends_on
                ]
            with_identity += bool(needed)
            waits_for = dependencies(r, workload.urn)
            missing = [n.name for n in needed if n.urn not in waits_for]
            assert not missing, f"{label}: {workload.name} does not wait for {missing}"
        assert with_identity, f"{label}: no workload with an AWS identity (the serving pods have one)"
