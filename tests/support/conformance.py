"""Conformance checks of rendered Kubernetes objects, independent of the code that built them.

- built-in kinds: strict schema validation with `kubernetes-validate` against the stack's
  Kubernetes version (unknown fields rejected);
- custom resources: JSON Schema validation against the upstream CRD schemas in
  `../shared/reference/crds-pinned` (the versions of the charts we pin);
- Helm values: every key we set exists in the pinned chart's default values
  (`../shared/reference/helm-values`).

It owns these checks for the tests; it must not import the code under test, and a check
whose reference data is missing fails the test (tests/support/reference.py), never passes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from typing import Any

import jsonschema
import kubernetes_validate

from tests.support import auto_mode_schema
from tests.support.reference import REFERENCE_DIR, reference

CRD_DIR = REFERENCE_DIR / "crds-pinned"


def object_id(manifest: dict[str, Any]) -> str:
    meta = manifest.get("metadata") or {}
    where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
    return f"{manifest.get('kind')} {where}{meta.get('name')}"


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    """The reference schema of a custom resource kind, or None if the reference has none."""
    if "/" not in api_version:
        return None
    if (api_version, kind) == ("eks.amazonaws.com/v1", "NodeClass"):
        # No CRD is published for it: the fields the EKS user guide documents.
        return auto_mode_schema.NODE_CLASS_SCHEMA
    group, version = api_version.split("/", 1)
    path = reference(CRD_DIR.name) / group / f"{kind.lower()}_{version}.json"
    if not path.is_file():
        return None
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def validate_object(manifest: dict[str, Any], kubernetes_version: str) -> list[str]:
    """Problems with one object; empty when it conforms."""
    try:
        kubernetes_validate.validate(manifest, kubernetes_version, strict=True)
        return []
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        return [f"{object_id(manifest)}: {exc.message} at '{path}'"]
    except kubernetes_validate.SchemaNotFoundError:
        pass
    schema = crd_schema(str(manifest.get("apiVersion")), str(manifest.get("kind")))
    if schema is None:
        return [
            f"{object_id(manifest)}: no schema for {manifest.get('apiVersion')} "
            f"{manifest.get('kind')} (neither Kubernetes {kubernetes_version} nor {CRD_DIR})"
        ]
    validator = jsonschema.Draft7Validator(schema)
    problems = [
        f"{object_id(manifest)}: {err.message} at '{'/'.join(str(p) for p in err.absolute_path)}'"
        for err in validator.iter_errors(manifest)
    ]
    if schema is auto_mode_schema.NODE_CLASS_SCHEMA and not problems:
        size = ((manifest["spec"].get("ephemeralStorage") or {}).get("size"))
        problem = auto_mode_schema.ephemeral_size_problem(size) if size else None
        problems += [f"{object_id(manifest)}: {problem}"] if problem else []
    return problems


def validate_objects(manifests: Iterable[dict[str, Any]], kubernetes_version: str) -> list[str]:
    problems: list[str] = []
    for manifest in manifests:
        problems.extend(validate_object(manifest, kubernetes_version))
    return problems


HELM_VALUES_DIR = REFERENCE_DIR / "helm-values"
# Free-form maps in the charts (args, labels, selectors, Kubernetes specs): anything under
# a key of this name, at any depth, is passed through as is.
FREE_FORM_KEYS = frozenset(
    {
        "extraArgs",
        "featureGates",
        "nodeSelector",
        "tolerations",
        "affinity",
        "podLabels",
        "podAnnotations",
        "resources",
        "containerSecurityContext",
        "securityContext",
        "podSecurityContext",
        "additionalLabels",
        "volumeClaimTemplate",
    }
)
# Paths that are free-form as a whole.
FREE_FORM_PATHS = frozenset(
    {
        "config.map",
        # Alertmanager's own configuration file.
        "alertmanager.config",
        # Sub-charts of kube-prometheus-stack: their own defaults are not in the reference data.
        "grafana",
        "kube-state-metrics",
    }
)


@functools.cache
def chart_defaults(chart: str, version: str) -> dict[str, Any] | None:
    import yaml

    path = reference(HELM_VALUES_DIR.name) / f"{chart}-{version}.yaml"
    if not path.is_file():
        return None
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def helm_values_problems(chart: str, version: str, values: dict[str, Any]) -> list[str]:
    """Keys we set that the chart's default values.yaml does not have (typos, stale names).

    Returns a single problem if the reference has no defaults for this chart version.
    """
    defaults = chart_defaults(chart, version)
    if defaults is None:
        return [f"{chart} {version}: no reference values in {HELM_VALUES_DIR}"]
    problems: list[str] = []

    def walk(ours: Any, theirs: Any, path: str) -> None:
        if not isinstance(ours, dict) or path in FREE_FORM_PATHS:
            return
        if path.rsplit(".", 1)[-1] in FREE_FORM_KEYS:
            return
        if not isinstance(theirs, dict):
            problems.append(f"{chart} {version}: '{path}' is not a map in the chart's values")
            return
        if not theirs and path:
            # An empty map in the defaults is an object the chart passes through as is.
            return
        for key, value in ours.items():
            child = f"{path}.{key}" if path else key
            if key not in theirs:
                problems.append(f"{chart} {version}: unknown value '{child}'")
            else:
                walk(value, theirs[key], child)

    walk(values, defaults, "")
    return problems
