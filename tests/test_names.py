"""Logical names: every resource's URN is unique for any configuration the model accepts.

The Pulumi engine refuses a second resource with a URN already registered in the same
deployment (pulumi/pulumi pkg/resource/deploy/step_generator.go: "Duplicate resource URN
'...'; try giving it a unique name"), and it does so mid-update, after the resources before
it were created. A URN is the stack, the parent type chain, the type and the logical name,
so two resources of one type under one parent must never get the same name, whatever host
names, model names, pool names, receiver names or principal keys a stack file uses.
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Any

import pulumi
import pulumi_aws as aws
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from components.config import StackConfigError
from tests.support import parse, raw_stack, render_raw
from tools.lib.mock_engine import DuplicateUrnError, render


def test_mock_engine_refuses_a_duplicate_urn() -> None:
    def program() -> dict[str, Any]:
        aws.s3.Bucket("models")
        aws.s3.Bucket("models")
        return {}

    with pytest.raises(DuplicateUrnError, match="Duplicate resource URN .*Bucket::models"):
        render("test", {}, program=program)


def test_mock_engine_allows_one_name_for_different_types_or_parents() -> None:
    # The URN holds the type and the parent chain: only the whole URN must be unique.
    class Holder(pulumi.ComponentResource):
        def __init__(self, name: str) -> None:
            super().__init__("test:index:Holder", name)
            aws.s3.Bucket("models", opts=pulumi.ResourceOptions(parent=self))

    def program() -> dict[str, Any]:
        aws.s3.Bucket("models")
        aws.sqs.Queue("models")
        Holder("holder")
        return {}

    rendering = render("test", {}, program=program)
    assert len({r.urn for r in rendering.resources}) == len(rendering.resources) == 4


def _assert_unique_urns(raw: dict[str, Any]) -> None:
    rendering = render_raw(raw)  # raises DuplicateUrnError like the engine
    counts = Counter(r.urn for r in rendering.resources)
    assert not [u for u, n in counts.items() if n > 1]


def test_rest_and_grpc_hosts_with_the_same_first_label() -> None:
    raw = raw_stack("dev")
    raw["ingress"]["rest_host"] = "api.example.com"
    raw["ingress"]["grpc_host"] = "api.grpc.example.com"
    parse(raw)  # a valid configuration ...
    _assert_unique_urns(raw)  # ... so it must deploy


label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6)
dashed = st.builds(lambda a, b: f"{a}-{b}" if b else a, label, st.one_of(st.just(""), label))


@st.composite
def stack_configs(draw: st.DrawFn) -> dict[str, Any]:
    """A dev stack with generated host names, model names, pool names, receiver names and
    admin principal keys: the parts of the config that flow into logical names."""
    raw = raw_stack("prod" if draw(st.booleans()) else "dev")
    domain = raw["ingress"]["domain"]
    rest_first = draw(dashed)
    grpc_first = draw(st.one_of(st.just(rest_first), dashed))
    rest_host = f"{rest_first}.{domain}"
    grpc_host = f"{grpc_first}.{draw(st.one_of(st.just(''), dashed.map(lambda d: d + '.')))}{domain}"
    if grpc_host == rest_host:
        grpc_host = f"{grpc_first}.grpc.{domain}"
    raw["ingress"]["rest_host"] = rest_host
    raw["ingress"]["grpc_host"] = grpc_host
    # Pool names: the serving pool under a generated name, plus a second pool whose name
    # may extend the first (`a` and `a-lt`, `a-node-role` ...).
    pools = raw["gpu_pools"]
    serving_pool = raw["serving"]["gpu_pool"]
    first = draw(dashed)
    second = draw(
        st.one_of(st.just(first + "-lt"), st.just(first + "-node"), st.just(first + "-us"), dashed)
    )
    template = pools[serving_pool]
    new_pools = {first: template}
    if second != first:
        new_pools[second] = {**template, "min_size": 0, "desired_size": 0}
    raw["gpu_pools"] = new_pools
    raw["serving"]["gpu_pool"] = first
    models = draw(st.lists(dashed, min_size=1, max_size=3, unique=True))
    old_models = list(raw["serving"]["models"].values())
    raw["serving"]["models"] = {m: old_models[i % len(old_models)] for i, m in enumerate(models)}
    principals = draw(st.lists(dashed, min_size=0, max_size=2, unique=True))
    raw["cluster"]["admin_principals"] = {
        k: f"arn:aws:iam::123456789012:role/admin-{i}" for i, k in enumerate(principals)
    }
    return raw


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack_configs())
def test_names_never_collide_for_any_valid_config(raw: dict[str, Any]) -> None:
    try:
        parse(raw)
    except StackConfigError:
        assume(False)  # an invalid draw says nothing about names (hypothesis counts these)
    _assert_unique_urns(raw)
