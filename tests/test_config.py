"""The stack config model: defaults per environment, and a clear error for each bad input."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from components import catalog
from components.config import StackConfigError, config_from_pulumi_settings
from tests.support import parse, raw_stack

Raw = dict[str, Any]
MINIMAL_SERVING: dict[str, Any] = {"models": {"m": {}}}


def base() -> Raw:
    return raw_stack("dev")


def prod_base() -> Raw:
    return raw_stack("prod")


def set_in(raw: Raw, dotted: str, value: Any) -> Raw:
    out = copy.deepcopy(raw)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def drop(raw: Raw, dotted: str) -> Raw:
    out = copy.deepcopy(raw)
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
    return out


# (case id, make the bad config, fragments the one error message must contain)
BAD_INPUTS: list[tuple[str, Callable[[], Raw], list[str]]] = [
    (
        "wrong type for an integer",
        lambda: set_in(base(), "cluster.system_node_group.min_size", "three"),
        ["tf-serving-eks:cluster.system_node_group.min_size", '"three"', "valid integer"],
    ),
    (
        "unknown top-level key",
        lambda: set_in(base(), "clustr", {}),
        ["tf-serving-eks:clustr", "unknown key", "did you mean 'cluster'"],
    ),
    (
        "typo in a nested key",
        lambda: set_in(base(), "cluster.vpc.nat_gateway", "single"),
        ["tf-serving-eks:cluster.vpc.nat_gateway", "did you mean 'nat_gateways'", "az_count"],
    ),
    (
        "min greater than max",
        lambda: set_in(
            set_in(base(), "cluster.system_node_group.min_size", 5),
            "cluster.system_node_group.max_size",
            3,
        ),
        ["tf-serving-eks:cluster.system_node_group.min_size", "(got 5)", "<= max_size (3)"],
    ),
    (
        "desired outside min..max",
        lambda: set_in(base(), "cluster.system_node_group.desired_size", 9),
        ["cluster.system_node_group.desired_size", "(got 9)", "between min_size (1) and max_size (3)"],
    ),
    (
        "unsupported Kubernetes version",
        lambda: set_in(base(), "cluster.kubernetes_version", "1.29"),
        ["tf-serving-eks:cluster.kubernetes_version", '"1.29"', "'1.34', '1.35' or '1.36'"],
    ),
    (
        "Kubernetes version as a number",
        lambda: set_in(base(), "cluster.kubernetes_version", 1.3),
        ["tf-serving-eks:cluster.kubernetes_version", "1.3", "'1.36'"],
    ),
    (
        "malformed CIDR",
        lambda: set_in(base(), "cluster.vpc.cidr", "10.0.0.0/33"),
        ["tf-serving-eks:cluster.vpc.cidr", '"10.0.0.0/33"', "not a CIDR block"],
    ),
    (
        "CIDR with host bits set",
        lambda: set_in(base(), "cluster.vpc.cidr", "10.0.0.1/16"),
        ["tf-serving-eks:cluster.vpc.cidr", '"10.0.0.1/16"', "host bits set"],
    ),
    (
        "VPC too small for its subnets",
        lambda: set_in(base(), "cluster.vpc.cidr", "10.0.0.0/24"),
        ["tf-serving-eks:cluster.vpc.cidr", '"10.0.0.0/24"', "use /16 to /20"],
    ),
    (
        "malformed public access CIDR",
        lambda: set_in(base(), "cluster.endpoint.public_access_cidrs", ["203.0.113.0/24", "nope"]),
        ["tf-serving-eks:cluster.endpoint.public_access_cidrs[1]", '"nope"', "not a CIDR block"],
    ),
    (
        "invalid DNS name for a cluster",
        lambda: set_in(base(), "cluster.name", "-tfs dev"),
        ["tf-serving-eks:cluster.name", '"-tfs dev"', "EKS cluster names use letters"],
    ),
    (
        "invalid admin principal key (not a DNS label)",
        lambda: set_in(base(), "cluster.admin_principals", {"Ops_Team": "arn:aws:iam::123456789012:role/Ops"}),
        ["tf-serving-eks:cluster.admin_principals.Ops_Team", "DNS-1123 label"],
    ),
    (
        "admin principal that is not an IAM ARN",
        lambda: set_in(base(), "cluster.admin_principals", {"ops": "arn:aws:s3:::bucket"}),
        ["tf-serving-eks:cluster.admin_principals.ops", '"arn:aws:s3:::bucket"', "IAM role or user ARN"],
    ),
    (
        "unknown cluster mode",
        lambda: set_in(base(), "cluster.mode", "import"),
        ["tf-serving-eks:cluster.mode", '"import"', "'create' or 'existing'"],
    ),
    (
        "unknown environment",
        lambda: set_in(base(), "environment", "production"),
        ["tf-serving-eks:environment", '"production"', "'dev', 'staging' or 'prod'"],
    ),
    (
        "missing cluster name",
        lambda: drop(base(), "cluster.name"),
        ["tf-serving-eks:cluster.name", "Field required"],
    ),
    (
        "invalid region",
        lambda: set_in(base(), "aws:region", "us-east"),
        ["aws:region", '"us-east"', "AWS region code"],
    ),
    (
        "single AZ",
        lambda: set_in(base(), "cluster.vpc.az_count", 1),
        ["tf-serving-eks:cluster.vpc.az_count", "(got 1)", "at least 2 AZs"],
    ),
    (
        "prod with two AZs",
        lambda: set_in(prod_base(), "cluster.vpc.az_count", 2),
        ["stack 'test'", "tf-serving-eks:cluster.vpc.az_count", "(got 2)", "prod must span at least 3 AZs"],
    ),
    (
        "prod with a single NAT gateway",
        lambda: set_in(prod_base(), "cluster.vpc.nat_gateways", "single"),
        ["tf-serving-eks:cluster.vpc.nat_gateways", '"single"', "per_az"],
    ),
    (
        "prod with the API open to the world",
        lambda: set_in(prod_base(), "cluster.endpoint.public_access_cidrs", ["0.0.0.0/0"]),
        ["tf-serving-eks:cluster.endpoint.public_access_cidrs", "0.0.0.0/0", "list your CIDRs"],
    ),
    (
        "prod with one system node",
        lambda: set_in(
            set_in(prod_base(), "cluster.system_node_group.min_size", 1),
            "cluster.system_node_group.desired_size",
            1,
        ),
        ["tf-serving-eks:cluster.system_node_group.min_size", "(got 1)", "at least 2 system nodes"],
    ),
    (
        "prod without audit logs",
        lambda: set_in(prod_base(), "cluster.log_types", ["api"]),
        ["tf-serving-eks:cluster.log_types", "prod must keep audit logs"],
    ),
    (
        "unknown log type",
        lambda: set_in(base(), "cluster.log_types", ["api", "kubelet"]),
        ["tf-serving-eks:cluster.log_types[1]", '"kubelet"', "'controllerManager'"],
    ),
    (
        "retention CloudWatch does not offer",
        lambda: set_in(base(), "cluster.log_retention_days", 10),
        ["tf-serving-eks:cluster.log_retention_days", "(got 10)", "14"],
    ),
    (
        "endpoint neither public nor private",
        lambda: set_in(
            set_in(base(), "cluster.endpoint.public_access", False),
            "cluster.endpoint.private_access",
            False,
        ),
        ["tf-serving-eks:cluster.endpoint.public_access", "cannot both be false"],
    ),
    (
        "malformed add-on version",
        lambda: set_in(base(), "cluster.addons.vpc_cni", "1.22.4"),
        ["tf-serving-eks:cluster.addons.vpc_cni", '"1.22.4"', "EKS add-on version"],
    ),
    (
        "existing-cluster settings in create mode",
        lambda: set_in(base(), "cluster.existing", {"private_subnet_ids": []}),
        ["tf-serving-eks:cluster.existing", "only allowed with mode: existing"],
    ),
    (
        "malformed subnet id for an existing cluster",
        lambda: set_in(
            set_in(base(), "cluster.mode", "existing"),
            "cluster.existing",
            {"private_subnet_ids": ["sn-123"]},
        ),
        ["tf-serving-eks:cluster.existing.private_subnet_ids[0]", '"sn-123"', "subnet ID"],
    ),
    (
        "KMS deletion window out of range",
        lambda: set_in(base(), "cluster.kms_key_deletion_window_days", 3),
        ["tf-serving-eks:cluster.kms_key_deletion_window_days", "(got 3)", "greater than or equal to 7"],
    ),
    (
        "tags given as a list",
        lambda: set_in(base(), "tags", ["team=ml"]),
        ["tf-serving-eks:tags", "valid dictionary"],
    ),
]


@pytest.mark.parametrize(
    "make_raw, fragments", [(m, f) for _, m, f in BAD_INPUTS], ids=[i for i, _, _ in BAD_INPUTS]
)
def test_bad_input_is_named_in_one_message(make_raw: Callable[[], Raw], fragments: list[str]) -> None:
    with pytest.raises(StackConfigError) as info:
        parse(make_raw())
    message = str(info.value)
    assert message.startswith("stack 'test': invalid configuration in Pulumi.test.yaml:")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_there_are_at_least_twenty_distinct_bad_inputs() -> None:
    assert len({i for i, _, _ in BAD_INPUTS}) >= 20


def test_every_error_is_reported_at_once() -> None:
    raw = set_in(base(), "cluster.vpc.cidr", "bad")
    raw = set_in(raw, "cluster.mode", "nope")
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    assert "cluster.vpc.cidr" in str(info.value) and "cluster.mode" in str(info.value)


def test_dev_defaults_are_small_and_cheap() -> None:
    cfg = parse({"environment": "dev", "aws:region": "us-east-1", "cluster": {"name": "c"}, "serving": MINIMAL_SERVING})
    assert cfg.cluster.vpc.nat_gateways == "single"
    assert cfg.cluster.system_node_group.min_size == 1
    assert cfg.cluster.system_node_group.instance_types == ["t3.large"]
    assert cfg.cluster.deletion_protection is False
    assert cfg.cluster.log_retention_days == 7
    assert cfg.cluster.kubernetes_version == catalog.DEFAULT_KUBERNETES_VERSION


def test_prod_defaults_are_highly_available() -> None:
    cfg = parse(
        {
            "environment": "prod",
            "aws:region": "us-west-2",
            "cluster": {"name": "c", "endpoint": {"public_access": False, "public_access_cidrs": []}},
            "serving": {**MINIMAL_SERVING, "replicas": 2, "image_cache": {"docker_hub_username": "someone"}},
            "docker_hub_access_token": "dckr_pat_example",
            "monitoring": {"enabled": False},
            "autoscaling": {"enabled": False},
        }
    )
    assert cfg.serving.image_cache.enabled and cfg.serving.pin_image_digests
    assert cfg.cluster.vpc.nat_gateways == "per_az"
    assert cfg.cluster.vpc.az_count == 3
    assert cfg.cluster.system_node_group.min_size >= 2
    assert cfg.cluster.deletion_protection is True
    assert set(cfg.cluster.log_types) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}


def test_config_is_frozen() -> None:
    cfg = parse(base())
    with pytest.raises(Exception):
        cfg.cluster.name = "other"  # type: ignore[misc]


def test_every_field_has_a_description() -> None:
    from pydantic import BaseModel

    from components.config import StackConfig

    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for arg in (field.annotation, *getattr(field.annotation, "__args__", ())):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    walk(StackConfig)
    assert len(seen) >= 6


def test_the_repo_stacks_differ_where_environments_should() -> None:
    dev, prod = parse(raw_stack("dev"), "dev"), parse(raw_stack("prod"), "prod")
    assert (dev.cluster.vpc.nat_gateways, prod.cluster.vpc.nat_gateways) == ("single", "per_az")
    assert dev.cluster.system_node_group.max_size < prod.cluster.system_node_group.max_size
    assert prod.cluster.deletion_protection and not dev.cluster.deletion_protection


def test_pulumi_settings_are_decoded() -> None:
    raw = config_from_pulumi_settings(
        {
            "aws:region": "eu-west-1",
            "aws:profile": "ignored",
            "tf-serving-eks:environment": "dev",
            "tf-serving-eks:cluster": '{"name": "x", "vpc": {"az_count": 3}}',
            "other-project:cluster": "ignored",
        }
    )
    assert raw == {"aws:region": "eu-west-1", "environment": "dev", "cluster": {"name": "x", "vpc": {"az_count": 3}}}


def test_unknown_key_inside_a_keyed_map_lists_the_allowed_keys() -> None:
    raw = base()
    raw["serving"]["models"]["resnet"]["latest_cont"] = 2
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    message = str(info.value)
    assert "tf-serving-eks:serving.models.resnet.latest_cont: unknown key; did you mean 'latest_count'?" in message
    assert "version_policy" in message


def test_a_config_error_ends_pulumi_up_without_a_traceback() -> None:
    """Pulumi's Python language host prints a RunError's message alone and exits cleanly;
    any other exception gets the program's full traceback (pulumi SDK errors.py, and the
    language host's handling of RunError)."""
    import pulumi

    from components.images import ImageDigestError

    assert issubclass(StackConfigError, pulumi.RunError)
    assert issubclass(ImageDigestError, pulumi.RunError)
