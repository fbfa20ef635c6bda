"""The promotion workflow's domain: one model's entry under `serving.models` and the edits the
commands make to it (a canary, a new model, promoting the canary, rolling back, finishing),
each a function of that entry alone: it edits the entry in place and says what it did.

A change the workflow does not allow is refused with ModelRefused. No files, no AWS, no
command line here (plan.py and __main__.py), and no YAML surgery beyond yamledit.py's helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from components.config import CanaryConfig, ModelConfig
from tools.promote.errors import HAND_EDITED, ModelRefused
from tools.promote.yamledit import append, delete, flow_map, flow_seq, replace_seq

STABLE = "stable"
PREVIOUS = "previous"
DEFAULT_WEIGHT: int = CanaryConfig.model_fields["weight"].default
DEFAULT_POLICY: str = ModelConfig.model_fields["version_policy"].default


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
            raise ModelRefused(f"`versions` is not a list of version numbers; {HAND_EDITED}")
        if not isinstance(labels, dict) or not all(_is_int(v) for v in labels.values()):
            raise ModelRefused(f"`labels` is not a map of label to version; {HAND_EDITED}")
        state = None
        if canary is not None:
            shape = isinstance(canary, dict) and set(canary) <= {"version", "weight"}
            version = canary.get("version") if shape else None
            weight = canary.get("weight", DEFAULT_WEIGHT) if shape else None
            if not (_is_int(version) and _is_int(weight)):
                raise ModelRefused(f"`canary` is not {{version, weight}}; {HAND_EDITED}")
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
            raise ModelRefused(
                f"uses version_policy {self.policy}: cannot {doing} (that needs version_policy "
                "specific with a `stable` label; change the model to that by hand first)"
            )

    def stable(self) -> int:
        stable = self.labels.get(STABLE)
        if stable is None or stable not in self.versions:
            shown = "missing" if stable is None else f"{stable}, not in versions {self.versions}"
            raise ModelRefused(f"its `{STABLE}` label is {shown}: {HAND_EDITED}")
        return stable

    def set_versions(self, values: list[int]) -> None:
        current = self.entry.get("versions")
        if isinstance(current, CommentedSeq):
            replace_seq(current, values)
        elif "versions" in self.entry:
            self.entry["versions"] = flow_seq(values)
        else:
            append(self.entry, "versions", flow_seq(values))
        self.versions = list(values)

    def set_label(self, label: str, version: int) -> None:
        labels = self.entry.get("labels")
        if not isinstance(labels, CommentedMap):
            labels = CommentedMap()
            append(self.entry, "labels", labels)
        if label in labels:
            labels[label] = version
        else:
            append(labels, label, version)
        self.labels[label] = version

    def drop_label(self, label: str) -> None:
        labels = self.entry.get("labels")
        if isinstance(labels, CommentedMap) and label in labels:
            delete(labels, label)
        self.labels.pop(label, None)

    def drop_labels_outside_versions(self) -> list[str]:
        gone = [label for label, version in self.labels.items() if version not in self.versions]
        for label in gone:
            self.drop_label(label)
        return gone

    def drop_canary(self) -> None:
        delete(self.entry, "canary")
        self.canary = None


def _dropped(labels: list[str]) -> str:
    return f"; label(s) {', '.join(labels)} dropped with their versions" if labels else ""


# --- the actions: each edits one model's entry in place; None means nothing to do -----


def set_canary(entry: CommentedMap, version: int, weight: int | None) -> str | None:
    state = ModelState.read(entry)
    state.require_specific("canary")
    stable = state.stable()
    if version in state.versions:
        return None
    if state.canary is not None:
        canary, current = state.canary
        if canary != version:
            raise ModelRefused(
                f"a canary of version {canary} is in progress ({current}% of traffic); end it "
                f"first (--promote-canary or --rollback) before a canary of version {version}"
            )
        if weight is None or weight == current:
            return None
        canary_map = entry["canary"]
        if "weight" in canary_map:
            canary_map["weight"] = weight
        else:
            append(canary_map, "weight", weight)
        return f"canary of version {version}: weight {current}% -> {weight}% (stable {stable})"
    weight = DEFAULT_WEIGHT if weight is None else weight
    append(entry, "canary", flow_map(version=version, weight=weight))
    return f"canary of version {version} at {weight}% of traffic (stable stays {stable})"


def add_model(models: CommentedMap, model: str, version: int) -> str:
    entry = CommentedMap()
    entry["version_policy"] = "specific"
    entry["versions"] = flow_seq([version])
    entry["labels"] = CommentedMap({STABLE: version})
    append(models, model, entry)
    return f"added, serving version {version} as {STABLE}"


def promote_canary(entry: CommentedMap) -> str:
    state = ModelState.read(entry)
    state.require_specific("promote a canary")
    if state.canary is None:
        raise ModelRefused("has no canary in progress to promote")
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
        raise ModelRefused(
            f"nothing to roll back: no canary in progress and no `{PREVIOUS}` label"
        )
    if previous not in state.versions:
        raise ModelRefused(
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
        raise ModelRefused(f"no `{PREVIOUS}` label: no promotion to finish")
    stable = state.stable()
    if previous == stable:
        raise ModelRefused(f"`{PREVIOUS}` and `{STABLE}` are both {stable}: {HAND_EDITED}")
    state.set_versions([v for v in state.versions if v != previous])
    state.drop_label(PREVIOUS)
    gone = state.drop_labels_outside_versions()
    return f"version {previous} ({PREVIOUS}) unloaded; serving {state.versions}{_dropped(gone)}"


# The stack actions a command names (--promote-canary, --rollback, --finish), by flag.
ACTIONS: dict[str, Callable[[CommentedMap], str]] = {
    "promote_canary": promote_canary,
    "rollback": rollback,
    "finish": finish,
}
