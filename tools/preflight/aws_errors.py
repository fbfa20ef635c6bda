"""How an AWS call that could not answer becomes a preflight finding: a denied permission is
reported as "could not check" naming the IAM action the caller needs, any other failure
(a timeout, no credentials, an unexpected error code) as "could not check" with the error;
never as a pass. It owns only that translation; it must not make AWS calls of its own."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from tools.preflight.model import Finding

T = TypeVar("T")

# The error codes AWS answers a request with when the caller's policy does not allow it:
# AccessDenied (query-protocol services: IAM, STS, Route 53), AccessDeniedException (JSON and
# REST-JSON services: EKS, Service Quotas), UnauthorizedOperation (EC2). Each service model's
# error shapes in botocore/data/<service>/<version>/service-2.json name them.
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_denied(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and error_code(exc) in DENIED_CODES


def could_not_check(check: str, needs: str, action: str, exc: BaseException) -> Finding:
    """The `unknown` finding for a call to `action` (e.g. "eks:DescribeAddonVersions") that
    failed with `exc`."""
    if is_denied(exc):
        return Finding(
            check, needs, f"could not check: {action} was denied", "unknown",
            f"allow {action} to the identity running preflight (the README's preflight policy)",
        )
    detail = f"{error_code(exc)}: {exc}" if isinstance(exc, ClientError) else str(exc)
    return Finding(
        check, needs, f"could not check: {action} failed ({detail})", "unknown",
        f"re-run preflight; if it persists, check the credentials and the region reach {action}",
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
        raise CouldNotCheck(could_not_check(check, needs, action, exc)) from exc
    except BotoCoreError as exc:
        raise CouldNotCheck(could_not_check(check, needs, action, exc)) from exc
