"""Check a stack against the AWS account before `pulumi up`, read-only.

    python -m tools.preflight --stack dev [--json] [--offline] [--timeout 10]

Reads `Pulumi.<stack>.yaml` (validated as the program validates it), then checks what the
account must have for the deploy to succeed: placeholders left in the stack file, vCPU and
EKS/VPC quotas, instance types offered in the stack's zones, and more (README, "Preflight").
Prints one table, failures first (`--json`: a JSON list of findings). Without credentials it
runs the stack file checks only and says so.
Exit status: 0 all checks pass or warn, 1 a check failed or could not run, 2 usage or
configuration error.

This module is the command line only: arguments, messages and exit statuses; it must not
hold checks (runner.py runs the check modules)."""

from __future__ import annotations

import argparse
import sys

from botocore.exceptions import BotoCoreError

from components.config import StackConfigError
from tools.lib.stackfile import parse_stack_command, load_stack_file, parse_document, stack_file
from tools.preflight.runner import as_json, build_context, exit_status, preflight, table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.preflight",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit status: 0 all checks pass or warn, 1 a check failed or could not run, "
        "2 usage or configuration error.",
    )
    parser.add_argument("--stack", required=True, metavar="STACK", help="stack to check (Pulumi.<stack>.yaml)")
    parser.add_argument("--json", action="store_true", help="print the findings as a JSON list")
    parser.add_argument("--offline", action="store_true", help="check the stack file only, no AWS calls")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S",
        help="seconds each AWS call may take to connect and to read (default 10)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_stack_command(_parser(), argv)
    if isinstance(args, int):
        return args
    path = stack_file(args.stack)
    if not path.is_file():
        print(f"error: stack '{args.stack}': {path.name} not found", file=sys.stderr)
        return 2
    try:
        config = load_stack_file(args.stack)
        document = parse_document(path.read_text(), path.name, args.stack)
        ctx, note = build_context(args.stack, config, offline=args.offline, timeout=args.timeout, document=document)
    except StackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        print(f"error: AWS configuration: {exc}", file=sys.stderr)
        return 2
    if note:
        print(note, file=sys.stderr)
    findings = preflight(ctx)
    print(as_json(findings) if args.json else table(findings))
    return exit_status(findings)


if __name__ == "__main__":
    sys.exit(main())
