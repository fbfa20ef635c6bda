"""Print the README's layout section, generated from the opening docstring of every module.

    python -m tools.layout_docs                  # print it
    python -m tools.layout_docs --write-readme   # refresh README.md between the markers

A test checks the README holds exactly this, so the layout cannot drift from the code. It reads
files only; apart from the README helper it must not import the modules it describes.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from tools.lib.readme_section import write_between

ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- layout:begin -->"
END = "<!-- layout:end -->"
# Folders whose Python modules are listed, in reading order.
PACKAGES = ("components", "components/config", "tools", "tools/lib", "tools/promote", "tools/preflight", "tools/smoke", "tests/support", "tests")
# What is not a Python module, with its one line (a test checks each exists).
OTHER = {
    "Pulumi.yaml": "the Pulumi project: name, runtime, the virtual environment it uses",
    "Pulumi.dev.yaml, Pulumi.prod.yaml": "per-stack settings (the configuration reference below)",
    "__main__.py": "the program Pulumi runs: builds the stack of components/stack.py",
    "components/scripts/": "shell scripts the pods run (model sync, model readiness), shellchecked by the tests",
    "components/policies/": "upstream IAM policies the stack deploys, verbatim",
    "requirements.txt, requirements-dev.txt": "runtime dependencies; the test tools on top",
    "requirements-checkov.txt": "the security scanner the tests run, in a virtual environment of its own",
    "Makefile, .ci/run": "the README's two commands and the pinned test tools; CI runs .ci/run",
}


def summary(path: Path) -> str:
    """The first sentence of a module's docstring: what it owns."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    return re.split(r"(?<=\.)\s", first, maxsplit=1)[0].rstrip(".").replace("|", "\\|")


def modules() -> list[Path]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            found.append(path)
    return found


def table() -> str:
    lines = ["| path | what it owns |", "|---|---|"]
    for name, line in OTHER.items():
        lines.append(f"| `{name}` | {line} |")
    for path in modules():
        lines.append(f"| `{path.relative_to(ROOT)}` | {summary(path)} |")
    return "\n".join(lines)


def update_readme(path: Path) -> None:
    """Replace the section between the README markers with the current one."""
    write_between(path, BEGIN, END, table())


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-readme"]:
        update_readme(ROOT / "README.md")
    else:
        print(table())
