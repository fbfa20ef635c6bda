"""Ingress and TLS: controller, CRD ordering, Gateway API objects, ACM, DNS, WAF, refusals."""

from __future__ import annotations

import base64
import copy
import dataclasses
import ipaddress
import json
import re
from typing import Any

import jsonschema
import pytest

from components import catalog
from components.config import StackConfigError, alb_listener_rules
from components.ingress import model_call_path_regex, web_acl_rules
from tests.support import alb_rules, waf_rules
from tests.support.alb_rules import Request
from tests.support.waf_rules import WafRequest
from tests.support.serving_pods import ServedModel, can_serve, parse_rest, served_by_service
from tests.support import parse, raw_stack, render_raw, secret_keys_for, settings_for
from tests.support import conformance
from tools.lib.mock_engine import Rendering, render

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


def test_controller_policy_is_the_published_one(prod: Rendering) -> None:
    ours = json.loads(prod.one("aws:iam/policy:Policy", "ingress-lb-controller-policy").inputs["policy"])
    published = json.loads(conformance.reference("iam", "aws-load-balancer-controller-v3.5.0.json").read_text())
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
    routes = ingress_routes(prod)
    rest = alb_rules.route(routes, Request("tfs.example.com", "/v1/models/resnet:predict"))
    assert [(b.name, b.port) for b in rest.backends] == [("tf-serving", 8501)]
    grpc = alb_rules.route(routes, Request("tfs-grpc.example.com", "/tensorflow.serving.PredictionService/Predict"))
    assert [(b.name, b.port) for b in grpc.backends] == [("tf-serving", 8500)]
    for host in ("tfs.example.com", "tfs-grpc.example.com"):
        plain = alb_rules.route(routes, Request(host, "/v1/models/resnet", "GET"), section="http")
        assert plain.status == 301 and plain.rule is not None and plain.rule.redirect == {"scheme": "https", "statusCode": 301}


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
    ("bad zone id", ("hosted_zone_id", "zone-1"), "ingress.hosted_zone_id", "Route53 hosted zone ID"),
    ("bad certificate ARN", ("certificate_arn", "arn:aws:iam::123456789012:server-certificate/x"), "ingress.certificate_arn", "ACM certificate ARN"),
    ("invalid host name", ("rest_host", "TFS_.example.com"), "ingress.rest_host", "lower-case DNS name"),
    ("TLS 1.0 policy", ("tls_policy", "ELBSecurityPolicy-2016-08"), "ingress.tls_policy", "ELBSecurityPolicy-TLS13-1-2-2021-06"),
]


@pytest.mark.parametrize("change, key, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_ingress_config_is_refused(change: tuple[str, Any], key: str, fragment: str) -> None:
    raw = raw_stack("prod")
    raw["ingress"][change[0]] = change[1]
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    assert f"tf-serving-eks:{key}:" in str(info.value) and fragment in str(info.value), str(info.value)


# --- Where requests go: the routes as the AWS Load Balancer Controller builds them into ALB
# listener rules, evaluated the way the ALB does (tests/support/alb_rules.py cites the sources). ---

# TF Serving's gRPC services and methods (tensorflow/serving tensorflow_serving/apis/
# prediction_service.proto, model_service.proto, session_service.proto), and the services
# its server registers besides them (model_servers/server.cc: the profiler when
# --enable_profiler, true by default; the standard health service when
# --enable_grpc_healthcheck_service) or that gRPC tooling probes (reflection). The public host
# may forward only the prediction service and the read-only model status; a method that
# changes what is served (HandleReloadConfigRequest) or runs arbitrary graphs (SessionRun)
# must never reach a pod from outside.
PUBLIC_GRPC = [
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/Regress",
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/MultiInference",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
]
REFUSED_GRPC = [
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    "/tensorflow.serving.SessionService/SessionRun",
    "/tensorflow.serving.SessionService/SessionMeta",
    "/tensorflow.ProfilerService/Profile",
    "/tensorflow.ProfilerService/Monitor",
    "/grpc.health.v1.Health/Check",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/tensorflow.serving.PredictionService/PredictStream",
    "/tensorflow.serving.predictionservice/Predict",
    "/tensorflow.serving.PredictionService/Predict/",
    "/tensorflow.serving.PredictionService/PredictX",
    "/tensorflow.serving.PredictionServiceX/Predict",
    "/v1/models/resnet:predict",
    "/",
]


def ingress_routes(r: Rendering) -> list[dict[str, Any]]:
    """The HTTPRoutes and GRPCRoutes, in the order the program creates them."""
    return [x.inputs for x in r.resources if x.is_k8s_object and x.inputs.get("kind") in ("HTTPRoute", "GRPCRoute")]


def hosts(r: Rendering) -> tuple[str, str]:
    return r.outputs["rest_url"].removeprefix("https://"), r.outputs["grpc_url"].rsplit(":", 1)[0]


def canaried(raw: dict[str, Any], model: str, version: int, weight: int) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    raw["serving"]["models"][model]["canary"] = {"version": version, "weight": weight}
    return raw


def routing_variants() -> dict[str, dict[str, Any]]:
    """Repo stacks and configs generated from them: several models (one named as a prefix of
    another), policies latest and specific, canaries at 0, 10 and 100 percent."""
    prod = raw_stack("prod")
    many = copy.deepcopy(prod)
    many["serving"]["models"].update(
        {
            "res": {"version_policy": "specific", "versions": [1, 2], "labels": {"stable": 2, "previous": 1}},
            "half-plus-two": {"version_policy": "latest", "latest_count": 2},
        }
    )
    return {
        "dev": raw_stack("dev"),
        "prod": prod,
        "prod-canary-10": canaried(prod, "resnet", 4, 10),
        "many-two-canaries": canaried(canaried(many, "resnet", 4, 0), "res", 5, 100),
        "many-canary-on-prefix-name": canaried(many, "res", 3, 25),
    }


_variants: dict[str, Rendering] = {}


def variant(name: str) -> Rendering:
    if name not in _variants:
        _variants[name] = render_raw(routing_variants()[name])
    return _variants[name]


VARIANTS = list(routing_variants())


def rest_calls(served: dict[str, dict[str, ServedModel]]) -> list[tuple[str, str]]:
    """Every REST call (method, path) that some pod can serve: status, metadata and the three
    verbs, on each model, each served version and each label."""
    calls = []
    models: dict[str, list[str]] = {}
    for by_model in served.values():
        for model, s in by_model.items():
            bases = models.setdefault(model, [f"/v1/models/{model}"])
            for version in sorted(s.versions or {1}):
                bases.append(f"/v1/models/{model}/versions/{version}")
            bases += [f"/v1/models/{model}/labels/{label}" for label in s.labels]
    for bases in models.values():
        for base in dict.fromkeys(bases):
            calls += [("GET", base), ("GET", f"{base}/metadata")]
            calls += [("POST", f"{base}:{verb}") for verb in ("predict", "classify", "regress")]
    return calls


@pytest.mark.parametrize("name", VARIANTS)
def test_every_rest_call_reaches_pods_that_serve_it(name: str) -> None:
    r = variant(name)
    served = served_by_service(r)
    rest_host, _ = hosts(r)
    routes = ingress_routes(r)
    calls = rest_calls(served)
    assert len(calls) >= 15
    for method, path in calls:
        outcome = alb_rules.route(routes, Request(rest_host, path, method))
        ref = parse_rest(method, path)
        assert ref is not None, path
        assert not outcome.refused, (name, method, path, outcome.status)
        for backend in outcome.backends:
            assert backend.port == 8501, (path, backend)
            assert can_serve(served[backend.name], ref), f"{name}: {method} {path} reaches {backend.name}, which does not serve it"


@pytest.mark.parametrize("name", VARIANTS)
def test_canary_weight_splits_the_models_unversioned_calls(name: str) -> None:
    """A canaried model's own calls (no version or label) go to the canary pods with its
    weight and to the stable pods with the rest; other models never reach the canary."""
    r = variant(name)
    raw = routing_variants()[name]
    rest_host, _ = hosts(r)
    routes = ingress_routes(r)
    for model, cfg in raw["serving"]["models"].items():
        weight = cfg.get("canary", {}).get("weight", 0)
        for method, path in (("POST", f"/v1/models/{model}:predict"), ("GET", f"/v1/models/{model}")):
            outcome = alb_rules.route(routes, Request(rest_host, path, method))
            shares = {b.name: b.weight for b in outcome.backends}
            total = sum(shares.values())
            assert 100 * shares.get("tf-serving-canary", 0) == weight * total, (name, path, shares)


@pytest.mark.parametrize("name", VARIANTS)
def test_rest_host_refuses_what_tf_serving_does_not_implement(name: str) -> None:
    r = variant(name)
    rest_host, grpc_host = hosts(r)
    routes = ingress_routes(r)
    models = list(routing_variants()[name]["serving"]["models"])
    refused = [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/"),
        ("GET", "/v1/models/no-such-model"),
        ("POST", "/v1/models/no-such-model:predict"),
        ("GET", "/monitoring/prometheus/metrics"),
        ("GET", "/"),
        ("POST", "/tensorflow.serving.ModelService/HandleReloadConfigRequest"),
    ]
    for model in models:
        refused += [
            ("POST", f"/v1/models/{model}:explain"),
            ("POST", f"/v1/models/{model}x:predict"),
            ("POST", f"/v1/models/{model}-x/labels/stable:predict"),
            ("GET", f"/v1/models{model}"),
        ]
    for method, path in refused:
        for host in (rest_host, grpc_host, "other.example.com"):
            outcome = alb_rules.route(routes, Request(host, path, method))
            assert outcome.refused and outcome.status == 404, (name, host, method, path, outcome)


@pytest.mark.parametrize("name", VARIANTS)
def test_grpc_host_forwards_only_prediction_and_status(name: str) -> None:
    """Public methods reach TF Serving's gRPC port; the canary header sends them to the canary
    pods. Everything else gets the listener's fixed 404, which a gRPC client reports as
    UNIMPLEMENTED (grpc/grpc doc/http-grpc-status-mapping.md) - with or without the header."""
    r = variant(name)
    rest_host, grpc_host = hosts(r)
    routes = ingress_routes(r)
    served = served_by_service(r)
    canary = "tf-serving-canary" in served
    header = {"x-tf-serving-track": "canary"}
    for path in PUBLIC_GRPC:
        plain = alb_rules.route(routes, Request(grpc_host, path, headers={"content-type": "application/grpc"}))
        assert not plain.refused and plain.services() <= set(served), (name, path, plain)
        assert "tf-serving" in plain.services() or canary
        assert {b.port for b in plain.backends} == {8500}
        explicit = alb_rules.route(routes, Request(grpc_host, path, headers=header))
        assert explicit.services() == ({"tf-serving-canary"} if canary else {"tf-serving"}), (name, path)
        assert alb_rules.route(routes, Request(rest_host, path)).refused
    for path in REFUSED_GRPC:
        for headers in ({}, header):
            outcome = alb_rules.route(routes, Request(grpc_host, path, headers=headers))
            assert outcome.refused and outcome.status == 404, (name, path, headers, outcome)


@pytest.mark.parametrize("name", VARIANTS)
def test_routes_fit_the_alb_and_gateway_api_limits(name: str) -> None:
    """ALB quotas (Elastic Load Balancing, "Quotas for your Application Load Balancers"): 100
    rules per load balancer besides the defaults, 5 condition values per rule; Gateway API
    CRDs: 16 rules per route, 64 matches per rule, fewer than 128 matches per route."""
    r = variant(name)
    routes = ingress_routes(r)
    rules = alb_rules.listener_rules(routes, "https") + alb_rules.listener_rules(routes, "http")
    assert len(rules) <= 100, (name, len(rules))
    for rule in rules:
        assert sum(len(c.values) for c in rule.conditions) <= 5, rule
        assert all(len(c.values) <= 3 and all(len(v) <= 128 for v in c.values) for c in rule.conditions), rule
    for route in routes:
        route_rules = route["spec"]["rules"]
        assert len(route_rules) <= 16
        assert all(len(rule.get("matches", [])) <= 64 for rule in route_rules)
        assert sum(len(rule.get("matches", [])) for rule in route_rules) < 128


def test_route_evaluator_follows_the_controller_precedence() -> None:
    """The evaluator itself: exact paths before prefixes, longer prefixes first, more headers
    first, a rule without matches catches everything, weight 0 receives nothing."""
    route = {
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "n"},
        "spec": {
            "parentRefs": [{"name": "g", "sectionName": "https"}],
            "hostnames": ["a.example.com"],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "backendRefs": [{"name": "short", "port": 1}]},
                {"matches": [{"path": {"type": "PathPrefix", "value": "/v1/models"}}], "backendRefs": [{"name": "long", "port": 1}]},
                {"matches": [{"path": {"type": "Exact", "value": "/v1/models/m:predict"}}], "backendRefs": [{"name": "exact", "port": 1, "weight": 0}, {"name": "b", "port": 1}]},
            ],
        },
    }
    grpc = {
        "kind": "GRPCRoute",
        "metadata": {"name": "g", "namespace": "n"},
        "spec": {"parentRefs": [{"name": "g", "sectionName": "https"}], "hostnames": ["g.example.com"], "rules": [{"backendRefs": [{"name": "all", "port": 2}]}]},
    }

    def go(host: str, path: str) -> set[str]:
        return alb_rules.route([route, grpc], Request(host, path)).services()

    assert go("a.example.com", "/v1/models/m") == {"long"}
    assert go("a.example.com", "/v1/other") == {"short"}
    assert go("a.example.com", "/v1/models/m:predict") == {"b"}
    assert go("A.EXAMPLE.COM", "/v1/models") == {"long"}
    assert go("a.example.com", "/v1x") == set()
    assert go("g.example.com", "/tensorflow.serving.ModelService/HandleReloadConfigRequest") == {"all"}


@pytest.mark.parametrize("name", VARIANTS)
def test_listener_rule_count_rule_matches_the_rendered_routes(name: str) -> None:
    """The config rule that refuses too many models counts the listener rules the routes
    really make."""
    r = variant(name)
    routes = ingress_routes(r)
    built = len(alb_rules.listener_rules(routes, "https")) + len(alb_rules.listener_rules(routes, "http"))
    assert alb_listener_rules(parse(routing_variants()[name]).serving.models) == built


def test_more_models_than_one_load_balancer_takes_are_refused() -> None:
    raw = raw_stack("prod")
    for i in range(23):
        raw["serving"]["models"][f"model-{i:02d}"] = {"version_policy": "latest"}
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    message = str(info.value)
    assert "tf-serving-eks:serving.models:" in message and "24 models" in message, message
    assert "would need 104 ALB listener rules; an ALB takes 100" in message, message
    del raw["serving"]["models"]["model-22"]
    parse(raw)  # 23 models: 4 * 23 + 6 + 2 = 100 rules
    del raw["ingress"]
    for i in range(40):
        raw["serving"]["models"][f"extra-{i:02d}"] = {"version_policy": "latest"}
    parse(raw)  # no ingress, no load balancer


# --- What the WAF lets through: the rendered web ACL evaluated the way AWS WAF does
# (tests/support/waf_rules.py cites the sources). ---


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def grpc_predict_body(model: str, pixels: bytes) -> bytes:
    """A gRPC-framed tensorflow.serving.PredictRequest (apis/predict.proto: model_spec = 1,
    inputs = 2; tensorflow TensorProto: dtype = 1, tensor_shape = 2, tensor_content = 4) with
    one DT_UINT8 image: binary bytes, as every gRPC body is."""
    model_spec = _field(1, model.encode())
    shape = _field(2, b"\x08" + _varint(len(pixels)))
    tensor = b"\x08\x04" + _field(2, shape) + _field(4, pixels)
    message = _field(1, model_spec) + _field(2, _field(1, b"image") + _field(2, tensor))
    return b"\x00" + len(message).to_bytes(4, "big") + message


# Image bytes that happen to spell what the body rules look for (within the 8 KB WAF
# inspects), among 20 KB of noise.
NOISY_PIXELS = bytes(range(256)) * 10 + b"..\\../<sCrIpt onerror=169.254.169.254 http://10.0.0.1" + bytes(range(256)) * 70
# A REST predict of about 2 MB: one base64 image (TF Serving's {"b64": ...} JSON encoding).
LARGE_REST_BODY = json.dumps({"instances": [{"b64": base64.b64encode(bytes(range(256)) * 6000).decode()}]}).encode()
TEXT_INPUT_BODY = json.dumps({"instances": ["<script>alert(1)</script> and ../../etc/passwd, as the page said"]}).encode()
XSS_BODY = b'{"x": "<script>alert(1)</script>"}'


def waf_variants() -> dict[str, dict[str, Any]]:
    prod = raw_stack("prod")
    key_only = with_api_key(prod)
    key_only["ingress"]["access"]["allowed_cidrs"] = []
    public = copy.deepcopy(prod)
    public["ingress"]["access"] = {"public": True}
    return {"dev": raw_stack("dev"), "prod": prod, "prod-key": with_api_key(prod), "key-only": key_only, "public": public}


_waf: dict[str, Rendering] = {}


def waf_variant(name: str) -> Rendering:
    if name not in _waf:
        raw = waf_variants()[name]
        _waf[name] = render("test", settings_for(raw), secret_keys_for(raw))
    return _waf[name]


def client(raw: dict[str, Any], r: WafRequest) -> WafRequest:
    """`r` from an authorised client: a source in the allowlist, the API key if required."""
    access = raw["ingress"]["access"]
    headers = {"user-agent": "grpc-python/1.71.0", **r.headers}
    if access.get("require_api_key"):
        headers[access.get("api_key_header", "x-api-key")] = API_KEY
    source = str(next(ipaddress.ip_network(access["allowed_cidrs"][0]).hosts())) if access.get("allowed_cidrs") else "192.0.2.77"
    return dataclasses.replace(r, headers=headers, source_ip=source)


def waf(r: Rendering, request: WafRequest, rules: list[Any] | None = None) -> waf_rules.Verdict:
    acl = r.one("aws:wafv2/webAcl:WebAcl").inputs
    if rules is not None:
        acl = {**acl, "rules": rules}
    ip_sets = {x.outputs["arn"]: x.inputs["addresses"] for x in r.of_type("aws:wafv2/ipSet:IpSet")}
    return waf_rules.evaluate(acl, request, ip_sets)


GRPC = {"content-type": "application/grpc"}
JSON = {"content-type": "application/json"}
# (request, blocked by a body rule of the common rule set if nothing scoped it)
MODEL_CALLS = [
    WafRequest("POST", "/tensorflow.serving.PredictionService/Predict", grpc_predict_body("resnet", NOISY_PIXELS), GRPC),
    WafRequest("POST", "/tensorflow.serving.PredictionService/Classify", grpc_predict_body("resnet", NOISY_PIXELS), GRPC),
    WafRequest("POST", "/tensorflow.serving.ModelService/GetModelStatus", grpc_predict_body("../x", b""), GRPC),
    WafRequest("POST", "/v1/models/resnet:predict", LARGE_REST_BODY, JSON),
    WafRequest("POST", "/v1/models/resnet/labels/stable:predict", TEXT_INPUT_BODY, JSON),
    WafRequest("POST", "/v1/models/resnet/versions/3:classify", TEXT_INPUT_BODY, JSON),
]
OTHER_CALLS = [
    WafRequest("GET", "/v1/models/resnet/metadata", XSS_BODY, JSON),
    WafRequest("POST", "/v1/models/resnet", LARGE_REST_BODY, JSON),
    WafRequest("POST", "/v1/models/resnet:predict/x", XSS_BODY, JSON),
    WafRequest("POST", "/tensorflow.serving.ModelService/HandleReloadConfigRequest", grpc_predict_body("../../x", b""), GRPC),
    WafRequest("POST", "/x/tensorflow.serving.PredictionService/Predict", grpc_predict_body("r", NOISY_PIXELS), GRPC),
    WafRequest("POST", "/tensorflow.serving.PredictionService/Predict.x", grpc_predict_body("r", NOISY_PIXELS), GRPC),
]


@pytest.mark.parametrize("name", list(waf_variants()))
def test_waf_passes_model_calls_whatever_their_body(name: str) -> None:
    """gRPC bodies are binary protobuf and REST bodies JSON tensors or base64, often over WAF's
    8 KB: the common rule set's body rules must not block a model call."""
    r, raw = waf_variant(name), waf_variants()[name]
    unscoped = [{"name": "crs", "priority": 0, "overrideAction": {"none": {}}, "statement": {"managedRuleGroupStatement": {"vendorName": "AWS", "name": "AWSManagedRulesCommonRuleSet"}}}]
    for request in MODEL_CALLS:
        request = client(raw, request)
        premise = waf(r, request, rules=unscoped)
        assert premise.action == "BLOCK" and premise.rule and premise.rule.split(":")[1].endswith("_BODY"), premise
        verdict = waf(r, request)
        assert verdict.action == "ALLOW", (name, request.path, verdict)


@pytest.mark.parametrize("name", list(waf_variants()))
def test_waf_keeps_the_body_rules_for_everything_else(name: str) -> None:
    r, raw = waf_variant(name), waf_variants()[name]
    for request in OTHER_CALLS:
        verdict = waf(r, client(raw, request))
        assert verdict.action == "BLOCK", (name, request.path, verdict)
    # Harmless non-model calls still pass.
    status = waf(r, client(raw, WafRequest("GET", "/v1/models/resnet")))
    assert status.action == "ALLOW", status


@pytest.mark.parametrize("name", list(waf_variants()))
def test_waf_keeps_header_rules_rate_limit_and_access_on_model_calls(name: str) -> None:
    r, raw = waf_variant(name), waf_variants()[name]
    call = client(raw, MODEL_CALLS[0])
    no_agent = dataclasses.replace(call, headers={k: v for k, v in call.headers.items() if k != "user-agent"})
    assert waf(r, no_agent).rule == "aws-common-rules:NoUserAgent_HEADER"
    assert waf(r, dataclasses.replace(call, path="/tensorflow.serving.PredictionService/Predict?../")).action == "BLOCK"
    assert waf(r, dataclasses.replace(call, over_rate_limit=True)).rule == "rate-limit-per-client"
    access = raw["ingress"]["access"]
    if access.get("allowed_cidrs"):
        assert waf(r, dataclasses.replace(call, source_ip="192.0.2.77")).action == "BLOCK"
    if access.get("require_api_key"):
        keyless = {k: v for k, v in call.headers.items() if k != "x-api-key"}
        assert waf(r, dataclasses.replace(call, headers=keyless)).action == "BLOCK"


def test_model_call_scope_is_exactly_the_routed_calls_with_a_body() -> None:
    """The WAF's notion of a model call matches the routes: every public gRPC method and every
    REST verb call of a served model; not status or metadata reads, not refused methods."""
    scope = re.compile(model_call_path_regex())
    r = variant("many-canary-on-prefix-name")
    for method, path in rest_calls(served_by_service(r)):
        assert bool(scope.search(path)) == (method == "POST"), path
    for path in PUBLIC_GRPC:
        assert scope.search(path), path
    for path in REFUSED_GRPC:
        assert bool(scope.search(path)) == path.startswith("/v1/models/"), path
    assert len(model_call_path_regex()) <= 512, "WAF regex_string limit"


def _depth(statement: dict[str, Any]) -> int:
    for logical in ("andStatement", "orStatement"):
        if logical in statement:
            return 1 + max(_depth(s) for s in statement[logical]["statements"])
    if "notStatement" in statement:
        return 1 + _depth(statement["notStatement"]["statement"])
    return 1


def test_waf_statements_nest_within_the_provider_limit() -> None:
    """pulumi-aws 7 (wafv2.WebAcl `rules`): at most three levels of nested statements; deeper
    needs `rule_json`, which has no drift detection."""
    acl = waf_variant("prod-key").one("aws:wafv2/webAcl:WebAcl").inputs
    assert max(_depth(rule["statement"]) for rule in acl["rules"]) == 3
