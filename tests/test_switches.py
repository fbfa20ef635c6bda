"""Feature switches and single errors, checked over the whole config model.

- Every `enabled` switch turns its feature off with that one key: `{enabled: false}` alone
  validates in every environment, reads as off, and renders. The switches are found by
  walking the model, so a new one is covered without a new test.
- One bad key gives one error: the message names that key and no other (no cascade of
  "Field required" lines from keys whose defaults depended on the bad one).
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from components.config import PROJECT, StackConfig, StackConfigError
from tests.support import parse, raw_stack, render_raw


def _models_in(annotation: Any) -> Iterator[tuple[type[BaseModel], bool]]:
    """The models a field holds directly, and whether it holds one per keyed-map entry."""
    if typing.get_origin(annotation) is dict:
        for model, _ in _models_in(typing.get_args(annotation)[1]):
            yield model, True
        return
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, False
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def switch_paths(model: type[BaseModel] = StackConfig, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted paths (keyed-map entries as '*') of every section with an `enabled` field."""
    found: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        for sub, keyed in _models_in(field.annotation):
            path = prefix + ((field.alias or name), *(("*",) if keyed else ()))
            if "enabled" in sub.model_fields:
                found.append(path)
            found.extend(switch_paths(sub, path))
    return found


SWITCHES = sorted(set(switch_paths()))


def test_the_model_walk_finds_the_switches() -> None:
    # The walk itself must see nested and optional sections, or the tests below prove nothing.
    assert {("ingress",), ("monitoring",), ("monitoring", "logs"), ("serving", "batching")} <= set(SWITCHES)
    assert len(SWITCHES) >= 7


def _switched_off(raw: dict[str, Any], path: tuple[str, ...]) -> list[dict[str, Any]]:
    """Set every section at `path` to `{enabled: false}` alone; return the parents touched."""
    parents = [raw]
    for part in path[:-1]:
        nxt: list[dict[str, Any]] = []
        for parent in parents:
            if part == "*":
                nxt.extend(v for v in parent.values() if isinstance(v, dict))
            else:
                nxt.append(parent.setdefault(part, {}))
        parents = nxt
    for parent in parents:
        if path[-1] == "*":
            for key in parent:
                parent[key] = {"enabled": False}
        else:
            parent[path[-1]] = {"enabled": False}
    return parents


def _reads_off(cfg: Any, path: tuple[str, ...]) -> bool:
    values = [cfg]
    for part in path:
        values = [
            v
            for value in values
            for v in (value.values() if part == "*" else [getattr(value, part)])
        ]
    return all(v is None or v.enabled is False for v in values)


def _stack(stack: str, environment: str) -> dict[str, Any]:
    raw = raw_stack(stack)
    raw["environment"] = environment
    return raw


# The repo's stack files, and prod's as a staging stack: every environment's defaults and rules.
BASES = [("dev", "dev"), ("prod", "prod"), ("prod", "staging")]


@pytest.mark.parametrize("stack, environment", BASES, ids=[f"{s}-as-{e}" for s, e in BASES])
@pytest.mark.parametrize("path", SWITCHES, ids=[".".join(p) for p in SWITCHES])
def test_enabled_false_alone_turns_a_feature_off(path: tuple[str, ...], stack: str, environment: str) -> None:
    raw = _stack(stack, environment)
    parse(raw)  # valid with the feature on
    _switched_off(raw, path)
    dotted = ".".join(p for p in path if p != "*")
    try:
        cfg = parse(raw)
    except StackConfigError as exc:
        # Only another feature that needs this one may refuse it (autoscaling on the stack's
        # Prometheus needs monitoring), and it must say so; never the section's own keys.
        lines = str(exc).splitlines()[1:]
        own = [line for line in lines if line.startswith(f"  - {PROJECT}:{path[0]}")]
        unexplained = [line for line in lines if path[-1] not in line.split(":", 2)[-1]]
        assert not own and not unexplained, f"{dotted}: {{enabled: false}} alone is refused:\n{exc}"
        return
    assert _reads_off(cfg, path)


@pytest.mark.parametrize("stack, environment", BASES, ids=[f"{s}-as-{e}" for s, e in BASES])
def test_every_switch_off_at_once_is_valid(stack: str, environment: str) -> None:
    # Features that need each other go off together with one key each.
    raw = _stack(stack, environment)
    for path in SWITCHES:
        _switched_off(raw, path)
    cfg = parse(raw)
    assert all(_reads_off(cfg, path) for path in SWITCHES)


@pytest.mark.parametrize("path", SWITCHES, ids=[".".join(p) for p in SWITCHES])
def test_a_stack_with_a_feature_off_renders(path: tuple[str, ...]) -> None:
    raw = raw_stack("prod")
    _switched_off(raw, path)
    if path == ("monitoring",):
        # prod's autoscaling reads the stack's Prometheus (refused alone, see above).
        _switched_off(raw, ("autoscaling",))
    render_raw(raw)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_stack_with_every_feature_off_renders(stack: str) -> None:
    raw = raw_stack(stack)
    for path in SWITCHES:
        _switched_off(raw, path)
    rendering = render_raw(raw)
    assert not rendering.of_type("aws:wafv2/webAcl:WebAcl")


def test_a_switched_off_section_still_checks_the_keys_it_is_given() -> None:
    raw = raw_stack("dev")
    raw["ingress"] = {"enabled": False, "domian": "example.com", "idle_timeout_seconds": 5}
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 2, lines
    assert any(f"{PROJECT}:ingress.domian: unknown key; did you mean 'domain'?" in line for line in lines)
    assert any(f"{PROJECT}:ingress.idle_timeout_seconds:" in line for line in lines)
    assert not any("Field required" in line for line in lines)


def test_a_switched_off_ingress_with_its_block_kept_creates_no_ingress() -> None:
    # Turning off is one key also when the block stays in the file for later.
    raw = raw_stack("dev")
    raw["ingress"]["enabled"] = False
    assert parse(raw).ingress is None


# --- one bad key, one error -------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pytest.mark.parametrize("value", [None, "production", 7, {"env": "dev"}], ids=["missing", "word", "number", "map"])
def test_a_bad_environment_is_the_only_error(stack: str, value: Any) -> None:
    # Defaults depend on the environment; a bad one must not make every env-defaulted key
    # report "Field required" too.
    raw = raw_stack(stack)
    if value is None:
        del raw["environment"]
    else:
        raw["environment"] = value
    with pytest.raises(StackConfigError) as info:
        parse(raw)
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith(f"  - {PROJECT}:environment:")


def _leaf_paths(model: type[BaseModel], raw: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths of the keys set in `raw` whose field is not a section (a scalar or a list)."""
    if not isinstance(raw, dict):
        return
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in raw:
            continue
        subs = list(_models_in(field.annotation))
        if not subs:
            yield prefix + (key,)
            continue
        sub, keyed = subs[0]
        if keyed:
            for entry, value in raw[key].items():
                yield from _leaf_paths(sub, value, prefix + (key, entry))
        else:
            yield from _leaf_paths(sub, raw[key], prefix + (key,))


def _get(raw: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = raw
    for part in path:
        node = node[part]
    return node


def _set(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_one_ill_typed_key_gives_one_error_naming_it(stack: str) -> None:
    raw = raw_stack(stack)
    failures = []
    paths = list(_leaf_paths(StackConfig, raw))
    assert len(paths) > 40
    for path in paths:
        # A map is the wrong type for every leaf key but a keyed map; text is wrong for those.
        bad: Any = "not a map" if isinstance(_get(raw, path), dict) else {"not": "this"}
        try:
            parse(_set(raw, path, bad))
        except StackConfigError as exc:
            lines = str(exc).splitlines()[1:]
            dotted = ".".join(path)
            key = dotted if dotted.startswith("aws:") else f"{PROJECT}:{dotted}"
            if len(lines) != 1 or not lines[0].startswith(f"  - {key}"):
                failures.append(f"{dotted}:\n" + "\n".join(lines))
        else:
            failures.append(f"{'.'.join(path)}: a map was accepted")
    assert not failures, "\n".join(failures)
