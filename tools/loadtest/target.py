"""What the load test calls: the endpoints, API key and header of a deployed stack as the smoke
test reads them (tools/lib/deployed_stack.py: the stack outputs, or a file of them; the key from
$TF_SERVING_API_KEY or the stack's secret), with the REST and gRPC endpoints overridable (a
port-forward, a test's stand-in) and gRPC over TLS unless told otherwise.

It must not call the endpoints, nor read the outputs or the key any other way than the smoke
test does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.config import StackConfig
from tools.lib.deployed_stack import SmokeInputError, build_target, read_outputs


@dataclass(frozen=True)
class Endpoints:
    stack: str
    rest_url: str  # scheme://host[:port], no trailing slash
    grpc_target: str  # host:port
    grpc_tls: bool
    api_key: str | None
    api_key_header: str

    def headers(self) -> dict[str, str]:
        """What every REST request carries (and every gRPC call, as metadata)."""
        return {self.api_key_header: self.api_key} if self.api_key else {}


def resolve(
    stack: str,
    cfg: StackConfig,
    *,
    outputs_file: Path | None = None,
    rest_url: str | None = None,
    grpc_url: str | None = None,
    grpc_tls: bool = True,
    environ: dict[str, str] | None = None,
) -> Endpoints:
    """The stack's endpoints: each one given, else its stack output; SmokeInputError (one line
    naming the stack and what is missing) when they can't be had."""
    outputs: dict[str, Any] = {}
    if rest_url is None or grpc_url is None:
        outputs = read_outputs(stack, outputs_file)
    outputs = {**outputs, **({"rest_url": rest_url} if rest_url else {}), **({"grpc_url": grpc_url} if grpc_url else {})}
    target = build_target(stack, cfg, outputs, environ=environ)
    return Endpoints(stack, target.rest_url, target.grpc_target, grpc_tls, target.api_key, target.api_key_header)


__all__ = ["Endpoints", "SmokeInputError", "resolve"]
