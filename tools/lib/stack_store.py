"""Where a stack's model store is: its bucket and key prefix, from what the caller names, the
deployed stack's outputs (`pulumi stack output`), or the stack file and the AWS account.

It owns that lookup for every command (publishing and promotion resolve a store the same
way); it must not read or write the store itself, nor parse command lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any, TypeAlias

import boto3

from components.config import StackConfig
from components.model_layout import model_bucket_name
from tools.lib.stackfile import ROOT

# A stack's deployed outputs by stack name, or None when they can't be had.
StackOutputs: TypeAlias = Callable[[str], dict[str, Any] | None]

PULUMI_TIMEOUT = 60  # seconds; the fallback is always there, so don't wait long on a backend


def pulumi_stack_outputs(stack: str) -> dict[str, Any] | None:
    """The stack's outputs from `pulumi stack output --json`, or None when they can't be had:
    no CLI on PATH, not logged in, stack not deployed, a timeout, or output that isn't JSON."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return None
    try:
        done = subprocess.run(
            [pulumi, "stack", "output", "--json", "--stack", stack],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,  # a passphrase prompt fails at once instead of hanging
            capture_output=True,
            text=True,
            timeout=PULUMI_TIMEOUT,
            check=False,
        )
        outputs = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    return outputs if isinstance(outputs, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def resolve_store(
    stack: str,
    cfg: StackConfig,
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    sts: Any = None,
    stack_outputs: StackOutputs | None = None,
) -> tuple[str, str]:
    """The bucket and prefix of `stack`'s model store: `bucket` if given, else the deployed
    stack's `model_bucket` output, else derived from `cfg` and the account of the current
    credentials (`sts`); the prefix is `prefix`, else the `model_prefix` output that came
    with the bucket, else the stack file's. Says on stderr where the bucket came from."""
    if bucket:
        return bucket, prefix or cfg.model_store.prefix
    # The default is looked up at call time, so a test can stub it for every command at once.
    outputs = (stack_outputs or pulumi_stack_outputs)(stack) or {}
    deployed = _text(outputs.get("model_bucket"))
    if deployed:
        print(f"bucket from stack outputs: {deployed}", file=sys.stderr)
        return deployed, prefix or _text(outputs.get("model_prefix")) or cfg.model_store.prefix
    sts = sts or boto3.client("sts", region_name=cfg.aws_region)
    account = sts.get_caller_identity()["Account"]
    derived = model_bucket_name(cfg, account)
    print(
        f"bucket derived from Pulumi.{stack}.yaml and account {account}: {derived}",
        file=sys.stderr,
    )
    return derived, prefix or cfg.model_store.prefix
