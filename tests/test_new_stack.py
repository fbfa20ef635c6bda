"""A stack made by the README's recipe ("To add a stack") is independent of the one it copies:
no physical name, DNS name, hosted-zone record or secret is claimed by both."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from components.config import PROJECT
from tools.lib.mock_engine import Rendering, render
from tools.lib.stackfile import ROOT, read_settings, shared_claims

README = ROOT / "README.md"


def recipe() -> str:
    text = README.read_text()
    return text[text.index("To add a stack (say `staging`)"):].split("\n\n", 1)[0]


def staging_by_recipe(tmp: Path) -> Path:
    """Pulumi.staging.yaml exactly as the recipe says: copy prod, change the keys it names."""
    shutil.copy(ROOT / "Pulumi.prod.yaml", tmp / "Pulumi.prod.yaml")
    doc = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    cfg = doc["config"]
    steps = recipe()
    changes: dict[str, Any] = {
        "environment": "staging",
        "cluster.name": "tfs-staging",
        "ingress.rest_host": "tfs-staging.example.com",
        "ingress.grpc_host": "tfs-staging-grpc.example.com",
    }
    for key, value in changes.items():
        assert f"`{key}" in steps or f"{PROJECT}:{key}" in steps, f"the recipe no longer says to change {key}"
        section, _, field = key.partition(".")
        if field:
            cfg[f"{PROJECT}:{section}"][field] = value
        else:
            cfg[f"{PROJECT}:{section}"] = value
    (tmp / "Pulumi.staging.yaml").write_text(yaml.safe_dump(doc))
    return tmp


def physical_names(r: Rendering) -> set[str]:
    """What AWS or DNS knows the stack's resources by (not Pulumi's logical names)."""
    names: set[str] = set()
    for x in r.resources:
        if not x.custom or x.read or not x.type.startswith("aws:"):
            continue
        for key in ("name", "bucket", "domainName", "ecrRepositoryPrefix", "clusterName"):
            value = x.inputs.get(key)
            if isinstance(value, str) and value and not (key == "clusterName" and x.type != "aws:eks/cluster:Cluster"):
                names.add(f"{x.type.split(':')[1].split('/')[0]}:{value}")
        names.update(f"dns:{n}" for n in x.inputs.get("subjectAlternativeNames", []))
    return names


def test_a_stack_made_by_the_recipe_claims_nothing_of_the_original(tmp_path: Path) -> None:
    root = staging_by_recipe(tmp_path)
    rendered = {}
    for stack in ("prod", "staging"):
        settings, secrets = read_settings(root / f"Pulumi.{stack}.yaml")
        rendered[stack] = render(stack, settings, secrets)
    shared = physical_names(rendered["prod"]) & physical_names(rendered["staging"])
    assert not shared, f"staging claims prod's {sorted(shared)}"
    assert not shared_claims(root)


def test_a_copy_that_keeps_the_originals_names_is_caught(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Pulumi.prod.yaml", tmp_path / "Pulumi.prod.yaml")
    text = (ROOT / "Pulumi.prod.yaml").read_text().replace("environment: prod", "environment: staging")
    (tmp_path / "Pulumi.staging.yaml").write_text(text)
    found = "\n".join(shared_claims(tmp_path))
    for claim in ("cluster us-west-2/tfs-prod", "host tfs.example.com", "bucket tfs-prod-models"):
        assert claim in found, found
    assert not re.search(r"image cache prefix", found), "the cache prefix is per stack by default"


def test_no_two_repo_stacks_claim_the_same_names() -> None:
    assert shared_claims() == []
