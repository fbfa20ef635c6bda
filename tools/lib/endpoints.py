"""Where a deployed stack serves and how a client gets in: its REST and gRPC endpoints and models
from the stack outputs (`rest_url`, `grpc_url`, `serving_models`), the API key and its header
from the stack's config, each overridable by the caller (a test's stand-in, a port-forward).

It owns that lookup for every command that calls the endpoints (the smoke and load tests); it
must not call the endpoints, nor parse command lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from components.config import StackConfig
from tools.lib.stack_store import PULUMI_TIMEOUT, StackOutputs, pulumi_stack_outputs
from tools.lib.stackfile import ROOT

# The API key from the environment first: CI holds it as a secret, and a shell can export it.
API_KEY_ENV = "TFS_API_KEY"
API_KEY_CONFIG = "tf-serving-eks:ingress_api_key"


class EndpointError(Exception):
    """An endpoint or key that can't be had: one line naming the stack and what is missing."""


@dataclass(frozen=True)
class Endpoints:
    stack: str
    rest_url: str | None  # https://host, no trailing slash
    grpc_target: str | None  # host:port
    grpc_tls: bool
    models: tuple[str, ...]
    api_key: str | None
    api_key_header: str

    def headers(self) -> dict[str, str]:
        """What every REST request carries (and every gRPC call, as metadata)."""
        return {self.api_key_header: self.api_key} if self.api_key else {}


def pulumi_secret(stack: str, key: str) -> str | None:
    """A secret of the stack's config from `pulumi config get` (decrypted by the backend), or
    None when it can't be had (no CLI, not logged in, key unset)."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return None
    try:
        done = subprocess.run(
            [pulumi, "config", "get", key, "--stack", stack],
            cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=PULUMI_TIMEOUT, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = done.stdout.strip()
    return value if done.returncode == 0 and value else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def resolve_endpoints(
    stack: str,
    cfg: StackConfig,
    *,
    rest_url: str | None = None,
    grpc_target: str | None = None,
    grpc_tls: bool | None = None,
    stack_outputs: StackOutputs | None = None,
    secret: Any = None,
    environ: dict[str, str] | None = None,
) -> Endpoints:
    """The stack's endpoints: each given value, else the deployed stack's output. The models
    are the stack file's `serving.models` (what the deployed stack serves once it is up to
    date with the file). gRPC goes over TLS (the load balancer's listener is HTTPS on 443)
    unless the target is given with grpc_tls=False. The API key: $TFS_API_KEY, else the
    stack's `ingress_api_key` secret; missing while `ingress.access.require_api_key` is on,
    an EndpointError."""
    env = dict(os.environ) if environ is None else environ
    outputs: dict[str, Any] = {}
    if rest_url is None or grpc_target is None:
        outputs = (stack_outputs or pulumi_stack_outputs)(stack) or {}
    rest = rest_url or _text(outputs.get("rest_url"))
    grpc = grpc_target or _text(outputs.get("grpc_url"))
    if rest is None and grpc is None:
        raise EndpointError(
            f"stack '{stack}': no endpoints: the stack outputs rest_url and grpc_url can't be read "
            "(is the Pulumi CLI logged in and the stack deployed with ingress?); pass --rest-url "
            "and --grpc-url"
        )
    access = cfg.ingress.access if cfg.ingress else None
    header = access.api_key_header if access else "x-api-key"
    key = env.get(API_KEY_ENV) or None
    if key is None and access is not None and access.require_api_key:
        key = (secret or pulumi_secret)(stack, API_KEY_CONFIG)
        if key is None:
            raise EndpointError(
                f"stack '{stack}': ingress.access.require_api_key is true but no API key: set "
                f"${API_KEY_ENV}, or log the Pulumi CLI in to read {API_KEY_CONFIG}"
            )
    return Endpoints(
        stack=stack,
        rest_url=rest.rstrip("/") if rest else None,
        grpc_target=grpc,
        grpc_tls=True if grpc_tls is None else grpc_tls,
        models=tuple(sorted(cfg.serving.models)),
        api_key=key,
        api_key_header=header,
    )
