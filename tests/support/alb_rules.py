"""What the ALB does with our Gateway API routes: the AWS Load Balancer Controller's
translation of HTTPRoute / GRPCRoute rules into listener rules, and the ALB's evaluation of
one request against them. A pure function of (routes, request) -> outcome, for any test that
asks "where does this request go".

Sources (kubernetes-sigs/aws-load-balancer-controller v3.5.0):
- pkg/gateway/routeutils/route_rule_condition.go: one rule per match (and per hostname),
  conditions ANDed: host-header; HTTP path PathPrefix `/p` -> patterns `/p`, `/p/*` (`/` ->
  `/*`), Exact -> the value as is, RegularExpression -> regex values; GRPC method
  service+method -> `/<service>/<method>`, service only -> `/<service>/*`, method only ->
  `/*/<method>`, no method -> `/*` (Exact and RegularExpression alike: the value becomes an ALB
  wildcard pattern); header values split on unescaped commas.
- pkg/gateway/routeutils/route_rule_precedence.go: priority order by hostname specificity,
  path type (Exact > Prefix > Regex > none), primary length (HTTP path / GRPC service),
  secondary length (GRPC method), HTTP method, header count, query count, then creation time,
  route namespace/name, rule index, match index.
- pkg/gateway/model/model_build_listener.go: priorities 1..n in that order; a rule whose
  backends all weigh 0 answers a fixed 500; the listener's default action is a fixed 404
  (text/plain) for a request no rule matches.
- pkg/gateway/routeutils/backend.go: a backendRef without weight weighs 1.

ALB matching (Elastic Load Balancing docs, "Condition types for listener rules" and
PathPatternConditionConfig): path patterns are case-sensitive, compared with the path only
(no query string), `*` matches 0 or more characters and `?` exactly one; host names and HTTP
header values are compared case-insensitively with the same wildcards.

It models the controller and the ALB only, from the rendered routes; it must not import the
code under test.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HTTP_ROUTE = "HTTPRoute"
GRPC_ROUTE = "GRPCRoute"
DEFAULT_STATUS = 404  # the listener's default action
NO_BACKEND_STATUS = 500
DEFAULT_HTTP_PATH = {"type": "PathPrefix", "value": "/"}


@dataclass(frozen=True)
class Condition:
    field: str  # host-header | path-pattern | http-header | http-request-method
    values: tuple[str, ...]
    header: str | None = None
    regex: bool = False


@dataclass(frozen=True)
class Backend:
    name: str
    port: int
    weight: int


@dataclass(frozen=True)
class ListenerRule:
    priority: int
    conditions: tuple[Condition, ...]
    backends: tuple[Backend, ...]
    redirect: Mapping[str, Any] | None
    source: str  # route/rule/match, for messages


@dataclass(frozen=True)
class Request:
    host: str
    path: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """Where a request goes: the backends that can receive it (weight > 0, with their
    weights), or a fixed status (404 default, 500 no backend, 3xx redirect)."""

    backends: tuple[Backend, ...]
    status: int | None
    rule: ListenerRule | None

    @property
    def refused(self) -> bool:
        return not self.backends

    def services(self) -> set[str]:
        return {b.name for b in self.backends}


def _glob(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, 0 if case_sensitive else re.IGNORECASE | re.DOTALL)


def _header_values(value: str) -> tuple[str, ...]:
    """generateValuesFromMatchHeaderValue: unescaped commas split, `\\x` is `x`."""
    values, current, i = [], "", 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            current += value[i + 1]
            i += 2
            continue
        if value[i] == ",":
            values.append(current)
            current = ""
        else:
            current += value[i]
        i += 1
    values.append(current)
    return tuple(values)


def _http_conditions(match: Mapping[str, Any]) -> list[Condition]:
    out = []
    path = match.get("path")
    if path is not None:
        kind, value = path.get("type", "PathPrefix"), path.get("value", "/")
        if kind == "PathPrefix":
            if "*" in value or "?" in value:
                raise ValueError(f"prefix path shouldn't contain wildcards: {value}")
            trimmed = value.rstrip("/")
            out.append(Condition("path-pattern", ("/*",) if value == "/" else (trimmed, f"{trimmed}/*")))
        elif kind == "Exact":
            out.append(Condition("path-pattern", (value,)))
        else:
            out.append(Condition("path-pattern", (value,), regex=True))
    for header in match.get("headers", []):
        regex = header.get("type", "Exact") == "RegularExpression"
        values = (header["value"],) if regex else _header_values(header["value"])
        out.append(Condition("http-header", values, header=header["name"], regex=regex))
    if "queryParams" in match:
        raise NotImplementedError("query string conditions")
    if "method" in match:
        out.append(Condition("http-request-method", (match["method"],)))
    return out


def _grpc_conditions(match: Mapping[str, Any]) -> list[Condition]:
    method = match.get("method")
    if not method:
        pattern = "/*"
    else:
        service, name = method.get("service"), method.get("method")
        if service and name:
            pattern = f"/{service}/{name}"
        elif service:
            pattern = f"/{service}/*"
        elif name:
            pattern = f"/*/{name}"
        else:
            raise ValueError(f"invalid grpc method match: {method}")
    out = [Condition("path-pattern", (pattern,))]
    for header in match.get("headers", []):
        # The controller ignores the header match type for gRPC: values are literal.
        out.append(Condition("http-header", _header_values(header["value"]), header=header["name"]))
    return out


def _host_key(hostname: str) -> tuple[int, int, int, int]:
    if hostname == "":
        return (1, 0, 0, 0)
    return (0, int(hostname.startswith("*.")), -hostname.count("."), -len(hostname))


def _precedence(kind: str, match: Mapping[str, Any]) -> tuple[int, ...]:
    """(-path type, -primary length, -secondary length, no method, -headers, -query params)."""
    if kind == HTTP_ROUTE:
        path = match.get("path")
        types = {"Exact": 3, "PathPrefix": 2, "RegularExpression": 1}
        path_type = types.get(path.get("type", "PathPrefix"), 0) if path is not None else 0
        length = len(path.get("value", "/")) if path is not None else 0
        return (-path_type, -length, 0, int("method" not in match), -len(match.get("headers", [])), -len(match.get("queryParams", [])))
    method = match.get("method")
    path_type = 0 if not method else {"Exact": 3, "RegularExpression": 1}.get(method.get("type", "Exact"), 0)
    service = len(method.get("service", "")) if method else 0
    name = len(method.get("method", "")) if method else 0
    return (-path_type, -service, -name, 1, -len(match.get("headers", [])), 0)


def _attached(route: Mapping[str, Any], section: str) -> bool:
    return any(p.get("sectionName") in (None, section) for p in route["spec"].get("parentRefs", []))


def listener_rules(routes: Iterable[Mapping[str, Any]], section: str = "https") -> list[ListenerRule]:
    """The ALB listener rules the controller builds for the routes attached to `section`,
    in priority order. `routes` are whole objects (kind, metadata, spec), in creation order."""
    entries = []
    for created, route in enumerate(routes):
        if not _attached(route, section):
            continue
        kind = route["kind"]
        namespaced = f"{route['metadata'].get('namespace', '')}/{route['metadata']['name']}"
        hostnames = route["spec"].get("hostnames") or [""]
        for rule_index, rule in enumerate(route["spec"].get("rules", [])):
            matches = rule.get("matches") or [None]
            if kind == HTTP_ROUTE:
                # The HTTPRoute CRD defaults a missing match list or path to PathPrefix `/`.
                matches = [{"path": DEFAULT_HTTP_PATH, **(m or {})} for m in matches]
            for match_index, match in enumerate(matches):
                m = match or {}
                for hostname in hostnames:
                    key = (
                        _host_key(hostname),
                        _precedence(kind, m) if match is not None else (0, 0, 0, 1, 0, 0),
                        created,
                        namespaced,
                        rule_index,
                        match_index if match is not None else 1 << 30,
                        hostname,
                    )
                    conditions = [Condition("host-header", (hostname,))] if hostname else []
                    conditions += _http_conditions(m) if kind == HTTP_ROUTE else _grpc_conditions(m)
                    backends = tuple(
                        Backend(b["name"], b["port"], b.get("weight", 1)) for b in rule.get("backendRefs", [])
                    )
                    redirect = next(
                        (f["requestRedirect"] for f in rule.get("filters", []) if f.get("type") == "RequestRedirect"),
                        None,
                    )
                    source = f"{namespaced} rule {rule_index} match {match_index}"
                    entries.append((key, tuple(conditions), backends, redirect, source))
    entries.sort(key=lambda e: e[0])
    return [
        ListenerRule(priority, conditions, backends, redirect, source)
        for priority, (_, conditions, backends, redirect, source) in enumerate(entries, start=1)
    ]


def _condition_matches(condition: Condition, request: Request) -> bool:
    if condition.regex:
        raise NotImplementedError("ALB regex conditions: semantics not modelled")
    if condition.field == "host-header":
        host = request.host.rsplit(":", 1)[0] if ":" in request.host else request.host
        return any(_glob(v, case_sensitive=False).fullmatch(host) for v in condition.values)
    if condition.field == "path-pattern":
        path = request.path.split("?", 1)[0]
        return any(_glob(v, case_sensitive=True).fullmatch(path) for v in condition.values)
    if condition.field == "http-header":
        assert condition.header is not None
        headers = {k.lower(): v for k, v in request.headers.items()}
        value = headers.get(condition.header.lower())
        return value is not None and any(_glob(v, case_sensitive=False).fullmatch(value) for v in condition.values)
    if condition.field == "http-request-method":
        return request.method in condition.values
    raise NotImplementedError(condition.field)


def evaluate(rules: list[ListenerRule], request: Request) -> Outcome:
    """The first rule (lowest priority number) whose conditions all hold, else the default."""
    for rule in rules:
        if all(_condition_matches(c, request) for c in rule.conditions):
            if rule.redirect is not None:
                return Outcome((), int(rule.redirect.get("statusCode", 302)), rule)
            live = tuple(b for b in rule.backends if b.weight > 0)
            return Outcome(live, None if live else NO_BACKEND_STATUS, rule)
    return Outcome((), DEFAULT_STATUS, None)


def route(routes: Iterable[Mapping[str, Any]], request: Request, section: str = "https") -> Outcome:
    return evaluate(listener_rules(routes, section), request)
