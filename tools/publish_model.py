"""Publish a SavedModel version to a stack's S3 model store, or list a model's versions.

    python -m tools.publish_model --stack dev --model resnet --version 3 --path ./export/3 [--force]
        [--warmup-examples warmup.jsonl [--replace-warmup]]
    python -m tools.publish_model --stack dev --model resnet --list

The bucket is --bucket if given; else the deployed stack's `model_bucket` output, read with
`pulumi stack output` when the CLI is on PATH; else derived from `Pulumi.<stack>.yaml` and the
AWS account of the current credentials. The prefix is --prefix, else the `model_prefix`
output that came with the bucket, else the stack file's. --warmup-examples turns a JSON lines
file of TF Serving REST predict requests into the version's TF Serving warm-up file, each
request checked against the version's serving signatures first (tools/lib/warmup.py).
Exit status: 0 done, 1 publishing refused or failed (S3 errors such as access denied
included, and unusable warm-up examples), 2 usage or configuration error.

This module is the command line only (arguments, messages, exit statuses, the progress bar);
publishing and listing are tools/lib/model_repository.py, the bucket lookup is
tools/lib/stack_store.py.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import BotoCoreError, ClientError

from components.config import StackConfigError
from components.model_layout import model_prefix, version_prefix
from tools.lib.model_repository import (
    MODEL_NAME,
    PublishError,
    VersionInfo,
    list_versions,
    plan_bytes,
    publish,
    upload_plan,
    validate_saved_model,
    warmup_conflict,
)
from tools.lib.stack_store import StackOutputs, resolve_store
from tools.lib.stackfile import STACK_NAME, load_stack_file, stack_file
from tools.lib.warmup import WarmupError, warmup_file

# Error codes S3 answers with when the credentials may not do what was asked.
_DENIED = {"AccessDenied", "AllAccessDisabled", "Forbidden", "403"}


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class ProgressBar:
    """A percentage line on `out`, redrawn with `\\r` when the percentage changes.

    Upload callbacks arrive from several threads, and with negative counts when a part is
    retried, hence the lock and the plain running sum.
    """

    def __init__(self, total: int, out: TextIO) -> None:
        self._total = total
        self._out = out
        self._done = 0
        self._shown: int | None = None
        self._lock = threading.Lock()

    def __call__(self, count: int) -> None:
        with self._lock:
            self._done += count
            percent = min(100, 100 * self._done // self._total) if self._total else 100
            if percent != self._shown:
                self._shown = percent
                self._out.write(f"\r{percent:3d}%  {_size(self._done)} of {_size(self._total)}")
                self._out.flush()

    def close(self) -> None:
        if self._shown is not None:
            self._out.write("\n")
            self._out.flush()


def versions_table(versions: list[VersionInfo]) -> str:
    rows = [("version", "complete", "files", "size", "problem")]
    for v in versions:
        complete = "yes" if v.complete else "no"
        rows.append((str(v.version), complete, str(v.files), _size(v.bytes), v.problem or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.publish_model",
        description=(__doc__ or "").split("\n\n")[0],
    )
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--model", required=True, help="model name, e.g. resnet")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--version", type=int, metavar="N", help="version number to publish")
    action.add_argument("--list", action="store_true", help="list the model's versions")
    parser.add_argument("--path", type=Path, help="the SavedModel version directory to publish")
    parser.add_argument(
        "--force", action="store_true", help="replace a published or half-uploaded version"
    )
    parser.add_argument(
        "--warmup-examples",
        type=Path,
        metavar="FILE",
        help=(
            "JSON lines, one TF Serving REST predict request a line ({\"instances\": [...]} or "
            "{\"inputs\": ...}, optional \"signature_name\"): uploaded as the version's "
            "warm-up requests (assets.extra/tf_serving_warmup_requests)"
        ),
    )
    parser.add_argument(
        "--replace-warmup",
        action="store_true",
        help="with --warmup-examples: replace the warm-up file the version directory has",
    )
    parser.add_argument(
        "--bucket", help="bucket name (default: the stack's model_bucket output, else derived)"
    )
    parser.add_argument(
        "--prefix", help="key prefix (default: the stack's model_prefix output or config)"
    )
    return parser


def _error(status: int, message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _s3_failure(exc: Exception, doing: str, bucket: str, key: str) -> str:
    """One line naming what was being done, where, and S3's reason."""
    target = f"s3://{bucket}/{key}"
    # upload_file re-raises S3's ClientError as S3UploadFailedError, from within its handler.
    cause = exc if isinstance(exc, ClientError) else exc.__context__
    if not isinstance(cause, ClientError):
        return f"{doing} failed at {target}: {exc}"
    error = cause.response.get("Error", {})
    code = error.get("Code", "unknown")
    reason = f"{code}: {error.get('Message', '')} [{cause.operation_name}]"
    if code in _DENIED:
        return f"access denied to {target} ({doing}): {reason}"
    if code == "NoSuchBucket":
        return f"bucket {bucket} does not exist ({doing}): {reason}"
    return f"{doing} failed at {target}: {reason}"


def main(
    argv: list[str] | None = None,
    s3: Any = None,
    sts: Any = None,
    stack_outputs: StackOutputs | None = None,
) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list and (args.path or args.force or args.warmup_examples or args.replace_warmup):
        parser.error("--path, --force, --warmup-examples and --replace-warmup only go with --version")
    if args.replace_warmup and args.warmup_examples is None:
        parser.error("--replace-warmup needs --warmup-examples, the requests to replace it with")
    if args.version is not None and args.path is None:
        parser.error("--version needs --path, the SavedModel version directory")
    if not MODEL_NAME.fullmatch(args.model):
        return _error(
            2,
            f"model name {args.model!r} is not allowed: lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit ({MODEL_NAME.pattern})",
        )
    if not STACK_NAME.fullmatch(args.stack):
        return _error(2, f"stack name {args.stack!r} is not allowed: letters, digits, '_', '.' and '-'")
    if args.version is not None and args.version < 1:
        # TF Serving loads version directories named by a positive integer.
        return _error(2, f"--version must be a positive whole number (got {args.version})")
    source = stack_file(args.stack)
    if not source.is_file():
        return _error(2, f"no stack file {source.name}")
    try:
        cfg = load_stack_file(args.stack, path=source)
    except StackConfigError as exc:
        return _error(2, str(exc))
    if args.path is not None and args.version is not None and args.version >= 1:
        # Local input is checked before any AWS call (the bucket lookup included).
        try:
            problems = validate_saved_model(args.path, args.version)
        except OSError as exc:
            problems = [f"{args.path}: cannot read it: {exc.strerror}"]
        if problems:
            # The same refusal (status 1) as from publish itself, only before the bucket lookup.
            return _error(1, f"--path {args.path}: not a SavedModel version: " + "; ".join(problems))
    warmup: bytes | None = None
    if args.warmup_examples is not None:
        where_to = f"stack {args.stack!r}, {args.model} version {args.version}"
        conflict = None if args.replace_warmup else warmup_conflict(args.path)
        if conflict:
            return _error(1, f"{where_to}: --warmup-examples {args.warmup_examples}: {conflict}")
        try:
            warmup = warmup_file(args.warmup_examples, args.path, args.model)
        except WarmupError as exc:
            return _error(1, f"{where_to}: {exc}")

    try:
        bucket, prefix = resolve_store(
            args.stack, cfg, bucket=args.bucket, prefix=args.prefix, sts=sts,
            stack_outputs=stack_outputs,
        )
    except (BotoCoreError, ClientError) as exc:
        return _error(1, f"could not get the AWS account to derive the bucket name: {exc}")

    if args.list:
        doing = f"listing {args.model}"
        key = model_prefix(prefix, args.model)
    else:
        doing = f"publishing {args.model} version {args.version}"
        key = version_prefix(prefix, args.model, args.version)
    where = f"s3://{bucket}/{key}"
    try:
        s3 = s3 or boto3.client("s3", region_name=cfg.aws_region)
        if args.list:
            versions = list_versions(s3, bucket, prefix, args.model)
            if not versions:
                print(f"no versions of {args.model} under s3://{bucket}/{prefix}/")
            else:
                print(versions_table(versions))
            return 0
        print(f"publishing {args.path} to {where}", file=sys.stderr)
        total = plan_bytes(upload_plan(args.path, warmup, replace_warmup=args.replace_warmup))
        bar = ProgressBar(total, sys.stderr)
        try:
            result = publish(
                s3, bucket, prefix, args.model, args.version, args.path,
                force=args.force, progress=bar, warmup=warmup, replace_warmup=args.replace_warmup,
            )
        finally:
            bar.close()
    except PublishError as exc:
        return _error(1, str(exc))
    except (BotoCoreError, ClientError, S3UploadFailedError) as exc:
        return _error(1, _s3_failure(exc, doing, bucket, key))
    notes = f", replacing {result.replaced} object(s)" if result.replaced else ""
    if warmup is not None:
        notes += f"; warm-up requests from {args.warmup_examples}"
    print(
        f"published {args.model} version {args.version}: {result.files} files, "
        f"{_size(result.bytes)} in {where}{notes}; marker s3://{bucket}/{result.marker_key}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
