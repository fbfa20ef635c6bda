"""The `ingress` stack key: REST and gRPC endpoints through Gateway API on an ALB (the AWS
Load Balancer Controller), TLS with ACM, DNS with external-dns, and a WAF web ACL in front.

It routes to the Services the serving component made and must not create or change serving
objects itself; it exports nothing (components/stack.py owns the stack outputs).

Why an ALB through Gateway API: it terminates TLS with ACM certificates, balances gRPC per
request over HTTP/2 (an L4 balancer pins long-lived gRPC connections to one pod), and
takes a WAF web ACL. Why external-dns for DNS: the ALB is created by the controller, so its
name is known only inside the cluster; external-dns reads it from the Gateway and keeps the
alias records right when the ALB is replaced, limited to one hosted zone and marked with a
TXT owner id.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import catalog
from components.cluster import ClusterOutputs
from components.config import CANARY_LABEL, AccessConfig, IngressConfig
from components.custom_resources import serving_custom_resource
from components.helm import controller, service_monitor_values
from components.iam import policy_document
from components.monitoring import PrometheusStackOutputs
from components.naming import k8s_labels
from components.serving import ServingOutputs

TYPE_TOKEN = "tf-serving-eks:ingress:Ingress"
# The token of the component's former name (IngressTls): the alias keeps a deployed ingress
# (and, through its children's parent, the load balancer controller, certificate and web ACL)
# where it is.
OLD_TYPE_TOKEN = "tf-serving-eks:ingress:IngressTls"
GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
CONTROLLER_NAMESPACE = "kube-system"
CONTROLLER_SERVICE_ACCOUNT = "aws-load-balancer-controller"
EXTERNAL_DNS_SERVICE_ACCOUNT = "external-dns"
GATEWAY_CLASS = "aws-alb"
ALB_CONTROLLER_NAME = "gateway.k8s.aws/alb"
LBC_GROUP = "gateway.k8s.aws"
# The controller's published IAM policy, byte for byte (source: catalog.LBC_IAM_POLICY_SOURCE).
LBC_POLICY_FILE = Path(__file__).parent / "policies" / "aws-load-balancer-controller-v3.5.0.json"
GRPC_HEALTH_PATH = "/tensorflow.serving.ModelService/GetModelStatus"
# gRPC calls carrying this header (value "canary") go to the canary pods.
CANARY_HEADER = "x-tf-serving-track"
MODELS_PATH = "/v1/models"
# TF Serving's REST call verbs (model_servers/http_rest_api_util.cc, kPredictionApiGegex).
REST_VERBS = ("predict", "classify", "regress")
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
# The gRPC methods the public host forwards: TF Serving's prediction service
# (apis/prediction_service.proto) and the read-only model status (apis/model_service.proto).
# Refused at the load balancer: ModelService/HandleReloadConfigRequest (replaces the served
# model list: any caller could unload every model), SessionService/SessionRun (runs arbitrary
# graphs; apis/session_service.proto), tensorflow.ProfilerService (registered by default:
# model_servers/server.cc, enable_profiler = true), grpc.health.v1 and reflection.
GRPC_PUBLIC_METHODS: tuple[tuple[str, str], ...] = (
    (PREDICTION_SERVICE, "Classify"),
    (PREDICTION_SERVICE, "Regress"),
    (PREDICTION_SERVICE, "Predict"),
    (PREDICTION_SERVICE, "MultiInference"),
    (PREDICTION_SERVICE, "GetModelMetadata"),
    (MODEL_SERVICE, "GetModelStatus"),
)
# Gateway API CRDs (v1.6.1 standard, HTTPRoute and GRPCRoute): at most 64 matches per rule.
MAX_MATCHES_PER_RULE = 64
COMMON_RULE_SET = "AWSManagedRulesCommonRuleSet"
# The common rule set's rules that inspect the body, and the label each adds when it matches
# (AWS WAF Developer Guide, "Baseline rule groups": core rule set). Labels are case-sensitive.
COMMON_RULE_SET_LABELS = "awswaf:managed:aws:core-rule-set:"
COMMON_RULE_SET_BODY_RULES = {
    "SizeRestrictions_BODY": "SizeRestrictions_Body",
    "CrossSiteScripting_BODY": "CrossSiteScripting_Body",
    "GenericLFI_BODY": "GenericLFI_Body",
    "GenericRFI_BODY": "GenericRFI_Body",
    "EC2MetaDataSSRF_BODY": "EC2MetaDataSSRF_Body",
}


@dataclass(frozen=True)
class IngressOutputs:
    rest_url: str
    grpc_url: str
    certificate_arn: pulumi.Output[str]
    web_acl_arn: pulumi.Output[str]


def lbc_policy() -> str:
    return LBC_POLICY_FILE.read_text()


def external_dns_policy(partition: str, hosted_zone_id: str) -> str:
    """Change records in one hosted zone; list what external-dns must see to find it."""
    return policy_document(
        [
            {
                "Sid": "ChangeOwnZone",
                "Effect": "Allow",
                "Action": ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"],
                "Resource": f"arn:{partition}:route53:::hostedzone/{hosted_zone_id}",
            },
            {
                "Sid": "FindZones",
                "Effect": "Allow",
                "Action": ["route53:ListHostedZones", "route53:ListTagsForResources"],
                "Resource": "*",
            },
        ]
    )


def controller_values(
    cluster_name: str,
    region: str,
    vpc_id: str,
    node_selector: dict[str, str],
    service_monitor: Mapping[str, str] | None,
) -> dict[str, Any]:
    return {
        "clusterName": cluster_name,
        "region": region,
        # Set, so the controller never needs the instance metadata service to find them.
        "vpcId": vpc_id,
        "replicaCount": 2,
        "serviceAccount": {"create": True, "name": CONTROLLER_SERVICE_ACCOUNT},
        "controllerConfig": {"featureGates": {"ALBGatewayAPI": True, "NLBGatewayAPI": False}},
        # Don't take over every Service of type LoadBalancer in the cluster.
        "enableServiceMutatorWebhook": False,
        "nodeSelector": node_selector,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "serviceMonitor": service_monitor_values(service_monitor),
    }


def external_dns_values(
    cfg: IngressConfig, owner_id: str, region: str, node_selector: dict[str, str]
) -> dict[str, Any]:
    return {
        "provider": {"name": "aws"},
        "sources": ["gateway-httproute", "gateway-grpcroute"],
        "domainFilters": [cfg.domain],
        "extraArgs": [f"--zone-id-filter={cfg.hosted_zone_id}", "--aws-zone-type=public"],
        # TXT records mark what this stack owns; sync removes only those.
        "txtOwnerId": owner_id,
        "policy": "sync",
        "env": [{"name": "AWS_DEFAULT_REGION", "value": region}],
        "serviceAccount": {"create": True, "name": EXTERNAL_DNS_SERVICE_ACCOUNT},
        "nodeSelector": node_selector,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }


def _visibility(name: str) -> aws.wafv2.WebAclVisibilityConfigArgsDict:
    return {"cloudwatch_metrics_enabled": True, "metric_name": name, "sampled_requests_enabled": True}


def model_call_path_regex() -> str:
    """The paths whose bodies are model inputs: REST calls (TF Serving's kPredictionApiGegex,
    model_servers/http_rest_api_util.cc) and the public gRPC methods (binary protobuf)."""
    by_service: dict[str, list[str]] = {}
    for service, method in GRPC_PUBLIC_METHODS:
        by_service.setdefault(service, []).append(method)
    grpc = [f"/{re.escape(service)}/({'|'.join(methods)})" for service, methods in by_service.items()]
    rest = rf"{MODELS_PATH}/[^/:]+(/versions/[0-9]+|/labels/[^/:]+)?:({'|'.join(REST_VERBS)})"
    return f"^({'|'.join([rest, *grpc])})$"


def _body_rules_off_model_calls() -> aws.wafv2.WebAclRuleStatementArgsDict:
    """A request one of the common rule set's body rules matched, on any path but a model call."""
    labels: list[aws.wafv2.WebAclRuleStatementArgsDict] = [
        {"label_match_statement": {"scope": "LABEL", "key": f"{COMMON_RULE_SET_LABELS}{label}"}}
        for label in COMMON_RULE_SET_BODY_RULES.values()
    ]
    model_call: aws.wafv2.WebAclRuleStatementArgsDict = {
        "regex_match_statement": {
            "regex_string": model_call_path_regex(),
            "field_to_match": {"uri_path": {}},
            "text_transformations": [{"priority": 0, "type": "NONE"}],
        }
    }
    # Three levels of nesting at most: the provider's limit for `rules` (beyond it, rule_json).
    return {
        "and_statement": {
            "statements": [
                {"or_statement": {"statements": labels}},
                {"not_statement": {"statement": model_call}},
            ]
        }
    }


def web_acl_rules(
    access: AccessConfig, ip_set_arn: str | None, api_key: str | None
) -> list[aws.wafv2.WebAclRuleArgsDict]:
    """Managed common rules, their body rules outside model calls, per-client rate limit, then
    the allow rule (allowlist / API key).

    The common rule set's body rules read the body as text (WAF passes the first 8 KB on an
    ALB), but model inputs are binary protobuf (gRPC) or JSON tensors and base64 (REST): they
    match XSS / LFI / RFI / SSRF signatures by chance and are often over 8 KB. So those rules
    only count (which still labels the request) and a rule after the group blocks on their
    labels unless the path is a model call; every other rule of the set still blocks
    everywhere (AWS WAF Developer Guide: "Baseline rule groups" for the rules and labels,
    "Using labels in rules" for the pattern)."""
    rules: list[aws.wafv2.WebAclRuleArgsDict] = [
        {
            "name": "aws-common-rules",
            "priority": 0,
            "override_action": {"none": {}},
            "statement": {
                "managed_rule_group_statement": {
                    "vendor_name": "AWS",
                    "name": COMMON_RULE_SET,
                    "rule_action_overrides": [
                        {"name": rule, "action_to_use": {"count": {}}} for rule in COMMON_RULE_SET_BODY_RULES
                    ],
                }
            },
            "visibility_config": _visibility("aws-common-rules"),
        },
        {
            "name": "common-body-rules-off-model-calls",
            "priority": 1,
            "action": {"block": {}},
            "statement": _body_rules_off_model_calls(),
            "visibility_config": _visibility("common-body-rules-off-model-calls"),
        },
        {
            "name": "rate-limit-per-client",
            "priority": 2,
            "action": {"block": {}},
            "statement": {
                "rate_based_statement": {
                    "limit": access.rate_limit,
                    "evaluation_window_sec": access.rate_limit_window_seconds,
                    "aggregate_key_type": "IP",
                }
            },
            "visibility_config": _visibility("rate-limit-per-client"),
        },
    ]
    conditions: list[aws.wafv2.WebAclRuleStatementArgsDict] = []
    if ip_set_arn is not None:
        conditions.append({"ip_set_reference_statement": {"arn": ip_set_arn}})
    if api_key is not None:
        conditions.append(
            {
                "byte_match_statement": {
                    "field_to_match": {"single_header": {"name": access.api_key_header}},
                    "positional_constraint": "EXACTLY",
                    "search_string": api_key,
                    "text_transformations": [{"priority": 0, "type": "NONE"}],
                }
            }
        )
    if conditions:
        statement: aws.wafv2.WebAclRuleStatementArgsDict = (
            conditions[0] if len(conditions) == 1 else {"and_statement": {"statements": conditions}}
        )
        rules.append(
            {
                "name": "allow-authorised-clients",
                "priority": 3,
                "action": {"allow": {}},
                "statement": statement,
                "visibility_config": _visibility("allow-authorised-clients"),
            }
        )
    return rules


def load_balancer_configuration_spec(
    cfg: IngressConfig, certificate_arn: str, web_acl_arn: str
) -> dict[str, Any]:
    return {
        "scheme": cfg.scheme,
        "ipAddressType": "ipv4",
        "listenerConfigurations": [
            {
                "protocolPort": "HTTPS:443",
                "defaultCertificate": certificate_arn,
                "sslPolicy": cfg.tls_policy,
                # gRPC needs HTTP/2 end to end; REST clients still get HTTP/1.1.
                "alpnPolicy": "HTTP2Preferred",
            }
        ],
        "loadBalancerAttributes": [
            {"key": "idle_timeout.timeout_seconds", "value": str(cfg.idle_timeout_seconds)},
            {"key": "routing.http.drop_invalid_header_fields.enabled", "value": "true"},
        ],
        "wafV2": {"webACL": web_acl_arn},
    }


def target_group_configuration_spec(
    serving: ServingOutputs, grpc_route: str, health_model: str, service: str
) -> dict[str, Any]:
    """IP targets (pods), REST health from the model status endpoint, gRPC over HTTP/2."""
    return {
        "targetReference": {"kind": "Service", "name": service},
        "defaultConfiguration": {
            "targetType": "ip",
            "protocol": "HTTP",
            "protocolVersion": "HTTP1",
            "healthCheckConfig": {
                "healthCheckPath": f"/v1/models/{health_model}",
                "healthCheckPort": str(serving.rest_port),
                "healthCheckProtocol": "HTTP",
                "healthCheckInterval": 10,
                "healthCheckTimeout": 5,
                "healthyThresholdCount": 2,
                "unhealthyThresholdCount": 3,
                "matcher": {"httpCode": "200"},
            },
            "targetGroupAttributes": [
                {"key": "deregistration_delay.timeout_seconds", "value": "30"},
            ],
        },
        "routeConfigurations": [
            {
                "routeIdentifier": {"kind": "GRPCRoute", "namespace": serving.namespace, "name": grpc_route},
                "targetGroupProps": {
                    "targetType": "ip",
                    "protocol": "HTTP",
                    "protocolVersion": "GRPC",
                    "healthCheckConfig": {
                        # Any gRPC answer from the model service shows the server is up.
                        "healthCheckPath": GRPC_HEALTH_PATH,
                        "healthCheckProtocol": "HTTP",
                        "healthCheckInterval": 10,
                        "healthCheckTimeout": 5,
                        "healthyThresholdCount": 2,
                        "unhealthyThresholdCount": 3,
                        "matcher": {"grpcCode": "0-99"},
                    },
                },
            }
        ],
    }


def gateway_spec(name: str, lb_config: str) -> dict[str, Any]:
    same_namespace = {"namespaces": {"from": "Same"}}
    return {
        "gatewayClassName": GATEWAY_CLASS,
        "infrastructure": {
            "parametersRef": {"group": LBC_GROUP, "kind": "LoadBalancerConfiguration", "name": lb_config}
        },
        "listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80, "allowedRoutes": same_namespace},
            {"name": "https", "protocol": "HTTPS", "port": 443, "allowedRoutes": same_namespace},
        ],
    }


def _parent(gateway: str, section: str) -> dict[str, str]:
    return {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": gateway,
        "sectionName": section,
    }


def redirect_route_spec(gateway: str, hosts: list[str]) -> dict[str, Any]:
    return {
        "parentRefs": [_parent(gateway, "http")],
        "hostnames": hosts,
        "rules": [
            {
                "filters": [
                    {
                        "type": "RequestRedirect",
                        "requestRedirect": {"scheme": "https", "statusCode": 301},
                    }
                ]
            }
        ],
    }


def _backends(serving: ServingOutputs, port: int, canary_weight: int) -> list[dict[str, Any]]:
    """The stable Service, and the canary Service with `canary_weight`% when there is one."""
    stable: dict[str, Any] = {"name": serving.service_name, "port": port}
    if serving.canary_service is None:
        return [stable]
    return [
        {**stable, "weight": 100 - canary_weight},
        {"name": serving.canary_service, "port": port, "weight": canary_weight},
    ]


def _prefix(path: str) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": path}}


def _exact(path: str) -> dict[str, Any]:
    return {"path": {"type": "Exact", "value": path}}


def _model_paths(base: str) -> list[dict[str, Any]]:
    """`base` (a model, or one of its versions or labels), what lies under it (status,
    metadata, versioned and labelled calls) and its three call verbs.

    A Gateway API path prefix matches whole path segments, so `/v1/models/m` covers
    `/v1/models/m/...` but not `/v1/models/m:predict`: the verbs need their own matches (the
    controller turns a prefix into the ALB patterns `base` and `base/*`, an exact path into
    itself: pkg/gateway/routeutils/route_rule_condition.go, buildHttpPathCondition)."""
    return [_prefix(base), *(_exact(f"{base}:{verb}") for verb in REST_VERBS)]


def _rules(matches: list[dict[str, Any]], backends: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One rule per MAX_MATCHES_PER_RULE matches (the HTTPRoute / GRPCRoute CRD limit)."""
    return [
        {"matches": matches[i : i + MAX_MATCHES_PER_RULE], "backendRefs": backends}
        for i in range(0, len(matches), MAX_MATCHES_PER_RULE)
    ]


def rest_route_spec(gateway: str, host: str, serving: ServingOutputs) -> dict[str, Any]:
    """Only the REST API TF Serving implements, for the models it serves; any other path
    (another model, `/v1/models` itself, the metrics endpoint) matches no rule and gets the
    listener's 404.

    TF Serving's REST paths (model_servers/http_rest_api_util.cc, kPredictionApiGegex and
    kModelStatusApiRegex): `POST /v1/models/<m>[/versions/<n>|/labels/<l>]:(predict|classify|
    regress)` and `GET /v1/models/<m>[/versions/<n>|/labels/<l>][/metadata]`.

    A canaried model's calls are split by its weight; its canary label and canary version are
    loaded only by the canary pods, so those go there. The ALB tries exact paths before
    prefixes and longer prefixes first (route_rule_precedence.go), so the canary's own paths
    win over the model's split."""
    stable = _backends(serving, serving.rest_port, 0)
    plain = [
        match
        for name in serving.model_names
        if name not in serving.canary_weights
        for match in _model_paths(f"{MODELS_PATH}/{name}")
    ]
    rules = _rules(plain, stable)
    canary_only: list[dict[str, Any]] = []
    for name, weight in serving.canary_weights.items():
        base = f"{MODELS_PATH}/{name}"
        canary_only += _model_paths(f"{base}/labels/{CANARY_LABEL}")
        canary_only += _model_paths(f"{base}/versions/{serving.canary_versions[name]}")
        rules += _rules(_model_paths(base), _backends(serving, serving.rest_port, weight))
    if canary_only:
        rules += _rules(canary_only, _backends(serving, serving.rest_port, 100))
    return {"parentRefs": [_parent(gateway, "https")], "hostnames": [host], "rules": rules}


def grpc_method_path(service: str, method: str) -> str:
    """The HTTP/2 path of a gRPC call (gRPC over HTTP/2: `/<service>/<method>`)."""
    return f"/{service}/{method}"


def grpc_route_spec(gateway: str, host: str, serving: ServingOutputs) -> dict[str, Any]:
    """Exactly the public gRPC methods (GRPC_PUBLIC_METHODS); every other call matches no rule
    and gets the listener's fixed 404, which a gRPC client reports as UNIMPLEMENTED.

    gRPC names the model inside the message, which the ALB cannot read: one weighted split
    (the largest canary weight) for all calls, and a header for explicit canary calls. The
    controller turns each Exact service/method match into the ALB path pattern
    `/<service>/<method>` (route_rule_condition.go, buildGrpcMethodCondition); a rule without
    matches would become `/*` and forward every method, admin ones included."""

    def methods(headers: list[dict[str, str]]) -> list[dict[str, Any]]:
        out = []
        for service, method in GRPC_PUBLIC_METHODS:
            match: dict[str, Any] = {"method": {"type": "Exact", "service": service, "method": method}}
            if headers:
                match["headers"] = headers
            out.append(match)
        return out

    rules: list[dict[str, Any]] = []
    if serving.canary_service is not None:
        header = [{"type": "Exact", "name": CANARY_HEADER, "value": CANARY_LABEL}]
        rules += _rules(methods(header), _backends(serving, serving.grpc_port, 100))
    weight = max(serving.canary_weights.values(), default=0)
    rules += _rules(methods([]), _backends(serving, serving.grpc_port, weight))
    return {"parentRefs": [_parent(gateway, "https")], "hostnames": [host], "rules": rules}


def _validation_option(
    options: list[aws.acm.outputs.CertificateDomainValidationOption], domain: str
) -> aws.acm.outputs.CertificateDomainValidationOption:
    return next(o for o in options if o.domain_name == domain)


class Ingress(pulumi.ComponentResource):
    outputs: IngressOutputs

    def __init__(
        self,
        name: str,
        cfg: IngressConfig,
        *,
        api_key: str | None,
        stack: str,
        cluster: ClusterOutputs,
        serving: ServingOutputs,
        region: str,
        partition: str,
        service_monitor: Mapping[str, str] | None,
        prometheus: PrometheusStackOutputs | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            TYPE_TOKEN,
            name,
            None,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=OLD_TYPE_TOKEN)])
            ),
        )
        child = pulumi.ResourceOptions(parent=self)
        k8s_child = pulumi.ResourceOptions(parent=self, provider=cluster.provider)
        labels = k8s_labels("ingress", serving.name)

        gateway_crds, lb_controller = self._controller(
            name, cluster, region, service_monitor, prometheus, k8s_child
        )
        self._external_dns(name, cfg, stack, cluster, region, partition, gateway_crds)
        certificate_arn = self._certificate(name, cfg, child)
        web_acl = self._web_acl(name, cfg, api_key, child)

        after_controller = pulumi.ResourceOptions.merge(
            k8s_child, pulumi.ResourceOptions(depends_on=[gateway_crds, lb_controller])
        )

        def custom(
            resource: str,
            api_version: str,
            kind: str,
            object_name: str,
            spec: Any,
            opts: pulumi.ResourceOptions = after_controller,
            cluster_scoped: bool = False,
        ) -> k8s.apiextensions.CustomResource:
            return serving_custom_resource(
                f"{name}-{resource}",
                serving,
                api_version,
                kind,
                spec,
                labels=labels,
                opts=opts,
                name=object_name,
                cluster_scoped=cluster_scoped,
            )

        gateway_name = serving.name
        grpc_route = f"{serving.name}-grpc"
        lb_config = custom(
            "load-balancer-config",
            f"{LBC_GROUP}/v1",
            "LoadBalancerConfiguration",
            serving.name,
            pulumi.Output.all(certificate_arn, web_acl.arn).apply(
                lambda a: load_balancer_configuration_spec(cfg, a[0], a[1])
            ),
        )
        for suffix, service in (("", serving.service_name), ("-canary", serving.canary_service)):
            if service is None:
                continue
            custom(
                f"target-group-config{suffix}",
                f"{LBC_GROUP}/v1",
                "TargetGroupConfiguration",
                service,
                target_group_configuration_spec(serving, grpc_route, serving.model_names[0], service),
            )
        custom(
            "gateway-class",
            GATEWAY_API_VERSION,
            "GatewayClass",
            GATEWAY_CLASS,
            {"controllerName": ALB_CONTROLLER_NAME},
            cluster_scoped=True,
        )
        gateway = custom(
            "gateway",
            GATEWAY_API_VERSION,
            "Gateway",
            gateway_name,
            gateway_spec(gateway_name, serving.name),
            opts=pulumi.ResourceOptions.merge(after_controller, pulumi.ResourceOptions(depends_on=[lb_config])),
        )
        after_gateway = pulumi.ResourceOptions.merge(after_controller, pulumi.ResourceOptions(depends_on=[gateway]))
        for resource, kind, object_name, spec in (
            ("http-redirect", "HTTPRoute", f"{serving.name}-redirect", redirect_route_spec(gateway_name, [cfg.rest_host, cfg.grpc_host])),
            ("rest-route", "HTTPRoute", f"{serving.name}-rest", rest_route_spec(gateway_name, cfg.rest_host, serving)),
            ("grpc-route", "GRPCRoute", grpc_route, grpc_route_spec(gateway_name, cfg.grpc_host, serving)),
        ):
            custom(resource, GATEWAY_API_VERSION, kind, object_name, spec, opts=after_gateway)

        self.outputs = IngressOutputs(
            rest_url=f"https://{cfg.rest_host}",
            grpc_url=f"{cfg.grpc_host}:443",
            certificate_arn=certificate_arn,
            web_acl_arn=web_acl.arn,
        )
        self.register_outputs({"rest_url": self.outputs.rest_url, "grpc_url": self.outputs.grpc_url})

    def _controller(
        self,
        name: str,
        cluster: ClusterOutputs,
        region: str,
        service_monitor: Mapping[str, str] | None,
        prometheus: PrometheusStackOutputs | None,
        k8s_child: pulumi.ResourceOptions,
    ) -> tuple[pulumi.Resource, pulumi.Resource]:
        """The controller, its identity, and every CRD a Gateway object needs, in order."""
        # Gateway API CRDs (standard channel) at the version the controller is built for; the
        # controller's own gateway.k8s.aws CRDs come with its chart.
        gateway_crds = k8s.yaml.v2.ConfigFile(
            f"{name}-gateway-api-crds", file=catalog.GATEWAY_API_CRDS_URL, opts=k8s_child
        )
        values = pulumi.Output.all(cluster.name, cluster.vpc_id).apply(
            lambda a: controller_values(
                a[0], region, a[1], cluster.system_node_selector, service_monitor
            )
        )
        release = controller(
            f"{name}-lb-controller",
            catalog.CHARTS["aws-load-balancer-controller"],
            namespace=CONTROLLER_NAMESPACE,
            service_account=CONTROLLER_SERVICE_ACCOUNT,
            description="AWS Load Balancer Controller",
            cluster_name=cluster.name,
            policy=lbc_policy(),
            managed_policy_description="AWS Load Balancer Controller v3.5.0 (published policy)",
            values=values,
            parent=self,
            provider=cluster.provider,
            # Its chart ships a ServiceMonitor: the operator's CRDs come first.
            depends_on=[gateway_crds, *(prometheus.crds_ready if prometheus else ())],
        ).release
        return gateway_crds, release

    def _external_dns(
        self,
        name: str,
        cfg: IngressConfig,
        stack: str,
        cluster: ClusterOutputs,
        region: str,
        partition: str,
        gateway_crds: pulumi.Resource,
    ) -> None:
        values = cluster.name.apply(
            lambda cluster_name: external_dns_values(
                cfg, f"{cluster_name}-{stack}", region, cluster.system_node_selector
            )
        )
        controller(
            f"{name}-external-dns",
            catalog.CHARTS["external-dns"],
            namespace=CONTROLLER_NAMESPACE,
            service_account=EXTERNAL_DNS_SERVICE_ACCOUNT,
            description=f"external-dns for {cfg.domain}",
            cluster_name=cluster.name,
            policy=external_dns_policy(partition, cfg.hosted_zone_id),
            values=values,
            parent=self,
            provider=cluster.provider,
            # Its gateway-* sources watch the Gateway API kinds.
            depends_on=[gateway_crds],
            # Kept as deployed stacks have it: the release waits for the binding, not the policy.
            wait_for_policy=False,
        )

    def _certificate(
        self, name: str, cfg: IngressConfig, child: pulumi.ResourceOptions
    ) -> pulumi.Output[str]:
        if cfg.certificate_arn:
            return pulumi.Output.from_input(cfg.certificate_arn)
        certificate = aws.acm.Certificate(
            f"{name}-certificate",
            domain_name=cfg.rest_host,
            subject_alternative_names=[cfg.grpc_host],
            validation_method="DNS",
            opts=child,
        )
        records = []
        # Named by the endpoint's role, never by its host: two hosts may share a first label
        # (api.example.com, api.grpc.example.com) and a logical name must be unique in the
        # stack. The alias keeps records made under the old host-label names in place.
        endpoints = (("rest", cfg.rest_host), ("grpc", cfg.grpc_host))
        old_labels = [host.split(".")[0] for _, host in endpoints]
        # An old name is aliased only where it was unique and is no other record's new name.
        keep_old = len(set(old_labels)) == 2 and all(
            old == role or old not in ("rest", "grpc") for (role, _), old in zip(endpoints, old_labels)
        )
        for (role, host), old in zip(endpoints, old_labels):
            option = certificate.domain_validation_options.apply(
                functools.partial(_validation_option, domain=host)
            )
            aliases = (
                [pulumi.Alias(name=f"{name}-certificate-validation-{old}")]
                if keep_old and old != role
                else []
            )
            records.append(
                aws.route53.Record(
                    f"{name}-certificate-validation-{role}",
                    zone_id=cfg.hosted_zone_id,
                    name=option.apply(lambda o: o.resource_record_name or ""),
                    type=option.apply(lambda o: o.resource_record_type or "CNAME"),
                    records=[option.apply(lambda o: o.resource_record_value or "")],
                    ttl=300,
                    allow_overwrite=True,
                    opts=pulumi.ResourceOptions.merge(
                        child, pulumi.ResourceOptions(aliases=aliases)
                    ),
                )
            )
        validation = aws.acm.CertificateValidation(
            f"{name}-certificate-validation",
            certificate_arn=certificate.arn,
            validation_record_fqdns=[r.fqdn for r in records],
            opts=child,
        )
        return validation.certificate_arn

    def _web_acl(
        self, name: str, cfg: IngressConfig, api_key: str | None, child: pulumi.ResourceOptions
    ) -> aws.wafv2.WebAcl:
        access = cfg.access
        ip_set_arn: pulumi.Output[str] | None = None
        if access.allowed_cidrs:
            ip_set = aws.wafv2.IpSet(
                f"{name}-allowlist",
                scope="REGIONAL",
                ip_address_version="IPV4",
                addresses=[str(c) for c in access.allowed_cidrs],
                description="Sources allowed to call the model endpoints",
                opts=child,
            )
            ip_set_arn = ip_set.arn
        secret_key = pulumi.Output.secret(api_key) if api_key is not None else None
        rules = pulumi.Output.all(ip_set_arn, secret_key).apply(
            lambda a: web_acl_rules(access, a[0], a[1])
        )
        closed = bool(access.allowed_cidrs or access.require_api_key)
        if not closed and not access.public:
            pulumi.log.warn(
                "ingress.access has neither allowed_cidrs nor require_api_key: the endpoints are "
                "open to any source (set access.public: true to say so)",
                resource=self,
            )
        return aws.wafv2.WebAcl(
            f"{name}-web-acl",
            scope="REGIONAL",
            description="Model endpoints: managed rules, rate limit, allowlist / API key",
            default_action={"block": {}} if closed else {"allow": {}},
            rules=rules,
            visibility_config=_visibility(f"{name}-web-acl"),
            opts=child,
        )

