"""What the smoke test calls and expects: the stack's public endpoints from its outputs
(`pulumi stack output --json`, or a file of them), the API key, and per model the versions and
labels the stack file serves (the canary's version and label included).

It must not call the endpoints (checks.py does), nor hold rules of the config model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from components.config import CANARY_LABEL, StackConfig
from tools.lib.stack_store import PULUMI_TIMEOUT, pulumi_stack_outputs
from tools.lib.stackfile import ROOT

# The stack secret holding the key (README, "Access control").
API_KEY_SECRET = "tf-serving-eks:ingress_api_key"
API_KEY_ENV = "TF_SERVING_API_KEY"


class SmokeInputError(Exception):
    """Bad input or outputs the smoke test cannot use: one line, exit status 2."""


@dataclass(frozen=True)
class ExpectedModel:
    name: str
    # The versions served (policy specific), or None with policy latest (`latest_count` newest).
    versions: tuple[int, ...] | None
    latest_count: int
    labels: dict[str, int] = field(default_factory=dict)
    canary_version: int | None = None

    def all_versions(self) -> tuple[int, ...]:
        """The versions a caller can name: the served ones and the canary's."""
        canary = (self.canary_version,) if self.canary_version is not None else ()
        return (*(self.versions or ()), *canary)


@dataclass(frozen=True)
class Target:
    stack: str
    rest_url: str  # https://<rest_host>
    grpc_target: str  # <grpc_host>:443
    http_url: str  # the HTTP listener, redirected to HTTPS
    api_key_header: str
    api_key: str | None  # None: the stack requires none
    allowlist: bool  # access.allowed_cidrs is set
    models: tuple[ExpectedModel, ...]


def read_outputs(stack: str, outputs_file: Path | None) -> dict[str, Any]:
    """The stack's outputs: the JSON file given, else `pulumi stack output --json`."""
    if outputs_file is not None:
        try:
            outputs = json.loads(outputs_file.read_text())
        except OSError as exc:
            raise SmokeInputError(f"stack '{stack}': cannot read --outputs {outputs_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise SmokeInputError(f"stack '{stack}': --outputs {outputs_file} is not JSON: {exc}") from None
        if not isinstance(outputs, dict):
            raise SmokeInputError(f"stack '{stack}': --outputs {outputs_file} must hold a JSON object of outputs")
        return outputs
    outputs = pulumi_stack_outputs(stack)
    if outputs is None:
        raise SmokeInputError(
            f"stack '{stack}': cannot read its outputs (`pulumi stack output --json --stack {stack}` "
            "failed or the pulumi CLI is not on PATH); pass them with --outputs FILE"
        )
    return outputs


def _output(stack: str, outputs: dict[str, Any], key: str) -> str:
    value = outputs.get(key)
    if not isinstance(value, str) or not value:
        raise SmokeInputError(
            f"stack '{stack}': output {key!r} is {'missing' if value is None else repr(value)}; the smoke test "
            "calls the public endpoints, which exist with tf-serving-eks:ingress set (and enabled)"
        )
    return value


def pulumi_api_key(stack: str) -> str | None:
    """The API key from the stack's secret config, when the pulumi CLI can decrypt it."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return None
    try:
        done = subprocess.run(
            [pulumi, "config", "get", API_KEY_SECRET, "--stack", stack],
            cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PULUMI_TIMEOUT, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def expected_models(cfg: StackConfig) -> tuple[ExpectedModel, ...]:
    out = []
    for name, model in sorted(cfg.serving.models.items()):
        labels = dict(model.labels)
        if model.canary is not None:
            # The canary pods carry the canary label on the canary version (components/serving.py
            # canary_models).
            labels[CANARY_LABEL] = model.canary.version
        out.append(
            ExpectedModel(
                name=name,
                versions=tuple(sorted(model.versions)) if model.version_policy == "specific" else None,
                latest_count=model.latest_count,
                labels=labels,
                canary_version=model.canary.version if model.canary is not None else None,
            )
        )
    return tuple(out)


def build_target(
    stack: str, cfg: StackConfig, outputs: dict[str, Any], *, http_url: str | None = None,
    environ: dict[str, str] | None = None,
) -> Target:
    env = os.environ if environ is None else environ
    if cfg.ingress is None or not cfg.ingress.enabled:
        raise SmokeInputError(
            f"stack '{stack}': tf-serving-eks:ingress is not set (or enabled: false), so the stack has no public "
            "endpoints to test"
        )
    rest_url = _output(stack, outputs, "rest_url").rstrip("/")
    parts = urlsplit(rest_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SmokeInputError(f"stack '{stack}': output 'rest_url' is {rest_url!r}; expected https://<host>")
    grpc_target = _output(stack, outputs, "grpc_url")
    if "://" in grpc_target or ":" not in grpc_target:
        raise SmokeInputError(f"stack '{stack}': output 'grpc_url' is {grpc_target!r}; expected <host>:<port>")
    access = cfg.ingress.access
    key: str | None = None
    if access.require_api_key:
        key = env.get(API_KEY_ENV) or pulumi_api_key(stack)
        if not key:
            raise SmokeInputError(
                f"stack '{stack}': ingress.access.require_api_key is true but no key was found: set {API_KEY_ENV}, "
                f"or let the pulumi CLI read the secret {API_KEY_SECRET}"
            )
    return Target(
        stack=stack,
        rest_url=rest_url,
        grpc_target=grpc_target,
        http_url=(http_url or f"http://{parts.hostname}").rstrip("/"),
        api_key_header=access.api_key_header.lower(),  # gRPC metadata keys are lower case
        api_key=key,
        allowlist=bool(access.allowed_cidrs),
        models=expected_models(cfg),
    )
