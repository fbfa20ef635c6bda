"""Config values are accepted exactly when the system that will judge them accepts them.

Tables of accepted and refused values per key, run through the whole config model (so each
refusal is one message naming the stack, the key, the value and the rule in words), and
property-based checks against the real parsers Python has (ipaddress, zoneinfo) or a
reference grammar transcribed from the upstream source.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import zoneinfo
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.config import StackConfigError, parse_stack_config
from tests.support import SECRET_SETTINGS, parse, raw_stack, secret_keys_for

Raw = dict[str, Any]
PROFILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def with_value(env: str, dotted: str, value: Any) -> Raw:
    raw = copy.deepcopy(raw_stack(env))
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return raw


def error_of(raw: Raw) -> str | None:
    try:
        parse(raw)
    except StackConfigError as exc:
        return str(exc)
    return None


def assert_refused(raw: Raw, key: str, value_shown: str | None, fragment: str) -> None:
    message = error_of(raw)
    assert message is not None, f"{key} = {value_shown} was accepted"
    lines = message.splitlines()
    assert lines[0] == "stack 'test': invalid configuration in Pulumi.test.yaml:", message
    assert len(lines) == 2, f"one bad value gives one error, got:\n{message}"
    assert f"tf-serving-eks:{key}" in lines[1] or key.startswith("aws:"), message
    assert fragment in lines[1], f"{fragment!r} not in {message}"
    if value_shown is not None:
        assert value_shown in lines[1], message
    # Words, never a regular expression.
    for regex_token in ("pattern", "^", "$", "\\", "[a-z", "[0-9", "(?"):
        assert regex_token not in lines[1], f"regex-looking {regex_token!r} in {message}"


def assert_accepted(raw: Raw, what: str) -> None:
    message = error_of(raw)
    assert message is None, f"{what} was refused:\n{message}"


# --- Kubernetes quantities ----------------------------------------------------------------
# k8s.io/apimachinery/pkg/api/resource/quantity.go, the grammar in its doc comment, and
# suffix.go (decimal suffixes n u m "" k M G T P E; binary Ki .. Ei; exponents e/E<n>).
QUANTITY_GRAMMAR = re.compile(
    r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?"
)

CPU_ACCEPTED = ["1", "2", "1.5", "500m", "250m", ".5", "1.", "+1", "1500m", "0.25", "1e0", "15e-1"]
CPU_REFUSED = [
    ("2Gi", "binary unit"),
    ("512Mi", "binary unit"),
    ("0", "more than 0"),
    ("-1", "more than 0"),
    ("0.0005", "finer than 1m"),
    ("100u", "finer than 1m"),
    ("four", "not a Kubernetes quantity"),
    ("1.5.0", "not a Kubernetes quantity"),
    ("2 ", "not a Kubernetes quantity"),
    ("2cores", "not a Kubernetes quantity suffix"),
    ("1gi", "not a Kubernetes quantity suffix"),
]
MEMORY_ACCEPTED = ["6Gi", "6144Mi", "6G", "6e9", "6442450944", "5.5Gi", "4000M", "+6Gi", "6E9"]
MEMORY_REFUSED = [
    ("512m", "whole number of bytes"),
    ("0", "more than 0"),
    ("-1Gi", "more than 0"),
    ("8GB", "not a Kubernetes quantity suffix"),
    ("8gi", "not a Kubernetes quantity suffix"),
    ("1.5", "whole number of bytes"),
    ("Gi", "not a Kubernetes quantity"),
]


@pytest.mark.parametrize("value", CPU_ACCEPTED)
def test_cpu_accepts_decimal_core_counts(value: str) -> None:
    assert QUANTITY_GRAMMAR.fullmatch(value)
    # Prod's a10g nodes hold any of these (dev shares each GPU between two pods, so its fit
    # rule would refuse the larger ones for a reason that is not the grammar).
    assert_accepted(with_value("prod", "serving.cpu", value), f"serving.cpu {value}")


@pytest.mark.parametrize("value, fragment", CPU_REFUSED)
def test_cpu_refuses_what_is_not_a_core_count(value: str, fragment: str) -> None:
    assert_refused(with_value("dev", "serving.cpu", value), "serving.cpu", f'"{value}"', fragment)


@pytest.mark.parametrize("value", MEMORY_ACCEPTED)
def test_memory_accepts_byte_quantities(value: str) -> None:
    assert_accepted(with_value("dev", "serving.memory", value), f"serving.memory {value}")


@pytest.mark.parametrize("value, fragment", MEMORY_REFUSED)
def test_memory_refuses_what_is_not_whole_bytes(value: str, fragment: str) -> None:
    assert_refused(with_value("dev", "serving.memory", value), "serving.memory", f'"{value}"', fragment)


@PROFILE
@given(st.text(alphabet="0123456789.+-eEKMGTPmkiunx ", min_size=1, max_size=8))
def test_quantity_parser_accepts_exactly_the_grammar(text: str) -> None:
    from components.validation import parse_quantity

    try:
        parse_quantity(text)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == bool(QUANTITY_GRAMMAR.fullmatch(text)), text


def test_memory_in_mib_is_exact_for_every_unit() -> None:
    from components.config import cpu_milli, memory_mib

    assert memory_mib("6Gi") == memory_mib("6144Mi") == memory_mib("6442450944") == 6144
    assert memory_mib("6G") == -(-6_000_000_000 // 2**20)  # rounded up, never under-counted
    assert cpu_milli("1.5") == cpu_milli("1500m") == cpu_milli("15e-1") == 1500


# --- KEDA cron --------------------------------------------------------------------------
# kedacore/keda v2.20.2 pkg/scalers/cron_scaler.go: cron.NewParser(Minute | Hour | Dom |
# Month | Dow) (robfig/cron v3 parser.go: exactly five fields, no descriptors, bounds of
# spec.go: minute 0-59, hour 0-23, dom 1-31, month 1-12/jan-dec, dow 0-6/sun-sat).

CRON_ACCEPTED = [
    "0 8 * * 1-5",
    "*/15 * * * *",
    "0 0 1 jan *",
    "0 9 * * MON-FRI",
    "5/15 * * * *",
    "0 0 29 2 *",
    "0 0 * * ?",
    "0,30 7-9 * * sun,sat",
    "0 0 31 * *",
    "0 0 31 2 1",  # Feb 31 never, but both day fields restricted: either matching fires
]
CRON_REFUSED = [
    ("@daily", "descriptors"),
    ("0 0 8 * * *", "has 6 field(s)"),
    ("0 8 * *", "has 4 field(s)"),
    ("0 24 * * *", "hour field"),
    ("60 * * * *", "minute field"),
    ("0 8 * * 7", "day of week field"),
    ("0 8 0 * *", "day of month field"),
    ("0 8 * 13 *", "month field"),
    ("0 0 31 2 *", "never fires"),
    ("0 0 30 feb *", "never fires"),
    ("TZ=UTC 0 8 * * *", "off_hours.timezone"),
    ("0 8 * * 1-5/0", "step"),
    ("0 8 5-1 * *", "backwards"),
    ("0 8 L * *", "not a number"),
    ("0 8 * * 1-2-3", "too many '-'"),
]


@pytest.mark.parametrize("value", CRON_ACCEPTED)
def test_off_hours_accepts_what_keda_parses(value: str) -> None:
    assert_accepted(with_value("dev", "autoscaling.off_hours.start", value), f"cron {value}")


@pytest.mark.parametrize("value, fragment", CRON_REFUSED)
def test_off_hours_refuses_what_keda_refuses_or_never_fires(value: str, fragment: str) -> None:
    assert_refused(
        with_value("dev", "autoscaling.off_hours.start", value),
        "autoscaling.off_hours.start",
        f'"{value}"',
        fragment,
    )


def test_off_hours_start_and_end_must_differ() -> None:
    raw = with_value("dev", "autoscaling.off_hours.start", "0 8 * * 1-5")
    raw["autoscaling"]["off_hours"]["end"] = "0 8 * * 1-5"
    assert_refused(raw, "autoscaling.off_hours.end", '"0 8 * * 1-5"', "must differ from start")


@PROFILE
@given(
    st.integers(-1, 61), st.integers(-1, 25), st.integers(-1, 32), st.integers(-1, 13), st.integers(-1, 8)
)
def test_cron_numbers_are_bounded_as_robfig_bounds_them(m: int, h: int, dom: int, mon: int, dow: int) -> None:
    from components.validation import cron_schedule

    inside = 0 <= m <= 59 and 0 <= h <= 23 and 1 <= dom <= 31 and 1 <= mon <= 12 and 0 <= dow <= 6
    try:
        cron_schedule(f"{m} {h} {dom} {mon} {dow}")
        accepted = True
    except ValueError:
        accepted = False
    # With both day fields restricted robfig fires on either, so every in-bounds date fires.
    assert accepted == inside


# --- IANA time zones --------------------------------------------------------------------
# KEDA loads off_hours.timezone with Go time.LoadLocation (cron_scaler.go
# GetMetricsAndActivity): any zoneinfo name, plus "" (UTC) and "Local" (the pod's own zone).


@PROFILE
@given(st.sampled_from(sorted(zoneinfo.available_timezones())))
def test_every_iana_zone_is_accepted(zone: str) -> None:
    zoneinfo.ZoneInfo(zone)  # the real database knows it
    assert_accepted(with_value("dev", "autoscaling.off_hours.timezone", zone), f"zone {zone}")


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("Local", "KEDA operator pod's own zone"),
        ("", "not an IANA time zone"),
        ("europe/berlin", "did you mean Europe/Berlin"),
        ("CEST", "not an IANA time zone"),
        ("UTC+2", "not an IANA time zone"),
        ("Mars/Olympus_Mons", "not an IANA time zone"),
        ("../etc/passwd", "not an IANA time zone"),
    ],
)
def test_unknown_time_zones_are_refused(value: str, fragment: str) -> None:
    assert_refused(
        with_value("dev", "autoscaling.off_hours.timezone", value),
        "autoscaling.off_hours.timezone",
        f'"{value}"',
        fragment,
    )


# --- S3 bucket names --------------------------------------------------------------------
# S3 user guide, "General purpose bucket naming rules".

BUCKETS_ACCEPTED = ["abc", "my-models-1", "a" * 63, "1models", "models--x"]
BUCKETS_REFUSED = [
    ("ab", "3 to 63"),
    ("a" * 64, "3 to 63"),
    ("My-bucket", "lower-case"),
    ("a_b", "lower-case"),
    ("-abc", "start and end"),
    ("abc-", "start and end"),
    ("xn--abc", "prefix 'xn--'"),
    ("sthree-abc", "prefix 'sthree-'"),
    ("amzn-s3-demo-abc", "prefix 'amzn-s3-demo-'"),
    ("abc-s3alias", "suffix '-s3alias'"),
    ("abc--ol-s3", "suffix '--ol-s3'"),
    ("abc.mrap", "suffix '.mrap'"),
    ("abc--x-s3", "suffix '--x-s3'"),
    ("abc--table-s3", "suffix '--table-s3'"),
    ("192.168.1.1", "IP address"),
    ("a..b", "adjacent dots"),
    ("my.models", "must not contain '.'"),
]


@pytest.mark.parametrize("value", BUCKETS_ACCEPTED)
def test_bucket_names_s3_accepts(value: str) -> None:
    assert_accepted(with_value("dev", "model_store.bucket_name", value), f"bucket {value}")


@pytest.mark.parametrize("value, fragment", BUCKETS_REFUSED)
def test_bucket_names_s3_refuses(value: str, fragment: str) -> None:
    assert_refused(with_value("dev", "model_store.bucket_name", value), "model_store.bucket_name", None, fragment)


@pytest.mark.parametrize("cluster", ["xn--tfs", "sthree-tfs", "amzn-s3-demo-tfs"])
def test_a_derived_bucket_name_obeys_the_same_rules(cluster: str) -> None:
    raw = with_value("dev", "cluster.name", cluster)
    assert_refused(raw, "model_store.bucket_name", None, "reserves the bucket name prefix")


# --- AWS tags ---------------------------------------------------------------------------
# Tagging AWS resources, "Tag naming limits and requirements".


@pytest.mark.parametrize(
    "tags",
    [
        {"cost-center": "ml"},
        {"Team Name": "Data Science"},
        {"ключ": "значение"},
        {"k": ""},
        {"k" * 128: "v" * 256},
        {"a:b/c=d+e@f_g.h-i": "x y"},
        {f"t{i}": "x" for i in range(46)},
    ],
)
def test_tags_aws_accepts(tags: dict[str, str]) -> None:
    assert_accepted(with_value("dev", "tags", tags), f"tags {tags}")


@pytest.mark.parametrize(
    "tags, key, fragment",
    [
        ({"aws:owner": "x"}, "tags", "reserved for AWS"),
        ({"AWS:Owner": "x"}, "tags", "reserved for AWS"),
        ({"k" * 129: "x"}, "tags", "1 to 128"),
        ({"k": "v" * 257}, "tags.k", "at most 256"),
        ({"k!": "x"}, "tags", "letters, digits, spaces"),
        ({"k": "a,b"}, "tags.k", "letters, digits, spaces"),
        ({f"t{i}": "x" for i in range(47)}, "tags", "50 tags per resource"),
        ({"environment": "other"}, "tags.environment", "tags the stack sets itself"),
    ],
)
def test_tags_aws_refuses(tags: dict[str, str], key: str, fragment: str) -> None:
    assert_refused(with_value("dev", "tags", tags), key, None, fragment)


def test_tag_rules_name_the_key_and_count_exactly() -> None:
    """The whole line, byte for byte: the count rule names `tags` itself (no trailing dot,
    no pool of nested keys), the override rule names the tag."""
    head = "stack 'test': invalid configuration in Pulumi.test.yaml:\n"
    too_many = {f"t{i}": "x" for i in range(47)}
    assert error_of(with_value("dev", "tags", too_many)) == head + (
        "  - tf-serving-eks:tags: AWS takes 50 tags per resource and the stack sets 4 itself: "
        'at most 46 (got "47 tags")'
    )
    # A base tag is not counted as room taken: it is refused for what it is.
    assert "tags.project: is one of the tags" in str(
        error_of(with_value("dev", "tags", {**{f"t{i}": "x" for i in range(46)}, "project": "p"}))
    )
    assert error_of(with_value("dev", "tags", {"stack": "s", "environment": "e"})) == head + (
        "  - tf-serving-eks:tags.environment: is one of the tags the stack sets itself "
        '(project, stack, environment, managed-by) (got "e")'
    )


# --- Secrets ------------------------------------------------------------------------------


@pytest.mark.parametrize("length, ok", [(0, False), (19, False), (20, True), (64, True)])
def test_api_key_is_at_least_20_characters_and_never_shown(length: int, ok: bool) -> None:
    raw = with_value("dev", "ingress_api_key", "k" * length)
    if ok:
        assert_accepted(raw, f"an API key of {length} characters")
        return
    assert error_of(raw) == (
        "stack 'test': invalid configuration in Pulumi.test.yaml:\n"
        '  - tf-serving-eks:ingress_api_key: must be at least 20 characters (got "(hidden)")'
    )


@pytest.mark.parametrize("key", SECRET_SETTINGS)
def test_a_secret_in_clear_is_refused_before_its_other_rules(key: str) -> None:
    value: Any = {"oncall": "u"} if key == "alerting_secrets" else "short"
    raw = with_value("dev", key, value)
    marked = secret_keys_for(raw)
    # Marked as a secret, the value is judged on its own rules only.
    try:
        parse_stack_config(raw, "test", secret_keys=marked)
    except StackConfigError as exc:
        assert key == "ingress_api_key" and "at least 20 characters" in str(exc), exc
    with pytest.raises(StackConfigError) as info:
        parse_stack_config(raw, "test", secret_keys=secret_keys_for(raw, clear=(key,)))
    assert str(info.value) == (
        "stack 'test': invalid configuration in Pulumi.test.yaml:\n"
        f"  - tf-serving-eks:{key}: is in the stack file in clear; set it with "
        '`pulumi config set --secret` (got "(hidden)")'
    )


# --- Host names and ACM -----------------------------------------------------------------
# Gateway API Hostname (lower-case RFC 1123 labels), ACM DomainName (253 characters, labels
# of 63, the first name at most 64 as the certificate's common name).


def _ingress(env: str, **fields: Any) -> Raw:
    raw = copy.deepcopy(raw_stack(env))
    raw["ingress"].update(fields)
    return raw


@pytest.mark.parametrize(
    "domain, rest",
    [
        ("example.com", "api.example.com"),
        ("example.xn--p1ai", "api.example.xn--p1ai"),
        ("example.com", "a-b.c1.example.com"),
        ("example.com", f"{'a' * 52}.example.com"),  # 64 characters: the common name limit
    ],
)
def test_host_names_accepted(domain: str, rest: str) -> None:
    assert_accepted(_ingress("dev", domain=domain, rest_host=rest, grpc_host=f"grpc.{domain}"), rest)


@pytest.mark.parametrize(
    "rest, fragment",
    [
        ("Api.example.com", "lower-case DNS name"),
        ("*.example.com", "lower-case DNS name"),
        ("api_.example.com", "lower-case DNS name"),
        ("-api.example.com", "lower-case DNS name"),
        (f"{'a' * 64}.example.com", "lower-case DNS name"),
        (f"{'a' * 53}.example.com", "common name of the ACM certificate"),
    ],
)
def test_host_names_refused(rest: str, fragment: str) -> None:
    assert_refused(_ingress("dev", rest_host=rest), "ingress.rest_host", None, fragment)


def test_long_host_is_fine_with_a_certificate_of_ones_own() -> None:
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012"
    rest = f"{'a' * 53}.example.com"
    assert_accepted(_ingress("dev", rest_host=rest, certificate_arn=arn), rest)


def test_numeric_top_level_label_is_refused() -> None:
    raw = _ingress("dev", domain="example.123")
    assert_refused(raw, "ingress.domain", None, "last label not all digits")


# --- Kubernetes names and namespaces ------------------------------------------------------
# k8s.io/apimachinery/pkg/util/validation/validation.go: Namespaces are DNS-1123 labels,
# Services DNS-1035 labels, label and taint keys qualified names.


def test_service_name_must_start_with_a_letter_but_a_namespace_need_not() -> None:
    assert_refused(with_value("dev", "serving.name", "1tfs"), "serving.name", '"1tfs"', "DNS-1035")
    assert_accepted(with_value("dev", "serving.namespace", "1tfs"), "namespace 1tfs")


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("serving.namespace", "kube-system", "kube- prefix is reserved"),
        ("serving.namespace", "kube-public", "kube- prefix is reserved"),
        ("serving.namespace", "kube-node-lease", "kube- prefix is reserved"),
        ("serving.namespace", "kube-anything", "kube- prefix is reserved"),
        ("serving.namespace", "default", "belongs to Kubernetes"),
        ("serving.namespace", "nvidia", "NVIDIA device plugin"),
        ("serving.namespace", "keda", "KEDA"),
        ("monitoring.namespace", "kube-system", "kube- prefix is reserved"),
        ("monitoring.namespace", "tf-serving", "must differ from serving.namespace"),
        ("serving.namespace", "Serving", "DNS-1123 label"),
        ("serving.namespace", "a" * 41, "at most 40 characters"),
    ],
)
def test_namespaces_we_create_are_ours_to_create(key: str, value: str, fragment: str) -> None:
    assert_refused(with_value("dev", key, value), key, f'"{value}"', fragment)


def test_an_existing_operator_namespace_is_not_ours_so_any_name_goes() -> None:
    raw = with_value("dev", "monitoring.mode", "existing-operator")
    raw["monitoring"]["namespace"] = "kube-monitoring"
    raw["autoscaling"]["prometheus_url"] = "http://prometheus.kube-monitoring:9090"
    assert_accepted(raw, "existing operator in kube-monitoring")


@pytest.mark.parametrize(
    "key, ok",
    [
        ("nvidia.com/gpu", True),
        ("gpu", True),
        ("example.com/a.b_c-d", True),
        ("a/b/c", False),
        ("Example.com/gpu", False),
        ("example.com/" + "a" * 64, False),
        ("/gpu", False),
        ("example.com/", False),
    ],
)
def test_taint_keys_are_qualified_names(key: str, ok: bool) -> None:
    raw = copy.deepcopy(raw_stack("dev"))
    raw["gpu_pools"]["l4"]["taint"] = {"key": key}
    if ok:
        assert_accepted(raw, f"taint key {key}")
    else:
        assert_refused(raw, "gpu_pools.l4.taint.key", f'"{key}"', "qualified name")


def test_rule_label_keys_may_carry_a_prefix() -> None:
    raw = with_value("dev", "monitoring.rule_labels", {"team.example.com/owner": "ml"})
    assert_accepted(raw, "prefixed rule label")


# --- CIDRs --------------------------------------------------------------------------------
# AWS VPC: IPv4 /16 to /28. EKS public access: IPv4, no reserved addresses, 40 blocks.
# AWS WAF IPSet: every prefix but /0.


def _expected_cidr(text: str, low: int, high: int) -> bool:
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        return False
    return "/" in text and network.version == 4 and low <= network.prefixlen <= high


@PROFILE
@given(st.ip_addresses(v=4), st.integers(0, 33))
def test_vpc_cidr_bounds_agree_with_ipaddress(address: ipaddress.IPv4Address, prefix: int) -> None:
    from components.validation import ipv4_cidr
    from pydantic import TypeAdapter

    text = f"{address}/{prefix}"
    try:
        TypeAdapter(Annotated[ipaddress.IPv4Network, ipv4_cidr(16, 28, "AWS VPCs")]).validate_python(text)
        accepted = True
    except Exception:
        accepted = False
    assert accepted == _expected_cidr(text, 16, 28), text


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("10.0.0.0/15", "/16 to /28"),
        ("10.0.0.0/29", "/16 to /28"),
        ("fd00::/16", "IPv4"),
        ("10.0.0.1/16", "host bits set"),
        ("10.0.0.0", "prefix length"),
    ],
)
def test_vpc_cidr_refused(value: str, fragment: str) -> None:
    assert_refused(with_value("dev", "cluster.vpc.cidr", value), "cluster.vpc.cidr", f'"{value}"', fragment)


@pytest.mark.parametrize(
    "cidrs, fragment",
    [
        (["10.0.0.0/8"], "private or reserved"),
        (["192.168.1.0/24"], "private or reserved"),
        (["127.0.0.1/32"], "private or reserved"),
        (["2001:db8::/32"], "IPv4"),
        ([f"198.51.{i}.0/24" for i in range(41)], "at most 40"),
    ],
)
def test_eks_public_access_cidrs_refused(cidrs: list[str], fragment: str) -> None:
    raw = with_value("dev", "cluster.endpoint.public_access_cidrs", cidrs)
    assert_refused(raw, "cluster.endpoint.public_access_cidrs", None, fragment)


@pytest.mark.parametrize(
    "cidrs, fragment",
    [
        (["0.0.0.0/0"], "every prefix but /0"),
        (["2001:db8::/32"], "IPv4"),
        (["203.0.113.5/24"], "host bits set"),
    ],
)
def test_waf_allowlist_refused_in_every_environment(cidrs: list[str], fragment: str) -> None:
    raw = with_value("dev", "ingress.access.allowed_cidrs", cidrs)
    assert_refused(raw, "ingress.access.allowed_cidrs", None, fragment)


OPEN_ALLOWLISTS = [
    ["0.0.0.0/1", "128.0.0.0/1"],
    [f"{i}.0.0.0/8" for i in range(256) if i not in (10, 127)] + ["10.0.0.0/8"],
    ["1.0.0.0/8", "0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/2"],
]


@pytest.mark.parametrize("cidrs", OPEN_ALLOWLISTS)
def test_prod_refuses_an_allowlist_that_lets_everyone_in(cidrs: list[str]) -> None:
    raw = with_value("prod", "ingress.access.allowed_cidrs", cidrs)
    assert_refused(raw, "ingress.access.allowed_cidrs", None, "set public: true")
    raw = with_value("prod", "cluster.endpoint.public_access_cidrs", cidrs[:40])
    if len(cidrs) <= 40:
        assert_refused(raw, "cluster.endpoint.public_access_cidrs", None, "every address")


def test_dev_may_use_a_wide_allowlist_and_prod_a_narrow_one() -> None:
    assert_accepted(with_value("dev", "ingress.access.allowed_cidrs", OPEN_ALLOWLISTS[0]), "dev wide")
    assert_accepted(with_value("prod", "ingress.access.allowed_cidrs", ["0.0.0.0/1"]), "prod half")


# --- AWS WAF values -----------------------------------------------------------------------
# WAF RateBasedStatement: Limit 10 to 2,000,000,000; EvaluationWindowSec 60, 120, 300, 600.


@pytest.mark.parametrize("value, ok", [(9, False), (10, True), (2_000_000_000, True), (2_000_000_001, False)])
def test_rate_limit_bounds(value: int, ok: bool) -> None:
    raw = with_value("dev", "ingress.access.rate_limit", value)
    if ok:
        assert_accepted(raw, f"rate limit {value}")
    else:
        assert_refused(raw, "ingress.access.rate_limit", str(value), "")


@pytest.mark.parametrize("value, ok", [(60, True), (120, True), (300, True), (600, True), (30, False), (900, False)])
def test_rate_limit_windows(value: int, ok: bool) -> None:
    raw = with_value("dev", "ingress.access.rate_limit_window_seconds", value)
    if ok:
        assert_accepted(raw, f"window {value}")
    else:
        assert_refused(raw, "ingress.access.rate_limit_window_seconds", str(value), "")


@pytest.mark.parametrize(
    "value, ok, fragment",
    [
        ("x-api-key", True, ""),
        ("api_key", True, ""),
        ("x.key", True, ""),
        ("X-Api-Key", False, "lower-case"),
        ("grpc-key", False, "grpc- prefix"),
        ("key-bin", False, "base64"),
        ("host", False, "sets itself"),
        ("x-amzn-trace-id", False, "sets itself"),
        ("a" * 65, False, "1 to 64"),
    ],
)
def test_api_key_header_names(value: str, ok: bool, fragment: str) -> None:
    raw = copy.deepcopy(raw_stack("dev"))
    raw["ingress"]["access"] = {"require_api_key": True, "api_key_header": value}
    raw["ingress_api_key"] = "k" * 24
    if ok:
        assert_accepted(raw, f"header {value}")
    else:
        assert_refused(raw, "ingress.access.api_key_header", f'"{value}"', fragment)
