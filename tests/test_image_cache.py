"""The ECR pull-through cache, evaluated as ECR and IAM would.

ECR (user guide, "Pulling an image with a pull through cache rule"): a pull of
`<account>.dkr.ecr.<region>.amazonaws.com/<prefix>/<repository>:<tag>` in the rule's
account and region is served from the upstream registry's `<repository>` (Docker Hub
non-official images without `library/`); Docker Hub rules need a Secrets Manager secret
named `ecr-pullthroughcache/...`. The puller (the kubelet, with the node's role) needs the
ECR pull actions plus `ecr:BatchImportUpstreamImage` and, for an image's first pull,
`ecr:CreateRepository` on that repository ("IAM permissions required to sync an upstream
registry").
"""

from __future__ import annotations

import copy
import fnmatch
import json
from typing import Any

import pytest

from components.config import StackConfigError
from tests.support import cpu_serving, parse, raw_stack, render_raw
from tools.lib.mock_engine import ACCOUNT_ID, Registered, Rendering

PULL_ONLY = "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly"
PULL_ACTIONS = {"ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:GetAuthorizationToken"}


def cached_stacks() -> dict[str, dict[str, Any]]:
    dev = raw_stack("dev")
    dev["serving"]["image_cache"] = {"enabled": True, "docker_hub_username": "tfsdev", "repository_prefix": "dev/hub"}
    dev["docker_hub_access_token"] = "dckr_pat_example"
    cpu = cpu_serving(raw_stack("prod"))
    return {"prod": raw_stack("prod"), "dev-cached": dev, "prod-cpu": cpu}


_rendered: dict[str, Rendering] = {}


def rendered(name: str) -> Rendering:
    if name not in _rendered:
        stacks = cached_stacks()
        _rendered[name] = render_raw(copy.deepcopy(stacks[name]), stack=name)
    return _rendered[name]


def of_type(r: Rendering, token: str) -> list[Registered]:
    return [x for x in r.resources if x.type == token]


def serving_images(r: Rendering) -> list[str]:
    return [
        c["image"]
        for m in r.k8s_objects()
        if m["kind"] == "Deployment" and m["metadata"].get("namespace") == "tf-serving"
        for c in m["spec"]["template"]["spec"]["containers"]
    ]


def upstream_of(image: str, rules: list[dict[str, Any]], account: str, region: str) -> str | None:
    """Where ECR fetches `image` from, or None if no cache rule of this account and region covers it."""
    host, _, path = image.partition("/")
    if host != f"{account}.dkr.ecr.{region}.amazonaws.com":
        return None
    repo = path.split("@")[0].rsplit(":", 1)[0]
    for rule in rules:
        prefix = rule["ecrRepositoryPrefix"]
        if repo.startswith(prefix + "/"):
            return f"{rule['upstreamRegistryUrl']}/{repo.removeprefix(prefix + '/')}"
    return None


def allowed(documents: list[dict[str, Any]], action: str, resource: str) -> bool:
    for doc in documents:
        for st in doc["Statement"]:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            resources = st.get("Resource", "*")
            resources = resources if isinstance(resources, list) else [resources]
            if st["Effect"] == "Allow" and any(fnmatch.fnmatchcase(action, a) for a in actions) and any(
                fnmatch.fnmatchcase(resource, r) for r in resources
            ):
                return True
    return False


@pytest.mark.parametrize("stack", sorted(cached_stacks()))
def test_the_serving_image_is_pulled_through_the_cache_from_docker_hub(stack: str) -> None:
    r = rendered(stack)
    region = r.outputs["region"]
    rules = [x.inputs for x in of_type(r, "aws:ecr/pullThroughCacheRule:PullThroughCacheRule")]
    assert rules, "no cache rule"
    images = serving_images(r)
    assert images
    for image in images:
        assert upstream_of(image, rules, ACCOUNT_ID, region) == "registry-1.docker.io/tensorflow/serving", image
    secrets = {x.outputs.get("arn", ""): x.inputs for x in of_type(r, "aws:secretsmanager/secret:Secret")}
    for rule in rules:
        secret = next(s for arn, s in secrets.items() if arn == rule["credentialArn"])
        assert secret["name"].startswith("ecr-pullthroughcache/")


@pytest.mark.parametrize("stack", sorted(cached_stacks()))
def test_the_nodes_serving_pods_land_on_may_import_the_image(stack: str) -> None:
    r = rendered(stack)
    region = r.outputs["region"]
    serving_pool = parse(cached_stacks()[stack], stack).serving.gpu_pool
    # CPU serving lands on the system nodes.
    role_suffix = f"-{serving_pool}-node-role" if serving_pool else "-system-node-role"
    role = next(x for x in of_type(r, "aws:iam/role:Role") if x.name.endswith(role_suffix))
    role_name = role.outputs["name"]
    policies = {x.outputs["arn"]: json.loads(x.inputs["policy"]) for x in of_type(r, "aws:iam/policy:Policy")}
    attached = [x.inputs["policyArn"] for x in of_type(r, "aws:iam/rolePolicyAttachment:RolePolicyAttachment") if x.inputs["role"] == role_name]
    assert PULL_ONLY in attached, "the ECR pull actions"
    documents = [policies[arn] for arn in attached if arn in policies]
    for image in serving_images(r):
        repo = image.split("/", 1)[1].split("@")[0].rsplit(":", 1)[0]
        arn = f"arn:aws:ecr:{region}:{ACCOUNT_ID}:repository/{repo}"
        for action in ("ecr:BatchImportUpstreamImage", "ecr:CreateRepository"):
            assert allowed(documents, action, arn), f"{stack}: {role.name} may not {action} on {arn}"
        assert not allowed(documents, "ecr:BatchImportUpstreamImage", f"arn:aws:ecr:{region}:{ACCOUNT_ID}:repository/other/x")


def test_the_deployment_waits_for_the_rule_and_the_node_permissions() -> None:
    r = rendered("prod")
    deployment = next(x for x in r.resources if x.type == "kubernetes:apps/v1:Deployment" and x.name == "serving-deployment")
    needed = {x.urn for x in of_type(r, "aws:ecr/pullThroughCacheRule:PullThroughCacheRule")}
    needed |= {x.urn for x in of_type(r, "aws:iam/rolePolicyAttachment:RolePolicyAttachment") if x.name.startswith("image-cache-")}
    assert needed and needed <= set(deployment.depends_on)


def test_without_the_cache_the_image_comes_from_docker_hub() -> None:
    r = render_raw(raw_stack("dev"), stack="dev")
    assert not of_type(r, "aws:ecr/pullThroughCacheRule:PullThroughCacheRule")
    assert all(i.startswith("tensorflow/serving:") for i in serving_images(r))


def test_the_cache_needs_docker_hub_credentials() -> None:
    raw = raw_stack("prod")
    raw["serving"]["image_cache"].pop("docker_hub_username")
    with pytest.raises(StackConfigError, match="serving.image_cache.docker_hub_username.*Docker Hub credentials"):
        parse(raw, "prod")
    raw = raw_stack("prod")
    raw.pop("docker_hub_access_token")
    with pytest.raises(StackConfigError, match="docker_hub_access_token.*pulumi config set --secret"):
        parse(raw, "prod")
