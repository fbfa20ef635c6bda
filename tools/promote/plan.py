"""Planning a promotion: which stack files are read and checked, what the target file becomes,
what the target's model store must hold first, and writing the file when asked.

It owns the I/O around the actions (stack files, the model stores through the caller's S3
client, deployed stack outputs) and the order of the checks: both stack files before any AWS
call, the edited text validated as the program reads it. It must not edit a model entry
itself (actions.py), parse arguments or print (__main__.py).
"""

from __future__ import annotations

import difflib
import json
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from components.config import ServingConfig, StackConfig, StackConfigError
from components.model_layout import version_prefix
from tools.lib import stack_store
from tools.lib.model_repository import list_versions, version_is_complete
from tools.lib.stack_store import StackOutputs, resolve_store
from tools.lib.stackfile import STACK_NAME, load_stack_file, load_stack_text, stack_file
from tools.promote.actions import ACTIONS, STABLE, add_model, set_canary
from tools.promote.document import StackDocument
from tools.promote.errors import ModelRefused, Problems, Refused, UsageError
from tools.promote.yamledit import append

DEFAULT_IMAGE: str = ServingConfig.model_fields["image_version"].default


# --- stores, sources and validation --------------------------------------------------


@dataclass
class Context:
    """What actions need from outside: the repo root, AWS clients and stack outputs."""

    root: Path
    s3: Any = None
    sts: Any = None
    stack_outputs: StackOutputs | None = None
    _outputs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    _clients: dict[str, Any] = field(default_factory=dict)

    def outputs(self, stack: str) -> dict[str, Any] | None:
        """The deployed stack's outputs (once per stack), or None without a Pulumi CLI."""
        if stack not in self._outputs:
            # Looked up at call time, so a test can stub the lookup for every command at once.
            fetch = self.stack_outputs or stack_store.pulumi_stack_outputs
            self._outputs[stack] = fetch(stack)
        return self._outputs[stack]

    def s3_for(self, cfg: StackConfig) -> Any:
        if self.s3 is not None:
            return self.s3
        if cfg.aws_region not in self._clients:
            self._clients[cfg.aws_region] = boto3.client("s3", region_name=cfg.aws_region)
        return self._clients[cfg.aws_region]

    def store(self, stack: str, cfg: StackConfig) -> tuple[str, str]:
        """The stack's bucket and prefix, resolved as the publisher resolves them."""
        return resolve_store(stack, cfg, sts=self.sts, stack_outputs=self.outputs)


def stack_path(root: Path, stack: str) -> Path:
    if not STACK_NAME.fullmatch(stack):
        raise UsageError(f"stack name {stack!r} is not allowed ({STACK_NAME.pattern})")
    path = stack_file(stack, root)
    if path.parent.resolve() != root.resolve():
        raise UsageError(f"{path} is outside {root}")
    return path


def read_config(path: Path, stack: str) -> StackConfig:
    if not path.is_file():
        raise UsageError(f"no stack file {path.name} in {path.parent}")
    return load_stack_file(stack, path=path)


def store_problem(
    s3: Any, bucket: str, prefix: str, stack: str, model: str, version: int
) -> str | None:
    """Why `version` of `model` can't be served from the stack's store; None if it can."""
    if version_is_complete(s3, bucket, prefix, model, version):
        return None
    where = f"s3://{bucket}/{version_prefix(prefix, model, version)}"
    listed = list_versions(s3, bucket, prefix, model)
    found = next((v for v in listed if v.version == version), None)
    if found is None:
        return (
            f"version {version} is not in {stack}'s model store ({where}); publish it first: "
            f"python -m tools.publish_model --stack {stack} --model {model} --version {version} "
            "--path <dir>"
        )
    reason = found.problem or "its completion marker is malformed or lists files that are missing"
    return f"version {version} is incomplete in {stack}'s model store ({where}): {reason}"


def newest_complete(s3: Any, bucket: str, prefix: str, model: str) -> int | None:
    complete = [v.version for v in list_versions(s3, bucket, prefix, model) if v.complete]
    return max(complete) if complete else None


# --- plans ------------------------------------------------------------------------------


@dataclass
class Plan:
    """The target file before and after, and a line per model."""

    path: Path
    before: str
    after: str
    summaries: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        before = self.before if self.before.endswith("\n") else self.before + "\n"
        return "".join(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=f"a/{self.path.name}",
                tofile=f"b/{self.path.name}",
            )
        )


def _validated(document: StackDocument, stack: str, after: str) -> StackConfig:
    try:
        return load_stack_text(after, stack, document.name)
    except StackConfigError as exc:
        raise Refused(
            [(document.name, None, f"the result would not be a valid stack file:\n{exc}")]
        ) from None


def promote_between(
    ctx: Context, source: str, target: str, models: list[str] | None, weight: int | None
) -> Plan:
    """Plan `--from source --to target`: canaries (or new models) in the target's file."""
    if source == target:
        raise UsageError("--from and --to name the same stack")
    source_path, target_path = stack_path(ctx.root, source), stack_path(ctx.root, target)
    source_cfg = read_config(source_path, source)
    read_config(target_path, target)  # both stack files are checked before any AWS call
    document = StackDocument.load(target_path)
    chosen = models or list(source_cfg.serving.models)
    unknown = [m for m in chosen if m not in source_cfg.serving.models]
    if unknown:
        raise UsageError(
            f"{source_path.name} has no model {', '.join(map(repr, unknown))}; it has: "
            f"{', '.join(source_cfg.serving.models)}"
        )
    plan = Plan(target_path, document.text, document.text)
    versions = served_versions(ctx, source, source_path, source_cfg, chosen, plan.notes)
    to_check = edit_target(document, source, target, source_cfg, versions, weight, plan.summaries)
    plan.after = document.dump()
    if not plan.changed:
        return plan
    check_target_store(ctx, document, target, _validated(document, target, plan.after), to_check)
    return plan


def served_versions(
    ctx: Context,
    source: str,
    source_path: Path,
    source_cfg: StackConfig,
    models: list[str],
    notes: list[str],
) -> dict[str, int]:
    """The version `source` serves of each model: its `stable` label, else its highest
    version; with `latest`, the newest complete version in its model store. How each was
    found goes to `notes`; a model with no complete version is refused."""
    source_store: tuple[str, str] | None = None
    versions: dict[str, int] = {}
    problems: Problems = []
    for model in models:
        config = source_cfg.serving.models[model]
        if config.version_policy == "specific":
            stable = config.labels.get(STABLE)
            versions[model] = stable if stable is not None else max(config.versions)
            how = f"its {STABLE} label" if stable is not None else "its highest version"
            how = f"{source_path.name}: {how}"
        else:
            source_store = source_store or ctx.store(source, source_cfg)
            bucket, prefix = source_store
            newest = newest_complete(ctx.s3_for(source_cfg), bucket, prefix, model)
            if newest is None:
                where = f"s3://{bucket}/{prefix}/{model}/"
                problems.append((source_path.name, model, f"no complete version in {where}"))
                continue
            versions[model] = newest
            how = f"{source_path.name}: latest, newest complete in s3://{bucket}/{prefix}/"
        notes.append(f"{model}: {source} serves version {versions[model]} ({how})")
        deployed = ctx.outputs(source) or {}
        exported = deployed.get("serving_model_versions")
        if isinstance(exported, dict) and model in exported:
            notes.append(
                f"{model}: deployed {source} stack exports serving_model_versions = "
                f"{json.dumps(exported[model])}"
            )
    if problems:
        raise Refused(problems)
    return versions


def edit_target(
    document: StackDocument,
    source: str,
    target: str,
    source_cfg: StackConfig,
    versions: dict[str, int],
    weight: int | None,
    summaries: list[str],
) -> list[tuple[str, int]]:
    """Edit the target's document: each version a canary (or a new model's stable version),
    and the source's `serving.image_version` carried over when it differs. A line per change
    goes to `summaries`; returns the (model, version) pairs the target's store must hold."""
    target_models = document.models()
    to_check: list[tuple[str, int]] = []
    problems: Problems = []
    for model, version in versions.items():
        try:
            if model not in target_models:
                summary: str | None = add_model(target_models, model, version)
            else:
                entry = document.model(model)
                summary = set_canary(entry, version, weight)
        except ModelRefused as exc:
            problems.append((document.name, model, str(exc)))
            continue
        if summary is None:
            summaries.append(f"{model}: {target} already serves version {version}; nothing to do")
        else:
            summaries.append(f"{model}: {summary}")
            to_check.append((model, version))
    if problems:
        raise Refused(problems)

    serving = document.serving()
    image = source_cfg.serving.image_version
    current = serving.get("image_version", DEFAULT_IMAGE)
    if str(current) != image:
        if "image_version" in serving:
            # Keep the value's quoting: ruamel's quoted scalars are str subclasses.
            serving["image_version"] = type(current)(image) if isinstance(current, str) else image
        elif "models" in serving:
            serving.insert(list(serving).index("models"), "image_version", image)
        else:
            append(serving, "image_version", image)
        summaries.append(f"serving.image_version: {current} -> {image} (from {source})")
    return to_check


def check_target_store(
    ctx: Context,
    document: StackDocument,
    target: str,
    target_cfg: StackConfig,
    to_check: list[tuple[str, int]],
) -> None:
    """Refuse unless every (model, version) is complete in the target's model store."""
    problems: Problems = []
    if to_check:
        bucket, prefix = ctx.store(target, target_cfg)
        s3 = ctx.s3_for(target_cfg)
        for model, version in to_check:
            problem = store_problem(s3, bucket, prefix, target, model, version)
            if problem:
                problems.append((document.name, model, problem))
    if problems:
        raise Refused(problems)


def change_stack(ctx: Context, stack: str, models: list[str], action: str) -> Plan:
    """Plan `--promote-canary`, `--rollback` or `--finish` on `stack`'s models."""
    path = stack_path(ctx.root, stack)
    document = StackDocument.load(path)
    plan = Plan(document.path, document.text, document.text)
    problems: Problems = []
    for model in models:
        try:
            plan.summaries.append(f"{model}: {ACTIONS[action](document.model(model))}")
        except ModelRefused as exc:
            problems.append((document.name, model, str(exc)))
    if problems:
        raise Refused(problems)
    plan.after = document.dump()
    if plan.changed:
        _validated(document, stack, plan.after)
    return plan


def write_atomically(path: Path, text: str, expected: str) -> None:
    """Replace `path` with `text` via a temporary file next to it, unless it changed since
    it was read (`expected`)."""
    if path.read_text(encoding="utf-8") != expected:
        raise Refused([(path.name, None, "changed while this ran; run the command again")])
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, stat.S_IMODE(path.stat().st_mode))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
