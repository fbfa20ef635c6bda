"""Ingress and TLS: controller, CRD ordering, Gateway API objects, ACM, DNS, WAF, refusals."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
import pytest

from components import catalog
from components.config import StackConfigError
from components.ingress_tls import web_acl_rules
from tests.support import parse, raw_stack, render_raw, secret_keys_for, settings_for
from tools import conformance
from tools.mock_engine import Rendering, render

API_KEY = "k3y-for-tests-0123456789abcdef"


def custom(r: Rendering, kind: str) -> list[Any]:
    return [x for x in r.resources if x.is_k8s_object and x.inputs.get("kind") == kind]


def one(r: Rendering, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [x.inputs for x in custom(r, kind) if name is None or x.inputs["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def release(r: Rendering, chart: str) -> Any:
    return next(x for x in r.of_type("kubernetes:helm.sh/v3:Release") if x.inputs["chart"] == chart)


def service(r: Rendering) -> dict[str, Any]:
    return next(m for m in r.k8s_objects() if m["kind"] == "Service" and m["metadata"]["name"] == "tf-serving")


def test_controller_is_pinned_with_gateway_api_on(prod: Rendering) -> None:
    lbc = release(prod, "aws-load-balancer-controller").inputs
    assert (lbc["version"], lbc["namespace"]) == ("3.5.0", "kube-system")
    assert lbc["repositoryOpts"]["repo"] == "https://aws.github.io/eks-charts"
    values = lbc["values"]
    assert values["clusterName"] == "tfs-prod" and values["region"] == "us-west-2"
    assert values["vpcId"] == prod.outputs["vpc_id"]
    assert values["controllerConfig"]["featureGates"]["ALBGatewayAPI"] is True
    assert values["serviceAccount"]["name"] == "aws-load-balancer-controller"
    assoc = prod.one("aws:eks/podIdentityAssociation:PodIdentityAssociation", "ingress-lb-controller-identity").inputs
    assert (assoc["namespace"], assoc["serviceAccount"]) == ("kube-system", "aws-load-balancer-controller")


@pytest.mark.skipif(not (conformance.REFERENCE_DIR / "iam").is_dir(), reason="reference IAM policies not present")
def test_controller_policy_is_the_published_one(prod: Rendering) -> None:
    ours = json.loads(prod.one("aws:iam/policy:Policy", "ingress-lb-controller-policy").inputs["policy"])
    published = json.loads((conformance.REFERENCE_DIR / "iam" / "aws-load-balancer-controller-v3.5.0.json").read_text())
    assert ours == published


def test_crds_and_controller_come_before_every_gateway_object(prod: Rendering) -> None:
    crds = prod.one("kubernetes:yaml/v2:ConfigFile")
    assert crds.inputs["file"] == catalog.GATEWAY_API_CRDS_URL
    assert "/v1.6.1/standard-install.yaml" in crds.inputs["file"]
    controller = release(prod, "aws-load-balancer-controller")
    assert crds.urn in controller.depends_on, "the chart's gateway.k8s.aws CRDs after Gateway API's"
    gateway_objects = [x for x in prod.resources if x.is_k8s_object and "gateway" in x.type]
    assert len(gateway_objects) == 7
    for obj in gateway_objects:
        assert crds.urn in obj.depends_on and controller.urn in obj.depends_on, obj.name
    gateway = prod.one("kubernetes:gateway.networking.k8s.io/v1:Gateway")
    for route in ("HTTPRoute", "GRPCRoute"):
        for x in custom(prod, route):
            assert gateway.urn in x.depends_on


def test_gateway_wiring(stack_name: str) -> None:
    from tests.conftest import rendered_stack

    r = rendered_stack(stack_name)
    gateway_class = one(r, "GatewayClass")
    assert gateway_class["spec"] == {"controllerName": "gateway.k8s.aws/alb"}
    gateway = one(r, "Gateway")
    assert gateway["spec"]["gatewayClassName"] == gateway_class["metadata"]["name"]
    ref = gateway["spec"]["infrastructure"]["parametersRef"]
    lb_config = one(r, "LoadBalancerConfiguration", ref["name"])
    assert (ref["group"], ref["kind"]) == ("gateway.k8s.aws", "LoadBalancerConfiguration")
    assert lb_config["metadata"]["namespace"] == gateway["metadata"]["namespace"]
    listeners = {item["name"]: (item["protocol"], item["port"]) for item in gateway["spec"]["listeners"]}
    assert listeners == {"http": ("HTTP", 80), "https": ("HTTPS", 443)}
    svc = service(r)
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    for route in custom(r, "HTTPRoute") + custom(r, "GRPCRoute"):
        spec = route.inputs["spec"]
        assert route.inputs["metadata"]["namespace"] == gateway["metadata"]["namespace"]
        for parent in spec["parentRefs"]:
            assert parent["name"] == gateway["metadata"]["name"] and parent["sectionName"] in listeners
        for rule in spec["rules"]:
            for backend in rule.get("backendRefs", []):
                assert backend["name"] == svc["metadata"]["name"] and backend["port"] in ports.values()


def test_routes_split_rest_and_grpc_by_host(prod: Rendering) -> None:
    rest = one(prod, "HTTPRoute", "tf-serving-rest")["spec"]
    assert rest["hostnames"] == ["tfs.example.com"]
    assert rest["parentRefs"][0]["sectionName"] == "https"
    assert rest["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1/models"}}]
    assert rest["rules"][0]["backendRefs"] == [{"name": "tf-serving", "port": 8501}]
    grpc = one(prod, "GRPCRoute")["spec"]
    assert grpc["hostnames"] == ["tfs-grpc.example.com"]
    assert grpc["rules"][0]["backendRefs"] == [{"name": "tf-serving", "port": 8500}]
    redirect = one(prod, "HTTPRoute", "tf-serving-redirect")["spec"]
    assert redirect["parentRefs"][0]["sectionName"] == "http"
    assert redirect["rules"][0]["filters"][0]["requestRedirect"] == {"scheme": "https", "statusCode": 301}


def test_target_groups_use_ip_targets_model_health_and_grpc(prod: Rendering) -> None:
    tgc = one(prod, "TargetGroupConfiguration")["spec"]
    assert tgc["targetReference"] == {"kind": "Service", "name": service(prod)["metadata"]["name"]}
    default = tgc["defaultConfiguration"]
    assert default["targetType"] == "ip"
    assert default["healthCheckConfig"]["healthCheckPath"] == "/v1/models/resnet"
    assert default["healthCheckConfig"]["healthCheckPort"] == "8501"
    grpc = tgc["routeConfigurations"][0]
    assert grpc["routeIdentifier"]["name"] == one(prod, "GRPCRoute")["metadata"]["name"]
    assert grpc["targetGroupProps"]["protocolVersion"] == "GRPC"
    assert grpc["targetGroupProps"]["targetType"] == "ip"


def test_listener_tls_timeouts_and_waf(prod: Rendering) -> None:
    spec = one(prod, "LoadBalancerConfiguration")["spec"]
    assert spec["scheme"] == "internet-facing"
    listener = spec["listenerConfigurations"][0]
    assert listener["protocolPort"] == "HTTPS:443"
    assert listener["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert listener["defaultCertificate"] == prod.outputs["certificate_arn"]
    assert listener["alpnPolicy"] == "HTTP2Preferred"
    assert {"key": "idle_timeout.timeout_seconds", "value": "120"} in spec["loadBalancerAttributes"]
    assert spec["wafV2"]["webACL"] == prod.outputs["web_acl_arn"]


def test_certificate_is_validated_through_the_hosted_zone(prod: Rendering) -> None:
    cert = prod.one("aws:acm/certificate:Certificate").inputs
    assert cert["domainName"] == "tfs.example.com"
    assert cert["subjectAlternativeNames"] == ["tfs-grpc.example.com"]
    assert cert["validationMethod"] == "DNS"
    records = prod.of_type("aws:route53/record:Record")
    assert len(records) == 2
    assert {r.inputs["zoneId"] for r in records} == {"Z0EXAMPLE0PROD00000001"}
    validation = prod.one("aws:acm/certificateValidation:CertificateValidation").inputs
    assert sorted(validation["validationRecordFqdns"]) == sorted(r.inputs["name"].rstrip(".") for r in records)
    assert validation["certificateArn"] == prod.one("aws:acm/certificate:Certificate").outputs["arn"]


def test_bring_your_own_certificate() -> None:
    raw = raw_stack("dev")
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
    raw["ingress"]["certificate_arn"] = arn
    r = render_raw(raw)
    assert not r.of_type("aws:acm/certificate:Certificate")
    assert not r.of_type("aws:route53/record:Record")
    assert one(r, "LoadBalancerConfiguration")["spec"]["listenerConfigurations"][0]["defaultCertificate"] == arn


def test_waf_blocks_by_default_and_allows_the_allowlist(prod: Rendering) -> None:
    acl = prod.one("aws:wafv2/webAcl:WebAcl").inputs
    assert acl["scope"] == "REGIONAL"
    assert acl["defaultAction"] == {"block": {}}
    rules = {rule["name"]: rule for rule in acl["rules"]}
    common = rules["aws-common-rules"]["statement"]["managedRuleGroupStatement"]
    assert common["name"] == "AWSManagedRulesCommonRuleSet"
    assert common["ruleActionOverrides"] == [{"name": "SizeRestrictions_BODY", "actionToUse": {"count": {}}}]
    rate = rules["rate-limit-per-client"]["statement"]["rateBasedStatement"]
    assert (rate["limit"], rate["aggregateKeyType"], rate["evaluationWindowSec"]) == (6000, "IP", 300)
    ip_set = prod.one("aws:wafv2/ipSet:IpSet")
    assert ip_set.inputs["addresses"] == ["198.51.100.0/24", "203.0.113.0/24"]
    allow = rules["allow-authorised-clients"]
    assert allow["action"] == {"allow": {}}
    assert allow["statement"]["ipSetReferenceStatement"]["arn"] == ip_set.outputs["arn"]


def with_api_key(raw: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["ingress"]["access"]["require_api_key"] = True
    raw["ingress_api_key"] = API_KEY
    return raw


def test_api_key_rule_requires_allowlist_and_key() -> None:
    raw = with_api_key(raw_stack("prod"))
    r = render("test", settings_for(raw), secret_keys_for(raw))
    acl = r.one("aws:wafv2/webAcl:WebAcl")
    assert "rules" in acl.secret_inputs, "the key travels as a Pulumi secret"
    rules = {rule["name"]: rule for rule in acl.inputs["rules"]}
    statements = rules["allow-authorised-clients"]["statement"]["andStatement"]["statements"]
    header = statements[1]["byteMatchStatement"]
    assert header["fieldToMatch"] == {"singleHeader": {"name": "x-api-key"}}
    assert (header["positionalConstraint"], header["searchString"]) == ("EXACTLY", API_KEY)
    assert "ipSetReferenceStatement" in statements[0]


def test_api_key_only_rule() -> None:
    access = parse(with_api_key({**raw_stack("dev")})).ingress
    assert access is not None
    cfg = access.access.model_copy(update={"allowed_cidrs": []})
    rules = web_acl_rules(cfg, None, API_KEY)
    assert rules[-1]["statement"] == {
        "byte_match_statement": {
            "field_to_match": {"single_header": {"name": "x-api-key"}},
            "positional_constraint": "EXACTLY",
            "search_string": API_KEY,
            "text_transformations": [{"priority": 0, "type": "NONE"}],
        }
    }


def test_api_key_in_clear_is_refused() -> None:
    with pytest.raises(StackConfigError, match="ingress_api_key: is in the stack file in clear"):
        raw = with_api_key(raw_stack("prod"))
        render("test", settings_for(raw), secret_keys_for(raw, clear=("ingress_api_key",)))


def test_required_api_key_must_be_set() -> None:
    raw = raw_stack("prod")
    raw["ingress"]["access"]["require_api_key"] = True
    with pytest.raises(StackConfigError, match="ingress_api_key: access.require_api_key needs it"):
        parse(raw)


def test_prod_refuses_open_endpoints_unless_public() -> None:
    raw = raw_stack("prod")
    raw["ingress"]["access"] = {}
    with pytest.raises(StackConfigError, match="tf-serving-eks:ingress.access: prod endpoints need an allowlist or an API key"):
        parse(raw)
    raw["ingress"]["access"] = {"public": True}
    r = render_raw(raw)
    assert r.one("aws:wafv2/webAcl:WebAcl").inputs["defaultAction"] == {"allow": {}}
    raw["ingress"]["access"] = {"public": True, "allowed_cidrs": ["203.0.113.0/24"]}
    with pytest.raises(StackConfigError, match="ingress.access.public"):
        parse(raw)


def test_internal_scheme_admits_only_private_subnets(prod: Rendering) -> None:
    raw = raw_stack("prod")
    raw["ingress"]["scheme"] = "internal"
    r = render_raw(raw)
    assert one(r, "LoadBalancerConfiguration")["spec"]["scheme"] == "internal"
    policy = next(m for m in r.k8s_objects() if m["kind"] == "NetworkPolicy")["spec"]
    private = {s.inputs["cidrBlock"] for s in r.of_type("aws:ec2/subnet:Subnet") if "private" in s.name}
    assert {p["ipBlock"]["cidr"] for p in policy["ingress"][0]["from"]} == private


def test_external_dns_is_limited_to_the_zone(prod: Rendering) -> None:
    values = release(prod, "external-dns").inputs["values"]
    assert release(prod, "external-dns").inputs["version"] == "1.21.1"
    assert values["sources"] == ["gateway-httproute", "gateway-grpcroute"]
    assert values["domainFilters"] == ["example.com"]
    assert "--zone-id-filter=Z0EXAMPLE0PROD00000001" in values["extraArgs"]
    assert values["txtOwnerId"] == "tfs-prod-prod"
    policy = json.loads(prod.one("aws:iam/rolePolicy:RolePolicy", "ingress-external-dns-policy").inputs["policy"])
    change = next(s for s in policy["Statement"] if "route53:ChangeResourceRecordSets" in s["Action"])
    assert change["Resource"] == "arn:aws:route53:::hostedzone/Z0EXAMPLE0PROD00000001"
    schema_path = conformance.HELM_VALUES_DIR / "external-dns-1.21.1.schema.json"
    if schema_path.is_file():
        jsonschema.validate(values, json.loads(schema_path.read_text()))


def test_outputs_are_the_urls(prod: Rendering) -> None:
    assert prod.outputs["rest_url"] == "https://tfs.example.com"
    assert prod.outputs["grpc_url"] == "tfs-grpc.example.com:443"
    assert prod.outputs["certificate_arn"].startswith("arn:aws:acm:")
    assert prod.outputs["web_acl_arn"]


def test_no_ingress_means_no_controller() -> None:
    raw = raw_stack("dev")
    del raw["ingress"]
    r = render_raw(raw)
    assert not custom(r, "Gateway") and not r.of_type("aws:wafv2/webAcl:WebAcl")
    assert "rest_url" not in r.outputs


BAD = [
    ("host outside the zone", ("rest_host", "api.example.org"), "ingress.rest_host", "must be a name under domain example.com"),
    ("same host twice", ("grpc_host", "tfs.example.com"), "ingress.grpc_host", "must differ from rest_host"),
    ("bad zone id", ("hosted_zone_id", "zone-1"), "ingress.hosted_zone_id", "should match pattern"),
    ("bad certificate ARN", ("certificate_arn", "arn:aws:iam::123456789012:server-certificate/x"), "ingress.certificate_arn", "should match pattern"),
    ("invalid host name", ("rest_host", "TFS_.example.com"), "ingress.rest_host", "should match pattern"),
    ("TLS 1.0 policy", ("tls_policy", "ELBSecurityPolicy-2016-08"), "ingress.tls_policy", "ELBSecurityPolicy-TLS13-1-2-2021-06"),
]


@pytest.mark.parametrize("change, key, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_ingress_config_is_refused(change: tuple[str, Any], key: str, fragment: str) -> None:
    raw = raw_stack("prod")
    raw["ingress"][change[0]] = change[1]
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    assert f"tf-serving-eks:{key}:" in str(info.value) and fragment in str(info.value), str(info.value)
