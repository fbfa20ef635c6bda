"""Real programs the behaviour tests run: helm, promtool and checkov, installed by `make tools`
into `.tools/bin` (pinned and checksummed in the Makefile), the ones requirements-dev.txt puts
in the virtual environment (the AWS CLI, shellcheck) or the system has (bash), and the pinned
chart sources helm renders. A missing program: a failure under CI=true, a skip with the reason otherwise; missing
chart sources: always a failure.

It owns finding and running those programs; it must not install or download anything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

from tests.support.reference import REFERENCE_DIR, reference

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"
CHARTS_DIR = REFERENCE_DIR / "charts"


def missing(reason: str) -> NoReturn:
    """A program a test needs is not there: a failure under CI=true, a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def tool(name: str) -> Path:
    """A program `make tools` installs into .tools/bin."""
    path = TOOLS_BIN / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    missing(f"{name} is not installed in {TOOLS_BIN}: run `make tools`")


def program(name: str, venv: bool = False) -> str:
    """A program from the project's virtual environment (`venv`: installed by
    requirements-dev.txt) or else the system's PATH."""
    if venv:
        path = Path(sys.executable).parent / name
        if os.access(path, os.X_OK):
            return str(path)
        missing(f"needs `{name}` in {path.parent} (pinned in requirements-dev.txt)")
    found = shutil.which(name)
    if found is None:
        missing(f"needs `{name}` on PATH")
    return found


def chart_dir(chart: str, version: str) -> Path:
    path = reference(CHARTS_DIR.name) / f"{chart}-{version}"
    if not (path / "Chart.yaml").is_file():
        pytest.fail(f"chart sources missing: {path} (see {CHARTS_DIR / 'SOURCES.md'})")
    return path


def helm_template(
    release: str, chart: Path, namespace: str, values: dict[str, Any], kube_version: str, workdir: Path
) -> list[dict[str, Any]]:
    """`helm template` of a chart with exactly these values: the objects Helm would apply."""
    values_file = workdir / f"{release}-values.json"
    values_file.write_text(json.dumps(values))
    done = subprocess.run(
        [
            str(tool("helm")), "template", release, str(chart),
            "--namespace", namespace, "--kube-version", kube_version, "--values", str(values_file),
        ],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HELM_CACHE_HOME": str(workdir / "cache")},
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool("promtool")), *args], capture_output=True, text=True, timeout=120, cwd=cwd)
