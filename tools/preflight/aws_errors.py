"""How an AWS call that could not answer becomes a preflight finding: a denied permission is
reported as "could not check" naming the IAM action the caller needs (from AWS's message, or
the operation's action in the one policy document, tools/preflight/policy.json), any other
failure (a timeout, no credentials, an unexpected error code) as "could not check" with the
error; never as a pass. It owns only that translation; it must not make AWS calls of its own."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from functools import cache
from pathlib import Path
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from tools.preflight.model import Finding

T = TypeVar("T")

POLICY_PATH = Path(__file__).with_name("policy.json")

# The error codes AWS answers a request with when the caller's policy does not allow it:
# AccessDenied (query-protocol services: IAM, STS, Route 53), AccessDeniedException (JSON and
# REST-JSON services: EKS, Service Quotas), UnauthorizedOperation (EC2), UnauthorizedException
# (a few REST services). Each service model's error shapes in
# botocore/data/<service>/<version>/service-2.json name them.
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


def could_not_check(check: str, needs: str, exc: BaseException, action: str | None = None) -> Finding:
    """The `unknown` finding for an AWS call (to `action`, when the caller knows it) that
    failed with `exc`: a denial names the IAM action to grant."""
    if isinstance(exc, ClientError) and is_denied(exc):
        denied = action or denied_action(exc)
        return Finding(
            check, needs, f"could not check: {denied} was denied", "unknown",
            f"allow {denied} to the identity running preflight (README, Preflight: tools/preflight/policy.json)",
        )
    if isinstance(exc, NoCredentialsError):
        return Finding(check, needs, "could not check: no AWS credentials", "unknown", "configure AWS credentials (aws configure)")
    if isinstance(exc, ClientError):
        what = f"{action or action_for(exc.operation_name)} failed ({error_code(exc)}: {exc})"
    elif isinstance(exc, BotoCoreError):
        what = f"{action} failed ({exc})" if action else str(exc)
    else:
        what = f"{type(exc).__name__}: {exc}"
    return Finding(
        check, needs, f"could not check: {what}", "unknown",
        "re-run preflight; if it persists, check the credentials, the network and the region",
    )


class CouldNotCheck(Exception):
    """A call a check depends on failed; `finding` is the row to report instead."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.has)
        self.finding = finding


def guarded(
    check: str, needs: str, action: str, call: Callable[[], T], missing: Collection[str] = ()
) -> T | None:
    """`call()`; None when it fails with one of the `missing` error codes (the thing looked up
    does not exist, which the check reports itself); any other AWS failure raises
    CouldNotCheck carrying the unknown finding."""
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) in missing:
            return None
        raise CouldNotCheck(could_not_check(check, needs, exc, action)) from exc
    except BotoCoreError as exc:
        raise CouldNotCheck(could_not_check(check, needs, exc, action)) from exc
