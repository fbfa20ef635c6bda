"""What the TF Serving pods behind each Service can answer, read from the rendered objects
(Service selector -> Deployment -> its models.config ConfigMap), and TF Serving's own REST
path grammar, so a test can say whether a request that reached a Service can be served.

TF Serving's REST paths (tensorflow/serving, model_servers/http_rest_api_util.cc):
kPredictionApiGegex for POST, kModelStatusApiRegex for GET, both matched in full and
case-insensitively; anything else under `/v1/` is a malformed request, and nothing outside
`/v1/` is the REST API (http_rest_api_util.h: kHTTPRestApiHandlerPathRegex).

It reads only rendered objects and TF Serving's rules; it must not import the code under test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tests.support import tfs_config
from tools.lib.mock_engine import Rendering

PREDICTION_API = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
MODEL_STATUS_API = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:\/(metadata))?"
)


@dataclass(frozen=True)
class ServedModel:
    versions: frozenset[int] | None  # None: policy latest, decided by the store at run time
    labels: dict[str, int]


@dataclass(frozen=True)
class ModelRef:
    """What a call asks for: a model, and at most one of a version and a label."""

    model: str
    version: int | None = None
    label: str | None = None


def parse_rest(method: str, path: str) -> ModelRef | None:
    """The model a REST call names, as TF Serving parses it; None if it is not a call the
    server implements (or names no model)."""
    pattern = PREDICTION_API if method == "POST" else MODEL_STATUS_API if method == "GET" else None
    found = pattern.fullmatch(path) if pattern else None
    if found is None or not found.group(1):
        return None
    return ModelRef(found.group(1), int(found.group(2)) if found.group(2) else None, found.group(3))


def can_serve(models: dict[str, ServedModel], ref: ModelRef) -> bool:
    served = models.get(ref.model)
    if served is None:
        return False
    if ref.label is not None:
        return ref.label in served.labels
    if ref.version is not None:
        return served.versions is None or ref.version in served.versions
    return True


def served_by_service(r: Rendering) -> dict[str, dict[str, ServedModel]]:
    """Per Service name, the models (versions, labels) its pods load."""
    objects = r.k8s_objects()
    config_maps = {m["metadata"]["name"]: m for m in objects if m["kind"] == "ConfigMap"}
    out: dict[str, dict[str, ServedModel]] = {}
    for service in (m for m in objects if m["kind"] == "Service"):
        selector = service["spec"].get("selector", {}).items()
        pods = [
            d["spec"]["template"]
            for d in objects
            if d["kind"] == "Deployment" and selector <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        models: dict[str, ServedModel] = {}
        for pod in pods:
            models.update(_pod_models(pod, config_maps))
        if models:
            out[service["metadata"]["name"]] = models
    return out


def _pod_models(pod: dict[str, Any], config_maps: dict[str, Any]) -> dict[str, ServedModel]:
    for volume in pod["spec"].get("volumes", []):
        data = config_maps.get(volume.get("configMap", {}).get("name"), {}).get("data", {})
        if "models.config" in data:
            config = tfs_config.parse("models.config", data["models.config"])
            out = {}
            for model in config.model_config_list.config:
                policy = model.model_version_policy
                versions = frozenset(policy.specific.versions) if policy.HasField("specific") else None
                out[model.name] = ServedModel(versions, dict(model.version_labels))
            return out
    return {}
