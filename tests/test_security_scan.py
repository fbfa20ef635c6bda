"""The serving workload (and its node-local model cache) through a real security scanner:
checkov (installed by `make tools`).

Rule: every check checkov runs on the objects of the serving namespace passes, or is
skipped on the object itself with a written reason (checkov's `checkov.io/skip<N>:
<CHECK>=<reason>` annotation), for every stack. In prod that includes CKV_K8S_43 (images
by digest) and, everywhere, CKV_K8S_40 (a UID above 10000).
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.external_tools import tool
from tests.support import cpu_serving, raw_stack, render_raw


def _stacks() -> dict[str, dict[str, Any]]:
    canary = raw_stack("prod")
    canary["serving"]["models"]["resnet"]["canary"] = {"version": 4, "weight": 10}
    cpu = cpu_serving(raw_stack("prod"))
    return {"dev": raw_stack("dev"), "prod": raw_stack("prod"), "prod-canary": canary, "prod-cpu": cpu}


PLAIN_DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "plain", "namespace": "tf-serving"},
    "spec": {
        "selector": {"matchLabels": {"app": "plain"}},
        "template": {
            "metadata": {"labels": {"app": "plain"}},
            "spec": {"containers": [{"name": "c", "image": "tensorflow/serving:2.19.1", "securityContext": {"runAsUser": 1000}}]},
        },
    },
}


def scan(sets: dict[str, list[dict[str, Any]]], workdir: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """checkov over every set of objects at once (one folder each; its start-up is most of
    its time), its results split by set, from each result's file path."""
    for name, objects in sets.items():
        (workdir / name).mkdir()
        for i, obj in enumerate(objects):
            (workdir / name / f"{i:03d}-{obj['kind']}-{obj['metadata']['name']}.yaml").write_text(yaml.safe_dump(obj))
    done = subprocess.run(
        [str(tool("checkov")), "-d", str(workdir), "--framework", "kubernetes", "-o", "json", "--compact"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    kinds = ("failed_checks", "skipped_checks", "passed_checks")
    merged: dict[str, dict[str, list[dict[str, Any]]]] = {name: {k: [] for k in kinds} for name in sets}
    for r in reports:
        for kind in kinds:
            for check in r.get("results", {}).get(kind, []):
                merged[check["file_path"].strip("/").split("/")[0]][kind].append(check)
    return merged


@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[dict[str, Any]]]]:
    sets = {"plain": [PLAIN_DEPLOYMENT]}
    for stack, raw in _stacks().items():
        rendered = render_raw(copy.deepcopy(raw), stack=stack)
        # The serving namespace, and the node-local model cache's objects (its folder-maker's
        # namespace and the cluster-scoped volume) where the stack has one.
        sets[stack] = [
            m for m in rendered.k8s_objects()
            if m["metadata"].get("namespace") in ("tf-serving", "tf-serving-node-cache")
            or m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "model-cache"
        ]
        assert any(o["kind"] == "Deployment" for o in sets[stack])
    return scan(sets, tmp_path_factory.mktemp("checkov"))


@pytest.mark.parametrize("stack", sorted(_stacks()))
def test_serving_objects_pass_the_scanner_or_say_why(stack: str, scanned: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    result = scanned[stack]
    failed = sorted({(c["check_id"], c["resource"]) for c in result["failed_checks"]})
    assert failed == [], f"{stack}: checkov fails {failed}"
    assert len(result["passed_checks"]) > 20
    for skipped in result["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.split()) >= 5, f"{stack}: {skipped['check_id']} skipped without a reason"
    if stack.startswith("prod"):
        assert "CKV_K8S_43" not in {c["check_id"] for c in result["skipped_checks"]}, "prod runs by digest"


def test_the_scanner_catches_a_tag_and_a_low_uid(scanned: dict[str, dict[str, list[dict[str, Any]]]]) -> None:
    failed = {c["check_id"] for c in scanned["plain"]["failed_checks"]}
    assert {"CKV_K8S_40", "CKV_K8S_43"} <= failed
