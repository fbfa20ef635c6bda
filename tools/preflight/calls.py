"""How a check turns an AWS error into a finding: the IAM action a denial names (from the one
policy document, tools/preflight/policy.json), and the `unknown` finding for a call that could
not be made. It makes no AWS calls and never turns an error into a pass."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from tools.preflight.model import Finding

POLICY_PATH = Path(__file__).with_name("policy.json")

# Error codes AWS services answer a missing permission with: EC2 "UnauthorizedOperation",
# most JSON services "AccessDeniedException", query services "AccessDenied" (botocore
# service models list them as each operation's error shapes, e.g. service-quotas
# GetServiceQuota: AccessDeniedException).
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedException"})
# "User: arn:... is not authorized to perform: servicequotas:GetServiceQuota on resource ..."
_PERFORM = re.compile(r"perform: ([a-z0-9-]+:[A-Za-z0-9]+)")


@cache
def policy_actions() -> tuple[str, ...]:
    """Every IAM action the preflight needs, as listed in policy.json."""
    document = json.loads(POLICY_PATH.read_text())
    return tuple(a for statement in document["Statement"] for a in statement["Action"])


def error_code(exc: BaseException) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def is_denied(exc: BaseException) -> bool:
    return error_code(exc) in DENIED_CODES


def action_for(operation: str) -> str:
    """The IAM action of an API operation, e.g. GetServiceQuota -> servicequotas:GetServiceQuota
    (IAM actions are named after the operation: the Service Authorization Reference)."""
    for action in policy_actions():
        if action.split(":", 1)[1] == operation:
            return action
    return operation


def denied_action(exc: ClientError) -> str:
    """The action a denial names: from the message when AWS says it, else from the operation."""
    found = _PERFORM.search(str(exc.response.get("Error", {}).get("Message", "")))
    return found.group(1) if found else action_for(exc.operation_name)


def could_not_check(check: str, needs: str, exc: Exception) -> Finding:
    """The `unknown` finding for an AWS error: a denial names the IAM action to grant."""
    if isinstance(exc, ClientError) and is_denied(exc):
        action = denied_action(exc)
        return Finding(
            check, needs, f"could not check: {action} denied", "unknown",
            f"allow {action} (README, Preflight: tools/preflight/policy.json)",
        )
    if isinstance(exc, NoCredentialsError):
        return Finding(check, needs, "could not check: no AWS credentials", "unknown", "configure AWS credentials (aws configure)")
    if isinstance(exc, ClientError):
        what = f"{exc.operation_name}: {error_code(exc)}"
    elif isinstance(exc, BotoCoreError):
        what = str(exc)
    else:
        what = f"{type(exc).__name__}: {exc}"
    return Finding(check, needs, f"could not check: {what}", "unknown", "re-run; if it persists, check the error")
