"""What a preflight check reports, and what every check is given: the one shape each check
module returns and the one context it reads. It must not call AWS or print: the checks do the
first (through `Context.client`), the command line the second."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from components.config import StackConfig

# pass: the account has what the stack needs. fail: the deploy cannot succeed (or would leave
# a broken service) until the fix is done. warn: it can succeed, but something is worth a
# look (a support window ending, usage near a quota). unknown: the check could not run
# (no credentials, a permission denied, a timeout): never reported as a pass.
Verdict = Literal["pass", "fail", "warn", "unknown"]
VERDICTS: tuple[Verdict, ...] = ("fail", "unknown", "warn", "pass")


@dataclass(frozen=True)
class Finding:
    """One row of the preflight table."""

    check: str  # what was checked, e.g. "GPU vCPU quota: On-Demand G and VT (L-DB2E81BA)"
    needs: str  # what the stack needs, e.g. "48 vCPUs (pools a10g, l4 at max size)"
    has: str  # what the account has, e.g. "quota 0 vCPUs, 0 in use"
    verdict: Verdict
    fix: str = ""  # the exact fix: a command, a console path, the keys to change

    def as_dict(self) -> dict[str, str]:
        return {"check": self.check, "needs": self.needs, "has": self.has, "verdict": self.verdict, "fix": self.fix}


@dataclass
class Context:
    """What every check reads: the stack's validated config and, for the online checks, a
    way to make AWS clients (with timeouts and the stack's region) and the zones the stack
    will use. `client` is None offline (no credentials or `--offline`)."""

    stack: str
    config: StackConfig
    region: str
    client: Callable[[str], Any] | None = None
    # The availability zones the stack's node groups will use (mode create: the first
    # `cluster.vpc.az_count` available zones that need no opt-in, as components/cluster.py
    # picks them; mode existing: the zones of its private subnets). None until known.
    zones: list[str] | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def online(self) -> bool:
        return self.client is not None


# A check module exposes `checks(ctx: Context) -> list[Finding]`; the command runs them all.
Check = Callable[[Context], list[Finding]]
