"""The generated part of the README's Preflight section: the IAM policy the checks need (from
tools/preflight/policy.json, the one place it lives) and the offline output for the dev stack,
as the command prints it. `python -m tools.preflight.readme --write-readme` rewrites it; it
only writes between its markers and makes no AWS call."""

from __future__ import annotations

import argparse
import sys

from tools.lib.readme_section import write_between
from tools.lib.stackfile import ROOT, load_stack_file, parse_document, stack_file
from tools.preflight.aws_errors import POLICY_PATH
from tools.preflight.runner import build_context, preflight, table

BEGIN = "<!-- preflight:begin -->"
END = "<!-- preflight:end -->"
README = ROOT / "README.md"


def offline_output(stack: str = "dev") -> str:
    ctx, _ = build_context(
        stack, load_stack_file(stack), offline=True, timeout=1,
        document=parse_document(stack_file(stack).read_text(), stack_file(stack).name, stack),
    )
    return table(preflight(ctx))


def section() -> str:
    return "\n".join([
        "The IAM policy it needs (`tools/preflight/policy.json`; every action read-only):",
        "",
        "```json",
        POLICY_PATH.read_text().rstrip(),
        "```",
        "",
        "The dev stack as shipped "
        "(`python -m tools.preflight --stack dev --offline`; without `--offline` and without credentials it prints the same and one `unknown` row for the account checks):",
        "",
        "```",
        offline_output("dev"),
        "```",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.preflight.readme", description=__doc__)
    parser.add_argument("--write-readme", action="store_true", help="rewrite the section in README.md")
    args = parser.parse_args(argv)
    if args.write_readme:
        write_between(README, BEGIN, END, section())
    else:
        print(section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
