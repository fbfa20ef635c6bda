"""How an invalid stack reads: `StackConfigError` and the one message that names the
stack, each dotted key, its value and what is allowed.

It formats what validation found; it must not judge values itself.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Collection
from typing import Any

import pulumi
from pydantic import BaseModel, ValidationError

from components.config.base import PROJECT, RuleError
from components.config.stack import StackConfig


class StackConfigError(pulumi.RunError):
    """An invalid stack file: one message naming the stack, each key, value and what is allowed.

    A RunError, so `pulumi up` prints the message alone and no traceback (pulumi SDK
    `errors.py`: RunError "results in a clean exit")."""


def _allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str] | None:
    """The keys a model accepts at `loc` (for 'unknown key' messages), if it is a model."""
    current: Any = model
    map_key_next = False
    for part in loc:
        if map_key_next:
            # The user's key in a keyed map (a model or pool name): its value is `current`.
            map_key_next = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next(
            (f for n, f in current.model_fields.items() if part in (n, f.alias)), None
        )
        if field is None:
            return None
        map_key_next = typing.get_origin(field.annotation) is dict
        current = _model_in(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return None


def _model_in(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _dotted(parts: tuple[str | int, ...]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def format_errors(
    stack: str, source: str, exc: ValidationError, named_elsewhere: Collection[str] = ()
) -> str:
    lines = [f"stack '{stack}': invalid configuration in {source}:"]
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        if loc and loc[0] in named_elsewhere:
            continue  # that key has its error already
        rule = (err.get("ctx") or {}).get("error")
        if isinstance(rule, RuleError):
            if not loc and rule.key.split(".")[0] in named_elsewhere:
                continue
            key = _dotted(loc + (tuple(rule.key.split(".")) if rule.key else ()))
            message, value = rule.message, rule.value
        elif isinstance(rule, ValueError):
            # A field rule of components/validation.py: its words, without pydantic's prefix.
            key, value, message = _dotted(loc), err["input"], str(rule)
        elif err["type"] == "extra_forbidden":
            allowed = _allowed_keys(StackConfig, loc[:-1]) or []
            near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            key, value = _dotted(loc), err["input"]
            message = f"unknown key; {hint}allowed keys: {', '.join(sorted(allowed))}"
        else:
            key, value, message = _dotted(loc), err["input"], err["msg"]
        shown = "" if err["type"] == "missing" else f" (got {_show(value)})"
        full_key = key if key.startswith("aws:") else f"{PROJECT}:{key}"
        lines.append(f"  - {full_key}: {message}{shown}")
    return "\n".join(lines)
