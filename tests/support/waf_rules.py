"""AWS WAF's evaluation of a web ACL for one request, over the rules as rendered (the
WebAcl resource's inputs), so a test can ask "is this request allowed".

How WAF evaluates (AWS WAF Developer Guide: "How AWS WAF processes a web ACL", "Rule
actions", "Labels on web requests", "Managed rule group statement", "Scope-down
statements"): rules in ascending priority; a matching rule with Allow or Block ends the
evaluation, Count adds the rule's labels and goes on; a managed rule group is skipped when its
scope-down statement does not match, otherwise each of its rules that matches adds its label
and takes its own action, or the action a `rule_action_overrides` entry gives it (a counted
rule still labels the request), unless the group's override action is Count; a label match
statement sees the labels added by rules evaluated before it; no terminating match: the
default action. On an ALB, WAF inspects the first 8 KB of a body (fixed for ALB) and the
managed rules' body inspection continues on the part it has (oversize handling Continue).

AWS does not publish the managed rules' signatures. The core rule set below is a stand-in:
each documented rule is a predicate that matches the kind of content the rule is described as
inspecting (`<script` for cross-site scripting, `../` for local file inclusion, ...), enough to
ask what *our* rules do once a managed rule has matched.

It models AWS WAF only, from the rendered web ACL; it must not import the code under test.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

BODY_INSPECTION_LIMIT = 8 * 1024
CRS = "awswaf:managed:aws:core-rule-set:"


@dataclass(frozen=True)
class WafRequest:
    method: str
    path: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    source_ip: str = "203.0.113.10"
    query: str = ""
    over_rate_limit: bool = False

    def header(self, name: str) -> str | None:
        return {k.lower(): v for k, v in self.headers.items()}.get(name.lower())


@dataclass(frozen=True)
class Verdict:
    action: str  # ALLOW | BLOCK
    rule: str | None  # the terminating rule (or managed rule), None for the default action
    labels: frozenset[str]


def _body(r: WafRequest) -> bytes:
    return r.body[:BODY_INSPECTION_LIMIT]


# AWSManagedRulesCommonRuleSet (AWS WAF Developer Guide, "Baseline rule groups"): rule name,
# label, stand-in predicate. Every rule blocks unless overridden.
COMMON_RULE_SET: list[tuple[str, str, Callable[[WafRequest], bool]]] = [
    ("NoUserAgent_HEADER", "NoUserAgent_Header", lambda r: not r.header("user-agent")),
    ("UserAgent_BadBots_HEADER", "BadBots_Header", lambda r: bool(re.search(r"(?i)nessus|nmap", r.header("user-agent") or ""))),
    ("SizeRestrictions_QUERYSTRING", "SizeRestrictions_QueryString", lambda r: len(r.query) > 2048),
    ("SizeRestrictions_Cookie_HEADER", "SizeRestrictions_Cookie_Header", lambda r: len(r.header("cookie") or "") > 10240),
    ("SizeRestrictions_BODY", "SizeRestrictions_Body", lambda r: len(r.body) > BODY_INSPECTION_LIMIT),
    ("SizeRestrictions_URIPATH", "SizeRestrictions_URIPath", lambda r: len(r.path) > 1024),
    ("EC2MetaDataSSRF_BODY", "EC2MetaDataSSRF_Body", lambda r: b"169.254.169.254" in _body(r)),
    ("EC2MetaDataSSRF_URIPATH", "EC2MetaDataSSRF_URIPath", lambda r: "169.254.169.254" in r.path),
    ("GenericLFI_URIPATH", "GenericLFI_URIPath", lambda r: "../" in r.path),
    ("GenericLFI_BODY", "GenericLFI_Body", lambda r: b"../" in _body(r) or b"..\\" in _body(r)),
    ("GenericRFI_BODY", "GenericRFI_Body", lambda r: re.search(rb"(?i)https?://\d{1,3}(\.\d{1,3}){3}", _body(r)) is not None),
    ("CrossSiteScripting_URIPATH", "CrossSiteScripting_URIPath", lambda r: "<script" in r.path.lower()),
    ("CrossSiteScripting_BODY", "CrossSiteScripting_Body", lambda r: re.search(rb"(?i)<script|javascript:|onerror\s*=", _body(r)) is not None),
]
MANAGED_GROUPS = {("AWS", "AWSManagedRulesCommonRuleSet"): COMMON_RULE_SET}


class _Terminate(Exception):
    def __init__(self, action: str, rule: str) -> None:
        self.action, self.rule = action, rule


def _field(r: WafRequest, field_to_match: Mapping[str, Any]) -> str | bytes:
    if "uriPath" in field_to_match:
        return r.path
    if "method" in field_to_match:
        return r.method
    if "singleHeader" in field_to_match:
        return r.header(field_to_match["singleHeader"]["name"]) or ""
    if "body" in field_to_match:
        return _body(r)
    if "queryString" in field_to_match:
        return r.query
    raise NotImplementedError(field_to_match)


def _transform(value: str | bytes, transformations: list[Mapping[str, Any]]) -> str | bytes:
    for t in sorted(transformations, key=lambda t: t["priority"]):
        if t["type"] == "LOWERCASE":
            value = value.lower()
        elif t["type"] != "NONE":
            raise NotImplementedError(t["type"])
    return value


def _matches(statement: Mapping[str, Any], r: WafRequest, labels: set[str], ip_sets: Mapping[str, list[str]]) -> bool:
    if "andStatement" in statement:
        return all(_matches(s, r, labels, ip_sets) for s in statement["andStatement"]["statements"])
    if "orStatement" in statement:
        return any(_matches(s, r, labels, ip_sets) for s in statement["orStatement"]["statements"])
    if "notStatement" in statement:
        return not _matches(statement["notStatement"]["statement"], r, labels, ip_sets)
    if "labelMatchStatement" in statement:
        s = statement["labelMatchStatement"]
        if s["scope"] == "LABEL":
            return s["key"] in labels
        return any(label.startswith(s["key"].rstrip(":") + ":") for label in labels)
    if "ipSetReferenceStatement" in statement:
        address = ipaddress.ip_address(r.source_ip)
        return any(address in ipaddress.ip_network(c) for c in ip_sets[statement["ipSetReferenceStatement"]["arn"]])
    if "rateBasedStatement" in statement:
        scope = statement["rateBasedStatement"].get("scopeDownStatement")
        return r.over_rate_limit and (scope is None or _matches(scope, r, labels, ip_sets))
    if "byteMatchStatement" in statement:
        s = statement["byteMatchStatement"]
        value = _transform(_field(r, s["fieldToMatch"]), s["textTransformations"])
        target: str | bytes = s["searchString"].encode() if isinstance(value, bytes) else s["searchString"]
        constraint = s["positionalConstraint"]
        if constraint == "EXACTLY":
            return value == target
        if constraint == "STARTS_WITH":
            return value.startswith(target)  # type: ignore[arg-type]
        if constraint == "ENDS_WITH":
            return value.endswith(target)  # type: ignore[arg-type]
        if constraint == "CONTAINS":
            return target in value  # type: ignore[operator]
        raise NotImplementedError(constraint)
    if "regexMatchStatement" in statement:
        s = statement["regexMatchStatement"]
        value = _transform(_field(r, s["fieldToMatch"]), s["textTransformations"])
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        return re.search(s["regexString"], text) is not None
    raise NotImplementedError(sorted(statement))


def _managed_group(rule: Mapping[str, Any], r: WafRequest, labels: set[str], ip_sets: Mapping[str, list[str]]) -> None:
    s = rule["statement"]["managedRuleGroupStatement"]
    scope = s.get("scopeDownStatement")
    if scope is not None and not _matches(scope, r, labels, ip_sets):
        return
    overrides = {o["name"]: next(iter(o["actionToUse"])) for o in s.get("ruleActionOverrides", [])}
    group_counts = "count" in rule.get("overrideAction", {})
    for name, label, predicate in MANAGED_GROUPS[(s["vendorName"], s["name"])]:
        if not predicate(r):
            continue
        labels.add(CRS + label)
        action = "count" if group_counts else overrides.get(name, "block")
        if action in ("block", "allow"):
            raise _Terminate(action.upper(), f"{rule['name']}:{name}")


def evaluate(acl: Mapping[str, Any], r: WafRequest, ip_sets: Mapping[str, list[str]]) -> Verdict:
    """`acl`: the WebAcl inputs (defaultAction, rules); `ip_sets`: IP set ARN -> CIDRs."""
    labels: set[str] = set()
    try:
        for rule in sorted(acl["rules"], key=lambda rule: rule["priority"]):
            if "managedRuleGroupStatement" in rule["statement"]:
                _managed_group(rule, r, labels, ip_sets)
                continue
            if not _matches(rule["statement"], r, labels, ip_sets):
                continue
            action = next(iter(rule["action"]))
            labels.update(label["name"] for label in rule.get("ruleLabels", []))
            if action in ("block", "allow"):
                raise _Terminate(action.upper(), rule["name"])
    except _Terminate as done:
        return Verdict(done.action, done.rule, frozenset(labels))
    return Verdict(next(iter(acl["defaultAction"])).upper(), None, frozenset(labels))
