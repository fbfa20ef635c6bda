"""What every stack registers, written to files, and two such snapshots compared: the check that
a change of code layout changed no behaviour and renames nothing a deployed stack holds.

    python -m tests.snapshot write build/snapshot-before      # before the change
    python -m tests.snapshot write build/snapshot-after       # after it
    python -m tests.snapshot compare build/snapshot-before build/snapshot-after

The stacks are the repo's stack files, every config of the test grid (tests/support/config_grid.py)
and the stack the README's "To add a stack" recipe makes. `compare` exits 1 and lists every
difference: a resource whose inputs or options changed, one that appeared or went, and a URN
that changed without a Pulumi alias carrying the old one. A URN reached through an alias is
not a difference, as for the engine: it is the same resource, updated in place, not replaced.

It must not import the code it checks beyond the harness, so that an old and a new tree are
measured alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tools.lib.mock_engine import Registered, Rendering, render
from tools.lib.stackfile import list_stacks, read_settings, stack_file

# Fields of a registration that are compared (the rest are derived: outputs come from mocks).
COMPARED = (
    "type", "name", "parent", "provider", "custom", "read", "inputs", "secret_inputs",
    "protect", "retain_on_delete", "ignore_changes", "depends_on", "custom_timeouts",
)


def renderings() -> Iterator[tuple[str, Rendering]]:
    """Every stack the snapshot covers, rendered."""
    from tests.support.config_grid import GRID, rendered
    from tests.test_new_stack import staging_by_recipe

    for stack in list_stacks():
        settings, secrets = read_settings(stack_file(stack))
        yield f"stack-{stack}", render(stack, settings, secrets)
    for name in GRID:
        yield f"grid-{name}", rendered(name)
    with tempfile.TemporaryDirectory() as tmp:
        root = staging_by_recipe(Path(tmp))
        settings, secrets = read_settings(root / "Pulumi.staging.yaml")
        yield "recipe-staging", render("staging", settings, secrets)


def entry(r: Registered) -> dict[str, Any]:
    out = {k: getattr(r, k) for k in COMPARED}
    out["secret_inputs"] = sorted(r.secret_inputs)
    out["provider"] = r.provider.split("::" + r.provider.rsplit("::", 1)[-1])[0] if r.provider else ""
    out["urn"] = r.urn
    out["aliases"] = r.aliases
    return out


def write(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for label, rendering in renderings():
        document = {
            "resources": [entry(r) for r in rendering.resources],
            "outputs": rendering.outputs,
        }
        (out / f"{label}.json").write_text(json.dumps(document, indent=1, sort_keys=True, default=str))
        print(f"{label}: {len(rendering.resources)} resources")


def _type_chain(urn: str) -> str:
    return urn.split("::")[2]


def _urn(head: str, parent: str | None, type_: str, name: str) -> str:
    """The URN the engine gives a resource (pulumi/sdk go/common/resource/urn.go NewURN):
    the parent's type chain, `$`, the resource's type."""
    chain = f"{_type_chain(parent)}${type_}" if parent and "::pulumi:pulumi:Stack::" not in parent else type_
    return f"{head}::{chain}::{name}"


def alias_urns(resources: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Every URN each resource answers to: its own and those its aliases name, including the
    ones it inherits from its parent's aliases (the engine's rule: a child of an aliased
    parent is also known under each of the parent's old URNs)."""
    by_urn = {r["urn"]: r for r in resources}
    known: dict[str, set[str]] = {}

    def names(urn: str) -> set[str]:
        if urn in known:
            return known[urn]
        r = by_urn.get(urn)
        if r is None:  # the root stack, or something outside this rendering
            return {urn}
        head = "::".join(urn.split("::")[:2])
        parent = r["parent"] or None
        found = {urn}
        variants = [(r["type"], r["name"], parent, False)]
        for alias in r["aliases"]:
            if "urn" in alias:
                found.add(alias["urn"])
                continue
            stack_head = head
            if "stack" in alias or "project" in alias:
                stack = alias.get("stack", head.split("::")[0].removeprefix("urn:pulumi:"))
                project = alias.get("project", head.split("::")[1])
                stack_head = f"urn:pulumi:{stack}::{project}"
            # An empty parentUrn is how the SDK says "the resource's own parent".
            alias_parent = None if alias.get("noParent") else (alias.get("parentUrn") or parent)
            variants.append((alias.get("type", r["type"]), alias.get("name", r["name"]), alias_parent, True))
            found.add(_urn(stack_head, alias_parent, alias.get("type", r["type"]), alias.get("name", r["name"])))
        for type_, name, p, _ in variants:
            if p is None:
                continue
            for old_parent in names(p):
                found.add(_urn(head, old_parent, type_, name))
        known[urn] = found
        return found

    for r in resources:
        names(r["urn"])
    return known


def _rename(value: Any, mapping: dict[str, str]) -> Any:
    """`value` with every URN in `mapping` (alone or as a provider reference) replaced."""
    if isinstance(value, str):
        if value in mapping:
            return mapping[value]
        urn, sep, rest = value.rpartition("::")
        if sep and urn in mapping:
            return f"{mapping[urn]}::{rest}"
        return value
    if isinstance(value, list):
        return [_rename(v, mapping) for v in value]
    if isinstance(value, dict):
        return {k: _rename(v, mapping) for k, v in value.items()}
    return value


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{path}.{k}: added {json.dumps(b[k])[:200]}")
            elif k not in b:
                out.append(f"{path}.{k}: removed {json.dumps(a[k])[:200]}")
            else:
                out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _diff(x, y, f"{path}[{i}]")]
    if a != b:
        return [f"{path}: {json.dumps(a)[:200]} -> {json.dumps(b)[:200]}"]
    return []


def engine_form(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with every URN as the engine writes it. The SDK's mock monitor builds a URN from
    the parent's last type only and counts the root stack as a parent
    (pulumi/runtime/mocks.py MockMonitor.make_urn); the engine chains every ancestor's type and
    leaves the stack out, and aliases are resolved against that form."""
    by_urn = {r["urn"]: r for r in document["resources"]}
    mapping: dict[str, str] = {}

    def urn_of(urn: str) -> str:
        if urn not in by_urn:
            return urn
        if urn not in mapping:
            r = by_urn[urn]
            head = "::".join(urn.split("::")[:2])
            mapping[urn] = _urn(head, urn_of(r["parent"]) if r["parent"] else None, r["type"], r["name"])
        return mapping[urn]

    for urn in by_urn:
        urn_of(urn)
    return _rename(document, mapping)


def compare_documents(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The differences between two snapshots of one stack, URNs matched through aliases."""
    old, new = engine_form(old), engine_form(new)
    problems: list[str] = []
    old_by_urn = {r["urn"]: r for r in old["resources"]}
    known = alias_urns(new["resources"])
    mapping: dict[str, str] = {}
    for r in new["resources"]:
        matches = sorted(u for u in known[r["urn"]] if u in old_by_urn)
        if len(matches) > 1:
            problems.append(f"{r['urn']}: answers to {len(matches)} old resources {matches}")
        if matches:
            if matches[0] in mapping:
                problems.append(f"{matches[0]}: claimed by both {mapping[matches[0]]} and {r['urn']}")
            mapping[matches[0]] = r["urn"]
    # A component resource holds no cloud state: one that appears or goes replaces nothing, as
    # long as the resources below it are matched (they are checked one by one).
    for urn in sorted(set(old_by_urn) - set(mapping)):
        if old_by_urn[urn]["custom"]:
            problems.append(f"{urn}: gone (no new resource has it as its URN or an alias)")
    claimed = set(mapping.values())
    for r in new["resources"]:
        if r["urn"] not in claimed and r["custom"]:
            problems.append(f"{r['urn']}: new")
    # Type, name and parent are what the URN is made of: matched above, through aliases.
    settings = [k for k in COMPARED if k not in ("type", "name", "parent")]
    for old_urn, new_urn in sorted(mapping.items()):
        a = {k: _rename(old_by_urn[old_urn][k], mapping) for k in settings}
        b = {k: copy.deepcopy(next(x for x in new["resources"] if x["urn"] == new_urn)[k]) for k in settings}
        a["depends_on"], b["depends_on"] = sorted(a["depends_on"]), sorted(b["depends_on"])
        problems += [f"{new_urn}: {d}" for d in _diff(a, b)]
    problems += [f"outputs: {d}" for d in _diff(old["outputs"], new["outputs"])]
    return problems


def compare(old: Path, new: Path) -> int:
    failed = 0
    for path in sorted(old.glob("*.json")):
        other = new / path.name
        if not other.exists():
            print(f"{path.stem}: missing from {new}")
            failed += 1
            continue
        problems = compare_documents(json.loads(path.read_text()), json.loads(other.read_text()))
        renamed = 0
        for line in problems:
            print(f"{path.stem}: {line}")
        failed += bool(problems)
        if not problems:
            doc = json.loads(other.read_text())
            renamed = sum(1 for r in doc["resources"] if r["aliases"])
            print(f"{path.stem}: identical ({len(doc['resources'])} resources, {renamed} with aliases)")
    for name in sorted(set(p.name for p in new.glob("*.json")) - set(p.name for p in old.glob("*.json"))):
        print(f"{name}: only in {new}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.snapshot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="render every stack and write one JSON file per stack")
    w.add_argument("out", type=Path)
    c = sub.add_parser("compare", help="compare two snapshot folders; exit 1 on any difference")
    c.add_argument("old", type=Path)
    c.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    if args.command == "write":
        write(args.out)
        return 0
    return compare(args.old, args.new)


if __name__ == "__main__":
    sys.exit(main())
