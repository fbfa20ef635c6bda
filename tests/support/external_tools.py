"""Real programs the behaviour tests run: helm and promtool, installed by `make tools` into
`.tools/bin` (pinned and checksummed in the Makefile), and the pinned chart sources helm
renders. A missing program: a failure under CI=true, a skip with the reason otherwise; missing
chart sources: always a failure.

It owns finding and running those programs; it must not install or download anything.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.reference import REFERENCE_DIR, reference

TOOLS_BIN = Path(__file__).resolve().parents[2] / ".tools" / "bin"
CHARTS_DIR = REFERENCE_DIR / "charts"


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    reason = f"{name} is not installed in {TOOLS_BIN}: run `make tools`"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


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
