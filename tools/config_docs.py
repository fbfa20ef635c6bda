"""Print the config reference table for the README, generated from the config model.

    python -m tools.config_docs                  # print it
    python -m tools.config_docs --write-readme   # refresh README.md between the markers

A test checks the README holds exactly this table, so the docs cannot drift from the model.
It reads the model only; it must not describe a key the model does not have.
"""

from __future__ import annotations

import json
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from components.config import PROJECT, Section, StackConfig
from tools.lib.readme_section import write_between

BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _model_of(annotation: Any) -> type[Section] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, Section):
            return arg
    return None


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if origin in (typing.Union, getattr(__import__('types'), 'UnionType')):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + " (optional)"
    return getattr(annotation, "__name__", str(annotation))


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def rows(model: type[Section] = StackConfig, prefix: str = "") -> Iterator[tuple[str, str, str, str]]:
    for name, field in model.model_fields.items():
        key = field.alias or name
        dotted = key if key.startswith("aws:") else f"{prefix}{key}"
        nested = _model_of(field.annotation)
        if nested is not None and typing.get_origin(field.annotation) is dict:
            yield dotted, f"map of name to {nested.__name__}", "{}", field.description or ""
            yield from rows(nested, f"{dotted}.<name>.")
            continue
        if nested is not None:
            yield from rows(nested, f"{dotted}.")
            continue
        if name in model.env_defaults:
            per_env = model.env_defaults[name]
            default = f"dev: {_show(per_env['dev'])}; prod: {_show(per_env['prod'])}"
            if per_env["staging"] != per_env["prod"]:
                default += f"; staging: {_show(per_env['staging'])}"
        elif field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = _show(field.default_factory())  # type: ignore[call-arg]
        else:
            default = _show(field.default) if field.default is not PydanticUndefined else ""
        yield dotted, _type_name(field.annotation), default, field.description or ""


def table() -> str:
    lines = [
        f"| key (under `{PROJECT}:`) | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, kind, default, description in rows():
        lines.append(f"| `{key}` | {kind} | {default} | {description} |")
    return "\n".join(lines)


def update_readme(path: Path) -> None:
    """Replace the section between the README markers with the current one."""
    write_between(path, BEGIN, END, table())


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-readme"]:
        update_readme(Path(__file__).resolve().parent.parent / "README.md")
    else:
        print(table())
