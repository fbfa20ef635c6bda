"""The `ingress` key: REST and gRPC endpoints on an ALB, their TLS, DNS and WAF access.

Rules here read only the ingress section; the API key secret and the ALB rule count for
the served models need other keys and live on the root model (components/config/stack.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, model_validator

from components import validation
from components.config.base import RuleError, Section, environment_of, section
from components.config.serving import ModelConfig
from components.validation import checked, ipv4_cidr, worded

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

    @model_validator(mode="after")
    def _production_rules(self, info: ValidationInfo) -> IngressConfig:
        # A switched-off block is still validated for its keys, but is no endpoint to guard.
        if environment_of(info) != "prod" or not self.enabled:
            return self
        access = self.access
        if not (access.public or access.allowed_cidrs or access.require_api_key):
            raise RuleError(
                "access",
                {"allowed_cidrs": [], "require_api_key": False},
                "prod endpoints need an allowlist or an API key; set public: true to open "
                "them deliberately",
            )
        if access.allowed_cidrs and validation.opens_to_everyone(access.allowed_cidrs):
            raise RuleError(
                "access.allowed_cidrs",
                [str(c) for c in access.allowed_cidrs],
                "covers every public address, so it is no allowlist; in prod set public: true "
                "(and drop allowed_cidrs) to open the endpoints deliberately",
            )
        return self


# The ALB quota "rules per load balancer" (default 100, not counting default rules; Elastic
# Load Balancing, "Quotas for your Application Load Balancers"). The ingress routes take per
# served model 4 listener rules (its paths and its 3 call verbs), 8 more per canaried model
# (its canary label and canary version), 6 for the public gRPC methods (12 with a canary: the
# header rules) and one HTTP-to-HTTPS redirect per host name. components/ingress.py builds
# them; tests/test_ingress.py checks this count against the rendered routes.
ALB_RULES_PER_LOAD_BALANCER = 100


def alb_listener_rules(models: Mapping[str, ModelConfig]) -> int:
    canaries = sum(m.canary is not None for m in models.values())
    return 4 * len(models) + 8 * canaries + 6 * (2 if canaries else 1) + 2
