"""Test-only support: stack files as raw config dicts, rendering a config under the mock
engine, following what a rendering wires together, and the few expectations more than one
test module checks (the node role's policies); the modules beside it hold the evaluators and
fixtures (AWS, reference data, external programs, the config grid).

Nothing here is used by a command (that is tools/lib/), and nothing here asserts what the
program should do: the tests do, against what these helpers read.
"""

from __future__ import annotations

import json
from typing import Any

from components.config import PROJECT, StackConfig, config_from_pulumi_settings, parse_stack_config
from tools.lib.mock_engine import Rendering, render
from tools.lib.stackfile import read_settings, stack_file


def raw_stack(stack: str) -> dict[str, Any]:
    """A repo stack file's config as the model's raw dict (keys without the project prefix),
    read as the program reads it, before validation: a fresh copy for each call."""
    settings, _ = read_settings(stack_file(stack), stack)
    return config_from_pulumi_settings(settings)


def settings_for(raw: dict[str, Any]) -> dict[str, str]:
    """The flat Pulumi settings for a raw config dict."""
    out = {}
    for key, value in raw.items():
        full = key if key.startswith("aws:") else f"{PROJECT}:{key}"
        out[full] = value if isinstance(value, str) else json.dumps(value)
    return out


SECRET_SETTINGS = ("ingress_api_key", "grafana_admin_password", "alerting_secrets", "docker_hub_access_token")


def secret_keys_for(raw: dict[str, Any], clear: tuple[str, ...] = ()) -> list[str]:
    """The Pulumi keys of the secret settings in `raw`, as `pulumi config set --secret` marks
    them; those named in `clear` are left unmarked (as if written in the file in clear)."""
    return [f"{PROJECT}:{k}" for k in SECRET_SETTINGS if k in raw and k not in clear]


def render_raw(raw: dict[str, Any], stack: str = "test") -> Rendering:
    return render(stack, settings_for(raw), secret_keys_for(raw))


def parse(raw: dict[str, Any], stack: str = "test") -> StackConfig:
    return parse_stack_config(raw, stack)


def mounted_config_map(r: Rendering, deployment: str, volume: str, namespace: str = "tf-serving") -> dict[str, str]:
    """The data of the ConfigMap that `deployment`'s pods mount as `volume`: followed through
    the pod template, as the kubelet does, not looked up by a name the test assumes."""
    objs = [m for m in r.k8s_objects() if m["metadata"].get("namespace") == namespace]
    dep = next(m for m in objs if m["kind"] == "Deployment" and m["metadata"]["name"] == deployment)
    source = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == volume)
    name = source["configMap"]["name"]
    found = [m for m in objs if m["kind"] == "ConfigMap" and m["metadata"]["name"] == name]
    assert len(found) == 1, f"{deployment} mounts ConfigMap {name}, which the stack creates {len(found)} times"
    return found[0]["data"]

def dependencies(rendering: Rendering, urn: str) -> set[str]:
    """Every URN the resource at `urn` waits for: its recorded dependencies (explicit
    `depends_on` and inputs taken from other resources) and those of its parents, followed
    transitively; depending on a component means depending on everything under it."""
    by_urn = {r.urn: r for r in rendering.resources}
    children: dict[str, list[str]] = {}
    for r in rendering.resources:
        children.setdefault(r.parent, []).append(r.urn)

    def with_descendants(top: str) -> list[str]:
        found, stack = [top], [top]
        while stack:
            for child in children.get(stack.pop(), []):
                found.append(child)
                stack.append(child)
        return found

    waited: set[str] = set()
    visited: set[str] = set()
    todo = [urn]
    while todo:
        current = by_urn.get(todo.pop())
        if current is None or current.urn in visited:
            continue
        visited.add(current.urn)
        for dep in current.depends_on:
            for target in with_descendants(dep):
                if target not in waited:
                    waited.add(target)
                    todo.append(target)
        if current.parent:
            todo.append(current.parent)
    return waited


def cpu_serving(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` serving on CPU: no GPU pool for the pods, the CPU-serving default requests (a
    GPU-sized pod would not fit the system nodes), no GPU-only autoscaling metric, no node
    cache (it lives on a GPU pool's nodes)."""
    for key in ("gpu_pool", "gpu_memory_fraction", "cpu", "memory", "model_cache"):
        raw["serving"].pop(key, None)
    raw.get("autoscaling", {}).get("metrics", {}).pop("gpu_utilisation", None)
    return raw



# The policies every node role of ours holds, and no more (EKS user guide, "Amazon EKS node IAM
# role": AmazonEKSWorkerNodePolicy and ECR pull access; SSM for Session Manager). No
# AmazonEKS_CNI_Policy: the VPC CNI has its own Pod Identity role (tests/test_cluster.py).
NODE_ROLE_POLICIES = frozenset(
    {
        "AmazonEKSWorkerNodePolicy",
        "AmazonEC2ContainerRegistryPullOnly",
        "AmazonSSMManagedInstanceCore",
    }
)


def node_role_policies(r: Rendering, node_group: str) -> set[str]:
    """The AWS managed policies (by name) attached to the IAM role a node group's nodes run
    as: the role named in the group's nodeRoleArn, not one guessed from resource names. Our
    own policies on it (the image cache's) are left to the tests of what adds them."""
    role = str(r.one("aws:eks/nodeGroup:NodeGroup", node_group).inputs["nodeRoleArn"]).split("/")[-1]
    return {
        str(a.inputs["policyArn"]).split("/")[-1]
        for a in r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
        # arn:<partition>:iam::aws:policy/...: owned by AWS, not by an account.
        if a.inputs["role"] == role and ":iam::aws:policy/" in str(a.inputs["policyArn"])
    }
