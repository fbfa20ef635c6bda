"""The README's layout section is the code's: every module listed with the opening line of its
docstring, every listed path present, and every module of the program, the commands and the
test support saying what it must not do."""

from __future__ import annotations

import ast
import re

from tools.layout_docs import BEGIN, END, OTHER, ROOT, modules, summary, table


def test_readme_layout_is_generated_from_the_modules() -> None:
    text = (ROOT / "README.md").read_text()
    documented = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert documented == table(), "README layout is stale: run `python -m tools.layout_docs --write-readme`"


def test_every_module_is_listed_with_what_it_owns() -> None:
    listed = {p.relative_to(ROOT) for p in modules()}
    on_disk = {
        p.relative_to(ROOT)
        for folder in ("components", "tools", "tests")
        for p in (ROOT / folder).rglob("*.py")
    }
    assert on_disk - listed == set(), f"modules missing from the layout: {sorted(map(str, on_disk - listed))}"
    for path in modules():
        assert summary(path), f"{path.relative_to(ROOT)} has no opening docstring"


def test_every_other_listed_path_exists() -> None:
    for entry in OTHER:
        for name in entry.split(", "):
            assert (ROOT / name).exists(), f"the layout lists {name}, which is not in the repo"


def test_every_module_outside_the_test_files_says_what_it_must_not_do() -> None:
    bare = []
    for path in modules():
        if path.name.startswith("test_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if not re.search(r"\b(not|never|no|nothing|only)\b", doc, re.I):
            bare.append(str(path.relative_to(ROOT)))
    assert bare == [], f"these module docstrings do not say what the module must not do: {bare}"


def test_the_readme_states_the_imds_hop_limit_the_nodes_get() -> None:
    """Every "hop limit (of) N" the README states is the one components/nodes.py sets on
    every launch template and EC2NodeClass (a stated 2 would tell users pods can reach the
    node role)."""
    import re

    from components.nodes import METADATA_HOP_LIMIT

    stated = [int(n) for n in re.findall(r"hop\s+limit\s+(?:of\s+)?(\d+)", (ROOT / "README.md").read_text())]
    assert stated, "the README states the hop limit"
    assert set(stated) == {METADATA_HOP_LIMIT}, stated
