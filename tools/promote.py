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
"""

from __future__ import annotations

import argparse
import difflib
import io
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken

from components.config import (
    PROJECT,
    CanaryConfig,
    ModelConfig,
    ServingConfig,
    StackConfig,
    StackConfigError,
)
from components.model_layout import version_prefix
from tools.lib import stack_store
from tools.lib.model_repository import MODEL_NAME, list_versions, version_is_complete
from tools.lib.stack_store import StackOutputs, resolve_store
from tools.lib.stackfile import ROOT, STACK_NAME, load_stack_file, load_stack_text, stack_file

SERVING_KEY = f"{PROJECT}:serving"
STABLE = "stable"
PREVIOUS = "previous"
DEFAULT_WEIGHT: int = CanaryConfig.model_fields["weight"].default
DEFAULT_POLICY: str = ModelConfig.model_fields["version_policy"].default
DEFAULT_IMAGE: str = ServingConfig.model_fields["image_version"].default
HAND_EDITED = "changed by hand in a way the tool cannot merge"
# Indentation styles tried, in order, until one reproduces the file byte for byte:
# (mapping, sequence, offset).
_INDENTS = ((2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 6, 4), (4, 4, 0), (2, 4, 0), (4, 2, 0))


class UsageError(Exception):
    """Bad arguments or an unreadable stack file: exit status 2."""


class Refused(Exception):
    """The action was refused (exit status 1): per file, each model and why."""

    def __init__(self, problems: list[tuple[str, str | None, str]]) -> None:
        super().__init__(problems)
        self.problems = problems  # (file, model or None, reason)

    def __str__(self) -> str:
        lines = []
        for file, model, reason in self.problems:
            where = f"{file}: model '{model}'" if model else file
            lines.append(f"refused: {where}: {reason}")
        return "\n".join(lines)


class _ModelRefused(Exception):
    """One model's change is refused; collected by the caller with the file's name."""


# --- the stack file, edited in round-trip mode ---------------------------------------


def _yaml(mapping: int, sequence: int, offset: int) -> YAML:
    handler = YAML(typ="rt")
    handler.preserve_quotes = True
    handler.width = 4096  # never fold a long value onto a second line
    handler.indent(mapping=mapping, sequence=sequence, offset=offset)
    return handler


def _dump(handler: YAML, data: Any) -> str:
    out = io.StringIO()
    handler.dump(data, out)
    return out.getvalue()


@dataclass
class StackDocument:
    """A stack file loaded so that dumping it unchanged gives back the same text."""

    path: Path
    text: str
    data: CommentedMap
    handler: YAML

    @classmethod
    def load(cls, path: Path) -> StackDocument:
        if not path.is_file():
            raise UsageError(f"no stack file {path.name} in {path.parent}")
        text = path.read_text(encoding="utf-8")
        expected = text if text.endswith("\n") else text + "\n"
        for indent in _INDENTS:
            handler = _yaml(*indent)
            try:
                data = handler.load(text)
            except YAMLError as exc:
                raise UsageError(f"{path.name} is not valid YAML: {exc}") from None
            if not isinstance(data, CommentedMap) or not isinstance(
                data.get("config"), CommentedMap
            ):
                raise UsageError(f"{path.name} has no `config:` mapping")
            if _dump(handler, data) == expected:
                return cls(path, text, data, handler)
        raise UsageError(
            f"{path.name} can't be edited without reformatting lines outside the model "
            "(unusual indentation); indent mappings by 2 or 4 spaces consistently, or edit "
            "it by hand"
        )

    def dump(self) -> str:
        return _dump(self.handler, self.data)

    @property
    def name(self) -> str:
        return self.path.name

    def serving(self) -> CommentedMap:
        serving = self.data["config"].get(SERVING_KEY)
        if not isinstance(serving, CommentedMap):
            raise UsageError(f"{self.name} has no `{SERVING_KEY}` mapping")
        return serving

    def models(self) -> CommentedMap:
        models = self.serving().get("models")
        if not isinstance(models, CommentedMap):
            raise UsageError(f"{self.name} has no `{SERVING_KEY}.models` mapping")
        return models

    def model(self, name: str) -> CommentedMap:
        models = self.models()
        if name not in models:
            raise UsageError(
                f"{self.name} has no model '{name}'; it has: {', '.join(map(str, models))}"
            )
        entry = models[name]
        if not isinstance(entry, CommentedMap):
            raise Refused([(self.name, name, f"is not a mapping; {HAND_EDITED}")])
        return entry


# Comments after an entry's last line are stored on that entry (for a nested block
# collection, on its deepest last entry): an end-of-line comment, then whole comment lines
# that really introduce whatever follows. When entries are added after or removed from the
# end of a block, those lines are moved so they stay where they were in the file.


def _is_block(node: Any) -> bool:
    return isinstance(node, (CommentedMap, CommentedSeq)) and len(node) > 0 and not (
        node.fa.flow_style()
    )


def _last_slot(container: CommentedMap | CommentedSeq, key: Any) -> tuple[Any, Any]:
    """The (collection, key) whose comment is printed after entry `key`'s last line."""
    value = container[key]
    if _is_block(value):
        last = list(value)[-1] if isinstance(value, CommentedMap) else len(value) - 1
        return _last_slot(value, last)
    return container, key


def _token_index(owner: Any) -> int:
    return 2 if isinstance(owner, CommentedMap) else 0


def _get_comment(owner: Any, key: Any) -> CommentToken | None:
    entry = owner.ca.items.get(key)
    token = entry[_token_index(owner)] if entry else None
    return token if isinstance(token, CommentToken) else None


def _set_comment(owner: Any, key: Any, token: CommentToken | None) -> None:
    entry = owner.ca.items.setdefault(key, [None, None, None, None])
    entry[_token_index(owner)] = token


def _take_following_lines(owner: Any, key: Any) -> str:
    """Remove and return the comment lines after entry `key` (its end-of-line part stays)."""
    token = _get_comment(owner, key)
    if token is None:
        return ""
    eol, _, following = token.value.partition("\n")
    if not following:
        return ""
    if eol:
        token.value = eol + "\n"
    else:
        _set_comment(owner, key, None)
    return following


def _give_following_lines(owner: Any, key: Any, lines: str) -> None:
    if not lines:
        return
    token = _get_comment(owner, key)
    if token is not None:
        token.value += lines
    else:
        _set_comment(owner, key, CommentToken("\n" + lines, start_mark=CommentMark(0)))


def _append(container: CommentedMap, key: str, value: Any) -> None:
    """Add `key` at the end of a mapping; comments that followed the old end follow the new."""
    lines = ""
    if _is_block(container):
        lines = _take_following_lines(*_last_slot(container, list(container)[-1]))
    container[key] = value
    if lines:
        _give_following_lines(*_last_slot(container, key), lines)


def _delete(container: CommentedMap, key: str) -> None:
    """Remove `key`; comment lines that followed it now follow the entry before it."""
    keys = list(container)
    lines = ""
    if _is_block(container):
        lines = _take_following_lines(*_last_slot(container, key))
    del container[key]
    container.ca.items.pop(key, None)
    position = keys.index(key)
    if lines and position > 0:
        _give_following_lines(*_last_slot(container, keys[position - 1]), lines)


def _replace_seq(seq: CommentedSeq, values: list[int]) -> None:
    """Set a sequence's items in place (keeping its style); end-of-line comments stay with
    their values, the lines after the last item stay after the last item."""
    if not _is_block(seq):
        seq[:] = values
        return
    following = _take_following_lines(*_last_slot(seq, len(seq) - 1))
    by_value = {item: _get_comment(seq, i) for i, item in enumerate(seq)}
    seq.ca.items.clear()
    seq[:] = values
    for i, item in enumerate(values):
        if by_value.get(item) is not None:
            _set_comment(seq, i, by_value[item])
    if values and following:
        _give_following_lines(*_last_slot(seq, len(seq) - 1), following)


def _flow_seq(values: list[int]) -> CommentedSeq:
    seq = CommentedSeq(values)
    seq.fa.set_flow_style()
    return seq


def _flow_map(**items: Any) -> CommentedMap:
    mapping = CommentedMap(items)
    mapping.fa.set_flow_style()
    return mapping


# --- reading one model's settings from the raw document ------------------------------


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class ModelState:
    """One model's serving settings as written in the file (checked for shape only)."""

    entry: CommentedMap
    policy: str
    versions: list[int]
    labels: dict[str, int]
    canary: tuple[int, int] | None  # (version, weight)

    @classmethod
    def read(cls, entry: CommentedMap) -> ModelState:
        policy = entry.get("version_policy", DEFAULT_POLICY)
        versions = entry.get("versions", [])
        labels = entry.get("labels") or {}
        canary = entry.get("canary")
        if not isinstance(versions, list) or not all(_is_int(v) for v in versions):
            raise _ModelRefused(f"`versions` is not a list of version numbers; {HAND_EDITED}")
        if not isinstance(labels, dict) or not all(_is_int(v) for v in labels.values()):
            raise _ModelRefused(f"`labels` is not a map of label to version; {HAND_EDITED}")
        state = None
        if canary is not None:
            shape = isinstance(canary, dict) and set(canary) <= {"version", "weight"}
            version = canary.get("version") if shape else None
            weight = canary.get("weight", DEFAULT_WEIGHT) if shape else None
            if not (_is_int(version) and _is_int(weight)):
                raise _ModelRefused(f"`canary` is not {{version, weight}}; {HAND_EDITED}")
            state = (int(version), int(weight))
        return cls(
            entry=entry,
            policy=str(policy),
            versions=[int(v) for v in versions],
            labels={str(k): int(v) for k, v in labels.items()},
            canary=state,
        )

    def require_specific(self, doing: str) -> None:
        if self.policy != "specific":
            raise _ModelRefused(
                f"uses version_policy {self.policy}: cannot {doing} (that needs version_policy "
                "specific with a `stable` label; change the model to that by hand first)"
            )

    def stable(self) -> int:
        stable = self.labels.get(STABLE)
        if stable is None or stable not in self.versions:
            shown = "missing" if stable is None else f"{stable}, not in versions {self.versions}"
            raise _ModelRefused(f"its `{STABLE}` label is {shown}: {HAND_EDITED}")
        return stable

    def set_versions(self, values: list[int]) -> None:
        current = self.entry.get("versions")
        if isinstance(current, CommentedSeq):
            _replace_seq(current, values)
        elif "versions" in self.entry:
            self.entry["versions"] = _flow_seq(values)
        else:
            _append(self.entry, "versions", _flow_seq(values))
        self.versions = list(values)

    def set_label(self, label: str, version: int) -> None:
        labels = self.entry.get("labels")
        if not isinstance(labels, CommentedMap):
            labels = CommentedMap()
            _append(self.entry, "labels", labels)
        if label in labels:
            labels[label] = version
        else:
            _append(labels, label, version)
        self.labels[label] = version

    def drop_label(self, label: str) -> None:
        labels = self.entry.get("labels")
        if isinstance(labels, CommentedMap) and label in labels:
            _delete(labels, label)
        self.labels.pop(label, None)

    def drop_labels_outside_versions(self) -> list[str]:
        gone = [label for label, version in self.labels.items() if version not in self.versions]
        for label in gone:
            self.drop_label(label)
        return gone

    def drop_canary(self) -> None:
        _delete(self.entry, "canary")
        self.canary = None


def _dropped(labels: list[str]) -> str:
    return f"; label(s) {', '.join(labels)} dropped with their versions" if labels else ""


# --- the actions on one model (they edit the document; None means nothing to do) ------


def set_canary(entry: CommentedMap, version: int, weight: int | None) -> str | None:
    state = ModelState.read(entry)
    state.require_specific("canary")
    stable = state.stable()
    if version in state.versions:
        return None
    if state.canary is not None:
        canary, current = state.canary
        if canary != version:
            raise _ModelRefused(
                f"a canary of version {canary} is in progress ({current}% of traffic); end it "
                f"first (--promote-canary or --rollback) before a canary of version {version}"
            )
        if weight is None or weight == current:
            return None
        canary_map = entry["canary"]
        if "weight" in canary_map:
            canary_map["weight"] = weight
        else:
            _append(canary_map, "weight", weight)
        return f"canary of version {version}: weight {current}% -> {weight}% (stable {stable})"
    weight = DEFAULT_WEIGHT if weight is None else weight
    _append(entry, "canary", _flow_map(version=version, weight=weight))
    return f"canary of version {version} at {weight}% of traffic (stable stays {stable})"


def add_model(models: CommentedMap, model: str, version: int) -> str:
    entry = CommentedMap()
    entry["version_policy"] = "specific"
    entry["versions"] = _flow_seq([version])
    entry["labels"] = CommentedMap({STABLE: version})
    _append(models, model, entry)
    return f"added, serving version {version} as {STABLE}"


def promote_canary(entry: CommentedMap) -> str:
    state = ModelState.read(entry)
    state.require_specific("promote a canary")
    if state.canary is None:
        raise _ModelRefused("has no canary in progress to promote")
    old = state.stable()
    new = state.canary[0]
    state.drop_canary()
    state.set_versions([old, new])
    state.set_label(STABLE, new)
    state.set_label(PREVIOUS, old)
    gone = state.drop_labels_outside_versions()
    return (
        f"{STABLE} {old} -> {new}; {old} stays loaded as `{PREVIOUS}` for --rollback "
        f"(unload it with --finish){_dropped(gone)}"
    )


def rollback(entry: CommentedMap) -> str:
    state = ModelState.read(entry)
    if state.canary is not None:
        canary, weight = state.canary
        state.drop_canary()
        stable = state.labels.get(STABLE)
        after = f"; {STABLE} {stable} takes all traffic" if stable is not None else ""
        return f"canary of version {canary} ({weight}%) removed{after}"
    previous = state.labels.get(PREVIOUS)
    if previous is None:
        raise _ModelRefused(
            f"nothing to roll back: no canary in progress and no `{PREVIOUS}` label"
        )
    if previous not in state.versions:
        raise _ModelRefused(
            f"its `{PREVIOUS}` label is {previous}, not in versions {state.versions}: "
            f"{HAND_EDITED}"
        )
    current = state.labels.get(STABLE)
    state.set_versions([previous])
    state.set_label(STABLE, previous)
    state.drop_label(PREVIOUS)
    gone = state.drop_labels_outside_versions()
    return f"rolled back: {STABLE} {current} -> {previous}, serving only {previous}{_dropped(gone)}"


def finish(entry: CommentedMap) -> str:
    state = ModelState.read(entry)
    state.require_specific("finish a promotion")
    previous = state.labels.get(PREVIOUS)
    if previous is None:
        raise _ModelRefused(f"no `{PREVIOUS}` label: no promotion to finish")
    stable = state.stable()
    if previous == stable:
        raise _ModelRefused(f"`{PREVIOUS}` and `{STABLE}` are both {stable}: {HAND_EDITED}")
    state.set_versions([v for v in state.versions if v != previous])
    state.drop_label(PREVIOUS)
    gone = state.drop_labels_outside_versions()
    return f"version {previous} ({PREVIOUS}) unloaded; serving {state.versions}{_dropped(gone)}"


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

    source_store: tuple[str, str] | None = None
    versions: dict[str, int] = {}
    problems: list[tuple[str, str | None, str]] = []
    for model in chosen:
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
        plan.notes.append(f"{model}: {source} serves version {versions[model]} ({how})")
        deployed = ctx.outputs(source) or {}
        exported = deployed.get("serving_model_versions")
        if isinstance(exported, dict) and model in exported:
            plan.notes.append(
                f"{model}: deployed {source} stack exports serving_model_versions = "
                f"{json.dumps(exported[model])}"
            )
    if problems:
        raise Refused(problems)

    target_models = document.models()
    to_check: list[tuple[str, int]] = []
    for model, version in versions.items():
        try:
            if model not in target_models:
                summary: str | None = add_model(target_models, model, version)
            else:
                entry = document.model(model)
                summary = set_canary(entry, version, weight)
        except _ModelRefused as exc:
            problems.append((document.name, model, str(exc)))
            continue
        if summary is None:
            plan.summaries.append(
                f"{model}: {target} already serves version {version}; nothing to do"
            )
        else:
            plan.summaries.append(f"{model}: {summary}")
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
            _append(serving, "image_version", image)
        plan.summaries.append(f"serving.image_version: {current} -> {image} (from {source})")

    plan.after = document.dump()
    if not plan.changed:
        return plan
    target_cfg = _validated(document, target, plan.after)
    if to_check:
        bucket, prefix = ctx.store(target, target_cfg)
        s3 = ctx.s3_for(target_cfg)
        for model, version in to_check:
            problem = store_problem(s3, bucket, prefix, target, model, version)
            if problem:
                problems.append((document.name, model, problem))
    if problems:
        raise Refused(problems)
    return plan


ACTIONS: dict[str, Callable[[CommentedMap], str]] = {
    "promote_canary": promote_canary,
    "rollback": rollback,
    "finish": finish,
}


def change_stack(ctx: Context, stack: str, models: list[str], action: str) -> Plan:
    """Plan `--promote-canary`, `--rollback` or `--finish` on `stack`'s models."""
    path = stack_path(ctx.root, stack)
    document = StackDocument.load(path)
    plan = Plan(document.path, document.text, document.text)
    problems: list[tuple[str, str | None, str]] = []
    for model in models:
        try:
            plan.summaries.append(f"{model}: {ACTIONS[action](document.model(model))}")
        except _ModelRefused as exc:
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


# --- command line ----------------------------------------------------------------------


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
