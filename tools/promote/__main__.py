"""Promote model versions from one stack to another, and move a canary forward or back.

    python -m tools.promote --from dev --to prod [--model resnet ...] [--weight 10] [--apply]
    python -m tools.promote --stack prod --model resnet --promote-canary [--apply]
    python -m tools.promote --stack prod --model resnet --rollback [--apply]
    python -m tools.promote --stack prod --model resnet --finish [--apply]

Every action edits `serving.models.<model>` of the target's `Pulumi.<stack>.yaml` in place
(comments, key order and quoting of everything else kept), checks that the result is a
valid stack file and, for a promotion, that the version is complete in the target stack's
model store. Without --apply it only prints the diff; `pulumi up` deploys what is written.
Exit status: 0 done (or nothing to do), 1 refused, 2 usage or configuration error.

- `--from A --to B`: the version A serves (its `stable` label, else its highest version;
  with `latest`, the newest complete version in A's model store) becomes a canary in B
  (`canary: {version, weight}`), or B's first and stable version when B lacks the model.
  A's `serving.image_version` is carried over when it differs.
- `--promote-canary`: the canary becomes `stable`; the old stable version stays loaded as
  `previous` for an instant rollback.
- `--rollback`: drops a canary in progress; else goes back to `previous`.
- `--finish`: unloads `previous` after a promotion.

This module is the command line only: arguments, messages and exit statuses. What an action
does to a model is in actions.py, what is read, checked and written in plan.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from components.config import StackConfigError
from tools.lib.model_repository import MODEL_NAME
from tools.lib.stack_store import StackOutputs
from tools.lib.stackfile import ROOT
from tools.promote.actions import ACTIONS, DEFAULT_WEIGHT
from tools.promote.errors import Refused, UsageError
from tools.promote.plan import Context, change_stack, promote_between, write_atomically


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.promote",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--from", dest="source", metavar="STACK", help="stack to promote from")
    parser.add_argument("--to", dest="target", metavar="STACK", help="stack to promote to")
    parser.add_argument("--stack", metavar="STACK", help="stack whose canary to move")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="model to act on (repeatable; with --from, default: every model of the source)",
    )
    parser.add_argument(
        "--weight",
        type=int,
        metavar="PERCENT",
        help=f"canary's share of traffic, 0-100 (default {DEFAULT_WEIGHT}; with --from only)",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--promote-canary", action="store_true", help="make the canary version stable"
    )
    action.add_argument(
        "--rollback", action="store_true", help="drop the canary, else go back to `previous`"
    )
    action.add_argument(
        "--finish", action="store_true", help="unload the `previous` version after a promotion"
    )
    parser.add_argument("--apply", action="store_true", help="write the file (default: dry run)")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="folder holding the Pulumi.<stack>.yaml files"
    )
    return parser


def _check_args(args: argparse.Namespace) -> str | None:
    """The stack action chosen (None for --from/--to); raises UsageError on bad combinations."""
    action = next((a for a in ACTIONS if getattr(args, a)), None)
    between = args.source is not None or args.target is not None
    if between:
        if args.source is None or args.target is None:
            raise UsageError("--from and --to go together")
        if args.stack is not None or action is not None:
            raise UsageError("--from/--to can't be combined with --stack or a canary action")
        if args.weight is not None and not 0 <= args.weight <= 100:
            raise UsageError(f"--weight must be between 0 and 100 (got {args.weight})")
    else:
        if args.stack is None or action is None:
            raise UsageError(
                "give --from A --to B, or --stack S with --promote-canary, --rollback or --finish"
            )
        if not args.model:
            raise UsageError(f"--{action.replace('_', '-')} needs --model")
        if args.weight is not None:
            raise UsageError("--weight only goes with --from/--to")
    for model in args.model or []:
        if not MODEL_NAME.fullmatch(model):
            raise UsageError(f"model name {model!r} is not allowed ({MODEL_NAME.pattern})")
    return action


def main(
    argv: list[str] | None = None,
    s3: Any = None,
    sts: Any = None,
    stack_outputs: StackOutputs | None = None,
) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's own usage errors
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    ctx = Context(root=args.root, s3=s3, sts=sts, stack_outputs=stack_outputs)
    try:
        action = _check_args(args)
        if action is None:
            plan = promote_between(ctx, args.source, args.target, args.model, args.weight)
        else:
            plan = change_stack(ctx, args.stack, args.model, action)
        for note in plan.notes:
            print(note)
        if plan.changed:
            print(plan.diff(), end="")
        for summary in plan.summaries:
            print(summary)
        if not plan.changed:
            print(f"{plan.path.name}: nothing to change")
        elif args.apply:
            write_atomically(plan.path, plan.after, plan.before)
            print(f"wrote {plan.path.name}; `pulumi up` on that stack deploys it")
        else:
            print(f"dry run: {plan.path.name} not written; add --apply to write it")
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"refused: AWS call failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
