"""How promotion fails: bad arguments or an unreadable stack file (UsageError, exit status 2),
a refused action (Refused, exit status 1: each file and model, and why), and one model's
refusal while its entry is edited (ModelRefused, collected into a Refused with the file name).

It must not print or choose an exit status: the command line does (__main__.py).
"""

from __future__ import annotations

# The reason given whenever an entry holds what the tool did not write and cannot merge.
HAND_EDITED = "changed by hand in a way the tool cannot merge"

# What was refused: (file, model or None for the whole file, reason).
Problems = list[tuple[str, str | None, str]]


class UsageError(Exception):
    """Bad arguments or an unreadable stack file: exit status 2."""


class Refused(Exception):
    """The action was refused (exit status 1): per file, each model and why."""

    def __init__(self, problems: Problems) -> None:
        super().__init__(problems)
        self.problems = problems  # (file, model or None, reason)

    def __str__(self) -> str:
        lines = []
        for file, model, reason in self.problems:
            where = f"{file}: model '{model}'" if model else file
            lines.append(f"refused: {where}: {reason}")
        return "\n".join(lines)


class ModelRefused(Exception):
    """One model's change is refused; collected by the caller with the file's name."""
