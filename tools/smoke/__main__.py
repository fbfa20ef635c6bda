"""Smoke-test a deployed stack through its public endpoints, read-only.

    python -m tools.smoke --stack dev [--outputs FILE] [--timeout 10] [--json]

Reads the endpoints from the stack's outputs (`pulumi stack output --json`, or --outputs FILE
holding that JSON) and what should be served from `Pulumi.<stack>.yaml`; the API key, when the
stack requires one, from $TF_SERVING_API_KEY or the stack's secret (pulumi CLI). Then, for every
model: REST and gRPC status (each expected version AVAILABLE), metadata, labels and the canary,
one prediction (input from models/<model>/smoke.json, else derived from the signature); and
that the admin gRPC method, plain HTTP and calls without the key are refused (README, "Smoke
test after `pulumi up`"). Prints one table, failures first (`--json`: a JSON list).
Exit status: 0 every check passed, 1 a check failed, 2 bad input or the outputs cannot be read.

This module is the command line only: arguments, messages and exit statuses; it must not hold
checks (checks.py does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.config import StackConfigError
from tools.lib.stackfile import parse_stack_command, load_stack_file, stack_file
from tools.smoke.examples import EXAMPLES_DIR
from tools.lib.deployed_stack import SmokeInputError, build_target, read_outputs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.smoke",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Exit status: 0 every check passed, 1 a check failed, 2 bad input or the outputs cannot be read.",
    )
    parser.add_argument("--stack", required=True, metavar="STACK", help="stack to test (Pulumi.<stack>.yaml)")
    parser.add_argument("--outputs", type=Path, metavar="FILE", help="the stack's outputs as `pulumi stack output --json` prints them")
    parser.add_argument("--stack-file", type=Path, metavar="FILE", help="the stack file (default Pulumi.<stack>.yaml)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, metavar="S", help="seconds each call may take (default 10)"
    )
    parser.add_argument("--ca-file", type=Path, metavar="PEM", help="trust this CA bundle instead of the system's")
    parser.add_argument("--http-url", metavar="URL", help="the plain HTTP listener to check (default http://<rest host>)")
    parser.add_argument(
        "--examples", type=Path, default=EXAMPLES_DIR, metavar="DIR",
        help="where <model>/smoke.json example inputs are (default models/)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as a JSON list")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_stack_command(_parser(), argv)
    if isinstance(args, int):
        return args
    path = args.stack_file or stack_file(args.stack)
    if not path.is_file():
        print(f"error: stack '{args.stack}': {path.name} not found", file=sys.stderr)
        return 2
    if args.ca_file is not None and not args.ca_file.is_file():
        print(f"error: stack '{args.stack}': --ca-file {args.ca_file} not found", file=sys.stderr)
        return 2
    try:
        config = load_stack_file(args.stack, path=path)
        target = build_target(args.stack, config, read_outputs(args.stack, args.outputs), http_url=args.http_url)
    except (StackConfigError, SmokeInputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The gRPC stubs load only now: the usage errors above need none of them.
    from tools.smoke.checks import Smoke, as_json, exit_status, table

    results = Smoke(target, timeout=args.timeout, ca_file=args.ca_file, examples_dir=args.examples).run()
    print(as_json(results) if args.json else table(results))
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
