"""The CEL validation rules of a CRD's schema (`x-kubernetes-validations`), evaluated on an
object the way the API server does on create, with a real CEL implementation (cel-python).

The rule text always comes from the pinned CRD file, never from a copy. As the API server does
(Kubernetes docs, "CustomResourceDefinition validation rules"; k8s.io/apiextensions-apiserver
pkg/apiserver/schema/cel/validation.go): the schema's defaults are applied first; each rule is
evaluated with `self` bound to the value at its schema node, only where that value is present,
for every item of a list and every value of a map; transition rules (those that read `oldSelf`)
run only on update, so not here. The few Kubernetes CEL library functions the rules use and
cel-python lacks are implemented below after their upstream definitions.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes


def _split(value: celtypes.StringType, separator: celtypes.StringType) -> celtypes.ListType:
    # cel-go ext/strings.go, split: Go's strings.Split (an empty separator splits into runes).
    parts = list(str(value)) if str(separator) == "" else str(value).split(str(separator))
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _find(value: celtypes.StringType, pattern: celtypes.StringType) -> celtypes.StringType:
    # k8s.io/apiserver/pkg/cel/library/regex.go, find: the first match of the RE2 pattern, or "".
    # Python's re agrees with RE2 on the patterns these CRDs use (anchors and classes only).
    found = re.search(str(pattern), str(value))
    return celtypes.StringType(found.group(0) if found else "")


FUNCTIONS: dict[str, Any] = {"split": _split, "find": _find}


@dataclass(frozen=True)
class Rule:
    """One rule: where in the schema it sits (a path with [] for list items and {} for map
    values), its CEL text and its message."""

    path: str
    rule: str
    message: str

    @property
    def on_update_only(self) -> bool:
        return re.search(r"\boldSelf\b", self.rule) is not None


@dataclass(frozen=True)
class Violation:
    path: str  # the value's path in the object, e.g. .spec.template.spec.requirements
    rule: str
    message: str


def rules(schema: Mapping[str, Any], path: str = "") -> Iterator[Rule]:
    """Every rule of `schema`, at every depth."""
    for entry in schema.get("x-kubernetes-validations") or []:
        yield Rule(path, entry["rule"], entry.get("message") or entry["rule"])
    for name, sub in (schema.get("properties") or {}).items():
        yield from rules(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), Mapping):
        yield from rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from rules(schema["additionalProperties"], f"{path}{{}}")


def with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """`value` with the schema's `default`s filled in where a property is absent (structural
    defaulting, as the API server applies it before validating)."""
    if isinstance(value, dict):
        out = dict(value)
        for name, sub in (schema.get("properties") or {}).items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = with_defaults(sub, out[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in set(out) - set(schema.get("properties") or {}):
                out[name] = with_defaults(extra, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [with_defaults(schema["items"], v) for v in value]
    return value


_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}


def compiled(rule: str) -> Any:
    """The rule's program (compiled once)."""
    program = _PROGRAMS.get(rule)
    if program is None:
        program = _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule), functions=FUNCTIONS)
    return program


def holds(rule: str, value: Any) -> bool:
    """Whether `rule` is true for `self` = `value`. An evaluation error counts as a refusal,
    as the API server refuses an object whose rule errors."""
    result = compiled(rule).evaluate({"self": celpy.json_to_cel(value)})
    return isinstance(result, celtypes.BoolType) and bool(result)


def _evaluate(schema: Mapping[str, Any], value: Any, path: str, out: list[Violation]) -> None:
    for entry in schema.get("x-kubernetes-validations") or []:
        rule = Rule(path, entry["rule"], entry.get("message") or entry["rule"])
        if not rule.on_update_only and not holds(rule.rule, value):
            out.append(Violation(path, rule.rule, rule.message))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, sub in properties.items():
            if name in value:
                _evaluate(sub, value[name], f"{path}.{name}", out)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            for name in set(value) - set(properties):
                _evaluate(extra, value[name], f"{path}.{name}", out)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for i, item in enumerate(value):
            _evaluate(schema["items"], item, f"{path}[{i}]", out)


def violations(schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[Violation]:
    """The rules `obj` breaks on create. `schema` is the version's openAPIV3Schema."""
    out: list[Violation] = []
    _evaluate(schema, with_defaults(schema, dict(obj)), "", out)
    return out
