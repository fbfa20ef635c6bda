"""Field rules that agree with the systems that will judge the values, stated in words.

Each checker takes the value and raises `ValueError(<the rule in words>)` when the
downstream system (Kubernetes, KEDA, AWS) would refuse it, or would accept it and then
misbehave. `config.format_errors` prints the message with the stack, key and value, so a
user never sees a regular expression.
"""

from __future__ import annotations

import calendar
import ipaddress
import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any

from pydantic import AfterValidator, BeforeValidator


def worded(pattern: str, rule: str, max_length: int | None = None, min_length: int = 0) -> Any:
    """A string check against `pattern`, whose error is `rule` (words, not the regex):
    use as `Annotated[str, worded(...)]`."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not min_length <= len(value) <= (max_length if max_length is not None else len(value)):
            bounds = f"{min_length} to {max_length}" if max_length is not None else f"at least {min_length}"
            raise ValueError(f"must be {bounds} characters long ({len(value)} given); {rule}")
        if not compiled.fullmatch(value):
            raise ValueError(rule)
        return value

    return AfterValidator(check)


def checked(check: Callable[[str], None]) -> Any:
    """A string check refused with the words `check` raises: `Annotated[str, checked(...)]`."""

    def run(value: str) -> str:
        check(value)
        return value

    return AfterValidator(run)


# --- Kubernetes names (k8s.io/apimachinery/pkg/util/validation/validation.go) ---------------

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def dns1123_label(value: str, max_length: int = 63) -> None:
    """IsDNS1123Label: Namespace names and most object names."""
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters ({len(value)} given)")
    if not value or len(value) > max_length or not _DNS1123_LABEL.fullmatch(value):
        raise ValueError(
            f"must be a DNS-1123 label: 1 to {max_length} lower-case letters, digits or '-', "
            "starting and ending with a letter or digit"
        )


def dns1035_label(value: str, max_length: int = 63) -> None:
    """IsDNS1035Label: Service names (they become DNS names, so they start with a letter)."""
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters ({len(value)} given)")
    if not value or len(value) > max_length or not _DNS1035_LABEL.fullmatch(value):
        raise ValueError(
            f"must be a DNS-1035 label (a Service name): 1 to {max_length} lower-case letters, "
            "digits or '-', starting with a letter and ending with a letter or digit"
        )


def dns1123_subdomain(value: str, max_length: int = 253) -> None:
    """IsDNS1123Subdomain: dot-separated DNS-1123 labels, 253 characters in all."""
    if not value or len(value) > max_length or not all(
        _DNS1123_LABEL.fullmatch(part) for part in value.split(".")
    ):
        raise ValueError(
            f"must be a DNS-1123 subdomain: at most {max_length} characters of dot-separated "
            "labels of lower-case letters, digits or '-', each starting and ending with a letter "
            "or digit"
        )


def qualified_name(value: str) -> None:
    """IsQualifiedName: label and taint keys, `[prefix/]name`, prefix a DNS subdomain."""
    prefix, slash, name = value.rpartition("/")
    rule = (
        "must be a Kubernetes qualified name: an optional DNS subdomain prefix and '/', then 1 "
        "to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    )
    if not name or len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        raise ValueError(rule)
    if slash:
        try:
            dns1123_subdomain(prefix)
        except ValueError:
            raise ValueError(rule) from None
        if "/" in prefix:
            raise ValueError(rule)


def label_value(value: str) -> None:
    """IsValidLabelValue: empty, or up to 63 characters of the qualified-name alphabet."""
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ValueError(
            "must be a Kubernetes label value: empty, or at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit"
        )


# Namespaces Kubernetes owns: the `kube-` prefix is reserved for its system namespaces
# (kubernetes.io docs, "Namespaces": "Avoid creating namespaces with the prefix kube-"), and
# `default` always exists and cannot be deleted, so a Namespace object of ours named so
# fails to create (AlreadyExists) or, on destroy, to delete.
def reserved_namespace(value: str) -> str | None:
    if value.startswith("kube-"):
        return "the kube- prefix is reserved for Kubernetes system namespaces"
    if value == "default":
        return "'default' belongs to Kubernetes (it always exists and cannot be deleted)"
    return None


# --- Kubernetes quantities (k8s.io/apimachinery/pkg/api/resource/quantity.go) --------------
#
#   <quantity>        ::= <signedNumber><suffix>
#   <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
#   <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
#   <decimalSI>       ::= m | "" | k | M | G | T | P | E     (suffix.go also takes n and u)
#   <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
#   <signedNumber>    ::= <number> | <sign><number>
#   <sign>            ::= "+" | "-"
#   <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>

_NUMBER = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_QUANTITY = re.compile(rf"(?P<number>{_NUMBER})(?P<suffix>[A-Za-z]*|[eE][+-]?[0-9]+)")
BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str) -> tuple[Decimal, str]:
    """The exact value of a Kubernetes quantity and its suffix kind ('binary', 'decimal',
    'exponent'); ValueError when ParseQuantity would refuse it."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError("is not a Kubernetes quantity (a number with an optional unit)")
    number, suffix = Decimal(match["number"]), match["suffix"]
    if suffix in BINARY_SUFFIXES:
        return number * (Decimal(1024) ** BINARY_SUFFIXES[suffix]), "binary"
    if suffix in DECIMAL_SUFFIXES:
        return number.scaleb(DECIMAL_SUFFIXES[suffix]), "decimal"
    if suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
        try:
            return number.scaleb(int(suffix[1:])), "exponent"
        except InvalidOperation:
            pass
    raise ValueError(
        f"unit {suffix!r} is not a Kubernetes quantity suffix (Ki Mi Gi Ti Pi Ei, n u m k M G T "
        "P E, or an exponent such as e3)"
    )


def cpu_quantity(text: str) -> None:
    """A CPU request: cores as a decimal number or millicores ("2", "1.5", "500m")."""
    value, kind = _quantity_or_words(text, "CPU cores, e.g. 2, 1.5 or 500m")
    if kind == "binary":
        raise ValueError(
            "is a memory-style binary unit (Ki, Mi, Gi ...); CPU is counted in cores, e.g. 2, 1.5 "
            "or 500m"
        )
    if value <= 0:
        raise ValueError("must be more than 0 cores")
    # The API server rounds a CPU request up to whole millicores (1m is the finest grain).
    if (value * 1000) != (value * 1000).to_integral_value():
        raise ValueError("is finer than 1m (a thousandth of a core), the smallest CPU unit")


def memory_quantity(text: str) -> None:
    """A memory request: bytes, with binary (Ki, Mi, Gi) or decimal (k, M, G) units."""
    value, _ = _quantity_or_words(text, "bytes with a unit, e.g. 8Gi or 512Mi")
    if value <= 0:
        raise ValueError("must be more than 0 bytes")
    if value != value.to_integral_value():
        raise ValueError(
            "is not a whole number of bytes (the 'm' suffix means thousandths: 512m is half a "
            "byte; use Mi or M for megabytes)"
        )


def _quantity_or_words(text: str, what: str) -> tuple[Decimal, str]:
    try:
        return parse_quantity(text)
    except ValueError as exc:
        raise ValueError(f"{exc}; expected {what}") from None


def cpu_millicores(text: str) -> int:
    return int(parse_quantity(text)[0] * 1000)


def memory_bytes(text: str) -> int:
    return int(parse_quantity(text)[0])


# --- KEDA cron (pkg/scalers/cron_scaler.go at v2.20.2) ------------------------------------
#
# KEDA parses start and end with robfig/cron v3's NewParser(Minute|Hour|Dom|Month|Dow):
# exactly 5 fields, no descriptors (@daily ...), no seconds. This is that parser's
# getField/getRange (parser.go) and its bounds (spec.go), ported.

_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}),
    ("day of week", 0, 6, {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}),
)
_GO_ATOI = re.compile(r"[+-]?[0-9]+")


def _cron_int(expr: str, names: dict[str, int], what: str) -> int:
    if expr.lower() in names:
        return names[expr.lower()]
    # strconv.Atoi: an optional sign, then ASCII digits only.
    if not _GO_ATOI.fullmatch(expr):
        raise ValueError(f"{what} field: {expr!r} is not a number{' or a name' if names else ''}")
    number = int(expr)
    if number < 0:
        raise ValueError(f"{what} field: negative number {number}")
    return number


def _cron_field(field: str, what: str, low: int, high: int, names: dict[str, int]) -> tuple[set[int], bool]:
    """The values a field matches, and whether it is a bare `*`/`?` (robfig's star bit)."""
    values: set[int] = set()
    star = False
    for expr in (part for part in field.split(",") if part):  # strings.FieldsFunc drops empties
        range_and_step = expr.split("/")
        low_high = range_and_step[0].split("-")
        extra_star = False
        if low_high[0] in ("*", "?"):
            start, end, extra_star = low, high, True
        else:
            start = _cron_int(low_high[0], names, what)
            if len(low_high) == 1:
                end = start
            elif len(low_high) == 2:
                end = _cron_int(low_high[1], names, what)
            else:
                raise ValueError(f"{what} field: too many '-' in {expr!r}")
        if len(range_and_step) == 1:
            step = 1
        elif len(range_and_step) == 2:
            step = _cron_int(range_and_step[1], {}, what)
            if len(low_high) == 1:
                end = high  # "N/step" means N-max/step
            if step > 1:
                extra_star = False
        else:
            raise ValueError(f"{what} field: too many '/' in {expr!r}")
        if start < low:
            raise ValueError(f"{what} field: {start} is below the minimum {low}")
        if end > high:
            raise ValueError(f"{what} field: {end} is above the maximum {high}")
        if start > end:
            raise ValueError(f"{what} field: range {start}-{end} runs backwards")
        if step == 0:
            raise ValueError(f"{what} field: a step must be at least 1")
        values.update(range(start, end + 1, step))
        star = star or extra_star
    return values, star


def cron_schedule(spec: str) -> None:
    """A schedule KEDA's cron scaler accepts and that fires at some time."""
    rule = (
        "KEDA cron schedules have exactly 5 fields: minute (0-59), hour (0-23), day of month "
        "(1-31), month (1-12 or jan-dec), day of week (0-6 or sun-sat)"
    )
    if spec.startswith(("TZ=", "CRON_TZ=")):
        # robfig would take the zone from the prefix and silently override off_hours.timezone.
        raise ValueError("must not carry a TZ= prefix: set the zone in off_hours.timezone")
    if spec.startswith("@"):
        raise ValueError(f"descriptors such as @daily are not accepted by KEDA; {rule}")
    fields = spec.split()
    if len(fields) != 5:
        raise ValueError(f"has {len(fields)} field(s); {rule}")
    parsed = []
    for field, (what, low, high, names) in zip(fields, _CRON_FIELDS):
        try:
            parsed.append(_cron_field(field, what, low, high, names))
        except ValueError as exc:
            raise ValueError(f"{exc}; {rule}") from None
    (minutes, _), (hours, _), (doms, dom_star), (months, _), (dows, dow_star) = parsed
    if not (minutes and hours and _some_day_matches(doms, dom_star, months, dows, dow_star)):
        raise ValueError("never fires (no date matches its fields), so the window never opens or closes")


def _some_day_matches(doms: set[int], dom_star: bool, months: set[int], dows: set[int], dow_star: bool) -> bool:
    # robfig's dayMatches (spec.go): when either day field is a bare star both must match,
    # otherwise either may. Four years cover every weekday of every date, leap days included.
    for year in (2024, 2025, 2026, 2027):
        for month in months:
            for day in range(1, calendar.monthrange(year, month)[1] + 1):
                weekday = (calendar.weekday(year, month, day) + 1) % 7  # Sunday = 0
                dom_ok, dow_ok = day in doms, weekday in dows
                if (dom_ok and dow_ok) if (dom_star or dow_star) else (dom_ok or dow_ok):
                    return True
    return False


@cache
def iana_zones() -> frozenset[str]:
    """The zone names of the IANA database (the pinned tzdata package, else the system's)."""
    return frozenset(zoneinfo.available_timezones())


def iana_time_zone(name: str) -> None:
    """A zone KEDA's time.LoadLocation finds in the operator image's zoneinfo.

    Go also takes "" (UTC) and "Local" (the KEDA pod's own zone): KEDA requires the field,
    and "Local" means whatever the operator container runs in, so both are refused."""
    if name == "Local":
        raise ValueError(
            "'Local' would be the KEDA operator pod's own zone, not yours; name an IANA zone "
            "such as Europe/Berlin or UTC"
        )
    if name not in iana_zones():
        near = sorted(z for z in iana_zones() if z.lower() == name.lower())
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise ValueError(
            f"is not an IANA time zone name{hint}; use a name such as Europe/Berlin, "
            "America/New_York or UTC"
        )


# --- AWS names ---------------------------------------------------------------------------

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
# S3 user guide, "General purpose bucket naming rules".
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")


def bucket_name(name: str) -> None:
    """S3 general purpose bucket naming rules, and no dots (see below)."""
    if not 3 <= len(name) <= 63:
        raise ValueError(f"S3 bucket names are 3 to 63 characters ({len(name)} given)")
    if not _BUCKET.fullmatch(name):
        raise ValueError(
            "S3 bucket names use lower-case letters, digits, '.' and '-', and start and end "
            "with a letter or digit"
        )
    if ".." in name:
        raise ValueError("S3 bucket names must not hold two adjacent dots")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        raise ValueError("S3 bucket names must not look like an IP address")
    for prefix in _BUCKET_PREFIXES:
        if name.startswith(prefix):
            raise ValueError(f"S3 reserves the bucket name prefix {prefix!r}")
    for suffix in _BUCKET_SUFFIXES:
        if name.endswith(suffix):
            raise ValueError(f"S3 reserves the bucket name suffix {suffix!r}")
    if "." in name:
        # S3 allows dots, but a dotted name breaks TLS for virtual-hosted-style requests
        # (the *.s3.<region>.amazonaws.com certificate covers one label): S3 user guide,
        # "Bucket naming rules" recommends against them. The sync and publisher use HTTPS.
        raise ValueError(
            "must not contain '.': S3 allows it, but the name then fails TLS checks of "
            "virtual-hosted-style HTTPS requests (use '-')"
        )


# AWS tagging (Tagging AWS resources, "Tag naming limits and requirements"): keys 1-128 and
# values 0-256 Unicode characters of letters, digits, white space and _ . : / = + - @;
# the aws: prefix is reserved for AWS.
_TAG_PUNCTUATION = set("_.:/=+-@")


def _tag_chars_ok(text: str) -> bool:
    return all(
        ch in _TAG_PUNCTUATION or unicodedata.category(ch)[0] in ("L", "N", "Z") for ch in text
    )


def tag_key(key: str) -> None:
    if not 1 <= len(key) <= 128:
        raise ValueError(f"AWS tag keys are 1 to 128 characters ({len(key)} given)")
    if not _tag_chars_ok(key):
        raise ValueError(
            "AWS tag keys use letters, digits, spaces and _ . : / = + - @ only"
        )
    if key.lower().startswith("aws:"):
        raise ValueError("the aws: prefix of tag keys is reserved for AWS")


def tag_value(value: str) -> None:
    if len(value) > 256:
        raise ValueError(f"AWS tag values are at most 256 characters ({len(value)} given)")
    if not _tag_chars_ok(value):
        raise ValueError("AWS tag values use letters, digits, spaces and _ . : / = + - @ only")


# Tags per resource (same page): 50, of which our base tags take some.
MAX_TAGS_PER_RESOURCE = 50


def host_name(name: str, allow_wildcard: bool = False) -> None:
    """A DNS host name that Route53, ACM and Gateway API hostnames all accept.

    Gateway API's Hostname (lower-case RFC 1123 labels, an optional leading `*.`), ACM's
    DomainName (253 characters, labels of 63), and a top-level label that is not all digits
    (RFC 3696 2), at least two labels."""
    rule = (
        "must be a lower-case DNS name of at least two dot-separated labels (letters, digits "
        "and '-', each 1 to 63 characters, not starting or ending with '-'), at most 253 "
        "characters, the last label not all digits"
    )
    labels = name.split(".")
    if allow_wildcard and labels[0] == "*":
        labels = labels[1:]
    if len(name) > 253 or len(labels) < 2 or labels[-1].isdigit():
        raise ValueError(rule)
    for label in labels:
        if len(label) > 63 or not _DNS1123_LABEL.fullmatch(label):
            raise ValueError(rule)


# ACM puts the certificate's first domain name in the subject's common name, which X.509
# bounds at 64 characters (RFC 5280 ub-common-name; ACM RequestCertificate: DomainName
# "the first domain name you enter cannot exceed 64 octets").
ACM_COMMON_NAME_MAX = 64


# --- CIDRs ------------------------------------------------------------------------------

def _network(value: Any, version: int) -> Any:
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        network = value
    else:
        text = str(value)
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError("is not a CIDR block such as 10.0.0.0/16 or 203.0.113.7/32") from None
        if "/" not in text:
            raise ValueError(f"needs a prefix length, e.g. {network.network_address}/32")
        if ipaddress.ip_interface(text).ip != network.network_address:
            raise ValueError(f"has host bits set; the block is {network}")
    if network.version != version:
        raise ValueError(f"must be an IPv{version} CIDR block")
    return network


def ipv4_cidr(min_prefix: int, max_prefix: int, why: str) -> Any:
    """An IPv4 CIDR check, prefix length in min_prefix..max_prefix (`why` says who says):
    `Annotated[ipaddress.IPv4Network, ipv4_cidr(...)]`."""

    def check(value: Any) -> ipaddress.IPv4Network:
        network = _network(value, 4)
        if not min_prefix <= network.prefixlen <= max_prefix:
            raise ValueError(f"{why} take prefix lengths /{min_prefix} to /{max_prefix}")
        return network

    return BeforeValidator(check)


_NOT_PUBLIC = [
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
        "172.16.0.0/12", "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    )
]
# From the IANA IPv4 special-purpose registry (RFC 6890): private, shared (CGNAT), loopback,
# link-local, multicast and reserved space, never a caller of a public endpoint. The
# documentation ranges (TEST-NET, RFC 5737) stay allowed: example stacks use them as
# placeholders for a real office range.


def is_public_block(network: ipaddress.IPv4Network) -> bool:
    """Whether the block holds any internet-routable address (not wholly private/reserved)."""
    return not any(network.subnet_of(n) for n in _NOT_PUBLIC)


def opens_to_everyone(networks: Iterable[ipaddress.IPv4Network]) -> bool:
    """Whether an allowlist covers every public IPv4 address (so it allows all callers)."""
    merged = list(ipaddress.collapse_addresses(networks))
    public: list[ipaddress.IPv4Network] = [ipaddress.IPv4Network("0.0.0.0/0")]
    for blocked in _NOT_PUBLIC:
        public = [
            part
            for block in public
            for part in (block.address_exclude(blocked) if blocked.subnet_of(block) else [block])
        ]
    return all(any(block.subnet_of(m) for m in merged) for block in public)


# --- HTTP header / gRPC metadata names ---------------------------------------------------

_HEADER = re.compile(r"[a-z0-9][a-z0-9_.-]*")
# Headers the client, the ALB or gRPC itself set: a key in one of them is overwritten,
# rejected or never the caller's own (ALB "HTTP headers and Application Load Balancers";
# gRPC PROTOCOL-HTTP2.md reserves the grpc- prefix and gives -bin keys base64 values).
_TAKEN_HEADERS = {
    "host", "content-type", "content-length", "te", "user-agent", "connection", "keep-alive",
    "transfer-encoding", "upgrade", "proxy-connection", "cookie", "x-forwarded-for",
    "x-forwarded-proto", "x-forwarded-port",
}


def api_key_header(name: str) -> None:
    """A header that carries the API key over HTTP/1.1, HTTP/2 and gRPC metadata alike."""
    if not 1 <= len(name) <= 64 or not _HEADER.fullmatch(name):
        raise ValueError(
            "must be 1 to 64 lower-case letters, digits, '-', '_' or '.' (gRPC metadata keys are "
            "lower-case), starting with a letter or digit"
        )
    if name.startswith("grpc-"):
        raise ValueError("the grpc- prefix is reserved for gRPC's own metadata")
    if name.endswith("-bin"):
        raise ValueError("gRPC sends -bin metadata base64-encoded, so WAF would never see the key")
    if name in _TAKEN_HEADERS or name.startswith("x-amzn-"):
        raise ValueError("is a header the client, the load balancer or gRPC sets itself")
