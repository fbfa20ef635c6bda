"""Preflight checks of what the stack file alone tells: placeholders shipped in the example
stack files, reported first with the keys to change, and the few things a deploy would fail
on that the config model does not refuse (a certificate from another region). It must make
no AWS call (the account checks are tools/preflight/existing.py's), nor repeat the config
model's rules: the file has been validated before any check runs."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Any

from components.config import StackConfig
from tools.preflight.model import Context, Finding, Verdict

# The placeholders the repo's stack files and README ship (README, "Deploying for real").
PLACEHOLDER_ACCOUNT = "123456789012"  # the AWS documentation's example account ID
# RFC 2606 reserves these second-level domains for documentation: no one can own them, so
# neither a hosted zone nor a validated ACM certificate can exist for them.
PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net")
# RFC 5737 documentation ranges (TEST-NET-1/2/3): no caller ever has such an address.
DOCUMENTATION_NETS = tuple(
    ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
PLACEHOLDER_ORG = "my-org/"  # serving.promotion_source in Pulumi.prod.yaml
PLACEHOLDER_DOCKER_HUB_USER = "mydockerhubuser"  # serving.image_cache.docker_hub_username
# Route53 hosted zone IDs in the stack files: Z0EXAMPLE0DEV000000001 and the like.
PLACEHOLDER_ZONE = re.compile(r"EXAMPLE")
# `secure:` values the stack files ship until `pulumi config set --secret` replaces them.
PLACEHOLDER_SECRET = "placeholder"


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _leaves(inner, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _leaves(inner, f"{path}.{i}")
    else:
        yield path, value


def _config_leaves(cfg: StackConfig) -> Iterator[tuple[str, Any]]:
    dumped = cfg.model_dump(mode="json", by_alias=True, exclude_none=True)
    yield from _leaves(dumped)


def _is_documentation_cidr(value: str) -> bool:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return isinstance(net, ipaddress.IPv4Network) and any(net.subnet_of(d) for d in DOCUMENTATION_NETS)


def _is_placeholder_domain(value: str) -> bool:
    return any(value == d or value.endswith("." + d) for d in PLACEHOLDER_DOMAINS)


def placeholders(cfg: StackConfig, document: dict[str, Any] | None = None) -> list[Finding]:
    """One `fail` per kind of placeholder still in the stack, naming every key that holds it."""
    kinds: dict[str, tuple[str, str, list[str]]] = {
        "account": ("your AWS account ID in every ARN", f"replace {PLACEHOLDER_ACCOUNT} with your account ID (aws sts get-caller-identity) in", []),
        "domain": ("a domain whose Route53 hosted zone you own", "set your own domain and host names in", []),
        "zone": ("the hosted zone ID of your domain", "set the ID of your hosted zone (aws route53 list-hosted-zones) in", []),
        "cidr": ("the public CIDRs your callers come from", "replace the documentation ranges (RFC 5737) with your callers' CIDRs in", []),
        "org": ("your Pulumi organisation", "replace my-org with your Pulumi organisation in", []),
        "docker": ("your Docker Hub user", "set your Docker Hub user (and its token as a secret) in", []),
        "secret": ("the secret's value", "run `pulumi config set --secret --path '<key>' <value>` for", []),
    }
    for key, value in _config_leaves(cfg):
        if not isinstance(value, str):
            continue
        if PLACEHOLDER_ACCOUNT in value:
            kinds["account"][2].append(key)
        if _is_placeholder_domain(value):
            kinds["domain"][2].append(key)
        if key.endswith("hosted_zone_id") and PLACEHOLDER_ZONE.search(value):
            kinds["zone"][2].append(key)
        if _is_documentation_cidr(value):
            kinds["cidr"][2].append(key)
        if value.startswith(PLACEHOLDER_ORG):
            kinds["org"][2].append(key)
        if value == PLACEHOLDER_DOCKER_HUB_USER:
            kinds["docker"][2].append(key)
    # Encrypted values never reach the config model in clear, so they are read from the file.
    config = (document or {}).get("config") or {}
    for key, value in _leaves(config):
        if key.endswith(".secure") and isinstance(value, str) and PLACEHOLDER_SECRET in value:
            kinds["secret"][2].append(key.removesuffix(".secure"))
    findings = []
    labels = {
        "account": f"account ID {PLACEHOLDER_ACCOUNT}",
        "domain": "example.com/.org/.net domains",
        "zone": "example hosted zone ID",
        "cidr": "documentation CIDRs",
        "org": "my-org",
        "docker": PLACEHOLDER_DOCKER_HUB_USER,
        "secret": "secret placeholders",
    }
    for kind, (needs, fix, keys) in kinds.items():
        if keys:
            findings.append(Finding(
                f"placeholder: {labels[kind]}", needs, f"still in {len(keys)} key(s)", "fail",
                f"{fix}: {', '.join(keys)}",
            ))
    return findings


def certificate_region(cfg: StackConfig) -> list[Finding]:
    """An ALB takes ACM certificates from its own region only (Elastic Load Balancing user
    guide, "SSL certificates for your Application Load Balancer": the certificate must be in
    the same Region as the load balancer); the config model does not compare the two."""
    ingress = cfg.ingress
    if ingress is None or not ingress.enabled or ingress.certificate_arn is None:
        return []
    region = ingress.certificate_arn.split(":")[3]
    verdict: Verdict = "pass" if region == cfg.aws_region else "fail"
    return [Finding(
        "ACM certificate region", f"a certificate in {cfg.aws_region} (the ALB's region)",
        f"ingress.certificate_arn is in {region}", verdict,
        "" if verdict == "pass" else f"request or import the certificate in {cfg.aws_region}, or leave ingress.certificate_arn unset (the stack then requests one)",
    )]


def checks(ctx: Context) -> list[Finding]:
    return [
        *placeholders(ctx.config, ctx.notes.get("document")),
        *certificate_region(ctx.config),
    ]
